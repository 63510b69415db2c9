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
import matplotlib.lines  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from xsmom.files import atomic_write  # noqa: E402

if TYPE_CHECKING:
    from xsmom.research import OptimizeResult, Param


def json_safe(value: Any) -> Any:
    """NaN/inf → None, recursively (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: Path, document: Any) -> None:
    write_text(path, json.dumps(json_safe(document), indent=2, allow_nan=False) + "\n")


def _save(fig: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
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
    bottom.plot(x, cand / np.maximum.accumulate(cand) - 1.0, lw=1.0)
    bottom.plot(x, base / np.maximum.accumulate(base) - 1.0, lw=0.9, alpha=0.8)
    bottom.set_ylabel("drawdown")
    locator = matplotlib.dates.AutoDateLocator()
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(matplotlib.dates.ConciseDateFormatter(locator))
    # One legend under both panels (same colours in both), with the segment boundaries explained.
    handles, labels = top.get_legend_handles_labels()
    handles.append(matplotlib.lines.Line2D([], [], color="grey", lw=0.5, ls=":"))
    labels.append("segment boundary (new parameters)")
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, frameon=False)
    _save(fig, path)


def plot_importance(importances: dict[str, float], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 0.4 * max(len(importances), 3) + 1))
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names])
    ax.set_xlabel("importance (PED-ANOVA, mean over segments)")
    ax.set_title("Parameter importance")
    _save(fig, path)


def plot_trial_history(trials: list[dict[str, Any]], path: Path) -> None:
    """Every trial: completed ones as dots with the best so far, pruned ones as crosses on the floor
    of the plot (they have no objective), per segment and for the final study."""
    fig, ax = plt.subplots(figsize=(10, 4))
    segments = list(dict.fromkeys(t["segment"] for t in trials))
    finite = [t["value"] for t in trials if t["value"] is not None and math.isfinite(t["value"])]
    floor = min(finite) - 0.05 * (max(finite) - min(finite) + 1e-9) if finite else 0.0
    n_pruned = 0
    for seg in segments:
        rows = [t for t in trials if t["segment"] == seg]
        values = [(t["number"], t["value"]) for t in rows if t["value"] is not None]
        color = None
        if values:
            numbers, objective = zip(*sorted(values), strict=True)
            line = ax.plot(numbers, objective, ".", ms=3, alpha=0.5)[0]
            color = line.get_color()
            label = "final study" if seg == "final" else f"segment {seg}"
            ax.plot(numbers, np.maximum.accumulate(objective), color=color, lw=1.2, label=label)
        pruned = [t["number"] for t in rows if t["state"] == "PRUNED"]
        n_pruned += len(pruned)
        if pruned:
            ax.plot(pruned, [floor] * len(pruned), "x", ms=4, color=color or "grey", alpha=0.7)
    if n_pruned:
        ax.plot([], [], "x", color="grey", label=f"pruned ({n_pruned}, no objective)")
    ax.set_xlabel("trial")
    ax.set_ylabel("train objective")
    ax.set_title("Trial history (dots), best so far (lines), pruned trials (crosses)")
    if len(segments) <= 14:
        ax.legend(fontsize=7, ncol=2)
    _save(fig, path)


def plot_mc_fan(result: OptimizeResult, path: Path) -> None:
    boot = result.extra["mc_full"]["bootstrap"]
    fan = boot.get("fan")
    fig, ax = plt.subplots(figsize=(10, 4.5))
    x = _dates(result.oos_ts)
    if fan:
        ax.fill_between(x, fan["p5"], fan["p95"], alpha=0.2, label="bootstrap p5–p95")
        ax.fill_between(x, fan["p25"], fan["p75"], alpha=0.35, label="bootstrap p25–p75")
        ax.plot(x, fan["p50"], lw=1.0, ls="--", label="bootstrap median")
    ax.plot(x, _equity(result.oos_returns), lw=1.3, color="black", label="stitched OOS")
    locator = matplotlib.dates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(matplotlib.dates.ConciseDateFormatter(locator))
    ax.set_xlabel("stitched OOS date (UTC)")
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
    # Quantiles in the legend, not as text at the lines: p95 and p99 are often a hair apart.
    styles = {"p50": ("black", "--"), "p95": ("tab:orange", "--"), "p99": ("tab:red", ":")}
    for label, (color, ls) in styles.items():
        ax.axvline(q[label], ls=ls, lw=1.2, color=color, label=f"{label} {q[label]:.1%}")
    ax.legend(loc="upper right", fontsize=8, title="max drawdown quantile", title_fontsize=8)
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


def trial_rows(
    studies: Sequence[Any], space: Sequence[Param], final: Any | None = None
) -> list[dict[str, Any]]:
    """Every trial of every study (pruned and duplicate ones included); the final study's segment
    is ``"final"``."""
    from xsmom.research import params_of

    rows = []
    labelled = [(seg, study) for seg, study in enumerate(studies)]
    if final is not None:
        labelled.append(("final", final))
    for seg, study in labelled:
        for t in study.get_trials(deepcopy=False):
            rows.append(
                {
                    "segment": seg,
                    "duplicate_of": t.user_attrs.get("duplicate_of"),
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


HEADLINE = {
    "deploy": "DEPLOY — the candidate has skill out of sample and beats the live config",
    "keep": "KEEP the live config — the candidate is not a reliable improvement",
    "stand aside": "STAND ASIDE — nothing here has skill out of sample; the strategy should not trade",
}


def stress_note(result: OptimizeResult) -> str | None:
    """A sentence when the OOS Sharpe does not fall as costs rise (×1 → ×1.5 → ×2 → ×3): the path is
    chaotic (stops, scoring and anti-churn react to tiny cost changes), so read the fragility."""
    keys = ["costs_x1.5", "costs_x2", "costs_x3"]
    sharpes = [result.candidate.get("sharpe")] + [result.stress.get(k, {}).get("sharpe") for k in keys]
    if any(v is None or not math.isfinite(v) for v in sharpes):
        return None
    rises = [
        f"×{a} → ×{b}: {sa:.2f} → {sb:.2f}"
        for (a, sa), (b, sb) in zip(
            zip(("1", "1.5", "2"), sharpes[:-1], strict=True),
            zip(("1.5", "2", "3"), sharpes[1:], strict=True),
            strict=True,
        )
        if sb > sa + 1e-9
    ]
    if not rises:
        return None
    frag = result.fragility.get("std", math.nan)
    return (
        "**The cost-stress table is not monotone** (higher costs, higher Sharpe: "
        + "; ".join(rises)
        + "). Stops, scoring and anti-churn make the path chaotic, so single re-runs move by more than "
        f"the cost change explains. Read the fragility instead: the OOS Sharpe's std over "
        f"{result.fragility.get('runs')} re-runs with costs jittered "
        f"±{result.fragility.get('jitter', 0):.0%} "
        f"is {_fmt(frag)} (limit {result.gate.max_fragility:g})."
    )


def _dates_of(ms: int) -> str:
    from xsmom.research import iso_date

    return iso_date(ms)


def _md_verdict(v: dict[str, Any]) -> list[str]:
    """The verdict, what to do when it says stand aside, and the gate's checks."""
    lines = [
        "# xsmom optimize",
        "",
        f"**Verdict: {HEADLINE.get(v['verdict'], v['verdict'])}.** Why: {v['reason']}.",
        "",
    ]
    if v["verdict"] == "stand aside":
        lines += [
            "Do not trade this strategy on this data. To flatten the live runner and keep it flat, run "
            "`xsmom config deploy --stand-aside candidate.json --live <live config>` (writes "
            "`live: {trading: false}`).",
            "",
        ]
    lines += [
        "## Deployment gate",
        "",
        "| check | kind | value | threshold | passed |",
        "| --- | --- | ---: | ---: | :---: |",
    ]
    for c in v["checks"]:
        op = "≤" if c["name"] in ("delta_max_drawdown", "mc_p99_max_drawdown", "fragility") else "≥"
        lines.append(
            f"| {c['name']} | {c.get('kind', '')} | {_fmt(c['value'])} | {op} {c['threshold']:g} | "
            f"{'yes' if c['passed'] else 'no'} |"
        )
    return lines


def _md_skill(result: OptimizeResult) -> list[str]:
    """PSR and DSR, the paired bootstrap and the fragility."""
    paired = result.paired
    ds, dc = paired["delta_sharpe"], paired["delta_cagr"]
    return [
        "",
        f"Skill: PSR of the stitched OOS vs a zero Sharpe **{_fmt(result.psr)}** (baseline "
        f"{_fmt(result.baseline.get('psr'))}); deflated Sharpe of the procedure **{_fmt(result.dsr)}** "
        f"over `pipeline_trials` = {result.gate.pipeline_trials}"
        + (" (= the PSR)" if result.gate.pipeline_trials == 1 else "")
        + ".",
        "",
        f"Paired stationary bootstrap ({paired['n_paths']} paths, block {paired['block']:.1f} bars, the "
        f"same resampled bars for candidate and baseline): Δsharpe p5/p50/p95 = {_fmt(ds['p5'])} / "
        f"{_fmt(ds['p50'])} / {_fmt(ds['p95'])}, Δcagr = {_fmt(dc['p5'], True)} / {_fmt(dc['p50'], True)} / "
        f"{_fmt(dc['p95'], True)}, P(Δsharpe > 0) = **{_fmt(paired['p_delta_sharpe'])}**.",
        "",
        f"Fragility: std of the OOS Sharpe over {result.fragility['runs']} re-runs with fees and slippage "
        f"jittered ±{result.fragility['jitter']:.0%} = **{_fmt(result.fragility['std'])}**.",
        "",
    ]


def _md_candidate(result: OptimizeResult) -> list[str]:
    """The final study's choice (the deployed candidate) and the stitched OOS metrics."""
    f = result.final
    lines = [
        "## The deployed candidate",
        "",
        f"`candidate.yaml` holds the choice of a final study (`{f.study_name}`, {f.n_trials} trials, "
        f"{f.n_pruned} pruned) on the newest train window, **{_dates_of(f.dates[0])} to "
        f"{_dates_of(f.dates[1])}** (bars {f.bounds['train_start']}–{f.bounds['train_end']}, objective on "
        f"bars up to {f.bounds['purged_end']} after the purge), ending at the last bar. The walk-forward "
        "below judged the procedure that produced it; this parameter set itself has no OOS record yet.",
        "",
        "| key | value |",
        "| --- | --- |",
    ]
    lines += [f"| {k} | {json.dumps(val)} |" for k, val in result.params.items()]
    lines += [
        "",
        "## Stitched out-of-sample result",
        "",
        "![stitched OOS equity](oos_equity.png)",
        "",
        "| metric | candidate | baseline |",
        "| --- | ---: | ---: |",
    ]
    for key in result.candidate:
        pct = key in PCT
        lines.append(
            f"| {key} | {_fmt(result.candidate[key], pct)} | {_fmt(result.baseline.get(key), pct)} |"
        )
    return lines


def _md_segments(result: OptimizeResult) -> list[str]:
    """PBO and one row per walk-forward segment."""
    lines = [
        "",
        f"PBO (CSCV, mean over segments): **{_fmt(result.pbo)}**.",
        "",
        "## Segments",
        "",
        "Train DSR is a diagnostic only (never gated on): the chosen trial's train Sharpe deflated by that "
        "segment's own distinct completed trials; the OOS Sharpe beside it is what happened next.",
        "",
        "| # | train | OOS | trials | distinct | pruned | train sharpe | train DSR | OOS sharpe | "
        "baseline OOS sharpe | PBO |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    ts = result.extra.get("ts")
    for s in result.segments:
        b = s.bounds
        if ts:
            train = f"{_dates_of(ts[b['train_start']])}–{_dates_of(ts[b['train_end'] - 1])}"
            oos = f"{_dates_of(ts[b['oos_start']])}–{_dates_of(ts[b['oos_end'] - 1])}"
        else:
            train, oos = f"{b['train_start']}–{b['train_end']}", f"{b['oos_start']}–{b['oos_end']}"
        lines.append(
            f"| {s.index} | {train} | {oos} | {s.n_trials} | {s.n_distinct} | {s.n_pruned} | "
            f"{_fmt(s.train_sharpe)} | {_fmt(s.train_dsr)} | {_fmt(s.oos['sharpe'])} | "
            f"{_fmt(s.baseline_oos['sharpe'])} | {_fmt(s.pbo)} |"
        )
    return lines


def _md_monte_carlo(result: OptimizeResult) -> list[str]:
    """The stationary bootstrap's quantiles and the trade reshuffle."""
    boot = result.mc["bootstrap"]
    lines = [
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
    return lines


def _md_stress(result: OptimizeResult) -> list[str]:
    """The cost-stress table (and its note when it is not monotone)."""
    lines = [
        "## Cost stress (OOS re-runs)",
        "",
        "| scenario | total return | sharpe | max drawdown |",
        "| --- | ---: | ---: | ---: |",
        f"| as configured | {_fmt(result.candidate.get('total_return'), True)} | "
        f"{_fmt(result.candidate.get('sharpe'))} | {_fmt(result.candidate.get('max_drawdown'), True)} |",
    ]
    for name, m in result.stress.items():
        lines.append(
            f"| {name} | {_fmt(m.get('total_return'), True)} | {_fmt(m.get('sharpe'))} | "
            f"{_fmt(m.get('max_drawdown'), True)} |"
        )
    note = stress_note(result)
    if note:
        lines += ["", note]
    return lines


def _markdown(result: OptimizeResult, importances: dict[str, float]) -> str:
    lines = _md_verdict(result.verdict) + _md_skill(result) + _md_candidate(result) + _md_segments(result)
    if importances:
        lines += ["", "## Parameter importance", "", "![importance](param_importance.png)"]
    lines += ["", "## Trial history", "", "![trial history](trial_history.png)"]
    lines += _md_monte_carlo(result)
    lines += ["", "![MC fan](mc_fan.png)", "", "![drawdown distribution](drawdown_distribution.png)", ""]
    lines += _md_stress(result)
    lines += [
        "",
        f"{len(result.segments)} walk-forward segments and a final study, {result.n_trials} trials in total, "
        f"study `{result.study}` (storage `{result.storage}`), {result.elapsed_s:.1f} s.",
        "",
    ]
    return "\n".join(lines)


def write_optimize_report(result: OptimizeResult, out: Path, space: Sequence[Param]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    studies = result.extra.get("studies", [])
    trials = trial_rows(studies, space, result.extra.get("final_study"))
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
