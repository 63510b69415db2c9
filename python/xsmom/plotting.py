"""Figures for results: equity, drawdown, exposure, rolling Sharpe, monthly returns, weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from matplotlib.axes import Axes
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from xsmom.api import BacktestResult


def _drawdown(equity: pl.Series) -> pl.Series:
    return equity / equity.cum_max() - 1.0


def _weights_matrix(result: BacktestResult, max_symbols: int = 40) -> tuple[np.ndarray, list[str]]:
    wide = (
        result.weights.pivot(on="symbol", index="ts", values="weight", aggregate_function="first")
        .sort("ts")
        .fill_null(0.0)
    )
    symbols = [c for c in wide.columns if c != "ts"]
    activity = {s: float(wide[s].abs().sum()) for s in symbols}
    symbols = sorted(symbols, key=lambda s: -activity[s])[:max_symbols]
    return wide.select(symbols).to_numpy().T, symbols


def plot_result(result: BacktestResult) -> Figure:
    """Equity, drawdown, gross/net exposure and a weights heatmap."""
    fig, axes = plt.subplots(4, 1, figsize=(11, 11), sharex=False, height_ratios=[3, 1.5, 1.5, 3])
    _equity_drawdown_exposure(axes[:3], result.equity)
    _weights_heatmap(axes[3], result)
    fig.tight_layout()
    return fig


def _equity_drawdown_exposure(axes: Sequence[Axes], eq: pl.DataFrame) -> None:
    ts = eq["ts"].to_list()
    axes[0].plot(ts, eq["equity"].to_list(), color="tab:blue", lw=1.2)
    axes[0].set_title("Equity (USD)")
    axes[1].fill_between(ts, _drawdown(eq["equity"]).to_list(), 0.0, color="tab:red", alpha=0.4)
    axes[1].set_title("Drawdown")
    axes[2].plot(ts, eq["gross"].to_list(), label="gross", lw=0.8)
    axes[2].plot(ts, eq["net"].to_list(), label="net", lw=0.8)
    axes[2].legend(loc="upper right")
    axes[2].set_title("Gross / net exposure (fraction of equity)")


def _weights_heatmap(ax: Axes, result: BacktestResult) -> None:
    matrix, symbols = _weights_matrix(result)
    limit = float(np.abs(matrix).max()) if matrix.size else 1.0
    ax.imshow(matrix, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    ax.set_yticks(range(len(symbols)), symbols, fontsize=6)
    ax.set_title("Weights per symbol over time (red long, blue short)")


def plot_tearsheet(result: BacktestResult, bars_per_year: float = 8760.0) -> Figure:
    """The report's tearsheet: equity, drawdown, exposure, rolling Sharpe, monthly returns, weights."""
    eq = result.equity.with_columns(ret=pl.col("equity").pct_change().fill_null(0.0))
    ts = eq["ts"].to_list()
    fig = plt.figure(figsize=(12, 15))
    grid = fig.add_gridspec(6, 1, height_ratios=[3, 1.4, 1.4, 1.4, 2.2, 3])
    ax = [fig.add_subplot(grid[i]) for i in range(6)]
    _equity_drawdown_exposure(ax[:3], eq)
    window = max(int(bars_per_year / 365 * 30), 10)
    rolling = eq.select(
        (
            pl.col("ret").rolling_mean(window) / pl.col("ret").rolling_std(window) * np.sqrt(bars_per_year)
        ).alias("sharpe")
    )["sharpe"]
    ax[3].plot(ts, rolling.to_list(), lw=0.8, color="tab:purple")
    ax[3].axhline(0.0, color="grey", lw=0.5)
    ax[3].set_title(f"Rolling Sharpe ({window} bars)")
    # Each month against the previous month's last equity; the first month against the start.
    monthly = (
        eq.group_by_dynamic("ts", every="1mo")
        .agg(pl.col("equity").last())
        .with_columns(ret=pl.col("equity") / pl.col("equity").shift(1, fill_value=eq["equity"][0]) - 1.0)
        .with_columns(year=pl.col("ts").dt.year(), month=pl.col("ts").dt.month())
    )
    years = sorted(set(monthly["year"].to_list()))
    table = np.full((len(years), 12), np.nan)
    for year, month, ret in zip(monthly["year"], monthly["month"], monthly["ret"], strict=True):
        table[years.index(year), month - 1] = ret
    limit = float(np.nanmax(np.abs(table))) if np.isfinite(table).any() else 1.0
    ax[4].imshow(table, aspect="auto", cmap="RdYlGn", vmin=-limit, vmax=limit)
    ax[4].set_xticks(range(12), ["J", "F", "M", "A", "M", "J", "J", "A", "S", "O", "N", "D"])
    ax[4].set_yticks(range(len(years)), [str(y) for y in years])
    for (row, col), value in np.ndenumerate(table):
        if np.isfinite(value):
            ax[4].text(col, row, f"{value:.1%}", ha="center", va="center", fontsize=7)
    ax[4].set_title("Monthly returns")
    _weights_heatmap(ax[5], result)
    fig.tight_layout()
    return fig
