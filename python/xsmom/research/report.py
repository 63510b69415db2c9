"""The report folder of ``xsmom optimize``: report.md, PNGs, candidate.yaml/json, oos.json, trials.csv.

Every file is written atomically (temp file + rename). No secret is written: the storage URL is
redacted and the Discord webhook URL is never seen here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from xsmom.report import _atomic_write  # noqa: E402

if TYPE_CHECKING:
    from xsmom.research import OptimizeResult, Param


def _json_safe(value: Any) -> Any:
    """NaN/inf → None, recursively (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: Path, document: Any) -> None:
    write_text(path, json.dumps(_json_safe(document), indent=2, allow_nan=False) + "\n")


def _save(fig: Any, path: Path) -> None:
    _atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


def _dates(ts: Sequence[int]) -> Any:
    return np.array(ts, dtype="datetime64[ms]")


def _equity(returns: Sequence[float]) -> np.ndarray:
    return np.cumprod(1.0 + np.asarray(returns, dtype=float))


def plot_oos_equity(result: OptimizeResult, path: Path) -> None:
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, height_ratios=[3, 1])
    x = _dates(result.oos_ts)
    cand, base = _equity(result.oos_returns), _equity(result.baseline_returns)
    top.plot(x, cand, label="candidate (walk-forward OOS)", lw=1.3)
    top.plot(x, base, label="baseline (input config)", lw=1.1, alpha=0.8)
    starts = np.cumsum([0] + [int(s.oos["n_bars"]) for s in result.segments])[1:-1]
    for k in starts:
        if k < len(x):
            top.axvline(x[k], color="grey", lw=0.5, ls=":")
    top.set_ylabel("equity (×)")
    top.set_title("Stitched out-of-sample equity")
    top.legend(loc="upper left")
    bottom.plot(x, cand / np.maximum.accumulate(cand) - 1.0, lw=1.0, label="candidate")
    bottom.plot(x, base / np.maximum.accumulate(base) - 1.0, lw=0.9, label="baseline", alpha=0.8)
    bottom.set_ylabel("drawdown")
    locator = matplotlib.dates.AutoDateLocator()
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(matplotlib.dates.ConciseDateFormatter(locator))
    _save(fig, path)


def plot_importance(importances: dict[str, float], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 0.4 * max(len(importances), 3) + 1))
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names])
    ax.set_xlabel("importance (PED-ANOVA, mean over segments)")
    ax.set_title("Parameter importance")
    _save(fig, path)


def plot_trial_history(trials: list[dict[str, Any]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(10, 4))
    segments = sorted({t["segment"] for t in trials})
    for seg in segments:
        values = [(t["number"], t["value"]) for t in trials if t["segment"] == seg and t["value"] is not None]
        if not values:
            continue
        numbers, objective = zip(*sorted(values), strict=True)
        line = ax.plot(numbers, objective, ".", ms=3, alpha=0.5)[0]
        ax.plot(
            numbers, np.maximum.accumulate(objective), color=line.get_color(), lw=1.2, label=f"segment {seg}"
        )
    ax.set_xlabel("trial")
    ax.set_ylabel("train objective")
    ax.set_title("Trial history (dots) and best so far (lines)")
    if len(segments) <= 12:
        ax.legend(fontsize=7, ncol=2)
    _save(fig, path)


def plot_mc_fan(result: OptimizeResult, path: Path) -> None:
    boot = result.extra["mc_full"]["bootstrap"]
    fan = boot.get("fan")
    fig, ax = plt.subplots(figsize=(10, 4.5))
    x = np.arange(len(result.oos_returns))
    if fan:
        ax.fill_between(x, fan["p5"], fan["p95"], alpha=0.2, label="bootstrap p5–p95")
        ax.fill_between(x, fan["p25"], fan["p75"], alpha=0.35, label="bootstrap p25–p75")
        ax.plot(x, fan["p50"], lw=1.0, ls="--", label="bootstrap median")
    ax.plot(x, _equity(result.oos_returns), lw=1.3, color="black", label="stitched OOS")
    ax.set_xlabel("OOS bar")
    ax.set_ylabel("equity (×)")
    ax.set_title(
        f"Monte Carlo fan ({boot['summary']['n_paths']} stationary-bootstrap paths, "
        f"block {boot['block']:.1f})"
    )
    ax.legend(loc="upper left", fontsize=8)
    _save(fig, path)


def plot_drawdown_distribution(result: OptimizeResult, path: Path) -> None:
    boot = result.extra["mc_full"]["bootstrap"]
    dd = np.asarray(boot["paths"]["max_drawdown"], dtype=float)
    q = boot["summary"]["max_drawdown"]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.hist(dd, bins=40, alpha=0.8)
    for label in ("p50", "p95", "p99"):
        ax.axvline(q[label], ls="--", lw=1.0, color="black" if label == "p50" else "red")
        ax.text(q[label], ax.get_ylim()[1] * 0.9, f" {label} {q[label]:.1%}", fontsize=8)
    ax.set_xlabel("max drawdown of a path")
    ax.set_ylabel("paths")
    ax.set_title("Bootstrap max-drawdown distribution (right tail = worst paths)")
    _save(fig, path)


def _importances(studies: Sequence[Any]) -> dict[str, float]:
    import optuna
    from optuna.trial import TrialState

    totals: dict[str, float] = {}
    counted = 0
    for study in studies:
        complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        if len(complete) < 4:
            continue
        try:
            # PED-ANOVA needs no scikit-learn (fANOVA does).
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
            values = optuna.importance.get_param_importances(study, evaluator=evaluator)
        except (RuntimeError, ValueError, ImportError):
            continue
        counted += 1
        for name, value in values.items():
            totals[name] = totals.get(name, 0.0) + value
    return (
        dict(sorted(((k, v / counted) for k, v in totals.items()), key=lambda kv: -kv[1])) if counted else {}
    )


def trial_rows(studies: Sequence[Any], space: Sequence[Param]) -> list[dict[str, Any]]:
    from xsmom.research import params_of

    rows = []
    for seg, study in enumerate(studies):
        for t in study.get_trials(deepcopy=False):
            rows.append(
                {
                    "segment": seg,
                    "number": t.number,
                    "state": t.state.name,
                    "value": t.value,
                    "sharpe": (t.user_attrs.get("train") or {}).get("sharpe"),
                    "error": t.user_attrs.get("error"),
                    "params": params_of(t, space),
                }
            )
    return rows


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.2%}" if pct else f"{value:.4g}"


PCT = {"total_return", "cagr", "max_drawdown", "time_under_water"}


def _markdown(result: OptimizeResult, importances: dict[str, float]) -> str:
    v = result.verdict
    lines = [
        "# xsmom optimize",
        "",
        "**Verdict: "
        + ("PASSED — the candidate may be deployed" if v["passed"] else "REFUSED — keep the live config")
        + "**",
        "",
        f"{len(result.segments)} walk-forward segments, {result.n_trials} trials in total, "
        f"study `{result.study}` (storage `{result.storage}`), {result.elapsed_s:.1f} s.",
        "",
        "## Deployment gate",
        "",
        "| check | value | threshold | passed |",
        "| --- | ---: | ---: | :---: |",
    ]
    for c in v["checks"]:
        lines.append(
            f"| {c['name']} | {_fmt(c['value'])} | {c['threshold']:g} | {'yes' if c['passed'] else 'no'} |"
        )
    lines += [
        "",
        "## Stitched out-of-sample metrics",
        "",
        "| metric | candidate | baseline |",
        "| --- | ---: | ---: |",
    ]
    for key in result.candidate:
        pct = key in PCT
        lines.append(
            f"| {key} | {_fmt(result.candidate[key], pct)} | {_fmt(result.baseline.get(key), pct)} |"
        )
    lines += [
        "",
        f"Deflated Sharpe ratio: **{_fmt(result.dsr)}** (over {result.n_trials} trials); "
        f"PBO (CSCV, mean over segments): **{_fmt(result.pbo)}**.",
        "",
        "![stitched OOS equity](oos_equity.png)",
        "",
        "## Segments",
        "",
        "| # | train | OOS | trials | pruned | best objective | OOS sharpe | baseline OOS sharpe | PBO |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in result.segments:
        b = s.bounds
        lines.append(
            f"| {s.index} | {b['train_start']}–{b['purged_end']} (of {b['train_end']}) | "
            f"{b['oos_start']}–{b['oos_end']} | "
            f"{s.n_trials} | {s.n_pruned} | {_fmt(s.best_value)} | {_fmt(s.oos['sharpe'])} | "
            f"{_fmt(s.baseline_oos['sharpe'])} | {_fmt(s.pbo)} |"
        )
    lines += ["", "## Chosen parameters (latest segment)", "", "| key | value |", "| --- | --- |"]
    lines += [f"| {k} | {json.dumps(val)} |" for k, val in result.params.items()]
    if importances:
        lines += ["", "## Parameter importance", "", "![importance](param_importance.png)"]
    lines += ["", "## Trial history", "", "![trial history](trial_history.png)"]
    boot = result.mc["bootstrap"]
    lines += [
        "",
        "## Monte Carlo (stitched OOS)",
        "",
        f"Stationary bootstrap, {boot['summary']['n_paths']} paths, mean block {boot['block']:.1f} bars "
        "(Politis–White).",
        "",
        "| statistic | p1 | p5 | p50 | p95 | p99 |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for stat in ("total_return", "cagr", "max_drawdown", "sharpe", "time_under_water"):
        q = boot["summary"][stat]
        pct = stat in PCT
        lines.append(
            f"| {stat} | " + " | ".join(_fmt(q[p], pct) for p in ("p1", "p5", "p50", "p95", "p99")) + " |"
        )
    lines += [
        "",
        f"Probability of loss {_fmt(boot['summary']['probability_of_loss'], True)}, "
        f"CVaR 5 % of total return {_fmt(boot['summary']['cvar_5_total_return'], True)}.",
    ]
    if "reshuffle" in result.mc:
        r = result.mc["reshuffle"]["summary"]
        lines += [
            "",
            f"Trade reshuffle ({result.mc['reshuffle']['n_trades']} round trips): max drawdown p50 "
            f"{_fmt(r['max_drawdown']['p50'], True)}, p95 {_fmt(r['max_drawdown']['p95'], True)}, "
            f"p99 {_fmt(r['max_drawdown']['p99'], True)}.",
        ]
    lines += ["", "![MC fan](mc_fan.png)", "", "![drawdown distribution](drawdown_distribution.png)", ""]
    lines += [
        "## Cost stress (OOS re-runs)",
        "",
        "| scenario | total return | sharpe | max drawdown |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, m in result.stress.items():
        lines.append(
            f"| {name} | {_fmt(m.get('total_return'), True)} | {_fmt(m.get('sharpe'))} | "
            f"{_fmt(m.get('max_drawdown'), True)} |"
        )
    lines.append("")
    return "\n".join(lines)


def write_optimize_report(result: OptimizeResult, out: Path, space: Sequence[Param]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    studies = result.extra.get("studies", [])
    trials = trial_rows(studies, space)
    write_text(out / "candidate.yaml", result.candidate_config.to_yaml())
    write_json(out / "candidate.json", result.summary())
    write_json(
        out / "oos.json",
        {
            "ts": result.oos_ts,
            "returns": result.oos_returns,
            "baseline_returns": result.baseline_returns,
            "trade_returns": result.trade_returns,
            "bars_per_year": result.extra.get("bars_per_year"),
        },
    )
    write_json(out / "trials.json", trials)
    importances = _importances(studies)
    plot_oos_equity(result, out / "oos_equity.png")
    if importances:
        plot_importance(importances, out / "param_importance.png")
    plot_trial_history(trials, out / "trial_history.png")
    plot_mc_fan(result, out / "mc_fan.png")
    plot_drawdown_distribution(result, out / "drawdown_distribution.png")
    write_text(out / "report.md", _markdown(result, importances))
