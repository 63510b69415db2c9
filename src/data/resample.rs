//! Resampling bars to a coarser timeframe: open = first, high = max, low = min, close = last,
//! volume and turnover = sum. Buckets are aligned to multiples of the target timeframe since the
//! epoch; a bucket missing any of its source bars is dropped (never a partial bar).

use super::panel::Bars;
use super::store::sort_bars;
use crate::error::{Error, Result};
use crate::timeframe::Timeframe;

pub fn resample(bars: &Bars, from: Timeframe, to: Timeframe) -> Result<Bars> {
    if to.ms <= from.ms || to.ms % from.ms != 0 {
        return Err(Error::invalid(format!(
            "cannot resample {} bars to {}: the target must be a multiple of the source timeframe",
            from.label(),
            to.label()
        )));
    }
    let per_bucket = (to.ms / from.ms) as usize;
    let bars = sort_bars(bars.clone());
    let mut out =
        Bars { names: bars.names.clone(), turnover: bars.turnover.as_ref().map(|_| Vec::new()), ..Default::default() };
    let mut start = 0;
    while start < bars.len() {
        let bucket = bars.ts[start].div_euclid(to.ms) * to.ms;
        let mut end = start;
        while end < bars.len()
            && bars.symbol[end] == bars.symbol[start]
            && bars.ts[end].div_euclid(to.ms) * to.ms == bucket
        {
            end += 1;
        }
        if end - start == per_bucket {
            out.ts.push(bucket);
            out.symbol.push(bars.symbol[start]);
            out.open.push(bars.open[start]);
            out.high.push(bars.high[start..end].iter().copied().fold(f64::NEG_INFINITY, f64::max));
            out.low.push(bars.low[start..end].iter().copied().fold(f64::INFINITY, f64::min));
            out.close.push(bars.close[end - 1]);
            out.volume.push(bars.volume[start..end].iter().sum());
            if let (Some(out_t), Some(t)) = (out.turnover.as_mut(), bars.turnover.as_ref()) {
                out_t.push(t[start..end].iter().sum());
            }
        }
        start = end;
    }
    Ok(out)
}
