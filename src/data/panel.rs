//! Long-format bars and their wide `T × N` panel on a regular time grid (strategy.md §1).

use std::collections::BTreeMap;

use ndarray::Array2;

use crate::error::{Error, Result};
use crate::timeframe::Timeframe;

/// Bars in long format: one row per `(symbol, ts)`; `ts` is the bar open time in epoch ms UTC.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bars {
    pub ts: Vec<i64>,
    pub symbol: Vec<String>,
    pub open: Vec<f64>,
    pub high: Vec<f64>,
    pub low: Vec<f64>,
    pub close: Vec<f64>,
    pub volume: Vec<f64>,
    /// Quote volume; when absent, `close × volume` stands in for it.
    pub turnover: Option<Vec<f64>>,
}

impl Bars {
    pub fn len(&self) -> usize {
        self.ts.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }
    /// Append one bar of `symbol` (a turnover column is created on first use).
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        symbol: &str,
        ts: i64,
        open: f64,
        high: f64,
        low: f64,
        close: f64,
        volume: f64,
        turnover: f64,
    ) {
        self.ts.push(ts);
        self.symbol.push(symbol.to_string());
        self.open.push(open);
        self.high.push(high);
        self.low.push(low);
        self.close.push(close);
        self.volume.push(volume);
        self.turnover.get_or_insert_with(Vec::new).push(turnover);
    }

    /// Keep only the rows where `keep[row]` is true.
    pub fn filter_rows(&self, keep: &[bool]) -> Bars {
        fn pick<T: Clone>(values: &[T], keep: &[bool]) -> Vec<T> {
            values.iter().zip(keep).filter(|(_, k)| **k).map(|(v, _)| v.clone()).collect()
        }
        Bars {
            ts: pick(&self.ts, keep),
            symbol: pick(&self.symbol, keep),
            open: pick(&self.open, keep),
            high: pick(&self.high, keep),
            low: pick(&self.low, keep),
            close: pick(&self.close, keep),
            volume: pick(&self.volume, keep),
            turnover: self.turnover.as_ref().map(|t| pick(t, keep)),
        }
    }
}

/// Funding events in long format: `rate` is the fraction paid per interval by a long when positive.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Funding {
    pub ts: Vec<i64>,
    pub symbol: Vec<String>,
    pub rate: Vec<f64>,
}

/// Bars pivoted to a regular grid: matrices are `T × N` (row = bar, column = symbol), NaN where a
/// symbol has no bar.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub timeframe: Timeframe,
    pub ts: Vec<i64>,
    pub symbols: Vec<String>,
    pub open: Array2<f64>,
    pub high: Array2<f64>,
    pub low: Array2<f64>,
    pub close: Array2<f64>,
    pub volume: Array2<f64>,
    /// Quote volume per bar: the `turnover` column, or `close × volume` without one.
    pub quote_volume: Array2<f64>,
}

impl Panel {
    pub fn n_bars(&self) -> usize {
        self.ts.len()
    }
    pub fn n_symbols(&self) -> usize {
        self.symbols.len()
    }

    /// Bar t with its funding, as the engine consumes it.
    pub fn bar_row<'a>(&'a self, t: usize, funding: &'a FundingGrid) -> crate::backtest::BarRow<'a> {
        let row = |matrix: &'a Array2<f64>| matrix.row(t).to_slice().expect("standard layout");
        crate::backtest::BarRow {
            ts: self.ts[t],
            open: row(&self.open),
            high: row(&self.high),
            low: row(&self.low),
            close: row(&self.close),
            quote_volume: row(&self.quote_volume),
            funding_rate: row(&funding.rates),
            funding_event: funding.events.row(t).to_slice().expect("standard layout"),
        }
    }

    /// Pivot long bars onto the grid `first ts, first + Δ, …, last ts`. Rows must already be valid
    /// (see `data::validate`): a duplicate `(symbol, ts)` or a ts off the grid is an error here.
    pub fn from_bars(bars: &Bars, timeframe: Timeframe) -> Result<Panel> {
        if bars.is_empty() {
            return Err(Error::invalid("no bars: the selection is empty (check symbols, start and end)"));
        }
        let first = *bars.ts.iter().min().expect("non-empty");
        let last = *bars.ts.iter().max().expect("non-empty");
        let symbols: std::collections::BTreeSet<&str> = bars.symbol.iter().map(String::as_str).collect();
        let symbols: Vec<String> = symbols.into_iter().map(str::to_string).collect();
        Panel::on_grid(bars, timeframe, &symbols, first, ((last - first) / timeframe.ms + 1) as usize)
    }

    /// Pivot long bars onto a given grid: `n_bars` bars from `first`, the columns `symbols` in that
    /// order (the live runner's fixed universe). Rows outside the grid or of other symbols are an error.
    pub fn on_grid(bars: &Bars, timeframe: Timeframe, symbols: &[String], first: i64, n_bars: usize) -> Result<Panel> {
        let step = timeframe.ms;
        let columns: BTreeMap<&str, usize> = symbols.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
        let n_symbols = symbols.len();
        let nan = || Array2::from_elem((n_bars, n_symbols), f64::NAN);
        let (mut open, mut high, mut low, mut close, mut volume, mut quote_volume) =
            (nan(), nan(), nan(), nan(), nan(), nan());
        for row in 0..bars.len() {
            let ts = bars.ts[row];
            let offset = ts - first;
            if offset % step != 0 || offset < 0 || offset / step >= n_bars as i64 {
                return Err(Error::data(format!(
                    "bar {} at ts {ts} is not on the {} grid of {n_bars} bars starting at {first}",
                    bars.symbol[row],
                    timeframe.label()
                )));
            }
            let t = (offset / step) as usize;
            let Some(&i) = columns.get(bars.symbol[row].as_str()) else {
                return Err(Error::data(format!("bar of {} at ts {ts}: not a symbol of the panel", bars.symbol[row])));
            };
            if !close[[t, i]].is_nan() {
                return Err(Error::data(format!("duplicate bar for {} at ts {ts}", bars.symbol[row])));
            }
            open[[t, i]] = bars.open[row];
            high[[t, i]] = bars.high[row];
            low[[t, i]] = bars.low[row];
            close[[t, i]] = bars.close[row];
            volume[[t, i]] = bars.volume[row];
            // Quote volume: the turnover column where it has a value, else close × volume.
            let turnover = bars.turnover.as_ref().map_or(f64::NAN, |turnover| turnover[row]);
            quote_volume[[t, i]] = if turnover.is_finite() { turnover } else { bars.close[row] * bars.volume[row] };
        }
        let ts = (0..n_bars as i64).map(|t| first + t * step).collect();
        Ok(Panel { timeframe, ts, symbols: symbols.to_vec(), open, high, low, close, volume, quote_volume })
    }

    /// The first `n_bars` rows only (truncation-invariance tests and warm starts).
    pub fn head(&self, n_bars: usize) -> Panel {
        let rows = n_bars.min(self.n_bars());
        let cut = |m: &Array2<f64>| m.slice(ndarray::s![..rows, ..]).to_owned();
        Panel {
            timeframe: self.timeframe,
            ts: self.ts[..rows].to_vec(),
            symbols: self.symbols.clone(),
            open: cut(&self.open),
            high: cut(&self.high),
            low: cut(&self.low),
            close: cut(&self.close),
            volume: cut(&self.volume),
            quote_volume: cut(&self.quote_volume),
        }
    }

    /// Funding rates on this panel's grid: `rates[t, i]` is the sum of the events of symbol i whose
    /// time falls in bar t's interval `[ts_t, ts_t + Δ)` (an event 1 ms before the hour belongs to the
    /// earlier bar). `has_data[i]` says whether symbol i had any funding record at all.
    pub fn align_funding(&self, funding: &Funding) -> FundingGrid {
        let n_symbols = self.n_symbols();
        let mut rates = Array2::zeros((self.n_bars(), n_symbols));
        let mut events = Array2::from_elem((self.n_bars(), n_symbols), false);
        let mut has_data = vec![false; n_symbols];
        let index: BTreeMap<&str, usize> = self.symbols.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
        let first = self.ts.first().copied().unwrap_or(0);
        let step = self.timeframe.ms;
        for row in 0..funding.ts.len() {
            let Some(&i) = index.get(funding.symbol[row].as_str()) else {
                continue;
            };
            has_data[i] = true;
            let offset = funding.ts[row] - first;
            if offset < 0 {
                continue;
            }
            let t = (offset / step) as usize;
            if t < self.n_bars() && funding.rate[row].is_finite() {
                rates[[t, i]] += funding.rate[row];
                events[[t, i]] = true;
            }
        }
        FundingGrid { rates, events, has_data }
    }
}

/// Funding rates aligned to a panel (see [`Panel::align_funding`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FundingGrid {
    pub rates: Array2<f64>,
    /// `events[t, i]`: a funding event of symbol i falls in bar t (its rate may be 0).
    pub events: Array2<bool>,
    pub has_data: Vec<bool>,
}

impl FundingGrid {
    /// No funding data at all (every rate 0, every symbol reported as missing).
    pub fn empty(n_bars: usize, n_symbols: usize) -> Self {
        Self {
            rates: Array2::zeros((n_bars, n_symbols)),
            events: Array2::from_elem((n_bars, n_symbols), false),
            has_data: vec![false; n_symbols],
        }
    }
}
