"""Research pipeline (research.md): purged walk-forward, Optuna TPE per segment, overfitting
statistics, Monte Carlo and the deployment gate.

Python only orchestrates. Every backtest runs in the Rust core: a batch of ``ask()``-ed trials is
evaluated in ONE call (``_core.evaluate_windows``, rayon, GIL released), optionally spread over a
``concurrent.futures.Executor`` in chunks. Monte Carlo, PSR/DSR, PBO, the block length and the
segment layout are Rust functions too.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import socket
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import polars as pl

from xsmom import _core
from xsmom.config import Config
from xsmom.parallel import as_frames

DEFAULT_SPACE = "default.yaml"
_WHO = f"{socket.gethostname()}:{os.getpid()}"
COST_MULTIPLIERS = (1.5, 2.0, 3.0)


class ResearchError(ValueError):
    """Bad research input (space file, settings, data too short); the message names what is wrong."""


# ----------------------------------------------------------------------------------------------
# Search space


@dataclass(frozen=True)
class Param:
    """One dimension of the search space: a config key path and its range or choices."""

    path: str
    type: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """The value optuna suggests for this parameter (categorical choices decoded)."""
        if self.type == "int":
            return trial.suggest_int(
                self.path, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        if self.type == "float":
            return trial.suggest_float(self.path, self.low, self.high, step=self.step, log=self.log)
        label = trial.suggest_categorical(self.path, [_label(c) for c in self.choices])
        return self.decode(label)

    def decode(self, value: Any) -> Any:
        """A stored optuna parameter value → the config value."""
        if self.type == "categorical":
            for choice in self.choices:
                if _label(choice) == value:
                    return choice
            raise ResearchError(f"{self.path}: {value!r} is not one of the choices {list(self.choices)}")
        return value


def _label(choice: Any) -> Any:
    """Optuna categorical choices must be scalars: lists are stored as their JSON text."""
    return json.dumps(choice) if isinstance(choice, list | dict) else choice


def load_space(path: str | Path | None = None) -> list[Param]:
    """The search space from a YAML file (the shipped ``spaces/default.yaml`` when ``None``)."""
    import yaml

    if path is None:
        text = resources.files("xsmom").joinpath("spaces", DEFAULT_SPACE).read_text()
        source = f"xsmom/spaces/{DEFAULT_SPACE}"
    else:
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise ResearchError(f"{path}: cannot read the search space: {err.strerror}") from None
        source = str(path)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ResearchError(f"{source}: not valid YAML: {' '.join(str(err).split())}") from None
    entries = doc.get("params") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ResearchError(f"{source}: expected a non-empty list under the key 'params'")
    params, seen = [], set()
    for k, entry in enumerate(entries):
        where = f"{source}: params[{k}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise ResearchError(f"{where}: each entry needs a 'path' (a config key path)")
        path_ = entry["path"]
        unknown = set(entry) - {"path", "type", "low", "high", "step", "log", "choices"}
        if unknown:
            raise ResearchError(f"{where} ({path_}): unknown key(s) {sorted(unknown)}")
        if path_ in seen:
            raise ResearchError(f"{where}: {path_} appears twice")
        seen.add(path_)
        kind = entry.get("type")
        if kind == "categorical":
            choices = entry.get("choices")
            if not isinstance(choices, list) or not choices:
                raise ResearchError(f"{where} ({path_}): a categorical needs a non-empty 'choices' list")
            params.append(Param(path_, kind, choices=tuple(choices)))
            continue
        if kind not in ("int", "float"):
            raise ResearchError(f"{where} ({path_}): type must be int, float or categorical, got {kind!r}")
        low, high, step, log = entry.get("low"), entry.get("high"), entry.get("step"), entry.get("log", False)
        for name, value in (("low", low), ("high", high)):
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
                raise ResearchError(f"{where} ({path_}): {name} must be a number, got {value!r}")
        if low > high:
            raise ResearchError(f"{where} ({path_}): low {low} is above high {high}")
        if step is not None and (not isinstance(step, int | float) or step <= 0):
            raise ResearchError(f"{where} ({path_}): step must be a positive number, got {step!r}")
        if not isinstance(log, bool):
            raise ResearchError(f"{where} ({path_}): log must be true or false, got {log!r}")
        if log and (low <= 0 or step is not None):
            raise ResearchError(f"{where} ({path_}): log needs low > 0 and no step")
        if kind == "int" and any(v is not None and float(v) != int(v) for v in (low, high, step)):
            raise ResearchError(f"{where} ({path_}): an int parameter needs integer low/high/step")
        params.append(Param(path_, kind, float(low), float(high), step, log))
    return params


def _encode(values: dict[str, Any]) -> list[tuple[str, str]]:
    """Override pairs for the core (values as JSON, which is YAML)."""
    return [(key, json.dumps(value)) for key, value in values.items()]


def params_of(trial: Any, space: Sequence[Param]) -> dict[str, Any]:
    """Config values of a finished (frozen) trial."""
    by_path = {p.path: p for p in space}
    return {
        key: by_path[key].decode(value) if key in by_path else value for key, value in trial.params.items()
    }


# ----------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class WalkForward:
    """Walk-forward windows in days (research.md §1); ``purge_bars`` None = max(lookbacks)."""

    train_days: float = 120.0
    oos_days: float = 30.0
    embargo_days: float = 2.0
    mode: str = "rolling"
    purge_bars: int | None = None


@dataclass(frozen=True)
class Objective:
    """``sharpe − λ_turnover·turnover_per_year/1000 − λ_dd·max_drawdown`` on the purged train window."""

    lambda_turnover: float = 0.1
    lambda_dd: float = 0.5

    def __call__(self, metrics: dict[str, float]) -> float:
        return (
            metrics["sharpe"]
            - self.lambda_turnover * metrics["turnover_per_year"] / 1000.0
            - self.lambda_dd * metrics["max_drawdown"]
        )


@dataclass(frozen=True)
class Gate:
    """Deployment gate thresholds and statistics settings (research.md §3, §5).

    ``pipeline_trials`` is the number of pipeline variants (spaces, objectives, data ranges) tried on
    this data; ``pipeline_sharpe_var`` the variance of their annualised OOS Sharpes (required when
    ``pipeline_trials > 1``). With the default 1 the deflated Sharpe of the procedure is the PSR.
    """

    min_psr: float = 0.95
    min_p_delta_sharpe: float = 0.90
    max_delta_drawdown: float = 0.05
    tail_dd_limit: float = 0.35
    max_fragility: float = 0.5
    fragility_runs: int = 8
    fragility_jitter: float = 0.01
    oos_min_bars: int = 200
    oos_min_trades: int = 30
    pipeline_trials: int = 1
    pipeline_sharpe_var: float | None = None
    bootstrap_paths: int = 1000

    def __post_init__(self) -> None:
        if not isinstance(self.pipeline_trials, int) or self.pipeline_trials < 1:
            raise ResearchError(f"gate.pipeline_trials must be an integer ≥ 1, got {self.pipeline_trials!r}")
        var = self.pipeline_sharpe_var
        if self.pipeline_trials > 1 and var is None:
            raise ResearchError(
                f"gate.pipeline_sharpe_var is required when pipeline_trials > 1 "
                f"(got pipeline_trials={self.pipeline_trials})"
            )
        if var is not None and (not math.isfinite(var) or var < 0):
            raise ResearchError(f"gate.pipeline_sharpe_var must be a finite number ≥ 0, got {var!r}")
        if self.fragility_runs < 2:
            raise ResearchError(f"gate.fragility_runs must be at least 2, got {self.fragility_runs}")
        if self.bootstrap_paths < 10:
            raise ResearchError(f"gate.bootstrap_paths must be at least 10, got {self.bootstrap_paths}")


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

    def check(name: str, kind: str, value: float, threshold: float, ok: bool) -> dict[str, Any]:
        value = float(value)
        return {
            "name": name,
            "kind": kind,
            "value": value,
            "threshold": threshold,
            "passed": bool(ok and not math.isnan(value)),
        }

    skill = candidate["psr"] if dsr_procedure is None else dsr_procedure
    d_dd = candidate["max_drawdown"] - baseline["max_drawdown"]
    tail = mc_summary["max_drawdown"]["p99"]
    p_up = paired["p_delta_sharpe"]
    checks = [
        check("psr_oos", "skill", skill, g.min_psr, skill >= g.min_psr),
        check("p_delta_sharpe", "relative", p_up, g.min_p_delta_sharpe, p_up >= g.min_p_delta_sharpe),
        check("delta_max_drawdown", "relative", d_dd, g.max_delta_drawdown, d_dd <= g.max_delta_drawdown),
        check("mc_p99_max_drawdown", "absolute", tail, g.tail_dd_limit, tail <= g.tail_dd_limit),
        check("fragility", "absolute", fragility, g.max_fragility, fragility <= g.max_fragility),
        check(
            "oos_bars", "absolute", candidate["n_bars"], g.oos_min_bars, candidate["n_bars"] >= g.oos_min_bars
        ),
        check(
            "oos_trades",
            "absolute",
            candidate["round_trips"],
            g.oos_min_trades,
            candidate["round_trips"] >= g.oos_min_trades,
        ),
    ]
    failed = [c["name"] for c in checks if not c["passed"]]
    base_psr = float(baseline["psr"])
    base_skilled = base_psr >= g.min_psr
    if not failed:
        verdict = "deploy"
        reason = (
            f"the candidate has skill (PSR {skill:.3f} ≥ {g.min_psr:g}) and passes every check, "
            f"P(Δsharpe > 0) = {p_up:.2f}"
        )
    elif base_skilled:
        verdict = "keep"
        reason = (
            f"the candidate fails {', '.join(failed)} while the live config has skill "
            f"(PSR {base_psr:.3f} ≥ {g.min_psr:g}): keep it"
        )
    else:
        verdict = "stand aside"
        if skill < g.min_psr or math.isnan(skill):
            why = f"neither the candidate (PSR {skill:.3f}) nor the live config (PSR {base_psr:.3f})"
            reason = f"{why} has skill (PSR < {g.min_psr:g}): the strategy should not trade"
        else:
            reason = (
                f"the candidate fails {', '.join(failed)} and the live config has no skill "
                f"(PSR {base_psr:.3f} < {g.min_psr:g}): the strategy should not trade"
            )
    return {
        "verdict": verdict,
        "passed": verdict == "deploy",
        "reason": reason,
        "baseline_psr": base_psr,
        "checks": checks,
    }


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


# ----------------------------------------------------------------------------------------------
# Evaluation (local or on an executor)


Job = tuple[list[tuple[str, str]], int, int]


_PANELS: dict[str, Any] = {}


def _evaluate_chunk(
    token: str,
    bars: pl.DataFrame,
    funding: pl.DataFrame | None,
    config_yaml: str,
    jobs: list[Job],
    series: bool,
) -> list[dict[str, Any]]:
    """Run on an executor worker: evaluate the chunk in one call. The prepared panel is kept per
    worker process under the evaluator's ``token`` (the last two), so a study prepares it once."""
    panel = _PANELS.get(token)
    if panel is None:
        panel = _core.research_panel(bars, config_yaml, funding)
        while len(_PANELS) >= 2:
            _PANELS.pop(next(iter(_PANELS)))
        _PANELS[token] = panel
    # An explicit thread count builds a fresh rayon pool: the global one is unusable in a forked child.
    threads = os.cpu_count() or 1
    return [dict(r) for r in _core.evaluate_windows(panel, config_yaml, jobs, series, threads)]


class Evaluator:
    """Evaluates (overrides, window) jobs: locally in one Rust call, or in chunks on an executor."""

    def __init__(
        self,
        bars: Any,
        config: Config,
        funding: Any = None,
        executor: Executor | None = None,
        n_jobs: int | None = None,
    ) -> None:
        self.config_yaml = config.to_yaml()
        bars_arg = str(bars) if isinstance(bars, str | Path) else bars
        funding_arg = str(funding) if isinstance(funding, str | Path) else funding
        self.panel = _core.research_panel(bars_arg, self.config_yaml, funding_arg)
        self.executor = executor
        self.n_jobs = n_jobs
        self._frames: tuple[Any, Any] | None = None
        self.token = f"{_WHO}:{id(self)}:{time.time_ns()}"
        if executor is not None:
            frames = as_frames(bars, funding, self.panel.timeframe)
            client = getattr(executor, "_client", None)
            if client is not None:
                # Dask: the bars (and funding) go to every worker once per evaluator (one optimize
                # run); each task then carries only their futures, resolved on the worker.
                frames = tuple(None if f is None else client.scatter(f, broadcast=True) for f in frames)
            self._frames = frames

    def __call__(self, jobs: list[Job], series: bool = False) -> list[dict[str, Any]]:
        if not jobs:
            return []
        if self.executor is None:
            results = _core.evaluate_windows(self.panel, self.config_yaml, jobs, series, self.n_jobs)
            return [dict(r) for r in results]
        assert self._frames is not None
        bars, funding = self._frames
        n_chunks = max(1, min(len(jobs), _executor_workers(self.executor)))
        size = math.ceil(len(jobs) / n_chunks)
        futures = [
            self.executor.submit(
                _evaluate_chunk, self.token, bars, funding, self.config_yaml, jobs[i : i + size], series
            )
            for i in range(0, len(jobs), size)
        ]
        return [item for future in futures for item in future.result()]


def _executor_workers(executor: Executor) -> int:
    for attribute in ("_max_workers", "n_workers"):
        value = getattr(executor, attribute, None)
        if isinstance(value, int) and value > 0:
            return value
    return os.cpu_count() or 2


# ----------------------------------------------------------------------------------------------
# Stitching


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


# ----------------------------------------------------------------------------------------------
# The optimizer


@dataclass
class SegmentResult:
    index: int
    bounds: dict[str, int]
    study_name: str
    n_trials: int
    n_pruned: int
    best_value: float
    params: dict[str, Any]
    oos: dict[str, float]
    baseline_oos: dict[str, float]
    pbo: float
    n_distinct: int = 0
    train_sharpe: float = math.nan
    train_dsr: float = math.nan
    trial_sharpes: list[float] = field(default_factory=list)


@dataclass
class FinalStudy:
    """The study on the newest train window (ending at the last bar) whose choice is deployed."""

    study_name: str
    bounds: dict[str, int]
    dates: tuple[int, int]
    n_trials: int
    n_pruned: int
    best_value: float
    params: dict[str, Any]


@dataclass
class OptimizeResult:
    """What ``optimize`` produced; ``out`` holds the report folder when one was written."""

    verdict: dict[str, Any]
    candidate: dict[str, float]
    baseline: dict[str, float]
    params: dict[str, Any]
    candidate_config: Config
    segments: list[SegmentResult]
    final: FinalStudy
    psr: float
    dsr: float
    paired: dict[str, Any]
    fragility: dict[str, Any]
    pbo: float
    n_trials: int
    study: str
    storage: str
    data_range: tuple[int, int]
    mc: dict[str, Any]
    stress: dict[str, dict[str, float]]
    oos_returns: list[float]
    baseline_returns: list[float]
    oos_ts: list[int]
    trade_returns: list[float]
    elapsed_s: float
    gate: Gate = field(default_factory=Gate)
    out: Path | None = None
    notified: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The candidate.json document."""
        return {
            "verdict": self.verdict,
            "baseline": self.baseline,
            "candidate": self.candidate,
            "params": self.params,
            "study": self.study,
            "data_range": list(self.data_range),
            "final_study": asdict(self.final),
            "mc": self.mc,
            "psr": self.psr,
            "dsr": self.dsr,
            "pipeline_trials": self.gate.pipeline_trials,
            "paired": self.paired,
            "fragility": self.fragility,
            "pbo": self.pbo,
            "n_trials": self.n_trials,
            "stress": self.stress,
            "segments": [{k: v for k, v in asdict(s).items() if k != "trial_sharpes"} for s in self.segments],
            "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


def _sampler(seed: int) -> Any:
    import optuna

    return optuna.samplers.TPESampler(multivariate=True, constant_liar=True, seed=seed, n_startup_trials=10)


def sampler_seed(seed: int, study_index: int, worker_index: int) -> int:
    """The TPE seed of study ``study_index`` (segment j, then the final study) in worker
    ``worker_index`` (0 = the main process): ``seed + worker_index``, offset per study."""
    return seed + worker_index + 10_007 * study_index


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%MZ")


def study_identity(
    panel: Any, config: Config, space: Sequence[Param], seed: int, wfo: WalkForward, objective: Objective
) -> dict[str, Any]:
    """What a study's name is derived from (and what a ``resume`` must match)."""
    ts = panel.ts
    return {
        "data_range": [ts[0], ts[-1] + panel.timeframe_ms],
        "symbols": hashlib.sha256(",".join(panel.symbols).encode()).hexdigest()[:12],
        "config": hashlib.sha256(config.to_yaml().encode()).hexdigest()[:12],
        "space": hashlib.sha256(
            json.dumps([asdict(p) for p in space], sort_keys=True, default=str).encode()
        ).hexdigest()[:12],
        "seed": seed,
        "walk_forward": json.dumps(asdict(wfo), sort_keys=True),
        "objective": json.dumps(asdict(objective), sort_keys=True),
    }


def study_name_for(identity: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
    start, end = identity["data_range"]
    day = lambda ms: dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y%m%d")  # noqa: E731
    return f"xsmom-{day(start)}-{day(end)}-s{identity['seed']}-{digest}"


def _difference(stored: dict[str, Any], now: dict[str, Any]) -> str | None:
    """The first field in which two identities differ, in words; None when they match."""
    for key in ("data_range", "symbols", "config", "space", "seed", "walk_forward", "objective"):
        a, b = stored.get(key), now.get(key)
        if a == b:
            continue
        if key == "data_range" and isinstance(a, list) and len(a) == 2:
            return (
                f"data range differs (stored {_iso(a[0])} to {_iso(a[1])}, now {_iso(b[0])} to {_iso(b[1])})"
            )
        label = {"symbols": "symbol set", "space": "search space", "walk_forward": "walk-forward"}.get(
            key, key
        )
        return f"{label} differs (stored {a}, now {b})"
    return None


def _open_study(
    name: str,
    storage: Any,
    seed: int,
    worker: bool,
    resume: bool,
    identity: dict[str, Any],
    where: str,
) -> Any:
    import optuna

    if worker:
        deadline = time.monotonic() + 60.0
        while True:
            try:
                return optuna.load_study(study_name=name, storage=storage, sampler=_sampler(seed))
            except KeyError:
                if time.monotonic() > deadline:
                    raise ResearchError(
                        f"study {name!r} does not exist in the storage (start optimize first)"
                    ) from None
                time.sleep(0.2)
    try:
        study = optuna.load_study(study_name=name, storage=storage, sampler=_sampler(seed))
    except KeyError:
        study = None
    if study is not None:
        if not resume:
            raise ResearchError(
                f"study {name!r} already exists in {where}; pass --resume to continue it "
                "(or use another --study or storage)"
            )
        difference = _difference(study.user_attrs.get("xsmom") or {}, identity)
        if difference:
            raise ResearchError(f"cannot resume study {name!r}: its {difference}")
        return study
    study = optuna.create_study(
        study_name=name, storage=storage, sampler=_sampler(seed), direction="maximize"
    )
    study.set_user_attr("xsmom", identity)
    return study


def _check_resume_target(storage: Any, name: str, identity: dict[str, Any], where: str) -> None:
    """``resume`` of a study that does not exist: refuse, naming how the stored studies differ."""
    import optuna

    summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    names = {s.study_name for s in summaries}
    if any(n.startswith(f"{name}-") for n in names):
        return
    for s in summaries:
        stored = s.user_attrs.get("xsmom")
        if stored:
            difference = _difference(stored, identity) or "identity differs"
            prefix = s.study_name.rsplit("-", 1)[0]
            raise ResearchError(f"cannot resume: {where} holds study {prefix!r}, whose {difference}")
    raise ResearchError(f"cannot resume: {where} holds no study {name!r}")


def _param_key(values: dict[str, Any]) -> str:
    return json.dumps(values, sort_keys=True, default=str)


def _settled(study: Any, mine: set[int], n_params: int, timeout: float = 30.0) -> list[Any]:
    """The study's trials once every trial numbered below one of ``mine`` that another process is
    running has all its parameters (they are written right after its ask): a duplicate is always
    the higher-numbered trial, so two processes never both evaluate a parameter set."""
    from optuna.trial import TrialState

    top = max(mine)
    deadline = time.monotonic() + timeout
    while True:
        trials = study.get_trials(deepcopy=False)
        pending = [
            t
            for t in trials
            if t.number < top
            and t.number not in mine
            and t.state == TrialState.RUNNING
            and len(t.params) < n_params
        ]
        if not pending or time.monotonic() > deadline:
            return trials
        time.sleep(0.01)


def _run_study(
    study: Any,
    space: Sequence[Param],
    evaluate: Evaluator,
    window: tuple[int, int],
    n_trials: int,
    batch: int,
    objective: Objective,
    series: bool = True,
) -> dict[int, list[float]]:
    """Ask/evaluate/tell in batches until the study holds ``n_trials`` trials. A parameter set that an
    earlier trial of the study (any process) already has is not evaluated again: the trial gets that
    trial's value (``duplicate_of``), or is pruned while the earlier one is still running or was
    pruned. Returns the per-bar train returns of the trials evaluated here (number → returns)."""
    from optuna.trial import TrialState

    returns: dict[int, list[float]] = {}
    while True:
        remaining = n_trials - len(study.get_trials(deepcopy=False))
        if remaining <= 0:
            return returns
        asked = [study.ask() for _ in range(min(batch, remaining))]
        values = [{p.path: p.suggest(t) for p in space} for t in asked]
        for t in asked:
            t.set_user_attr("asked_by", _WHO)
        mine = {t.number for t in asked}
        earlier: dict[str, Any] = {}
        for t in sorted(_settled(study, mine, len(space)), key=lambda t: t.number):
            if t.number in mine or "duplicate_of" in t.user_attrs or not t.params:
                continue
            earlier.setdefault(_param_key(params_of(t, space)), t)
        to_run: list[int] = []
        first_in_batch: dict[str, int] = {}
        copies: list[tuple[int, int]] = []
        for k, (trial, v) in enumerate(zip(asked, values, strict=True)):
            key = _param_key(v)
            prior = earlier.get(key)
            if prior is not None and prior.number < trial.number:
                trial.set_user_attr("duplicate_of", prior.number)
                if prior.state == TrialState.COMPLETE:
                    trial.set_user_attr("train", prior.user_attrs.get("train"))
                    study.tell(trial, prior.value)
                else:
                    what = (
                        f"was pruned: {prior.user_attrs.get('error', 'no error recorded')}"
                        if prior.state.is_finished()
                        else "is being evaluated elsewhere"
                    )
                    trial.set_user_attr("error", f"same parameters as trial {prior.number}, which {what}")
                    study.tell(trial, state=TrialState.PRUNED)
                continue
            if key in first_in_batch:
                copies.append((k, first_in_batch[key]))
                continue
            first_in_batch[key] = k
            to_run.append(k)
        results = evaluate([(_encode(values[k]), window[0], window[1]) for k in to_run], series=series)
        told: dict[int, tuple[float | None, dict[str, Any] | None, str | None]] = {}
        for k, result in zip(to_run, results, strict=True):
            trial = asked[k]
            trial.set_user_attr("evaluated_by", _WHO)
            if "error" in result:
                trial.set_user_attr("error", result["error"])
                study.tell(trial, state=TrialState.PRUNED)
                told[k] = (None, None, result["error"])
                continue
            metrics = result["metrics"]
            value = objective(metrics)
            keys = ("sharpe", "cagr", "max_drawdown", "turnover_per_year", "round_trips")
            train = {key: _finite_or_none(metrics[key]) for key in keys}
            trial.set_user_attr("train", train)
            if not math.isfinite(value):
                error = "objective is not finite (no trades in the train window?)"
                trial.set_user_attr("error", error)
                study.tell(trial, state=TrialState.PRUNED)
                told[k] = (None, train, error)
                continue
            study.tell(trial, value)
            told[k] = (value, train, None)
            if series:
                returns[trial.number] = result["returns"]
        for k, source in copies:
            trial = asked[k]
            value, train, error = told[source]
            trial.set_user_attr("duplicate_of", asked[source].number)
            if train is not None:
                trial.set_user_attr("train", train)
            if value is None:
                trial.set_user_attr("error", f"same parameters as trial {asked[source].number}: {error}")
                study.tell(trial, state=TrialState.PRUNED)
            else:
                study.tell(trial, value)


def _wait_for_study(study: Any, n_trials: int, timeout: float = 600.0) -> None:
    """Wait until workers have told every trial of the study."""
    from optuna.trial import TrialState

    deadline = time.monotonic() + timeout
    while any(t.state == TrialState.RUNNING for t in study.get_trials(deepcopy=False)):
        if time.monotonic() > deadline:
            raise ResearchError(f"study {study.study_name!r}: trials still running after {timeout:.0f} s")
        time.sleep(0.2)


def _check_paths(space: Sequence[Param], config: Config, source: str) -> None:
    """Every path of the space must be a config key (values may still clash per trial: pruned then)."""
    for p in space:
        value = p.choices[0] if p.type == "categorical" else p.low
        value = int(value) if p.type == "int" else value
        try:
            config.with_overrides({p.path: value})
        except ValueError as err:
            if "unknown" in str(err):
                raise ResearchError(f"{source}: {p.path}: {' '.join(str(err).split())}") from None


def _purge(config: Config, space: Sequence[Param]) -> int:
    lookbacks = list(config.to_dict()["strategy"]["lookbacks"])
    for p in space:
        if p.path == "strategy.lookbacks":
            lookbacks += [v for choice in p.choices for v in choice]
        elif p.path.startswith("strategy.lookbacks[") and p.high is not None:
            lookbacks.append(int(p.high))
    return int(max(lookbacks))


def _journal(path: Path, own: bool = False) -> Any:
    """An optuna JournalStorage on the file ``path``. ``own``: this process is the only writer (the
    default storage of ``optimize``): the logs are kept in memory and appended to the file without
    an fsync per append (optuna's file backend fsyncs every write, ≈ 2.5× the wall time of a
    study here); the file is flushed after each append and has the same format, so a later
    ``resume`` or optuna's own ``JournalFileBackend`` reads it."""
    import optuna

    if own:
        return optuna.storages.JournalStorage(_OwnJournal(path))
    backend = optuna.storages.journal.JournalFileBackend(str(path))
    return optuna.storages.JournalStorage(backend)


class _OwnJournal:
    """A single-process journal backend (see ``_journal``)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.logs: list[dict[str, Any]] = []
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    self.logs.append(json.loads(line))
                except ValueError:  # a line cut short by a crash: the logs before it are valid
                    break
        self.file = open(self.path, "a")  # noqa: SIM115 (open for the life of the storage)

    def read_logs(self, log_number_from: int) -> list[dict[str, Any]]:
        return self.logs[log_number_from:]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        self.logs.extend(logs)
        self.file.write("".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs))
        self.file.flush()

    def __del__(self) -> None:
        file = getattr(self, "file", None)
        if file is not None and not file.closed:
            file.flush()
            os.fsync(file.fileno())
            file.close()


def _open_any_storage(storage: Any, out_dir: Path | None, worker: bool, resume: bool) -> tuple[Any, str]:
    """The storage object and its (redacted) description. Default: the journal file
    ``<out>/optuna.journal`` (replaced by a fresh one unless ``resume``), in memory without ``out``."""
    import optuna

    if storage is not None and not isinstance(storage, str):
        return storage, type(storage).__name__  # an optuna storage object, used as given
    if storage is None:
        if worker:
            raise ResearchError("a worker needs the storage of the study it joins (storage=...)")
        if out_dir is None:
            return optuna.storages.InMemoryStorage(), "in memory"
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "optuna.journal"
        if not resume:
            # The default storage belongs to this run: start fresh (same seed → same result).
            path.unlink(missing_ok=True)
        return _journal(path, own=True), str(path)
    if storage == "sqlite:///:memory:":
        return optuna.storages.InMemoryStorage(), "in memory"
    if storage.startswith("journal:") or storage.endswith(".journal") or "://" not in storage:
        path = Path(storage.removeprefix("journal:").removeprefix("//"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return _journal(path), str(path)
    return (_open_as_worker(storage) if worker else open_storage(storage)), _redact(storage)


def _distinct_complete(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    return [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs
    ]


def optimize(
    bars: Any,
    config: Config | None = None,
    *,
    space: Sequence[Param] | str | Path | None = None,
    n_trials: int = 100,
    seed: int = 0,
    n_jobs: int | None = None,
    storage: str | None = None,
    out: str | Path | None = None,
    worker: bool = False,
    worker_index: int = 0,
    resume: bool = False,
    study_name: str | None = None,
    wfo: WalkForward | None = None,
    objective: Objective | None = None,
    gate: Gate | None = None,
    executor: Executor | None = None,
    funding: Any = None,
    mc_paths: int = 1000,
    pbo_blocks: int = 16,
    notify: bool = True,
) -> OptimizeResult | None:
    """Walk-forward Bayesian optimisation of ``config`` on ``bars`` (research.md §1–5).

    Per segment a fresh TPE study maximises the objective on the purged train window; its best
    parameters are judged warm on that segment's OOS window only, and the baseline (``config`` as
    given) on the same windows. The gate judges the stitched OOS of this procedure; the deployed
    candidate is the choice of a final study on the newest train window (ending at the last bar).
    The study name is derived from the data range, config, space, seed, walk-forward and objective
    unless ``study_name`` is given; an existing study is reused only with ``resume``. With ``out`` a
    report folder is written. ``worker=True`` (with ``worker_index`` ≥ 1) joins the studies of a
    running optimize, evaluates trials and returns None.
    """
    try:
        import optuna
    except ImportError:
        raise ResearchError("optimize needs optuna: pip install 'xsmom[research]'") from None

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    config = config or Config.default()
    gate = gate or Gate()
    space_source = "search space" if isinstance(space, list | tuple) else str(space or DEFAULT_SPACE)
    space = list(space) if isinstance(space, list | tuple) else load_space(space)
    _check_paths(space, config, space_source)
    wfo = wfo or WalkForward()
    objective = objective or Objective()
    if n_trials < 1:
        raise ResearchError(f"n_trials must be at least 1, got {n_trials}")
    if worker and worker_index < 1:
        raise ResearchError(f"a worker needs a worker index ≥ 1 (the main process is 0), got {worker_index}")
    if not worker and worker_index != 0:
        raise ResearchError(f"worker_index {worker_index} needs worker=True")
    out_dir = Path(out) if out is not None else None
    storage_obj, where = _open_any_storage(storage, out_dir, worker, resume)
    evaluate = Evaluator(bars, config, funding=funding, executor=executor, n_jobs=n_jobs)
    panel = evaluate.panel
    identity = study_identity(panel, config, space, seed, wfo, objective)
    name = study_name or study_name_for(identity)
    if resume and not worker:
        _check_resume_target(storage_obj, name, identity, where)
    per_day = panel.bars_per_day
    purge = wfo.purge_bars if wfo.purge_bars is not None else _purge(config, space)
    train_bars = round(wfo.train_days * per_day)
    segments = _core.segments(
        panel.n_bars,
        train_bars,
        round(wfo.oos_days * per_day),
        round(wfo.embargo_days * per_day),
        purge,
        wfo.mode,
    )
    if not segments:
        days = panel.n_bars / per_day
        raise ResearchError(
            f"{days:.1f} days of bars are too few for one walk-forward segment "
            f"(train {wfo.train_days} + embargo {wfo.embargo_days} + oos {wfo.oos_days} days)"
        )
    # Trials per ask/tell batch: n_jobs, else every core (or 4 per executor worker).
    if n_jobs is not None:
        batch = n_jobs
    elif executor is not None:
        batch = _executor_workers(executor) * 4
    else:
        batch = os.cpu_count() or 2
    from optuna.trial import TrialState

    # The final study: the newest train window, ending at the last bar (same length, purge, seed rule).
    n = panel.n_bars
    final_start = 0 if wfo.mode == "anchored" else max(0, n - train_bars)
    final_bounds = {"train_start": final_start, "train_end": n, "purged_end": max(final_start, n - purge)}

    seg_results: list[SegmentResult] = []
    studies: list[Any] = []
    oos_parts, base_parts, oos_ts, trade_returns = [], [], [], []
    bpy = panel.bars_per_year
    for j, seg in enumerate(segments):
        seg_name = f"{name}-seg{j:02d}"
        study = _open_study(
            seg_name, storage_obj, sampler_seed(seed, j, worker_index), worker, resume, identity, where
        )
        window = (seg["train_start"], seg["purged_end"])
        returns = _run_study(study, space, evaluate, window, n_trials, batch, objective)
        if worker:
            continue
        _wait_for_study(study, n_trials)
        studies.append(study)
        complete = _distinct_complete(study)
        if not complete:
            errors = [t.user_attrs.get("error") for t in study.get_trials(deepcopy=False)]
            first = next((e for e in errors if e), "no error recorded")
            raise ResearchError(f"segment {j}: every trial was pruned; the first one: {first}")
        missing = [t for t in complete if t.number not in returns]
        if missing:  # trials told by other workers (or resumed): their train returns are recomputed here
            again = evaluate([(_encode(params_of(t, space)), *window) for t in missing], series=True)
            for t, r in zip(missing, again, strict=True):
                if "returns" in r:
                    returns[t.number] = r["returns"]
        best = study.best_trial
        best_number = int(best.user_attrs.get("duplicate_of", best.number))
        chosen = params_of(best, space)
        oos_window = (seg["oos_start"], seg["oos_end"])
        cand, base = evaluate([(_encode(chosen), *oos_window), ([], *oos_window)], series=True)
        for label, r in (("candidate", cand), ("baseline", base)):
            if "error" in r:
                raise ResearchError(f"segment {j}: the {label} OOS backtest failed: {r['error']}")
        oos_parts.append(cand)
        base_parts.append(base)
        oos_ts.extend(panel.ts[oos_window[0] : oos_window[1]])
        trade_returns.extend(cand["trade_returns"])
        sharpes = [_train_sharpe(t) for t in complete if math.isfinite(_train_sharpe(t))]
        matrix = [returns[t.number] for t in complete if t.number in returns]
        try:
            seg_pbo = _core.pbo(matrix, pbo_blocks) if len(matrix) >= 2 else math.nan
        except ValueError:
            seg_pbo = math.nan
        # Diagnostic: the chosen trial's train Sharpe deflated by this segment's own distinct trials.
        best_returns = returns.get(best_number)
        per_bar_var = _variance([s / math.sqrt(bpy) for s in sharpes])
        train_dsr = (
            _core.deflated_sharpe(best_returns, len(complete), per_bar_var)
            if best_returns is not None and len(best_returns) >= 3
            else math.nan
        )
        all_trials = study.get_trials(deepcopy=False)
        seg_results.append(
            SegmentResult(
                index=j,
                bounds=dict(seg),
                study_name=seg_name,
                n_trials=len(all_trials),
                n_pruned=sum(t.state == TrialState.PRUNED for t in all_trials),
                best_value=float(best.value),
                params=chosen,
                oos=dict(cand["metrics"]),
                baseline_oos=dict(base["metrics"]),
                pbo=seg_pbo,
                n_distinct=len(complete),
                train_sharpe=_train_sharpe(best),
                train_dsr=train_dsr,
                trial_sharpes=sharpes,
            )
        )
    final_name = f"{name}-final"
    final_seed = sampler_seed(seed, len(segments), worker_index)
    final_study = _open_study(final_name, storage_obj, final_seed, worker, resume, identity, where)
    final_window = (final_bounds["train_start"], final_bounds["purged_end"])
    _run_study(final_study, space, evaluate, final_window, n_trials, batch, objective, series=False)
    if worker:
        return None
    _wait_for_study(final_study, n_trials)
    if not _distinct_complete(final_study):
        raise ResearchError("the final study: every trial was pruned")
    final_all = final_study.get_trials(deepcopy=False)
    ts = panel.ts
    final = FinalStudy(
        study_name=final_name,
        bounds=final_bounds,
        dates=(ts[final_bounds["train_start"]], ts[-1] + panel.timeframe_ms),
        n_trials=len(final_all),
        n_pruned=sum(t.state == TrialState.PRUNED for t in final_all),
        best_value=float(final_study.best_value),
        params=params_of(final_study.best_trial, space),
    )

    candidate = stitched_metrics(oos_parts, bpy)
    baseline = stitched_metrics(base_parts, bpy)
    oos_returns = [r for p in oos_parts for r in p["returns"]]
    base_returns = [r for p in base_parts for r in p["returns"]]
    psr = candidate["psr"]
    var = (gate.pipeline_sharpe_var or 0.0) / bpy  # annualised → per-bar Sharpe variance
    dsr = _core.deflated_sharpe(oos_returns, gate.pipeline_trials, var) if len(oos_returns) >= 3 else math.nan
    pbos = [s.pbo for s in seg_results if math.isfinite(s.pbo)]
    pbo = sum(pbos) / len(pbos) if pbos else math.nan
    mc = monte_carlo(oos_returns, trade_returns, bpy, n_paths=mc_paths, seed=seed, fan=True)
    paired = paired_bootstrap(oos_returns, base_returns, bpy, gate.bootstrap_paths, seed)
    fragility = cost_fragility(evaluate, segments, seg_results, bpy, gate, seed)
    stress = cost_stress(evaluate, segments, seg_results, bpy)
    verdict = deployment_gate(
        candidate, baseline, mc["bootstrap"]["summary"], paired, fragility["std"], gate, dsr_procedure=dsr
    )
    result = OptimizeResult(
        verdict=verdict,
        candidate=candidate,
        baseline=baseline,
        params=final.params,
        candidate_config=config.with_overrides(final.params),
        segments=seg_results,
        final=final,
        psr=psr,
        dsr=dsr,
        paired=paired,
        fragility=fragility,
        pbo=pbo,
        n_trials=sum(s.n_trials for s in seg_results) + final.n_trials,
        study=name,
        storage=where,
        data_range=(ts[0], ts[-1] + panel.timeframe_ms),
        mc=_mc_summary(mc),
        stress=stress,
        oos_returns=oos_returns,
        baseline_returns=base_returns,
        oos_ts=oos_ts,
        trade_returns=trade_returns,
        elapsed_s=time.perf_counter() - started,
        gate=gate,
        extra={
            "mc_full": mc,
            "studies": studies,
            "final_study": final_study,
            "bars_per_year": bpy,
            "ts": ts,
        },
    )
    if out_dir is not None:
        from xsmom.research.report import write_optimize_report

        write_optimize_report(result, out_dir, space)
        result.out = out_dir
    if notify and os.environ.get("DISCORD_WEBHOOK_URL"):
        result.notified = _notify(result)
    return result


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
            jobs.append((_encode({**res.params, **extra}), seg["oos_start"], seg["oos_end"]))
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
    std = math.sqrt(_variance(finite)) if len(finite) == len(sharpes) else math.nan
    return {"std": std, "sharpes": sharpes, "runs": len(factors), "jitter": jitter}


def _mc_summary(mc: dict[str, Any]) -> dict[str, Any]:
    """The Monte Carlo part of candidate.json: summaries and the block length, no paths."""
    out: dict[str, Any] = {
        "bootstrap": {"block": mc["bootstrap"]["block"], "summary": mc["bootstrap"]["summary"]}
    }
    if "reshuffle" in mc:
        out["reshuffle"] = mc["reshuffle"]
    return out


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _train_sharpe(trial: Any) -> float:
    value = (trial.user_attrs.get("train") or {}).get("sharpe")
    return math.nan if value is None else float(value)


def open_storage(url: str) -> Any:
    """An optuna storage for ``url``. SQLite files get WAL and ``synchronous=OFF``: each commit
    would otherwise fsync (≈ 13 ms here) and a study makes several commits per trial."""
    import optuna

    if not url.startswith("sqlite:///") or url == "sqlite:///:memory:":
        return url
    import sqlalchemy

    storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})

    def pragmas(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        # WAL is persistent in the file; switching needs a lock another process may hold, so only once.
        if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=OFF")
        cursor.close()

    sqlalchemy.event.listen(storage.engine, "connect", pragmas)
    storage.engine.dispose()  # connections opened while creating the schema lack the pragmas
    return optuna.storages._CachedStorage(storage)


def _open_as_worker(url: str, timeout: float = 60.0) -> Any:
    """Open a storage that the main process may be creating right now (schema creation races)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return open_storage(url)
        except Exception as err:  # SQLAlchemy/alembic errors while the schema is being created
            if isinstance(err, ImportError) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _variance(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / (len(values) - 1)


def _redact(url: str) -> str:
    """A storage URL without its password (reports never carry secrets)."""
    if "://" in url and "@" in url.split("://", 1)[1]:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def scrub(message: str, url: str | None) -> str:
    """``message`` on one line with the password of storage ``url`` masked."""
    text = " ".join(str(message).split())
    if url and "://" in url and "@" in url.split("://", 1)[1]:
        creds = url.split("://", 1)[1].rsplit("@", 1)[0]
        if ":" in creds:
            text = text.replace(creds.split(":", 1)[1], "***")
    return text


def monte_carlo(
    returns: Sequence[float],
    trade_returns: Sequence[float],
    bars_per_year: float,
    n_paths: int = 1000,
    seed: int = 0,
    block: float | None = None,
    fan: bool = False,
) -> dict[str, Any]:
    """Stationary bootstrap of bar returns and reshuffle of round-trip returns (in Rust)."""
    boot = dict(_core.mc_bootstrap(list(returns), n_paths, seed, block, bars_per_year, fan))
    out: dict[str, Any] = {"bootstrap": boot}
    years = len(returns) / bars_per_year
    if len(trade_returns) >= 2 and years > 0:
        trades_per_year = len(trade_returns) / years
        out["reshuffle"] = {
            "summary": dict(
                _core.mc_reshuffle(list(trade_returns), n_paths, seed, trades_per_year)["summary"]
            ),
            "n_trades": len(trade_returns),
        }
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
            jobs.append((_encode({**res.params, **extra}), seg["oos_start"], seg["oos_end"]))
            keys.append(name)
    results = evaluate(jobs, series=True)
    out = {}
    for name in scenarios:
        parts = [r for k, r in zip(keys, results, strict=True) if k == name and "returns" in r]
        out[name] = stitched_metrics(parts, bpy) if len(parts) == len(segments) else {"error": math.nan}
    return out


def _notify(result: OptimizeResult) -> bool:
    try:
        from xsmom.notify import send_discord
    except ImportError:
        return False
    v = result.verdict
    lines = [f"xsmom optimize: verdict {v['verdict'].upper()}: {v['reason']} ({result.n_trials} trials)"]
    for c in v["checks"]:
        lines.append(
            f"{'✔' if c['passed'] else '✘'} {c['name']}: {c['value']:.4g} (threshold {c['threshold']:g})"
        )
    files = []
    if result.out is not None:
        files = [p for p in (result.out / "oos_equity.png", result.out / "candidate.json") if p.exists()]
    return bool(send_discord("\n".join(lines), files=files))
