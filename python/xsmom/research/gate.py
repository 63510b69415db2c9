"""The deployment gate (research.md §5): PSR of the stitched OOS, DSR of the procedure, the paired
bootstrap of the Sharpe difference and cost fragility."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from xsmom import _core
from xsmom.config import Config, override_pairs
from xsmom.research.evaluate import Evaluator
from xsmom.research.results import SegmentResult
from xsmom.research.settings import Gate, ResearchError
from xsmom.research.stitch import stitched_metrics

VERDICTS = ("deploy", "keep", "stand aside")


RELATIVE_CHECKS = ("p_delta_sharpe", "delta_max_drawdown")


def deployment_gate(
    candidate: dict[str, float],
    baseline: dict[str, float],
    mc_summary: dict[str, Any],
    paired: dict[str, Any],
    fragility: float,
    gate: Gate | None = None,
    dsr_procedure: float | None = None,
) -> dict[str, Any]:
    """The verdict of research.md §5 with every check (value, threshold, kind, passed).

    ``candidate`` and ``baseline`` are stitched OOS metrics on the same windows (``psr``,
    ``max_drawdown``, ``n_bars``, ``round_trips``); ``mc_summary`` the candidate's bootstrap summary
    (``max_drawdown.p99``); ``paired`` the paired bootstrap (``p_delta_sharpe``); ``fragility`` the
    std of the OOS Sharpe under cost jitter. ``dsr_procedure`` (default: the candidate's PSR) is the
    skill statistic deflated by ``pipeline_trials``. A NaN value fails its check.

    Verdicts: ``deploy`` when every check passes; otherwise ``keep`` when the baseline has skill
    (its own PSR ≥ ``min_psr``), else ``stand aside`` (nothing on the table has skill and passes).
    """
    g = gate or Gate()
    skill = candidate["psr"] if dsr_procedure is None else dsr_procedure
    checks = _checks(candidate, baseline, mc_summary, paired, fragility, g, skill)
    failed = [c["name"] for c in checks if not c["passed"]]
    base_psr = float(baseline["psr"])
    verdict, reason = _verdict(failed, skill, base_psr, paired["p_delta_sharpe"], g)
    return {
        "verdict": verdict,
        "passed": verdict == "deploy",
        "reason": reason,
        "baseline_psr": base_psr,
        "checks": checks,
    }


def _check(name: str, kind: str, value: float, threshold: float, ok: bool) -> dict[str, Any]:
    value = float(value)
    return {
        "name": name,
        "kind": kind,
        "value": value,
        "threshold": threshold,
        "passed": bool(ok and not math.isnan(value)),
    }


def _checks(
    candidate: dict[str, float],
    baseline: dict[str, float],
    mc_summary: dict[str, Any],
    paired: dict[str, Any],
    fragility: float,
    g: Gate,
    skill: float,
) -> list[dict[str, Any]]:
    """Every check of the gate, in the order of research.md §5."""
    d_dd = candidate["max_drawdown"] - baseline["max_drawdown"]
    tail = mc_summary["max_drawdown"]["p99"]
    p_up = paired["p_delta_sharpe"]
    return [
        _check("psr_oos", "skill", skill, g.min_psr, skill >= g.min_psr),
        _check("p_delta_sharpe", "relative", p_up, g.min_p_delta_sharpe, p_up >= g.min_p_delta_sharpe),
        _check("delta_max_drawdown", "relative", d_dd, g.max_delta_drawdown, d_dd <= g.max_delta_drawdown),
        _check("mc_p99_max_drawdown", "absolute", tail, g.tail_dd_limit, tail <= g.tail_dd_limit),
        _check("fragility", "absolute", fragility, g.max_fragility, fragility <= g.max_fragility),
        _check(
            "oos_bars", "absolute", candidate["n_bars"], g.oos_min_bars, candidate["n_bars"] >= g.oos_min_bars
        ),
        _check(
            "oos_trades",
            "absolute",
            candidate["round_trips"],
            g.oos_min_trades,
            candidate["round_trips"] >= g.oos_min_trades,
        ),
    ]


def _verdict(failed: list[str], skill: float, base_psr: float, p_up: float, g: Gate) -> tuple[str, str]:
    """deploy | keep | stand aside, and why."""
    if not failed:
        reason = (
            f"the candidate has skill (PSR {skill:.3f} ≥ {g.min_psr:g}) and passes every check, "
            f"P(Δsharpe > 0) = {p_up:.2f}"
        )
        return "deploy", reason
    if base_psr >= g.min_psr:
        reason = (
            f"the candidate fails {', '.join(failed)} while the live config has skill "
            f"(PSR {base_psr:.3f} ≥ {g.min_psr:g}): keep it"
        )
        return "keep", reason
    if skill < g.min_psr or math.isnan(skill):
        why = f"neither the candidate (PSR {skill:.3f}) nor the live config (PSR {base_psr:.3f})"
        return "stand aside", f"{why} has skill (PSR < {g.min_psr:g}): the strategy should not trade"
    reason = (
        f"the candidate fails {', '.join(failed)} and the live config has no skill "
        f"(PSR {base_psr:.3f} < {g.min_psr:g}): the strategy should not trade"
    )
    return "stand aside", reason


def paired_bootstrap(
    candidate: Sequence[float],
    baseline: Sequence[float],
    bars_per_year: float,
    n_paths: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Paired stationary bootstrap of candidate − baseline on the same OOS bars (research.md §3).

    Both series are resampled by ``_core.mc_bootstrap`` with the same seed, the same mean block
    length (Politis–White of the per-bar difference) and the same length: the Rust stationary
    bootstrap draws its block starts and restarts from the seeded path generator only, never from
    the values, so path p of both runs uses the same resampled indices. Returns quantiles of
    Δsharpe and Δcagr and ``p_delta_sharpe`` = P(Δsharpe > 0).
    """
    if len(candidate) != len(baseline):
        raise ResearchError(
            f"paired bootstrap: candidate has {len(candidate)} returns, baseline {len(baseline)}"
        )
    diff = [c - b for c, b in zip(candidate, baseline, strict=True)]
    block = _core.block_length(diff) if len(diff) >= 8 else 1.0
    block = block if math.isfinite(block) and block >= 1.0 else 1.0
    runs = [
        _core.mc_bootstrap(list(series), n_paths, seed, block, bars_per_year, False)["paths"]
        for series in (candidate, baseline)
    ]
    out: dict[str, Any] = {"block": block, "n_paths": n_paths}
    for stat in ("sharpe", "cagr"):
        deltas = sorted(c - b for c, b in zip(runs[0][stat], runs[1][stat], strict=True))
        finite = [d for d in deltas if math.isfinite(d)]
        out[f"delta_{stat}"] = {
            q: _quantile(finite, level) for q, level in (("p5", 0.05), ("p50", 0.5), ("p95", 0.95))
        }
        if stat == "sharpe":
            out["p_delta_sharpe"] = sum(d > 0 for d in finite) / len(deltas) if deltas else math.nan
    return out


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def cost_fragility(
    evaluate: Evaluator,
    segments: Sequence[dict[str, int]],
    seg_results: Sequence[SegmentResult],
    bpy: float,
    gate: Gate,
    seed: int,
) -> dict[str, Any]:
    """Std of the stitched OOS Sharpe over ``gate.fragility_runs`` re-runs with every fee and the
    slippage multiplied by a seeded uniform factor in [1 − jitter, 1 + jitter] (research.md §3)."""
    import random

    rng = random.Random(seed)
    costs = Config(evaluate.config_yaml).to_dict()["costs"]
    keys = ("maker_fee_bps", "taker_fee_bps", "slippage_bps")
    jitter = gate.fragility_jitter
    factors = [{k: 1.0 + rng.uniform(-jitter, jitter) for k in keys} for _ in range(gate.fragility_runs)]
    jobs = []
    for f in factors:
        extra = {f"costs.{k}": costs[k] * f[k] for k in keys}
        for seg, res in zip(segments, seg_results, strict=True):
            jobs.append((override_pairs({**res.params, **extra}), seg["oos_start"], seg["oos_end"]))
    results = evaluate(jobs, series=True)
    n_seg = len(segments)
    sharpes = []
    for r in range(len(factors)):
        parts = results[r * n_seg : (r + 1) * n_seg]
        if any("returns" not in p for p in parts):
            sharpes.append(math.nan)
            continue
        sharpes.append(stitched_metrics(parts, bpy)["sharpe"])
    finite = [s for s in sharpes if math.isfinite(s)]
    std = math.sqrt(sample_variance(finite)) if len(finite) == len(sharpes) else math.nan
    return {"std": std, "sharpes": sharpes, "runs": len(factors), "jitter": jitter}


def sample_variance(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / (len(values) - 1)
