"""Research pipeline (research.md): purged walk-forward, Optuna TPE per segment, overfitting
statistics, Monte Carlo and the deployment gate.

Python only orchestrates. Every backtest runs in the Rust core: a batch of ``ask()``-ed trials is
evaluated in ONE call (``_core.evaluate_windows``, rayon, GIL released), optionally spread over a
``concurrent.futures.Executor`` in chunks. Monte Carlo, PSR/DSR, PBO, the block length and the
segment layout are Rust functions too.
"""

from __future__ import annotations

import datetime as dt
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
    """Deployment gate thresholds (research.md §5)."""

    min_delta_sharpe: float = 0.05
    min_delta_cagr: float = 0.03
    max_delta_drawdown: float = 0.05
    tail_dd_limit: float = 0.35
    min_dsr: float = 0.90
    oos_min_bars: int = 200
    oos_min_trades: int = 30


def deployment_gate(
    candidate: dict[str, float],
    baseline: dict[str, float],
    mc_summary: dict[str, Any],
    dsr: float,
    gate: Gate | None = None,
) -> dict[str, Any]:
    """The verdict of research.md §5: every check with its value and threshold; passed if all pass.

    ``candidate`` and ``baseline`` are stitched OOS metrics on the same windows (keys ``sharpe``,
    ``cagr``, ``max_drawdown``, ``n_bars``, ``round_trips``); ``mc_summary`` is the bootstrap summary
    (``max_drawdown.p99``). A NaN value fails its check.
    """
    g = gate or Gate()

    def check(name: str, value: float, threshold: float, ok: bool) -> dict[str, Any]:
        value = float(value)
        return {
            "name": name,
            "value": value,
            "threshold": threshold,
            "passed": bool(ok and not math.isnan(value)),
        }

    d_sharpe = candidate["sharpe"] - baseline["sharpe"]
    d_cagr = candidate["cagr"] - baseline["cagr"]
    d_dd = candidate["max_drawdown"] - baseline["max_drawdown"]
    tail = mc_summary["max_drawdown"]["p99"]
    checks = [
        check("delta_sharpe", d_sharpe, g.min_delta_sharpe, d_sharpe >= g.min_delta_sharpe),
        check("delta_cagr", d_cagr, g.min_delta_cagr, d_cagr >= g.min_delta_cagr),
        check("delta_max_drawdown", d_dd, g.max_delta_drawdown, d_dd <= g.max_delta_drawdown),
        check("mc_p99_max_drawdown", tail, g.tail_dd_limit, tail <= g.tail_dd_limit),
        check("dsr", dsr, g.min_dsr, dsr >= g.min_dsr),
        check("oos_bars", candidate["n_bars"], g.oos_min_bars, candidate["n_bars"] >= g.oos_min_bars),
        check(
            "oos_trades",
            candidate["round_trips"],
            g.oos_min_trades,
            candidate["round_trips"] >= g.oos_min_trades,
        ),
    ]
    return {"passed": all(c["passed"] for c in checks), "checks": checks}


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
        self._frames: tuple[pl.DataFrame, pl.DataFrame | None] | None = None
        self.token = f"{_WHO}:{id(self)}:{time.time_ns()}"
        if executor is not None:
            self._frames = _as_frames(bars, funding, self.panel.timeframe)

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


def _as_frames(bars: Any, funding: Any, timeframe: str) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """Bars and funding as DataFrames to ship to executor workers."""
    from xsmom.api import read_bars, read_funding

    if isinstance(bars, str | Path):
        path = Path(bars)
        frame = read_bars(path, timeframe=timeframe)
        if funding is None and path.is_dir() and (path / "funding").exists():
            funding = read_funding(path)
    else:
        frame = bars
    if isinstance(funding, str | Path):
        funding = read_funding(funding)
    return frame, funding


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
    trial_sharpes: list[float] = field(default_factory=list)


@dataclass
class OptimizeResult:
    """What ``optimize`` produced; ``out`` holds the report folder when one was written."""

    verdict: dict[str, Any]
    candidate: dict[str, float]
    baseline: dict[str, float]
    params: dict[str, Any]
    candidate_config: Config
    segments: list[SegmentResult]
    dsr: float
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
            "mc": self.mc,
            "dsr": self.dsr,
            "pbo": self.pbo,
            "n_trials": self.n_trials,
            "stress": self.stress,
            "segments": [{k: v for k, v in asdict(s).items() if k != "trial_sharpes"} for s in self.segments],
            "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


def _sampler(seed: int) -> Any:
    import optuna

    return optuna.samplers.TPESampler(multivariate=True, constant_liar=True, seed=seed, n_startup_trials=10)


def _study(name: str, storage: str, seed: int, worker: bool) -> Any:
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
    return optuna.create_study(
        study_name=name, storage=storage, sampler=_sampler(seed), direction="maximize", load_if_exists=True
    )


def _run_study(
    study: Any,
    space: Sequence[Param],
    evaluate: Evaluator,
    window: tuple[int, int],
    n_trials: int,
    batch: int,
    objective: Objective,
) -> dict[int, list[float]]:
    """Ask/evaluate/tell in batches until the study holds ``n_trials`` trials. Returns the per-bar
    train returns of the trials evaluated here (trial number → returns)."""
    from optuna.trial import TrialState

    returns: dict[int, list[float]] = {}
    while True:
        remaining = n_trials - len(study.get_trials(deepcopy=False))
        if remaining <= 0:
            return returns
        trials = [study.ask() for _ in range(min(batch, remaining))]
        values = [{p.path: p.suggest(t) for p in space} for t in trials]
        results = evaluate([(_encode(v), window[0], window[1]) for v in values], series=True)
        for trial, result in zip(trials, results, strict=True):
            trial.set_user_attr("evaluated_by", _WHO)
            if "error" in result:
                trial.set_user_attr("error", result["error"])
                study.tell(trial, state=TrialState.PRUNED)
                continue
            metrics = result["metrics"]
            value = objective(metrics)
            keys = ("sharpe", "cagr", "max_drawdown", "turnover_per_year", "round_trips")
            trial.set_user_attr("train", {k: _finite_or_none(metrics[k]) for k in keys})
            if not math.isfinite(value):
                trial.set_user_attr("error", "objective is not finite (no trades in the train window?)")
                study.tell(trial, state=TrialState.PRUNED)
                continue
            study.tell(trial, value)
            returns[trial.number] = result["returns"]


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

    Per segment a fresh TPE study (seed ``seed + j``) maximises the objective on the purged train
    window; its best parameters are judged warm on that segment's OOS window only, and the baseline
    (``config`` as given) on the same windows. With ``out`` a report folder is written (report.md,
    PNGs, candidate.yaml/json, oos.json). ``worker=True`` joins the studies of a running optimize
    (same ``storage`` and ``study_name``), evaluates trials and returns None.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    config = config or Config.default()
    space_source = "search space" if isinstance(space, list | tuple) else str(space or DEFAULT_SPACE)
    space = list(space) if isinstance(space, list | tuple) else load_space(space)
    _check_paths(space, config, space_source)
    wfo = wfo or WalkForward()
    objective = objective or Objective()
    if n_trials < 1:
        raise ResearchError(f"n_trials must be at least 1, got {n_trials}")
    out_dir = Path(out) if out is not None else None
    fresh = storage is None and out_dir is not None and not worker
    if storage is None:
        if out_dir is None:
            storage = "sqlite:///:memory:" if not worker else ""
        else:
            out_dir.mkdir(parents=True, exist_ok=True)
            storage = f"sqlite:///{out_dir.resolve() / 'optuna.db'}"
    if worker and not storage:
        raise ResearchError("a worker needs the storage URL of the study it joins (storage=...)")
    if storage == "sqlite:///:memory:":
        storage_obj: Any = optuna.storages.InMemoryStorage()
    else:
        if fresh and out_dir is not None:
            # The default storage belongs to this run: start fresh (same seed → same result).
            for suffix in ("", "-wal", "-shm"):
                (out_dir / f"optuna.db{suffix}").unlink(missing_ok=True)
        storage_obj = _open_as_worker(storage) if worker else open_storage(storage)
    name = study_name or "xsmom"
    evaluate = Evaluator(bars, config, funding=funding, executor=executor, n_jobs=n_jobs)
    panel = evaluate.panel
    per_day = panel.bars_per_day
    purge = wfo.purge_bars if wfo.purge_bars is not None else _purge(config, space)
    segments = _core.segments(
        panel.n_bars,
        round(wfo.train_days * per_day),
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

    seg_results: list[SegmentResult] = []
    studies: list[Any] = []
    oos_parts, base_parts, oos_ts, trade_returns = [], [], [], []
    trial_sharpes: list[float] = []
    chosen: dict[str, Any] = {}
    bpy = panel.bars_per_year
    for j, seg in enumerate(segments):
        seg_name = f"{name}-seg{j:02d}"
        study = _study(seg_name, storage_obj, seed + j, worker)
        window = (seg["train_start"], seg["purged_end"])
        returns = _run_study(study, space, evaluate, window, n_trials, batch, objective)
        if worker:
            continue
        _wait_for_study(study, n_trials)
        studies.append(study)
        from optuna.trial import TrialState

        complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        if not complete:
            errors = [t.user_attrs.get("error") for t in study.get_trials(deepcopy=False)]
            first = next((e for e in errors if e), "no error recorded")
            raise ResearchError(f"segment {j}: every trial was pruned; the first one: {first}")
        missing = [t for t in complete if t.number not in returns]
        if missing:  # trials told by other workers: their train returns are recomputed here
            again = evaluate([(_encode(params_of(t, space)), *window) for t in missing], series=True)
            for t, r in zip(missing, again, strict=True):
                if "returns" in r:
                    returns[t.number] = r["returns"]
        best = study.best_trial
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
        trial_sharpes.extend(sharpes)
        matrix = [returns[t.number] for t in complete if t.number in returns]
        try:
            seg_pbo = _core.pbo(matrix, pbo_blocks) if len(matrix) >= 2 else math.nan
        except ValueError:
            seg_pbo = math.nan
        seg_results.append(
            SegmentResult(
                index=j,
                bounds=dict(seg),
                study_name=seg_name,
                n_trials=len(study.get_trials(deepcopy=False)),
                n_pruned=sum(t.state == TrialState.PRUNED for t in study.get_trials(deepcopy=False)),
                best_value=float(best.value),
                params=chosen,
                oos=dict(cand["metrics"]),
                baseline_oos=dict(base["metrics"]),
                pbo=seg_pbo,
                trial_sharpes=sharpes,
            )
        )
    if worker:
        return None

    candidate = stitched_metrics(oos_parts, bpy)
    baseline = stitched_metrics(base_parts, bpy)
    oos_returns = [r for p in oos_parts for r in p["returns"]]
    base_returns = [r for p in base_parts for r in p["returns"]]
    # DSR: per-bar Sharpe of the stitched OOS against the expected maximum of all trials.
    per_bar = [s / math.sqrt(bpy) for s in trial_sharpes]
    variance = _variance(per_bar)
    n_total = sum(s.n_trials for s in seg_results)
    dsr = _core.deflated_sharpe(oos_returns, n_total, variance)
    pbos = [s.pbo for s in seg_results if math.isfinite(s.pbo)]
    pbo = sum(pbos) / len(pbos) if pbos else math.nan
    mc = monte_carlo(oos_returns, trade_returns, bpy, n_paths=mc_paths, seed=seed, fan=True)
    stress = cost_stress(evaluate, segments, seg_results, bpy)
    verdict = deployment_gate(candidate, baseline, mc["bootstrap"]["summary"], dsr, gate)
    # The deployable config: the latest segment's parameters on the input config.
    candidate_config = config.with_overrides(chosen)
    ts = panel.ts
    result = OptimizeResult(
        verdict=verdict,
        candidate=candidate,
        baseline=baseline,
        params=chosen,
        candidate_config=candidate_config,
        segments=seg_results,
        dsr=dsr,
        pbo=pbo,
        n_trials=n_total,
        study=name,
        storage=_redact(storage),
        data_range=(ts[0], ts[-1] + panel.timeframe_ms),
        mc=_mc_summary(mc),
        stress=stress,
        oos_returns=oos_returns,
        baseline_returns=base_returns,
        oos_ts=oos_ts,
        trade_returns=trade_returns,
        elapsed_s=time.perf_counter() - started,
        extra={"mc_full": mc, "studies": studies, "bars_per_year": bpy},
    )
    if out_dir is not None:
        from xsmom.research.report import write_optimize_report

        write_optimize_report(result, out_dir, space)
        result.out = out_dir
    if notify and os.environ.get("DISCORD_WEBHOOK_URL"):
        result.notified = _notify(result)
    return result


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
    lines = [f"xsmom optimize: {'PASSED' if v['passed'] else 'REFUSED'} ({result.n_trials} trials)"]
    for c in v["checks"]:
        lines.append(
            f"{'✔' if c['passed'] else '✘'} {c['name']}: {c['value']:.4g} (threshold {c['threshold']:g})"
        )
    files = []
    if result.out is not None:
        files = [p for p in (result.out / "oos_equity.png", result.out / "candidate.json") if p.exists()]
    return bool(send_discord("\n".join(lines), files=files))
