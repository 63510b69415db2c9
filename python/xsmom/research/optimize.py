"""Walk-forward Bayesian optimisation (research.md §1–5): a TPE study per segment, the OOS of
its best trial, the final study on the newest window, the verdict and the report."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xsmom import _core
from xsmom.config import Config, override_pairs
from xsmom.parallel import executor_workers
from xsmom.research.evaluate import Evaluator
from xsmom.research.gate import cost_fragility, deployment_gate, paired_bootstrap, sample_variance
from xsmom.research.results import FinalStudy, OptimizeResult, SegmentResult
from xsmom.research.settings import WHO, Gate, Objective, ResearchError, WalkForward
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
    open_any_storage,
    open_study,
    sampler_seed,
    study_identity,
    study_name_for,
)


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
    on_batch: Callable[[int], None] | None = None,
) -> dict[int, list[float]]:
    """Ask/evaluate/tell in batches until the study holds ``n_trials`` trials. A parameter set that an
    earlier trial of the study (any process) already has is not evaluated again: the trial gets that
    trial's value (``duplicate_of``), or is pruned while the earlier one is still running or was
    pruned. Returns the per-bar train returns of the trials evaluated here (number → returns)."""
    returns: dict[int, list[float]] = {}
    while True:
        held = len(study.get_trials(deepcopy=False))
        if on_batch is not None:
            on_batch(min(held, n_trials))
        remaining = n_trials - held
        if remaining <= 0:
            return returns
        asked = [study.ask() for _ in range(min(batch, remaining))]
        values = [{p.path: p.suggest(t) for p in space} for t in asked]
        for t in asked:
            t.set_user_attr("asked_by", WHO)
        to_run, copies = _dedupe(study, space, asked, values)
        results = evaluate([(override_pairs(values[k]), window[0], window[1]) for k in to_run], series=series)
        told: dict[int, tuple[float | None, dict[str, Any] | None, str | None]] = {}
        for k, result in zip(to_run, results, strict=True):
            told[k] = _tell_result(study, asked[k], result, objective)
            if series and told[k][0] is not None:
                returns[asked[k].number] = result["returns"]
        _tell_copies(study, asked, copies, told)


def _dedupe(
    study: Any, space: Sequence[Param], asked: list[Any], values: list[dict[str, Any]]
) -> tuple[list[int], list[tuple[int, int]]]:
    """Which of the ``asked`` trials to evaluate (their indices), and the ``(copy, source)`` index
    pairs of the ones that repeat a parameter set earlier in the batch. A trial that repeats an
    earlier trial of the study is told here (its value, or pruned)."""
    mine = {t.number for t in asked}
    earlier: dict[str, Any] = {}
    for t in sorted(_settled(study, mine, len(space)), key=lambda t: t.number):
        if t.number in mine or "duplicate_of" in t.user_attrs or not t.params:
            continue
        earlier.setdefault(param_key(params_of(t, space)), t)
    to_run: list[int] = []
    first_in_batch: dict[str, int] = {}
    copies: list[tuple[int, int]] = []
    for k, (trial, v) in enumerate(zip(asked, values, strict=True)):
        key = param_key(v)
        prior = earlier.get(key)
        if prior is not None and prior.number < trial.number:
            _tell_duplicate(study, trial, prior)
            continue
        if key in first_in_batch:
            copies.append((k, first_in_batch[key]))
            continue
        first_in_batch[key] = k
        to_run.append(k)
    return to_run, copies


def _tell_duplicate(study: Any, trial: Any, prior: Any) -> None:
    """Tell ``trial`` the value of the earlier ``prior`` with the same parameters (or prune it)."""
    from optuna.trial import TrialState

    trial.set_user_attr("duplicate_of", prior.number)
    if prior.state == TrialState.COMPLETE:
        trial.set_user_attr("train", prior.user_attrs.get("train"))
        study.tell(trial, prior.value)
        return
    what = (
        f"was pruned: {prior.user_attrs.get('error', 'no error recorded')}"
        if prior.state.is_finished()
        else "is being evaluated elsewhere"
    )
    trial.set_user_attr("error", f"same parameters as trial {prior.number}, which {what}")
    study.tell(trial, state=TrialState.PRUNED)


_TRAIN_KEYS = ("sharpe", "cagr", "max_drawdown", "turnover_per_year", "round_trips")


def _tell_result(
    study: Any, trial: Any, result: dict[str, Any], objective: Objective
) -> tuple[float | None, dict[str, Any] | None, str | None]:
    """Tell ``trial`` its evaluation: the objective, or pruned with the error. Returns
    ``(value, train metrics, error)``."""
    from optuna.trial import TrialState

    trial.set_user_attr("evaluated_by", WHO)
    if "error" in result:
        trial.set_user_attr("error", result["error"])
        study.tell(trial, state=TrialState.PRUNED)
        return None, None, result["error"]
    metrics = result["metrics"]
    value = objective(metrics)
    train = {key: finite_or_none(metrics[key]) for key in _TRAIN_KEYS}
    trial.set_user_attr("train", train)
    if not math.isfinite(value):
        error = "objective is not finite (no trades in the train window?)"
        trial.set_user_attr("error", error)
        study.tell(trial, state=TrialState.PRUNED)
        return None, train, error
    study.tell(trial, value)
    return value, train, None


def _tell_copies(
    study: Any,
    asked: list[Any],
    copies: list[tuple[int, int]],
    told: dict[int, tuple[float | None, dict[str, Any] | None, str | None]],
) -> None:
    """Tell each copy within a batch what its source trial was told."""
    from optuna.trial import TrialState

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


def _trial_progress(
    progress: Callable[[int, int, str], None] | None, study: int, n_segments: int, n_trials: int
) -> Callable[[int], None] | None:
    """The batch callback of study ``study`` (segments first, then the final study) reporting
    trials done over all studies."""
    if progress is None:
        return None
    total = n_trials * (n_segments + 1)
    note = f"trials, segment {study + 1}/{n_segments}" if study < n_segments else "trials, final study"
    return lambda held: progress(study * n_trials + held, total, note)


def _wait_for_study(study: Any, n_trials: int, timeout: float = 600.0) -> None:
    """Wait until workers have told every trial of the study."""
    from optuna.trial import TrialState

    deadline = time.monotonic() + timeout
    while any(t.state == TrialState.RUNNING for t in study.get_trials(deepcopy=False)):
        if time.monotonic() > deadline:
            raise ResearchError(f"study {study.study_name!r}: trials still running after {timeout:.0f} s")
        time.sleep(0.2)


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
    progress: Callable[[int, int, str], None] | None = None,
) -> OptimizeResult | None:
    """Walk-forward Bayesian optimisation of ``config`` on ``bars`` (research.md §1–5).

    Per segment a fresh TPE study maximises the objective on the purged train window; its best
    parameters are judged warm on that segment's OOS window only, and the baseline (``config`` as
    given) on the same windows. The gate judges the stitched OOS of this procedure; the deployed
    candidate is the choice of a final study on the newest train window (ending at the last bar).
    The study name is derived from the data range, config, space, seed, walk-forward and objective
    unless ``study_name`` is given; an existing study is reused only with ``resume``. With ``out`` a
    report folder is written. ``worker=True`` (with ``worker_index`` ≥ 1) joins the studies of a
    running optimize, evaluates trials and returns None. ``progress(done, total, note)`` is called
    after every batch of trials (``total`` = trials × (segments + 1)) and then for the Monte Carlo.
    """
    try:
        import optuna
    except ImportError:
        raise ResearchError("optimize needs optuna: pip install 'xsmom[research]'") from None

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    config = config or Config.default()
    gate = gate or Gate()
    space = _load_space(space, config)
    wfo = wfo or WalkForward()
    objective = objective or Objective()
    _check_counts(n_trials, worker, worker_index)
    out_dir = Path(out) if out is not None else None
    storage_obj, where = open_any_storage(storage, out_dir, worker, resume)
    evaluate = Evaluator(bars, config, funding=funding, executor=executor, n_jobs=n_jobs)
    identity = study_identity(evaluate.panel, config, space, seed, wfo, objective)
    name = study_name or study_name_for(identity)
    if resume and not worker:
        check_resume_target(storage_obj, name, identity, where)
    segments, final_bounds = _layout(evaluate.panel, config, space, wfo)
    run = _Run(
        name=name,
        storage=storage_obj,
        where=where,
        identity=identity,
        seed=seed,
        worker=worker,
        worker_index=worker_index,
        resume=resume,
        space=space,
        evaluate=evaluate,
        n_trials=n_trials,
        batch=_batch_size(n_jobs, executor),
        objective=objective,
        progress=progress,
        segments=segments,
        final_bounds=final_bounds,
        pbo_blocks=pbo_blocks,
    )
    return _optimize(run, config, gate, out_dir, mc_paths, notify, started)


def _optimize(
    run: _Run, config: Config, gate: Gate, out_dir: Path | None, mc_paths: int, notify: bool, started: float
) -> OptimizeResult | None:
    """The studies of every segment and the final study, then (not in a worker) the verdict, the
    report folder and the notification."""
    walk = _Walk()
    for j, seg in enumerate(run.segments):
        _run_segment(run, walk, j, seg)
    final = _run_final(run)
    if final is None:
        return None
    result = _result(run, walk, *final, config, gate, mc_paths, started)
    if out_dir is not None:
        from xsmom.research.report import write_optimize_report

        write_optimize_report(result, out_dir, run.space)
        result.out = out_dir
    if notify and os.environ.get("DISCORD_WEBHOOK_URL"):
        result.notified = _notify(result)
    return result


def _load_space(space: Sequence[Param] | str | Path | None, config: Config) -> list[Param]:
    """The search space (a list, a YAML file or the shipped one), its paths checked against ``config``."""
    space_source = "search space" if isinstance(space, list | tuple) else str(space or DEFAULT_SPACE)
    space = list(space) if isinstance(space, list | tuple) else load_space(space)
    check_paths(space, config, space_source)
    return space


def _check_counts(n_trials: int, worker: bool, worker_index: int) -> None:
    if n_trials < 1:
        raise ResearchError(f"n_trials must be at least 1, got {n_trials}")
    if worker and worker_index < 1:
        raise ResearchError(f"a worker needs a worker index ≥ 1 (the main process is 0), got {worker_index}")
    if not worker and worker_index != 0:
        raise ResearchError(f"worker_index {worker_index} needs worker=True")


def _layout(
    panel: Any, config: Config, space: list[Param], wfo: WalkForward
) -> tuple[list[dict[str, int]], dict[str, int]]:
    """The walk-forward segments of ``panel`` (an error when there is not even one) and the final
    study's window: the newest train window, ending at the last bar (same length, purge, seed rule)."""
    per_day = panel.bars_per_day
    purge = wfo.purge_bars if wfo.purge_bars is not None else purge_bars_for(config, space)
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
    n = panel.n_bars
    final_start = 0 if wfo.mode == "anchored" else max(0, n - train_bars)
    final_bounds = {"train_start": final_start, "train_end": n, "purged_end": max(final_start, n - purge)}
    return segments, final_bounds


def _batch_size(n_jobs: int | None, executor: Executor | None) -> int:
    """Trials per ask/tell batch: n_jobs, else every core (or 4 per executor worker)."""
    if n_jobs is not None:
        return n_jobs
    if executor is not None:
        return executor_workers(executor) * 4
    return os.cpu_count() or 2


@dataclass
class _Run:
    """What the studies of one optimize share."""

    name: str
    storage: Any
    where: str
    identity: Any
    seed: int
    worker: bool
    worker_index: int
    resume: bool
    space: list[Param]
    evaluate: Evaluator
    n_trials: int
    batch: int
    objective: Objective
    progress: Callable[[int, int, str], None] | None
    segments: list[dict[str, int]]
    final_bounds: dict[str, int]
    pbo_blocks: int

    @property
    def panel(self) -> Any:
        return self.evaluate.panel

    def open(self, name: str, index: int) -> Any:
        """Study ``index`` (segment j, then the final study) of this run, seeded for this process."""
        seed = sampler_seed(self.seed, index, self.worker_index)
        return open_study(name, self.storage, seed, self.worker, self.resume, self.identity, self.where)

    def study(
        self, study: Any, index: int, window: tuple[int, int], series: bool = True
    ) -> dict[int, list[float]]:
        """Run study ``index`` on the train ``window`` until it holds ``n_trials`` trials."""
        on_batch = _trial_progress(self.progress, index, len(self.segments), self.n_trials)
        return _run_study(
            study,
            self.space,
            self.evaluate,
            window,
            self.n_trials,
            self.batch,
            self.objective,
            series=series,
            on_batch=on_batch,
        )


@dataclass
class _Walk:
    """The walk-forward so far: per segment its result, and the OOS runs to stitch."""

    results: list[SegmentResult] = field(default_factory=list)
    studies: list[Any] = field(default_factory=list)
    oos_parts: list[dict[str, Any]] = field(default_factory=list)
    base_parts: list[dict[str, Any]] = field(default_factory=list)
    oos_ts: list[int] = field(default_factory=list)
    trade_returns: list[float] = field(default_factory=list)


def _run_segment(run: _Run, walk: _Walk, j: int, seg: dict[str, int]) -> None:
    """Segment ``j``: its study on the purged train window, then its choice (and the baseline)
    on the OOS window. A worker only runs the study."""
    from optuna.trial import TrialState

    seg_name = f"{run.name}-seg{j:02d}"
    study = run.open(seg_name, j)
    window = (seg["train_start"], seg["purged_end"])
    returns = run.study(study, j, window)
    if run.worker:
        return
    _wait_for_study(study, run.n_trials)
    walk.studies.append(study)
    complete = _distinct_complete(study)
    if not complete:
        errors = [t.user_attrs.get("error") for t in study.get_trials(deepcopy=False)]
        first = next((e for e in errors if e), "no error recorded")
        raise ResearchError(f"segment {j}: every trial was pruned; the first one: {first}")
    missing = [t for t in complete if t.number not in returns]
    if missing:  # trials told by other workers (or resumed): their train returns are recomputed here
        again = run.evaluate(
            [(override_pairs(params_of(t, run.space)), *window) for t in missing], series=True
        )
        for t, r in zip(missing, again, strict=True):
            if "returns" in r:
                returns[t.number] = r["returns"]
    best = study.best_trial
    chosen = params_of(best, run.space)
    oos_window = (seg["oos_start"], seg["oos_end"])
    cand, base = run.evaluate([(override_pairs(chosen), *oos_window), ([], *oos_window)], series=True)
    for label, r in (("candidate", cand), ("baseline", base)):
        if "error" in r:
            raise ResearchError(f"segment {j}: the {label} OOS backtest failed: {r['error']}")
    walk.oos_parts.append(cand)
    walk.base_parts.append(base)
    walk.oos_ts.extend(run.panel.ts[oos_window[0] : oos_window[1]])
    walk.trade_returns.extend(cand["trade_returns"])
    sharpes, seg_pbo, train_dsr = _segment_stats(run, complete, returns, best)
    all_trials = study.get_trials(deepcopy=False)
    walk.results.append(
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


def _segment_stats(
    run: _Run, complete: list[Any], returns: dict[int, list[float]], best: Any
) -> tuple[list[float], float, float]:
    """A segment's finite train Sharpes, its PBO (CSCV over the trials' train returns) and the
    chosen trial's train DSR (a diagnostic: deflated by this segment's own distinct trials)."""
    best_number = int(best.user_attrs.get("duplicate_of", best.number))
    sharpes = [_train_sharpe(t) for t in complete if math.isfinite(_train_sharpe(t))]
    matrix = [returns[t.number] for t in complete if t.number in returns]
    try:
        seg_pbo = _core.pbo(matrix, run.pbo_blocks) if len(matrix) >= 2 else math.nan
    except ValueError:
        seg_pbo = math.nan
    best_returns = returns.get(best_number)
    per_bar_var = sample_variance([s / math.sqrt(run.panel.bars_per_year) for s in sharpes])
    train_dsr = (
        _core.deflated_sharpe(best_returns, len(complete), per_bar_var)
        if best_returns is not None and len(best_returns) >= 3
        else math.nan
    )
    return sharpes, seg_pbo, train_dsr


def _run_final(run: _Run) -> tuple[FinalStudy, Any] | None:
    """The final study on the newest train window and its record (None in a worker)."""
    from optuna.trial import TrialState

    bounds = run.final_bounds
    final_name = f"{run.name}-final"
    final_study = run.open(final_name, len(run.segments))
    run.study(final_study, len(run.segments), (bounds["train_start"], bounds["purged_end"]), series=False)
    if run.worker:
        return None
    _wait_for_study(final_study, run.n_trials)
    if not _distinct_complete(final_study):
        raise ResearchError("the final study: every trial was pruned")
    final_all = final_study.get_trials(deepcopy=False)
    panel = run.panel
    final = FinalStudy(
        study_name=final_name,
        bounds=bounds,
        dates=(panel.ts[bounds["train_start"]], panel.ts[-1] + panel.timeframe_ms),
        n_trials=len(final_all),
        n_pruned=sum(t.state == TrialState.PRUNED for t in final_all),
        best_value=float(final_study.best_value),
        params=params_of(final_study.best_trial, run.space),
    )
    return final, final_study


def _result(
    run: _Run,
    walk: _Walk,
    final: FinalStudy,
    final_study: Any,
    config: Config,
    gate: Gate,
    mc_paths: int,
    started: float,
) -> OptimizeResult:
    """The stitched OOS of the walk-forward, its statistics and the gate's verdict."""
    panel, seed, seg_results = run.panel, run.seed, walk.results
    bpy = panel.bars_per_year
    candidate = stitched_metrics(walk.oos_parts, bpy)
    baseline = stitched_metrics(walk.base_parts, bpy)
    oos_returns = [r for p in walk.oos_parts for r in p["returns"]]
    base_returns = [r for p in walk.base_parts for r in p["returns"]]
    var = (gate.pipeline_sharpe_var or 0.0) / bpy  # annualised → per-bar Sharpe variance
    dsr = _core.deflated_sharpe(oos_returns, gate.pipeline_trials, var) if len(oos_returns) >= 3 else math.nan
    pbos = [s.pbo for s in seg_results if math.isfinite(s.pbo)]
    mc = monte_carlo(
        oos_returns, walk.trade_returns, bpy, n_paths=mc_paths, seed=seed, fan=True, progress=run.progress
    )
    paired = paired_bootstrap(oos_returns, base_returns, bpy, gate.bootstrap_paths, seed)
    fragility = cost_fragility(run.evaluate, run.segments, seg_results, bpy, gate, seed)
    stress = cost_stress(run.evaluate, run.segments, seg_results, bpy)
    verdict = deployment_gate(
        candidate, baseline, mc["bootstrap"]["summary"], paired, fragility["std"], gate, dsr_procedure=dsr
    )
    ts = panel.ts
    return OptimizeResult(
        verdict=verdict,
        candidate=candidate,
        baseline=baseline,
        params=final.params,
        candidate_config=config.with_overrides(final.params),
        segments=seg_results,
        final=final,
        psr=candidate["psr"],
        dsr=dsr,
        paired=paired,
        fragility=fragility,
        pbo=sum(pbos) / len(pbos) if pbos else math.nan,
        n_trials=sum(s.n_trials for s in seg_results) + final.n_trials,
        study=run.name,
        storage=run.where,
        data_range=(ts[0], ts[-1] + panel.timeframe_ms),
        mc=summarise_mc(mc),
        stress=stress,
        oos_returns=oos_returns,
        baseline_returns=base_returns,
        oos_ts=walk.oos_ts,
        trade_returns=walk.trade_returns,
        elapsed_s=time.perf_counter() - started,
        gate=gate,
        extra={
            "mc_full": mc,
            "studies": walk.studies,
            "final_study": final_study,
            "bars_per_year": bpy,
            "ts": ts,
        },
    )


def _train_sharpe(trial: Any) -> float:
    value = (trial.user_attrs.get("train") or {}).get("sharpe")
    return math.nan if value is None else float(value)


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
