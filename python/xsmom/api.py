"""The research API: bars in, results out, as polars DataFrames (interfaces.md)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from xsmom import _core
from xsmom.config import Config, override_pairs

if TYPE_CHECKING:
    from concurrent.futures import Executor

    from matplotlib.figure import Figure

BarsLike = pl.DataFrame | str | Path
Dataset = _core.Dataset
TimeLike = str | dt.datetime | dt.date | int | None


def _frame(table: Any) -> pl.DataFrame:
    """Arrow PyCapsule stream from the core → polars, without pyarrow."""
    return pl.DataFrame(table)


def _epoch_ms(value: TimeLike) -> int | None:
    if value is None or isinstance(value, int):
        return value
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return int(value.timestamp() * 1000)


def _bars_arg(bars: BarsLike) -> Any:
    return str(bars) if isinstance(bars, str | Path) else bars


def _config(config: Config | None) -> str:
    return (config or Config.default()).to_yaml()


def read_bars(
    path: str | Path,
    symbols: list[str] | None = None,
    start: TimeLike = None,
    end: TimeLike = None,
    timeframe: str = "1h",
    kind: str = "trade",
) -> pl.DataFrame:
    """Bars (long format) from a store root or a single Parquet/CSV file; ``end`` is exclusive.

    Only the requested symbols, years and row groups are read. ``kind``: ``trade`` (the traded
    price, default), ``mark`` or ``index`` (the store's ``kind=<kind>`` bars; their ``volume`` is NaN).
    """
    return _frame(_core.read_bars(str(path), symbols, _epoch_ms(start), _epoch_ms(end), timeframe, kind))


def read_funding(
    path: str | Path, symbols: list[str] | None = None, start: TimeLike = None, end: TimeLike = None
) -> pl.DataFrame:
    """Funding events ``ts, symbol, rate`` from a store root or a single file."""
    return _frame(_core.read_funding(str(path), symbols, _epoch_ms(start), _epoch_ms(end)))


def validate_bars(
    bars: BarsLike | Dataset,
    timeframe: str = "1h",
    spike_mads: float | None = None,
    spike_window: int | None = None,
) -> pl.DataFrame:
    """Validation findings (``symbol, ts, kind, severity, detail``); empty when the bars are clean.

    ``spike_mads`` / ``spike_window`` are the spike detector's ``data.spike_mads`` (8) and
    ``data.spike_window`` (500); a ``Dataset`` reports the findings it was built with.
    """
    if isinstance(bars, Dataset):
        return _frame(bars.findings())
    return _frame(_core.validate_bars(_bars_arg(bars), timeframe, spike_mads, spike_window))


OUTPUTS = ("equity", "weights", "fills", "trades")


class BacktestResult:
    """Everything one backtest produced. DataFrames have ``Datetime("ms", "UTC")`` time columns.

    ``equity``, ``fills``, ``trades`` and ``weights`` are built by the core when the backtest runs
    if they were asked for (``outputs``), else on first access, from the finished run kept on the
    Rust side; the long ``weights`` table (one row per bar and listed symbol) is never built unless
    used. ``weights_wide`` gives a book matrix as one column per symbol instead.
    """

    __slots__ = (
        "_run",
        "_tables",
        "config",
        "end",
        "first_decision",
        "has_target",
        "metrics",
        "start",
        "symbols",
        "warnings",
    )

    def __init__(
        self,
        metrics: dict[str, float],
        equity: pl.DataFrame | None = None,
        weights: pl.DataFrame | None = None,
        fills: pl.DataFrame | None = None,
        trades: pl.DataFrame | None = None,
        config: Config | None = None,
        warnings: list[str] | None = None,
        symbols: list[str] | None = None,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        *,
        first_decision: dt.datetime | None = None,
        has_target: bool | None = None,
        run: Any = None,
    ) -> None:
        self.metrics = metrics
        self.config = config or Config.default()
        self.warnings = warnings if warnings is not None else []
        self.symbols = symbols if symbols is not None else []
        self.start, self.end, self.first_decision = start, end, first_decision
        self._run = run
        tables = {"equity": equity, "weights": weights, "fills": fills, "trades": trades}
        # A polars frame, or an Arrow table of the core not read yet (see `_from_core`).
        self._tables: dict[str, Any] = {k: v for k, v in tables.items() if v is not None}
        if has_target is None:
            has_target = weights is not None and weights.filter(pl.col("target_weight") != 0.0).height > 0
        self.has_target = has_target

    @classmethod
    def _from_core(cls, out: dict[str, Any]) -> BacktestResult:
        result = cls(
            dict(out["metrics"]),
            config=Config._trusted(out["config"]),
            warnings=list(out["warnings"]),
            symbols=list(out["symbols"]),
            start=_datetime(out["start"]),
            end=_datetime(out["end"]),
            first_decision=_datetime(out["first_decision"]),
            has_target=bool(out["has_target"]),
            run=out["run"],
        )
        # The tables the core built with the run, as Arrow streams: each becomes a polars frame
        # when first read (~40 µs a table, a tenth of a small backtest).
        result._tables.update((name, out[name]) for name in OUTPUTS if out.get(name) is not None)
        return result

    def _table(self, name: str) -> pl.DataFrame:
        table = self._tables.get(name)
        if table is None:
            if self._run is None:
                raise ValueError(f"this result has no {name} table")
            table = self._run.table(name)
        if not isinstance(table, pl.DataFrame):
            table = self._tables[name] = _frame(table)
        return table

    @property
    def equity(self) -> pl.DataFrame:
        """Per bar: equity, cash, exposure, costs, positions, regime, K, vol scale, kill switch."""
        return self._table("equity")

    @property
    def weights(self) -> pl.DataFrame:
        """Per bar and listed symbol: ``ts, symbol, target_weight, model_weight, weight, units``."""
        return self._table("weights")

    @property
    def fills(self) -> pl.DataFrame:
        return self._table("fills")

    @property
    def trades(self) -> pl.DataFrame:
        """Round trips: entry and exit, qty, PnL, return, bars held, exit reason."""
        return self._table("trades")

    @property
    def meta_skipped(self) -> pl.DataFrame:
        """Entries the meta-labeler skipped: ``ts, symbol, side, p`` (empty when it is off)."""
        return self._table("meta_skipped")

    @property
    def bars_per_year(self) -> float:
        """Bars in a 365-day year of the run's timeframe (``data.timeframe``): what the core
        annualised the metrics with (2190 for 4h bars), and what the report annualises with."""
        return _core.bars_per_year(self.config.to_dict()["data"]["timeframe"])

    def weights_wide(self, column: str = "weight") -> pl.DataFrame:
        """One book matrix (``target_weight``, ``model_weight``, ``weight`` or ``units``) as ``ts`` and
        one column per symbol."""
        if self._run is None:
            raise ValueError("this result was built from tables, not by a backtest run")
        return _frame(self._run.wide(column))

    def plot(self) -> Figure:
        """Equity, drawdown, gross/net exposure and a weights heatmap in one figure."""
        from xsmom.plotting import plot_result

        return plot_result(self)

    def __repr__(self) -> str:
        m = self.metrics
        return (
            f"BacktestResult({len(self.symbols)} symbols, {self.start} → {self.end}: total_return "
            f"{m['total_return']:.2%}, sharpe {m['sharpe']:.2f}, max_drawdown {m['max_drawdown']:.2%})"
        )


def _datetime(ms: int | None) -> dt.datetime | None:
    return None if ms is None else dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


DataLike = BarsLike | Dataset


def _data_arg(bars: DataLike) -> Any:
    return str(bars) if isinstance(bars, str | Path) else bars


def backtest(
    bars: DataLike,
    config: Config | None = None,
    funding: pl.DataFrame | str | Path | None = None,
    outputs: tuple[str, ...] | list[str] = ("equity", "fills", "trades"),
    mark: pl.DataFrame | str | Path | None = None,
) -> BacktestResult:
    """Backtest ``bars`` (a ``Dataset``, a polars DataFrame or a store path) with ``config``.

    A ``Dataset`` is used as it was validated (its own funding and mark bars); a DataFrame or path
    is validated on every call. With a store path and no ``funding``, the store's own funding data
    is used. ``mark``: mark-price bars (``ts, symbol, open, high, low, close``) for the basis term of
    the carry sleeve; with a store path, no ``mark`` and ``strategy.carry.basis_weight > 0``, the
    store's ``kind=mark`` bars are used when it has them. ``outputs`` names the tables built with
    the run (of ``equity``, ``weights``, ``fills``, ``trades``); the others are built on first access.
    """
    out = _core.backtest(
        _data_arg(bars),
        _config(config),
        _bars_arg(funding) if funding is not None else None,
        list(outputs),
        _bars_arg(mark) if mark is not None else None,
    )
    return BacktestResult._from_core(out)


def sweep(
    bars: DataLike,
    config: Config | None,
    overrides_list: list[dict[str, Any]],
    n_jobs: int | None = None,
    funding: pl.DataFrame | str | Path | None = None,
    executor: Executor | None = None,
    mark: pl.DataFrame | str | Path | None = None,
) -> list[dict[str, float]]:
    """Metrics for each override set, computed in parallel in Rust (GIL released). Data is loaded once.

    ``mark`` as for ``backtest``; with a store path the store's ``kind=mark`` bars are used when the
    base config or any override set runs the basis term.

    With ``executor`` (any ``concurrent.futures.Executor``, e.g. ``xsmom.parallel.dask_executor(addr)``)
    the list is cut into chunks that run as tasks on its workers (bars shipped as a polars DataFrame,
    ``n_jobs`` threads per task); the results are the same, in the same order.
    """
    if executor is not None:
        from xsmom.parallel import sweep_on_executor

        return sweep_on_executor(
            executor, bars, _config(config), overrides_list, funding=funding, n_jobs=n_jobs, mark=mark
        )
    sets = [override_pairs(overrides) for overrides in overrides_list]
    results = _core.sweep(
        _bars_arg(bars),
        _config(config),
        sets,
        _bars_arg(funding) if funding is not None else None,
        n_jobs,
        _bars_arg(mark) if mark is not None else None,
    )
    return [dict(r) for r in results]


def signals(bars: DataLike, config: Config | None = None) -> pl.DataFrame:
    """Per bar and symbol: ``ts, symbol, momentum, z, signal, eligible`` as the engine saw them."""
    return _frame(_core.signals(_bars_arg(bars), _config(config)))
