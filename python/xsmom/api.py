"""The research API: bars in, results out, as polars DataFrames (interfaces.md)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from xsmom import _core
from xsmom.config import Config

if TYPE_CHECKING:
    from concurrent.futures import Executor

    from matplotlib.figure import Figure

BarsLike = pl.DataFrame | str | Path
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
) -> pl.DataFrame:
    """Bars (long format) from a store root or a single Parquet/CSV file; ``end`` is exclusive.

    Only the requested symbols, years and row groups are read.
    """
    return _frame(_core.read_bars(str(path), symbols, _epoch_ms(start), _epoch_ms(end), timeframe))


def read_funding(
    path: str | Path, symbols: list[str] | None = None, start: TimeLike = None, end: TimeLike = None
) -> pl.DataFrame:
    """Funding events ``ts, symbol, rate`` from a store root or a single file."""
    return _frame(_core.read_funding(str(path), symbols, _epoch_ms(start), _epoch_ms(end)))


def validate_bars(bars: BarsLike, timeframe: str = "1h") -> pl.DataFrame:
    """Validation findings (``symbol, ts, kind, severity, detail``); empty when the bars are clean."""
    return _frame(_core.validate_bars(_bars_arg(bars), timeframe))


@dataclass(frozen=True)
class BacktestResult:
    """Everything one backtest produced. DataFrames have ``Datetime("ms", "UTC")`` time columns."""

    metrics: dict[str, float]
    equity: pl.DataFrame
    weights: pl.DataFrame
    fills: pl.DataFrame
    trades: pl.DataFrame
    config: Config
    warnings: list[str] = field(default_factory=list)
    symbols: list[str] = field(default_factory=list)
    start: dt.datetime | None = None
    end: dt.datetime | None = None

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


def backtest(
    bars: BarsLike, config: Config | None = None, funding: pl.DataFrame | str | Path | None = None
) -> BacktestResult:
    """Backtest ``bars`` (a polars DataFrame or a store path) with ``config`` (default config if None).

    With a store path and no ``funding``, the store's own funding data is used.
    """
    out = _core.backtest(
        _bars_arg(bars), _config(config), _bars_arg(funding) if funding is not None else None
    )
    result = BacktestResult(
        metrics=dict(out["metrics"]),
        equity=_frame(out["equity"]),
        weights=_frame(out["weights"]),
        fills=_frame(out["fills"]),
        trades=_frame(out["trades"]),
        config=Config._trusted(out["config"]),
        warnings=list(out["warnings"]),
        symbols=list(out["symbols"]),
        start=_datetime(out["start"]),
        end=_datetime(out["end"]),
    )
    result.warnings.extend(diagnose(result))
    return result


def _warm_up(cfg: dict[str, Any]) -> tuple[int, str]:
    """The longest history the strategy needs before its first decision, and the key that sets it."""
    s, sizing = cfg["strategy"], cfg["sizing"]
    needs = [(max(s["lookbacks"]) + 1, "strategy.lookbacks"), (s["vol_lookback"], "strategy.vol_lookback")]
    if s["k_mode"] == "dynamic":
        needs.append((s["disp_lookback"], "strategy.disp_lookback"))
    if s["regime_filter"]["enabled"]:
        needs.append((s["regime_filter"]["ema_len"], "strategy.regime_filter.ema_len"))
    if sizing["vol_target"]["enabled"]:
        needs.append((sizing["vol_target"]["lookback"], "sizing.vol_target.lookback"))
    if s.get("min_history_bars"):
        needs.append((s["min_history_bars"], "strategy.min_history_bars"))
    return max(needs)


def diagnose(result: BacktestResult) -> list[str]:
    """Warnings for results that look like zeros by construction rather than by market."""
    cfg = result.config.to_dict()
    eq, out = result.equity, []
    n_bars = eq.height
    warm, key = _warm_up(cfg)
    decided = result.weights.filter(pl.col("target_weight") != 0.0).height > 0
    if n_bars <= warm:
        out.append(
            f"warm-up longer than the data: {key} needs {warm} bars before the first decision, "
            f"the data has {n_bars}; every metric is zero"
        )
    elif not decided:
        k_min = cfg["strategy"]["k_min"]
        need = 2 * k_min if cfg["strategy"]["market_neutral"] else k_min
        why = (
            f"strategy.k_min {k_min} needs at least {need} symbols, the data has {len(result.symbols)}"
            if len(result.symbols) < need
            else "no bar passed the filters (see strategy.regime_filter and universe)"
        )
        out.append(f"no decision bar: the strategy never took a position ({why}); every metric is zero")
    invested = eq.filter(pl.col("gross") > 0.0)
    if decided and invested.height:
        sz = cfg["sizing"]
        target = (pl.col("vol_scale") * sz["gross_leverage"]).clip(upper_bound=sz["max_gross_leverage"])
        below = invested.filter(pl.col("gross") < 0.9 * target)
        share = below.height / invested.height
        if share > 0.5:
            caps = below.filter(
                (pl.col("n_long") + pl.col("n_short")) * sz["max_weight_per_asset"] < 0.9 * target
            ).height
            cause = (
                f"the caps bind (sizing.max_weight_per_asset {sz['max_weight_per_asset']:g} × the positions "
                f"held, on {caps / below.height:.0%} of them)"
                if caps / below.height > 0.5
                else "caps or the universe limit it"
            )
            out.append(
                f"gross exposure below sizing.gross_leverage {sz['gross_leverage']:g} (× vol scale) on "
                f"{share:.0%} of invested bars (median gross {invested['gross'].median():.2f}): {cause}"
            )
    return out


def sweep(
    bars: BarsLike,
    config: Config | None,
    overrides_list: list[dict[str, Any]],
    n_jobs: int | None = None,
    funding: pl.DataFrame | str | Path | None = None,
    executor: Executor | None = None,
) -> list[dict[str, float]]:
    """Metrics for each override set, computed in parallel in Rust (GIL released). Data is loaded once.

    With ``executor`` (any ``concurrent.futures.Executor``, e.g. ``xsmom.parallel.dask_executor(addr)``)
    the list is cut into chunks that run as tasks on its workers (bars shipped as a polars DataFrame,
    ``n_jobs`` threads per task); the results are the same, in the same order.
    """
    if executor is not None:
        from xsmom.parallel import sweep_on_executor

        return sweep_on_executor(
            executor, bars, _config(config), overrides_list, funding=funding, n_jobs=n_jobs
        )
    import json

    sets = [[(str(k), json.dumps(v)) for k, v in overrides.items()] for overrides in overrides_list]
    results = _core.sweep(
        _bars_arg(bars), _config(config), sets, _bars_arg(funding) if funding is not None else None, n_jobs
    )
    return [dict(r) for r in results]


def signals(bars: BarsLike, config: Config | None = None) -> pl.DataFrame:
    """Per bar and symbol: ``ts, symbol, momentum, z, signal, eligible`` as the engine saw them."""
    return _frame(_core.signals(_bars_arg(bars), _config(config)))
