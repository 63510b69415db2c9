"""Walk-forward study of fixed configurations (issue 13: notebooks/03_findings.ipynb, docs/findings.md).

No optimisation: each configuration is a fixed set of overrides of the base config, evaluated warm on
every OOS window of the research module's walk-forward layout, exactly as ``optimize`` judges a
segment's choice. Per configuration: stitched OOS metrics (``stitched_metrics``), PSR, the DSR of
trying all of them on this data (``pipeline_trials`` = number of configurations), fragility under ±1 %
cost jitter (``cost_fragility``), the stationary bootstrap (``monte_carlo``), the paired bootstrap
against the base config on the same bars and the gate verdict (``deployment_gate``). Every backtest
and statistic runs in the Rust core; this module only lays out the jobs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import polars as pl

from xsmom import _core
from xsmom.config import Config, override_pairs
from xsmom.research import (
    Evaluator,
    Gate,
    ResearchError,
    WalkForward,
    cost_fragility,
    deployment_gate,
    monte_carlo,
    paired_bootstrap,
    sample_variance,
    stitched_metrics,
)

#: The configurations of the findings study (issue 13), as overrides of the default config.
FINDINGS_CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "daily rebalance": {"backtest.rebalance_every": 24},
    "bands on": {"strategy.bands.enabled": True},
    "longer lookbacks": {"strategy.lookbacks": [48, 96, 192, 384]},
    # corr_threshold 1.0 is never reached by an average correlation of real returns, so the router
    # wants TSMOM on every bar and switches to it after confirm_bars = 1 bar (it starts in XSMOM).
    "tsmom": {
        "strategy.router.enabled": True,
        "strategy.router.corr_threshold": 1.0,
        "strategy.router.confirm_bars": 1,
    },
    "carry sleeve": {"strategy.carry.enabled": True},
}

#: The walk-forward of the gate calibration (docs/research.md): the bundled 153 days allow only one
#: segment with the default 120 / 30 / 2 days; 40 / 15 / 1 gives 7 OOS windows (105 days).
FINDINGS_WFO = WalkForward(train_days=40.0, oos_days=15.0, embargo_days=1.0)

COLUMNS = (
    "config",
    "sharpe",
    "cagr",
    "max_drawdown",
    "round_trips",
    "turnover_per_year",
    "n_bars",
    "psr",
    "dsr",
    "p_delta_sharpe",
    "fragility",
    "mc_p99_max_drawdown",
    "verdict",
    "failed",
    "reason",
)


def study_fixed_configs(
    bars: Any,
    configs: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    base: Config | None = None,
    funding: Any = None,
    wfo: WalkForward | None = None,
    gate: Gate | None = None,
    seed: int = 0,
    mc_paths: int = 1000,
    n_jobs: int | None = None,
) -> pl.DataFrame:
    """One row per configuration (``COLUMNS``), judged against ``base`` (default config) on the
    same stitched OOS bars. ``configs`` maps a name to overrides of ``base`` (default
    ``FINDINGS_CONFIGS``); ``{}`` is the base config itself (its verdict compares it with itself).
    The DSR deflates each PSR by the number of configurations and the variance of their OOS Sharpes
    (research.md §3: every configuration is a pipeline variant tried on this data); the gate's
    ``psr_oos`` check uses it."""
    configs = dict(FINDINGS_CONFIGS if configs is None else configs)
    if not configs:
        raise ResearchError("study_fixed_configs needs at least one configuration")
    base = base or Config.default()
    wfo = wfo or FINDINGS_WFO
    gate = gate or Gate()
    for name, overrides in configs.items():
        try:
            base.with_overrides(dict(overrides))
        except ValueError as err:
            raise ResearchError(f"configuration {name!r}: {' '.join(str(err).split())}") from None
    evaluate = Evaluator(bars, base, funding=funding, n_jobs=n_jobs)
    segments = _segments(evaluate.panel, base, configs, wfo)
    bpy = evaluate.panel.bars_per_year
    parts = _oos_parts(evaluate, configs, segments)
    baseline = stitched_metrics(parts[0], bpy)
    base_returns = [x for p in parts[0] for x in p["returns"]]
    stitched = [stitched_metrics(p, bpy) for p in parts[1:]]
    sharpes = [m["sharpe"] for m in stitched if math.isfinite(m["sharpe"])]
    per_bar_var = sample_variance(sharpes) / bpy  # annualised → per-bar Sharpe variance
    judge = _Judge(
        evaluate, base, segments, bpy, gate, seed, mc_paths, baseline, base_returns, len(configs), per_bar_var
    )
    rows = [
        judge.row(name, overrides, part, metrics)
        for name, overrides, part, metrics in zip(configs, configs.values(), parts[1:], stitched, strict=True)
    ]
    return pl.DataFrame(rows).select(COLUMNS)


def _segments(panel: Any, base: Config, configs: Mapping[str, Mapping[str, Any]], wfo: WalkForward) -> list:
    """The walk-forward layout, purged by the longest lookback of any configuration."""
    per_day = panel.bars_per_day
    lookbacks = [
        max(base.with_overrides(dict(o)).to_dict()["strategy"]["lookbacks"]) for o in configs.values()
    ]
    purge = wfo.purge_bars if wfo.purge_bars is not None else int(max(lookbacks))
    segments = _core.segments(
        panel.n_bars,
        round(wfo.train_days * per_day),
        round(wfo.oos_days * per_day),
        round(wfo.embargo_days * per_day),
        purge,
        wfo.mode,
    )
    if not segments:
        raise ResearchError(
            f"{panel.n_bars / per_day:.1f} days of bars are too few for one walk-forward segment"
        )
    return segments


def _oos_parts(evaluate: Evaluator, configs: Mapping[str, Mapping[str, Any]], segments: list) -> list:
    """Per configuration (the base config first) its backtests on every OOS window."""
    windows = [(s["oos_start"], s["oos_end"]) for s in segments]
    # One Rust call for the base config and every configuration on every OOS window.
    jobs = [
        (override_pairs(dict(overrides)), a, b) for overrides in [{}, *configs.values()] for a, b in windows
    ]
    results = evaluate(jobs, series=True)
    for (pairs, a, _), r in zip(jobs, results, strict=True):
        if "error" in r:
            raise ResearchError(f"OOS backtest from bar {a} with {pairs} failed: {r['error']}")
    n_seg = len(segments)
    return [results[k * n_seg : (k + 1) * n_seg] for k in range(len(configs) + 1)]


@dataclass(frozen=True)
class _Judge:
    """What every configuration is judged with: the base config's stitched OOS on the same bars,
    the walk-forward layout, the gate and the deflation over all configurations."""

    evaluate: Evaluator
    base: Config
    segments: list
    bpy: float
    gate: Gate
    seed: int
    mc_paths: int
    baseline: dict[str, float]
    base_returns: list[float]
    n_configs: int
    per_bar_var: float

    def row(self, name: str, overrides: Mapping[str, Any], part: list, metrics: dict) -> dict[str, Any]:
        """The ``COLUMNS`` of one configuration."""
        bpy, gate, seed = self.bpy, self.gate, self.seed
        returns = [x for p in part for x in p["returns"]]
        trades = [x for p in part for x in p["trade_returns"]]
        dsr = (
            _core.deflated_sharpe(returns, self.n_configs, self.per_bar_var)
            if len(returns) >= 3
            else math.nan
        )
        mc = monte_carlo(returns, trades, bpy, n_paths=self.mc_paths, seed=seed)
        summary = mc["bootstrap"]["summary"]
        paired = paired_bootstrap(returns, self.base_returns, bpy, gate.bootstrap_paths, seed)
        chosen = [SimpleNamespace(params=dict(overrides))] * len(self.segments)
        # The jitter multiplies this configuration's own costs (it may override them).
        own = _OwnCosts(self.evaluate, self.base.with_overrides(dict(overrides)).to_yaml())
        fragility = cost_fragility(own, self.segments, chosen, bpy, gate, seed)["std"]
        verdict = deployment_gate(metrics, self.baseline, summary, paired, fragility, gate, dsr_procedure=dsr)
        return {
            "config": name,
            **{k: float(metrics[k]) for k in COLUMNS[1:7]},
            "psr": float(metrics["psr"]),
            "dsr": float(dsr),
            "p_delta_sharpe": float(paired["p_delta_sharpe"]),
            "fragility": float(fragility),
            "mc_p99_max_drawdown": float(summary["max_drawdown"]["p99"]),
            "verdict": verdict["verdict"],
            "failed": ", ".join(c["name"] for c in verdict["checks"] if not c["passed"]),
            "reason": verdict["reason"],
        }


class _OwnCosts:
    """``evaluate`` with the costs of one configuration: ``cost_fragility`` reads the costs to jitter
    from ``config_yaml``; the jobs still run on the evaluator's panel and base config."""

    def __init__(self, evaluate: Evaluator, config_yaml: str) -> None:
        self.evaluate = evaluate
        self.config_yaml = config_yaml

    def __call__(self, jobs: list[Any], series: bool = False) -> list[dict[str, Any]]:
        return self.evaluate(jobs, series=series)
