"""Paper trading's stops against the backtest's, on the bundled fixture's 5m bars.

``python -m xsmom.bench_paper [--bars data] [--config F]``

The backtest exits a stop inside the bar at its level (at the open on a gap). ``xsmom-live`` in
``paper`` (and on Bybit) watches the stops in its risk loop on closed ``live.stop_timeframe`` bars and
exits with a reduce-only market order at the last trade. For every stop exit of the backtest on a
symbol with 5m bars, this finds the first 5m bar of that hour that hits the same level and prices the
paper exit at that 5m bar's close (plus the same slippage), then reports the difference per exit and
its effect on equity. Results are recorded in docs/decisions.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import polars as pl

import xsmom
from xsmom._core import BPS

STOP_REASONS = ("stop", "trail", "breakeven")
HOUR_MS = 3_600_000


def measure(bars: str | Path, cfg: xsmom.Config) -> dict[str, float]:
    fine = xsmom.read_bars(bars, timeframe="5m")
    symbols = fine["symbol"].unique().to_list()
    start, end = fine["ts"].min(), fine["ts"].max()
    result = xsmom.backtest(bars, cfg)
    slippage = cfg.to_dict()["costs"]["slippage_bps"] / BPS
    exits = result.fills.filter(
        pl.col("reason").is_in(STOP_REASONS)
        & pl.col("symbol").is_in(symbols)
        & pl.col("ts").is_between(start, end)
    )
    rows = []
    for fill in exits.iter_rows(named=True):
        # The position's side is the opposite of the exit's; the level is the price before slippage.
        exit_sign = 1.0 if fill["side"] == "buy" else -1.0
        position = -exit_sign
        base = fill["price"] / (1.0 + exit_sign * slippage)
        hour = fine.filter(
            (pl.col("symbol") == fill["symbol"])
            & (pl.col("ts") >= fill["ts"])
            & (pl.col("ts") < fill["ts"] + pl.duration(milliseconds=HOUR_MS))
        ).sort("ts")
        for bar in hour.iter_rows(named=True):
            adverse = bar["low"] if position > 0 else bar["high"]
            if position * (base - bar["open"]) >= 0 or position * (base - adverse) >= 0:
                paper = bar["close"] * (1.0 + exit_sign * slippage)
                # Positive = paper sold lower / bought higher than the backtest: a cost.
                cost_bps = exit_sign * (paper - fill["price"]) / fill["price"] * BPS
                row = {"qty": fill["qty"], "price": fill["price"], "paper": paper, "cost_bps": cost_bps}
                rows.append(row)
                break
    table = pl.DataFrame(rows)
    equity = result.equity["equity"]
    cost = (table["qty"] * (table["paper"] - table["price"]).abs() * table["cost_bps"].sign()).sum()
    return {
        "stop_exits": float(len(exits)),
        "matched_on_5m": float(table.height),
        "mean_cost_bps": float(table["cost_bps"].mean()),
        "median_cost_bps": float(table["cost_bps"].median()),
        "p90_cost_bps": float(table["cost_bps"].quantile(0.9)),
        "worse_than_backtest_share": float((table["cost_bps"] > 0).mean()),
        "total_cost_usd": float(cost),
        "total_cost_pct_of_mean_equity": float(cost / equity.mean() * 100),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xsmom.bench_paper", description=__doc__.splitlines()[0])
    parser.add_argument("--bars", default="data")
    parser.add_argument("--config")
    args = parser.parse_args(argv)
    cfg = xsmom.Config.load(args.config) if args.config else xsmom.Config.default()
    print(json.dumps(measure(args.bars, cfg), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
