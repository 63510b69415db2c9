"""Figures for results. Every panel is drawn by one function on a given Axes, so that the notebook
figure, the tearsheet PNG and the report's per-section images are the same drawings.

Time axes show UTC dates; drawdowns and returns are in %; exposure in × equity; colours are neutral
(a diverging map centred on zero, so zero is white, never a saturated colour).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from matplotlib.axes import Axes
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from xsmom.api import BacktestResult

STRATEGY, UNIVERSE, BTC = "#1f4e79", "#8c8c8c", "#d08c2a"
DIVERGING = "RdBu"  # red for negative, blue for positive, white at zero
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def _dates(ax: Axes) -> None:
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlabel("date (UTC)", fontsize=8)
    ax.grid(alpha=0.25, lw=0.5)


def _traded(result: BacktestResult) -> bool:
    return result.fills.height > 0


def _no_trades(ax: Axes) -> None:
    ax.text(0.5, 0.5, "no trades", transform=ax.transAxes, ha="center", va="center", color="0.4")


def drawdown_pct(equity: pl.Series) -> pl.Series:
    return (equity / equity.cum_max() - 1.0) * 100.0


def equity_panel(ax: Axes, result: BacktestResult, bench: pl.DataFrame | None = None) -> None:
    eq = result.equity
    ax.plot(eq["ts"].to_list(), eq["equity"].to_list(), color=STRATEGY, lw=1.2, label="strategy")
    if bench is not None:
        ax.plot(
            bench["ts"].to_list(),
            bench["universe"].to_list(),
            color=UNIVERSE,
            lw=0.9,
            label="equal-weight universe (buy and hold)",
        )
        if "btc" in bench.columns:
            ax.plot(
                bench["ts"].to_list(), bench["btc"].to_list(), color=BTC, lw=0.9, label="BTC (buy and hold)"
            )
    ax.legend(loc="upper left", fontsize=8)
    ax.set_ylabel("equity (USD)")
    ax.set_title("Equity")
    if not _traded(result):
        _no_trades(ax)
    _dates(ax)


def drawdown_panel(ax: Axes, result: BacktestResult, periods: pl.DataFrame | None = None) -> None:
    eq = result.equity
    ax.fill_between(eq["ts"].to_list(), drawdown_pct(eq["equity"]).to_list(), 0.0, color="#9e9e9e", lw=0)
    if periods is not None:
        end = eq["ts"][-1]
        for peak, recovery in zip(periods["peak"], periods["recovery"], strict=True):
            ax.axvspan(peak, recovery if recovery is not None else end, color="#c0504d", alpha=0.08)
    ax.set_ylabel("drawdown (%)")
    ax.set_title("Drawdown from the running peak (5 deepest shaded)")
    _dates(ax)


def exposure_panel(ax: Axes, result: BacktestResult) -> None:
    eq = result.equity
    ts = eq["ts"].to_list()
    ax.plot(ts, eq["gross"].to_list(), color=STRATEGY, lw=0.8, label="gross")
    ax.plot(ts, eq["net"].to_list(), color=BTC, lw=0.8, label="net")
    ax.axhline(0.0, color="0.5", lw=0.5)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_ylabel("× equity")
    ax.set_title("Gross and net exposure")
    _dates(ax)


def rolling_sharpe_panel(ax: Axes, result: BacktestResult, bars_per_year: float, days: int = 30) -> None:
    window = max(int(round(bars_per_year / 365 * days)), 2)
    eq = result.equity.with_columns(ret=pl.col("equity").pct_change().fill_null(0.0))
    rolling = eq.select(
        pl.col("ret").rolling_mean(window) / pl.col("ret").rolling_std(window) * np.sqrt(bars_per_year)
    ).to_series()
    ax.plot(eq["ts"].to_list(), rolling.to_list(), lw=0.8, color=STRATEGY)
    ax.axhline(0.0, color="0.5", lw=0.5)
    ax.set_ylabel("Sharpe (ann.)")
    ax.set_title(f"Rolling Sharpe, {days} days ({window} bars)")
    _dates(ax)


def rolling_beta_panel(ax: Axes, bench: pl.DataFrame | None, bars_per_year: float, days: int = 30) -> None:
    """Rolling beta of the strategy's bar returns to each buy-and-hold benchmark."""
    ax.axhline(0.0, color="0.5", lw=0.5)
    ax.set_ylabel("beta")
    window = max(int(round(bars_per_year / 365 * days)), 3)
    ax.set_title(f"Rolling beta to the benchmarks, {days} days")
    if bench is None:
        ax.text(0.5, 0.5, "no benchmark", transform=ax.transAxes, ha="center", va="center", color="0.4")
        _dates(ax)
        return
    rets = bench.select("ts", pl.exclude("ts").pct_change())
    for name, color, label in (("universe", UNIVERSE, "equal-weight universe"), ("btc", BTC, "BTC")):
        if name in rets.columns:
            beta = rets.select(
                pl.rolling_cov("strategy", name, window_size=window) / pl.col(name).rolling_var(window)
            ).to_series()
            ax.plot(rets["ts"].to_list(), beta.to_list(), color=color, lw=0.8, label=label)
    ax.legend(loc="upper right", fontsize=8)
    _dates(ax)


def monthly_returns(result: BacktestResult) -> pl.DataFrame:
    """``year, month, return_pct``: each calendar month (UTC) against the previous month's last equity."""
    eq = result.equity
    if eq.height == 0:
        return pl.DataFrame(schema={"year": pl.Int32, "month": pl.Int8, "return_pct": pl.Float64})
    return (
        eq.group_by_dynamic("ts", every="1mo")
        .agg(pl.col("equity").last())
        .with_columns(
            return_pct=(pl.col("equity") / pl.col("equity").shift(1, fill_value=eq["equity"][0]) - 1.0)
            * 100.0
        )
        .select(year=pl.col("ts").dt.year(), month=pl.col("ts").dt.month(), return_pct="return_pct")
    )


def monthly_panel(ax: Axes, result: BacktestResult) -> None:
    monthly = monthly_returns(result)
    years = sorted(set(monthly["year"].to_list()))
    months = sorted(set(monthly["month"].to_list())) if len(years) == 1 else list(range(1, 13))
    table = np.full((len(years), len(months)), np.nan)
    for year, month, value in monthly.iter_rows():
        table[years.index(year), months.index(month)] = value
    # At least ±10 % for full colour, so that a quiet month stays pale and a no-trade month white.
    limit = max(float(np.nanmax(np.abs(table))) if np.isfinite(table).any() else 0.0, 10.0)
    ax.imshow(table, aspect="auto", cmap=DIVERGING, norm=TwoSlopeNorm(0.0, -limit, limit))
    ax.set_xticks(range(len(months)), [MONTHS[m - 1] for m in months])
    ax.set_yticks(range(len(years)), [str(y) for y in years])
    for (row, col), value in np.ndenumerate(table):
        if np.isfinite(value):
            ax.text(col, row, f"{value:+.1f} %", ha="center", va="center", fontsize=8)
    ax.set_title("Monthly returns (%, UTC months)")


def weights_panel(ax: Axes, result: BacktestResult, max_symbols: int = 40) -> None:
    wide = (
        result.weights.pivot(on="symbol", index="ts", values="weight", aggregate_function="first")
        .sort("ts")
        .fill_null(0.0)
    )
    symbols = [c for c in wide.columns if c != "ts"]
    activity = {s: float(wide[s].abs().sum()) for s in symbols}
    symbols = sorted(symbols, key=lambda s: (-activity[s], s))[:max_symbols]
    matrix = wide.select(symbols).to_numpy().T * 100.0 if symbols else np.zeros((0, 0))
    limit = float(np.abs(matrix).max()) if matrix.size else 0.0
    limit = limit if limit > 0 else 1.0
    if wide.height:
        x0, x1 = mdates.date2num(wide["ts"][0]), mdates.date2num(wide["ts"][-1])
        image = ax.imshow(
            matrix,
            aspect="auto",
            cmap=DIVERGING,
            norm=TwoSlopeNorm(0.0, -limit, limit),
            interpolation="nearest",
            extent=(x0, x1, len(symbols) - 0.5, -0.5),
        )
        ax.figure.colorbar(image, ax=ax, label="weight (% of equity)", pad=0.01)
        ax.xaxis_date()
    ax.set_yticks(range(len(symbols)), symbols, fontsize=6)
    ax.set_title("Weight per symbol (blue long, red short)")
    if not _traded(result):
        _no_trades(ax)
    _dates(ax)
    ax.grid(False)


Panel = Callable[[Axes], None]


def panels(
    result: BacktestResult,
    bars_per_year: float,
    bench: pl.DataFrame | None = None,
    periods: pl.DataFrame | None = None,
) -> dict[str, tuple[Panel, float]]:
    """The tearsheet's panels in order: name → (draw on an Axes, relative height)."""
    return {
        "equity": (lambda ax: equity_panel(ax, result, bench), 3.0),
        "drawdown": (lambda ax: drawdown_panel(ax, result, periods), 1.6),
        "exposure": (lambda ax: exposure_panel(ax, result), 1.4),
        "rolling_sharpe": (lambda ax: rolling_sharpe_panel(ax, result, bars_per_year), 1.4),
        "rolling_beta": (lambda ax: rolling_beta_panel(ax, bench, bars_per_year), 1.4),
        "monthly": (lambda ax: monthly_panel(ax, result), 1.4),
        "weights": (lambda ax: weights_panel(ax, result), 3.0),
    }


def single(panel: Panel, height: float) -> Figure:
    """One panel as its own figure (the report's section images)."""
    fig, ax = plt.subplots(figsize=(11, 1.2 + 1.3 * height))
    panel(ax)
    fig.tight_layout()
    return fig


def plot_result(result: BacktestResult) -> Figure:
    """Equity, drawdown, gross/net exposure and a weights heatmap (a notebook's first look)."""
    chosen = panels(result, result.bars_per_year)
    parts = [chosen[name] for name in ("equity", "drawdown", "exposure", "weights")]
    return _stack(parts, width=11)


def plot_tearsheet(
    result: BacktestResult,
    bars_per_year: float,
    bench: pl.DataFrame | None = None,
    periods: pl.DataFrame | None = None,
) -> Figure:
    """Every panel in one figure: the same drawings as the report's sections."""
    return _stack(list(panels(result, bars_per_year, bench, periods).values()), width=12)


def _stack(parts: list[tuple[Panel, float]], width: float) -> Figure:
    heights = [h for _, h in parts]
    fig = plt.figure(figsize=(width, 1.3 * sum(heights) + 1.0))
    grid = fig.add_gridspec(len(parts), 1, height_ratios=heights)
    for i, (draw, _) in enumerate(parts):
        draw(fig.add_subplot(grid[i]))
    fig.tight_layout()
    return fig
