//! Validation of mark- and index-price bars: the checks of traded bars on the prices only, since
//! these bars have no volume (it is NaN in [`Bars`], and absent from the store's files).

use super::panel::Bars;
use super::store::BarKind;
use super::validate::{clean_bars, validate_bars, Finding, SpikeRule};
use crate::error::Result;
use crate::timeframe::Timeframe;

/// [`clean_bars`] for bars of `kind`: without a volume, the price checks only (every finding that
/// is about the volume is left out) and the volume stays NaN.
pub fn clean_bars_of_kind(
    mut bars: Bars,
    timeframe: Timeframe,
    kind: BarKind,
    spike: SpikeRule,
    drop_invalid: bool,
) -> Result<(Bars, Vec<Finding>)> {
    if kind.has_volume() {
        return clean_bars(bars, timeframe, spike, drop_invalid);
    }
    // A stand-in volume of 1 passes the volume checks, so only the prices are judged.
    bars.volume.iter_mut().for_each(|v| *v = 1.0);
    bars.turnover = None;
    let (mut bars, findings) = clean_bars(bars, timeframe, spike, drop_invalid)?;
    bars.volume.iter_mut().for_each(|v| *v = f64::NAN);
    Ok((bars, findings))
}

/// [`validate_bars`] for bars of `kind` (the price checks only for mark and index bars).
pub fn validate_bars_of_kind(mut bars: Bars, timeframe: Timeframe, kind: BarKind, spike: SpikeRule) -> Vec<Finding> {
    if !kind.has_volume() {
        bars.volume.iter_mut().for_each(|v| *v = 1.0);
        bars.turnover = None;
    }
    validate_bars(bars, timeframe, spike)
}
