"""Research pipeline (research.md): purged walk-forward, Optuna TPE per segment, overfitting
statistics, Monte Carlo and the deployment gate.

Python only orchestrates. Every backtest runs in the Rust core: a batch of ``ask()``-ed trials is
evaluated in ONE call (``_core.evaluate_windows``, rayon, GIL released), optionally spread over a
``concurrent.futures.Executor`` in chunks. Monte Carlo, PSR/DSR, PBO, the block length and the
segment layout are Rust functions too.

Modules: ``settings`` (walk-forward, objective, gate thresholds), ``space`` (the search space),
``evaluate`` (batch backtests), ``storage`` (optuna storages and study names), ``results``,
``stitch`` (the stitched OOS, Monte Carlo, cost stress), ``gate`` (the deployment gate), ``optimize``;
``report`` writes the report folder. This module re-exports the public names.
"""

from xsmom.config import override_pairs
from xsmom.parallel import executor_workers
from xsmom.research.evaluate import Evaluator, Job
from xsmom.research.gate import (
    RELATIVE_CHECKS,
    VERDICTS,
    cost_fragility,
    deployment_gate,
    paired_bootstrap,
    sample_variance,
)
from xsmom.research.optimize import optimize
from xsmom.research.results import FinalStudy, OptimizeResult, SegmentResult
from xsmom.research.settings import (
    COST_MULTIPLIERS,
    WHO,
    Gate,
    Objective,
    ResearchError,
    WalkForward,
    iso_date,
)
from xsmom.research.space import (
    DEFAULT_SPACE,
    Param,
    check_paths,
    load_space,
    param_key,
    params_of,
    purge_bars_for,
)
from xsmom.research.stitch import cost_stress, finite_or_none, monte_carlo, stitched_metrics, summarise_mc
from xsmom.research.storage import (
    check_resume_target,
    journal_storage,
    open_any_storage,
    open_storage,
    open_study,
    redact,
    sampler_seed,
    scrub,
    study_identity,
    study_name_for,
)

__all__ = [
    "COST_MULTIPLIERS",
    "DEFAULT_SPACE",
    "Evaluator",
    "FinalStudy",
    "Gate",
    "Job",
    "Objective",
    "OptimizeResult",
    "Param",
    "RELATIVE_CHECKS",
    "ResearchError",
    "SegmentResult",
    "VERDICTS",
    "WHO",
    "WalkForward",
    "check_paths",
    "check_resume_target",
    "cost_fragility",
    "cost_stress",
    "deployment_gate",
    "override_pairs",
    "executor_workers",
    "finite_or_none",
    "iso_date",
    "journal_storage",
    "load_space",
    "monte_carlo",
    "open_any_storage",
    "open_storage",
    "open_study",
    "optimize",
    "paired_bootstrap",
    "param_key",
    "params_of",
    "purge_bars_for",
    "redact",
    "sample_variance",
    "sampler_seed",
    "scrub",
    "stitched_metrics",
    "study_identity",
    "study_name_for",
    "summarise_mc",
]
