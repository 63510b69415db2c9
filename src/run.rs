//! From user inputs (a store path or in-memory bars, optional funding, a config) to a validated
//! panel ready for the engine: the one place that decides how data is loaded, cleaned and
//! reported, shared by the Python API, the CLI and benchmarks.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backtest::{self, BacktestResult, TileIndicators};
use crate::config::{Config, OnInvalid};
use crate::data::{self, ArrowBars, Bars, Funding, FundingGrid, Panel, Selection, Severity, SpikeRule};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::timeframe::Timeframe;

/// Where bars come from.
pub enum BarsSource {
    /// A bar store root, or a single long-format Parquet / CSV file.
    Path(PathBuf),
    Bars(Bars),
    /// Arrow buffers handed over without a copy (e.g. a polars DataFrame).
    Arrow(ArrowBars),
}

/// Where funding comes from.
pub enum FundingSource {
    /// The funding of the bar store the bars were read from, if any.
    FromBarsStore,
    /// The `funding/` partition of the bar store at this root, read over the bars' range (from one
    /// bar before the first, so that an event just before it is seen).
    Store(PathBuf),
    /// A funding store root or a long file, read up to the bars' end.
    Path(PathBuf),
    Funding(Funding),
    None,
}

/// Where mark-price bars come from (the basis term of the carry sleeve).
pub enum MarkSource {
    /// A bar store root (its `kind=mark` bars) or a single long-format file of mark bars.
    Path(PathBuf),
    Bars(Bars),
}

/// A validated panel with its aligned funding, the validation findings and the data warnings
/// worth reporting (one line per kind of finding).
pub struct Inputs {
    pub panel: Panel,
    pub funding: FundingGrid,
    pub findings: Vec<data::Finding>,
    pub warnings: Vec<String>,
}

/// Load, validate and pivot bars and funding for `cfg` (timeframe, `data.on_invalid`).
pub fn prepare(bars: BarsSource, funding: FundingSource, cfg: &Config) -> Result<Inputs> {
    prepare_with(bars, funding, cfg.timeframe(), cfg.data.spike_rule(), cfg.data.on_invalid == OnInvalid::Drop)
}

/// Load, validate (spikes by `spike`) and pivot bars and funding on `timeframe`; rows with errors
/// are refused, or dropped with `drop_invalid`.
pub fn prepare_with(
    bars: BarsSource,
    funding: FundingSource,
    timeframe: Timeframe,
    spike: SpikeRule,
    drop_invalid: bool,
) -> Result<Inputs> {
    Ok(prepare_inner(bars, funding, timeframe, spike, drop_invalid, false)?.0)
}

/// Warnings of bars already known to be free of errors, still being found on another thread (the
/// spike test is most of a validation's cost): the engine runs on the other core meanwhile.
pub struct PendingFindings(std::thread::JoinHandle<Vec<data::Finding>>);

impl PendingFindings {
    /// Wait for the findings: `(findings, their warning lines)`, the lines as [`prepare`] puts
    /// them first in `Inputs::warnings`.
    pub fn finish(self) -> Result<(Vec<data::Finding>, Vec<String>)> {
        let findings = self.0.join().map_err(|_| Error::data("the validation thread panicked"))?;
        deferred_warnings(findings)
    }
}

/// The findings of a validation run beside the engine, and their warning lines. The bars were
/// admitted as error-free ([`data::error_free_panel`]); should the validation still find an error,
/// the run is refused as it would have been with the validation first.
fn deferred_warnings(findings: Vec<data::Finding>) -> Result<(Vec<data::Finding>, Vec<String>)> {
    if let Some(error) = findings.iter().find(|f| f.severity == Severity::Error) {
        return Err(Error::data(format!(
            "bars: {} at ts {}: {} ({})",
            error.symbol, error.ts, error.kind, error.detail
        )));
    }
    let mut warnings = summarise_findings(&findings);
    warnings.dedup();
    Ok((findings, warnings))
}

/// What a streamed backtest ([`backtest_streamed`]) keeps of its inputs: the bars' findings and
/// warnings and the funding on the grid — not the panel, which it never builds.
pub struct StreamedInputs {
    pub funding: FundingGrid,
    pub findings: Vec<data::Finding>,
    pub warnings: Vec<String>,
}

/// A backtest of Arrow bars (a DataFrame) whose pivot streams into the engine: canonical bars free
/// of errors are pivoted on a second thread a tile of bars at a time ([`Panel::stream_canonical`])
/// while the engine steps through the tiles already filled, and their warnings are found on that
/// thread between tiles and once the pivot is done, so the engine starts at once instead of after
/// validation and pivot, and no `T × N` panel is held. The result and warnings are those of
/// [`prepare_deferred`] + [`backtest`] (warnings of the bars first). `None` when these bars cannot
/// be streamed (not canonical, a row with an error, mark bars wanted): the caller takes the usual
/// path, which reports the problem.
pub fn backtest_streamed(
    arrow: &ArrowBars,
    funding: &FundingSource,
    cfg: &Config,
    record_signals: bool,
) -> Result<Option<(StreamedInputs, BacktestResult)>> {
    let policy = backtest::kernels_where_faster(cfg.strategy.min_history());
    backtest_streamed_with(arrow, funding, cfg, record_signals, policy)
}

/// [`backtest_streamed`] with the pivot thread's kernels handed to the engine when `hand_over`
/// says so ([`backtest::derive_indicators`]; tests choose the tile).
#[doc(hidden)]
pub fn backtest_streamed_with(
    arrow: &ArrowBars,
    funding: &FundingSource,
    cfg: &Config,
    record_signals: bool,
    hand_over: impl FnMut(data::StreamPace) -> bool + Send,
) -> Result<Option<(StreamedInputs, BacktestResult)>> {
    let view = arrow.view();
    // The times' order is left to the pivot, which reads them anyway (`Panel::stream_canonical`):
    // a second pass over them here cost 9 ms of 290 at 200 × 43 800, before the pivot's thread starts.
    if wants_mark(cfg) || !view.codes_are_canonical() {
        return Ok(None);
    }
    let (timeframe, spike) = (cfg.timeframe(), cfg.data.spike_rule());
    // The funding of the bars' span is read before the pivot starts: read beside it, the read's
    // threads took turns with the pivot's and the run started ~1 ms later (fixture store). Funding
    // that cannot be read is left to the usual path, which reports it in its own order (bars first).
    let Some((first, last)) = data::canonical_span(view) else { return Ok(None) };
    let Ok(events) = load_funding(funding, view.names, Some(first), Some(last + timeframe.ms), timeframe) else {
        return Ok(None);
    };
    let engine_run = |grid: &data::PanelGrid<'_>,
                      mut tiles: data::PivotStream<'_, TileIndicators>|
     -> Result<Option<(FundingGrid, BacktestResult)>> {
        let funding = match &events {
            Some(events) => grid.align_funding(events),
            None => FundingGrid::empty(grid.ts.len(), grid.symbols.len()),
        };
        let mut engine = backtest::Engine::new(grid.symbols, timeframe, &funding.has_data, cfg, record_signals)?;
        engine.reserve(grid.ts.len());
        for (t, &ts) in grid.ts.iter().enumerate() {
            let Some(tile) = tiles.tile_of(t) else { return Ok(None) };
            let k = t - tile.bars.start;
            let (bar, derived) = tile.bar_row_and_derived(t, ts, &funding);
            engine.step_derived(&bar, derived, k);
        }
        Ok(Some((funding, engine.finish())))
    };
    let validation = data::CanonicalValidation::behind_pivot(view, timeframe, spike);
    let indicators = backtest::derive_indicators(view.names, timeframe, cfg, hand_over);
    let Some(ran) = Panel::stream_canonical(view, timeframe, engine_run, || validation.step(), indicators) else {
        return Ok(None);
    };
    let Some((funding, mut result)) = ran? else { return Ok(None) };
    let (findings, bar_warnings) = deferred_warnings(validation.finish())?;
    let mut warnings = bar_warnings.clone();
    warnings.append(&mut result.warnings);
    warnings.extend(backtest::diagnose(&result, cfg));
    result.warnings = warnings;
    Ok(Some((StreamedInputs { funding, findings, warnings: bar_warnings }, result)))
}

/// What a streamed run did ([`backtest_streamed_path`]): the run, or the sources the usual path is
/// to take (the bars as read, unless mark bars are wanted; a store's own funding named by its root).
// Returned once per call and taken apart at once: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum StreamedRun {
    Ran(Box<(StreamedInputs, BacktestResult)>),
    Usual(BarsSource, FundingSource),
}

/// [`backtest_streamed`] of the bars of a store root or a long file: read once, then streamed
/// into the engine, or handed back for the usual path (mark bars wanted, not canonical, an error).
pub fn backtest_streamed_path(
    path: &Path,
    funding: FundingSource,
    cfg: &Config,
    record_signals: bool,
) -> Result<StreamedRun> {
    let funding = funding_of_path(funding, path);
    if wants_mark(cfg) {
        return Ok(StreamedRun::Usual(BarsSource::Path(path.to_path_buf()), funding));
    }
    let selection = Selection { symbols: None, start: None, end: None, timeframe: cfg.timeframe() };
    let arrow = data::store::read_bars_arrow(path, &selection)?.0;
    Ok(match backtest_streamed(&arrow, &funding, cfg, record_signals)? {
        Some(ran) => StreamedRun::Ran(Box::new(ran)),
        None => StreamedRun::Usual(BarsSource::Arrow(arrow), funding),
    })
}

/// `funding` for bars read from `path`: [`FundingSource::FromBarsStore`] is the store's own
/// funding when `path` is a store root, none for a single file.
fn funding_of_path(funding: FundingSource, path: &Path) -> FundingSource {
    match funding {
        FundingSource::FromBarsStore if path.is_dir() => FundingSource::Store(path.to_path_buf()),
        FundingSource::FromBarsStore => FundingSource::None,
        other => other,
    }
}

/// The funding that `funding` names for `symbols` over `[start, end)`, or `None`
/// ([`FundingSource::FromBarsStore`] is none here: [`funding_of_path`] resolves it first).
fn load_funding<'a>(
    funding: &'a FundingSource,
    symbols: &[String],
    start: Option<i64>,
    end: Option<i64>,
    timeframe: Timeframe,
) -> Result<Option<std::borrow::Cow<'a, Funding>>> {
    use std::borrow::Cow;
    Ok(match funding {
        FundingSource::Store(root) => {
            Some(Cow::Owned(data::read_funding(root, Some(symbols), start.map(|s| s - timeframe.ms), end)?))
        }
        FundingSource::Path(path) => Some(Cow::Owned(data::read_funding(path, Some(symbols), None, end)?)),
        FundingSource::Funding(funding) => Some(Cow::Borrowed(funding)),
        FundingSource::FromBarsStore | FundingSource::None => None,
    })
}

/// [`prepare`] for one backtest: when the bars are canonical Arrow buffers (a DataFrame, a file,
/// a store) free of errors ([`data::error_free_panel`]: the value rules in one pass, then the
/// pivot, which refuses rows off the grid and duplicates), their warnings (spikes, gaps, zero
/// volumes) are found on another thread while the caller runs the engine; the caller puts them
/// first in the result's warnings ([`PendingFindings::finish`]). Bars with any error take the
/// usual path (refused, or dropped rows), so the same inputs give the same result and warnings.
pub fn prepare_deferred(
    bars: BarsSource,
    funding: FundingSource,
    cfg: &Config,
) -> Result<(Inputs, Option<PendingFindings>)> {
    let drop_invalid = cfg.data.on_invalid == OnInvalid::Drop;
    prepare_inner(bars, funding, cfg.timeframe(), cfg.data.spike_rule(), drop_invalid, true)
}

fn prepare_inner(
    bars: BarsSource,
    funding: FundingSource,
    timeframe: Timeframe,
    spike: SpikeRule,
    drop_invalid: bool,
    defer: bool,
) -> Result<(Inputs, Option<PendingFindings>)> {
    let funding = match &bars {
        BarsSource::Path(path) => funding_of_path(funding, path),
        _ => funding,
    };
    let ((panel, findings), pending) = match bars {
        BarsSource::Path(path) => {
            let selection = Selection { symbols: None, start: None, end: None, timeframe };
            let arrow = data::store::read_bars_arrow(&path, &selection)?.0;
            arrow_panel(Arc::new(arrow), timeframe, spike, drop_invalid, defer)?
        }
        BarsSource::Bars(bars) => (validated_panel(bars, timeframe, spike, drop_invalid)?, None),
        BarsSource::Arrow(arrow) => arrow_panel(Arc::new(arrow), timeframe, spike, drop_invalid, defer)?,
    };
    let mut warnings = summarise_findings(&findings);
    let (start, end) = (panel.ts.first().copied(), panel.ts.last().map(|t| t + timeframe.ms));
    let funding = match load_funding(&funding, &panel.symbols, start, end, timeframe)? {
        Some(funding) => panel.align_funding(&funding),
        None => FundingGrid::empty(panel.n_bars(), panel.n_symbols()),
    };
    warnings.dedup();
    Ok((Inputs { panel, funding, findings, warnings }, pending))
}

/// Validate mark-price bars (prices only: they have no volume) and put their closes on the panel's
/// grid (`panel.mark_close`); their findings join the warnings, prefixed with "mark". Rows with
/// errors are refused, or dropped with `drop_invalid`.
pub fn attach_mark(inputs: &mut Inputs, mark: MarkSource, spike: SpikeRule, drop_invalid: bool) -> Result<()> {
    let panel = &inputs.panel;
    let timeframe = panel.timeframe;
    let mark = match mark {
        MarkSource::Path(path) => {
            let end = panel.ts.last().map(|t| t + timeframe.ms);
            let selection =
                Selection { symbols: Some(panel.symbols.clone()), start: panel.ts.first().copied(), end, timeframe };
            data::read_bars_of_kind(&path, &selection, data::BarKind::Mark)?.0
        }
        MarkSource::Bars(bars) => bars,
    };
    let (mark, findings) = data::clean_bars_of_kind(mark, timeframe, data::BarKind::Mark, spike, drop_invalid)
        .map_err(|err| err.context("mark bars"))?;
    inputs.warnings.extend(summarise_findings(&findings).into_iter().map(|w| format!("mark {w}")));
    inputs.panel.attach_mark(mark.view());
    Ok(())
}

/// Whether `cfg` runs the basis term of the carry sleeve (and so reads mark-price bars).
pub fn wants_mark(cfg: &Config) -> bool {
    cfg.strategy.carry.enabled && cfg.strategy.carry.basis_weight > 0.0
}

/// Attach the `kind=mark` bars of the store at `store` when `cfg` wants them and the store has them
/// (what `backtest` and `xsmom-live --mode replay` do with a store path).
pub fn attach_store_mark(inputs: &mut Inputs, store: &Path, cfg: &Config) -> Result<()> {
    if wants_mark(cfg) && data::store::store_has_kind(store, cfg.timeframe(), data::BarKind::Mark) {
        let drop_invalid = cfg.data.on_invalid == OnInvalid::Drop;
        attach_mark(inputs, MarkSource::Path(store.to_path_buf()), cfg.data.spike_rule(), drop_invalid)?;
    }
    Ok(())
}

/// A pivoted panel and the validation's findings of its bars.
type PanelAndFindings = (Panel, Vec<data::Finding>);

/// Canonical input without errors (the usual case) is validated and pivoted straight from the
/// Arrow buffers; anything else is copied, sorted and cleaned. With `defer`, error-free canonical
/// input is pivoted at once and its warnings are found on another thread.
fn arrow_panel(
    arrow: Arc<ArrowBars>,
    timeframe: Timeframe,
    spike: SpikeRule,
    drop_invalid: bool,
    defer: bool,
) -> Result<(PanelAndFindings, Option<PendingFindings>)> {
    let view = arrow.view();
    if view.is_canonical() {
        if let Some(panel) = defer.then(|| data::error_free_panel(view, timeframe)).flatten() {
            let shared = Arc::clone(&arrow);
            let validation = std::thread::Builder::new()
                .name("xsmom-validate".into())
                .spawn(move || data::CanonicalValidation::behind_pivot(shared.view(), timeframe, spike).finish())
                .map_err(|err| Error::data(format!("cannot start the validation thread: {err}")))?;
            return Ok(((panel, Vec::new()), Some(PendingFindings(validation))));
        }
        let findings = data::validate_canonical(view, timeframe, spike);
        if !findings.iter().any(|f| f.severity == Severity::Error) {
            return Ok(((Panel::from_canonical_view(view, timeframe)?, findings), None));
        }
    }
    Ok((validated_panel(view.to_bars(), timeframe, spike, drop_invalid)?, None))
}

/// Clean bars (sort, validate, refuse or drop errors) and pivot them.
fn validated_panel(bars: Bars, timeframe: Timeframe, spike: SpikeRule, drop_invalid: bool) -> Result<PanelAndFindings> {
    let (bars, findings) = data::clean_bars(bars, timeframe, spike, drop_invalid)?;
    Ok((Panel::from_bars(&bars, timeframe)?, findings))
}

/// One line per kind of data warning ("gap: 3 findings (first: BTCUSDT at ts …)").
fn summarise_findings(findings: &[data::Finding]) -> Vec<String> {
    let mut kinds: Vec<&str> = findings.iter().map(|f| f.kind).collect();
    kinds.sort_unstable();
    kinds.dedup();
    kinds
        .into_iter()
        .map(|kind| {
            let of_kind: Vec<&data::Finding> = findings.iter().filter(|f| f.kind == kind).collect();
            let first = of_kind[0];
            let verb = if first.severity == Severity::Error { "dropped" } else { "found" };
            format!(
                "data {kind}: {} finding(s) {verb} (first: {} at ts {}: {})",
                of_kind.len(),
                first.symbol,
                first.ts,
                first.detail
            )
        })
        .collect()
}

/// Backtest prepared inputs; data warnings come first in the result's warnings, the diagnosis of
/// the result (`backtest::diagnose`) last.
pub fn backtest(inputs: &Inputs, cfg: &Config, record_signals: bool) -> Result<BacktestResult> {
    let mut result = backtest::run_with(&inputs.panel, &inputs.funding, cfg, record_signals)?;
    let mut warnings = inputs.warnings.clone();
    warnings.append(&mut result.warnings);
    warnings.extend(backtest::diagnose(&result, cfg));
    result.warnings = warnings;
    Ok(result)
}

/// Metrics for each override set (`key.path=value` strings), in parallel on `threads` threads
/// (all cores when `None`). The i-th result belongs to the i-th override set. Each worker keeps
/// its output buffers from one backtest to the next.
pub fn sweep(
    inputs: &Inputs,
    base: &Config,
    override_sets: &[Vec<String>],
    threads: Option<usize>,
) -> Result<Vec<Metrics>> {
    let configs: Vec<Config> = override_sets
        .iter()
        .enumerate()
        .map(|(index, set)| base.with_override_strings(set).map_err(|err| err.context(format!("override set {index}"))))
        .collect::<Result<_>>()?;
    let results =
        crate::threads::map_with_state(&configs, threads, backtest::OutputBuffers::default, |buffers, cfg| {
            let result = backtest::run_in(&inputs.panel, &inputs.funding, cfg, false, std::mem::take(buffers))?;
            let metrics = result.metrics.clone();
            *buffers = backtest::OutputBuffers::recycle(result);
            Ok(metrics)
        });
    results.into_iter().collect()
}

/// Append bar files (Parquet or CSV, long format) to a store after validating them.
pub fn ingest(paths: &[PathBuf], store: &Path, timeframe: crate::Timeframe) -> Result<data::WriteStats> {
    ingest_of_kind(paths, store, timeframe, data::BarKind::Trade)
}

/// [`ingest`] of bars of `kind` (mark and index files have no volume column).
pub fn ingest_of_kind(
    paths: &[PathBuf],
    store: &Path,
    timeframe: crate::Timeframe,
    kind: data::BarKind,
) -> Result<data::WriteStats> {
    let mut total = data::WriteStats::default();
    for path in paths {
        let selection = Selection { symbols: None, start: None, end: None, timeframe };
        let (bars, _) = data::read_bars_of_kind(path, &selection, kind)?;
        let (bars, _) =
            // Spikes are warnings and never stop an ingest: the default rule is as good as any.
            data::clean_bars_of_kind(bars, timeframe, kind, SpikeRule::default(), false)
                .map_err(|err| err.context(path.display()))?;
        total += data::write_store_of_kind(store, timeframe, &bars, kind)?;
    }
    Ok(total)
}

/// Resample the store's `source` timeframe (the finest one when `None`) to `to` and write it back.
pub fn resample_store(
    store: &Path,
    to: crate::Timeframe,
    source: Option<crate::Timeframe>,
) -> Result<data::WriteStats> {
    let source = match source {
        Some(source) => source,
        None => *data::store_timeframes(store)?.iter().filter(|tf| tf.ms < to.ms).min().ok_or_else(|| {
            Error::invalid(format!("{}: no timeframe finer than {} to resample from", store.display(), to.label()))
        })?,
    };
    let selection = Selection { symbols: None, start: None, end: None, timeframe: source };
    let (bars, _) = data::read_bars(store, &selection)?;
    let mut stats = data::write_store(store, to, &data::resample(&bars, source, to)?)?;
    // Mark and index bars beside the traded ones are resampled with them, so that a backtest on the
    // coarser timeframe finds the basis term's data where it finds its bars.
    for kind in [data::BarKind::Mark, data::BarKind::Index] {
        if !data::store::store_has_kind(store, source, kind) {
            continue;
        }
        let (bars, _) = data::read_bars_of_kind(store, &selection, kind)?;
        stats += data::write_store_of_kind(store, to, &data::resample(&bars, source, to)?, kind)
            .map_err(|err| err.context(format!("{} bars", kind.label())))?;
    }
    Ok(stats)
}
