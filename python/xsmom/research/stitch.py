"""The stitched out-of-sample result: metrics over the OOS windows, Monte Carlo and cost stress."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from xsmom import _core
from xsmom.config import Config, override_pairs
from xsmom.research.evaluate import Evaluator
from xsmom.research.results import SegmentResult
from xsmom.research.settings import COST_MULTIPLIERS


def stitched_metrics(parts: Sequence[dict[str, Any]], bars_per_year: float) -> dict[str, float]:
    """Metrics of OOS windows chained end to end (each window restarts at the initial capital,
    so its per-bar returns compound onto the previous window's end)."""
    returns = [r for part in parts for r in part["returns"]]
    stats = dict(_core.path_stats(returns, bars_per_year)) if len(returns) >= 2 else {}
    n = len(returns)
    weighted = sum(
        p["metrics"]["turnover_per_year"] * len(p["returns"])
        for p in parts
        if _finite(p, "turnover_per_year")
    )
    return {
        "total_return": stats.get("total_return", math.nan),
        "cagr": stats.get("cagr", math.nan),
        "sharpe": stats.get("sharpe", math.nan),
        "max_drawdown": stats.get("max_drawdown", math.nan),
        "time_under_water": stats.get("time_under_water", math.nan),
        "psr": _core.psr(returns) if n >= 3 else math.nan,
        "turnover_per_year": weighted / n if n else math.nan,
        "round_trips": float(sum(p["metrics"]["round_trips"] for p in parts)),
        "fees": float(sum(p["metrics"]["fees"] for p in parts)),
        "n_bars": float(n),
    }


def _finite(part: dict[str, Any], key: str) -> bool:
    value = part["metrics"][key]
    return isinstance(value, float) and math.isfinite(value)


def summarise_mc(mc: dict[str, Any]) -> dict[str, Any]:
    """The Monte Carlo part of candidate.json: summaries and the block length, no paths."""
    out: dict[str, Any] = {
        "bootstrap": {"block": mc["bootstrap"]["block"], "summary": mc["bootstrap"]["summary"]}
    }
    if "reshuffle" in mc:
        out["reshuffle"] = mc["reshuffle"]
    return out


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def monte_carlo(
    returns: Sequence[float],
    trade_returns: Sequence[float],
    bars_per_year: float,
    n_paths: int = 1000,
    seed: int = 0,
    block: float | None = None,
    fan: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict[str, Any]:
    """Stationary bootstrap of bar returns and reshuffle of round-trip returns (in Rust).
    ``progress(done, total, note)`` is called as paths finish (both parts count towards total)."""
    years = len(returns) / bars_per_year
    reshuffle = len(trade_returns) >= 2 and years > 0
    total = n_paths * (2 if reshuffle else 1)

    def report(offset: int, note: str) -> Callable[[int, int], None] | None:
        if progress is None:
            return None
        return lambda done, _n: progress(offset + done, total, note)

    boot = dict(
        _core.mc_bootstrap(
            list(returns),
            n_paths,
            seed,
            block,
            bars_per_year,
            fan,
            report(0, "Monte Carlo, bootstrap of bar returns"),
        )
    )
    out: dict[str, Any] = {"bootstrap": boot}
    if reshuffle:
        trades_per_year = len(trade_returns) / years
        shuffled = _core.mc_reshuffle(
            list(trade_returns),
            n_paths,
            seed,
            trades_per_year,
            report(n_paths, "Monte Carlo, reshuffle of round trips"),
        )
        out["reshuffle"] = {"summary": dict(shuffled["summary"]), "n_trades": len(trade_returns)}
    return out


def cost_stress(
    evaluate: Evaluator, segments: Sequence[dict[str, int]], seg_results: Sequence[SegmentResult], bpy: float
) -> dict[str, dict[str, float]]:
    """Re-run every OOS window with fees and slippage × 1.5, 2, 3 and with fills at the next open."""
    costs = Config(evaluate.config_yaml).to_dict()["costs"]
    scenarios: dict[str, dict[str, Any]] = {}
    for m in COST_MULTIPLIERS:
        scenarios[f"costs_x{m:g}"] = {
            f"costs.{k}": costs[k] * m for k in ("maker_fee_bps", "taker_fee_bps", "slippage_bps")
        }
    scenarios["fill_next_open"] = {"backtest.fill": "next_open"}
    jobs, keys = [], []
    for name, extra in scenarios.items():
        for seg, res in zip(segments, seg_results, strict=True):
            jobs.append((override_pairs({**res.params, **extra}), seg["oos_start"], seg["oos_end"]))
            keys.append(name)
    results = evaluate(jobs, series=True)
    out = {}
    for name in scenarios:
        parts = [r for k, r in zip(keys, results, strict=True) if k == name and "returns" in r]
        out[name] = stitched_metrics(parts, bpy) if len(parts) == len(segments) else {"error": math.nan}
    return out
