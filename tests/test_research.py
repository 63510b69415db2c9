"""Research pipeline: search space, gate, planted signal, noise, determinism, pruning, executor,
workers on one study, Rust statistics through the bindings, and the CLI end to end."""

from __future__ import annotations

import json
import math
import multiprocessing
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

import polars as pl
import pytest

optuna = pytest.importorskip("optuna")

import xsmom  # noqa: E402
from xsmom import _core, research  # noqa: E402
from xsmom.cli import main  # noqa: E402
from xsmom.research import Gate, Param, WalkForward, deployment_gate  # noqa: E402
from xsmom.research.synthetic import synthetic_bars  # noqa: E402

WFO = WalkForward(train_days=60, oos_days=20, embargo_days=1)
CHOICES = ([6], [48], [336])


def base_config() -> xsmom.Config:
    return xsmom.Config.default().with_overrides(
        {
            "strategy.lookbacks": [6],
            "strategy.lookback_weights": [1.0],
            "strategy.regime_filter.enabled": False,
            "risk.stops.enabled": False,
        }
    )


def small_space() -> list[Param]:
    return [
        Param("strategy.lookbacks", "categorical", choices=CHOICES),
        Param("strategy.signal_power", "float", 0.8, 2.0),
        Param("strategy.k_max", "int", 2, 5),
    ]


@pytest.fixture(scope="module")
def planted():
    return synthetic_bars(12, 24 * 200, seed=1, planted_lookback=48)


@pytest.fixture(scope="module")
def noise():
    return synthetic_bars(12, 24 * 200, seed=2)


# --- search space ----------------------------------------------------------------------------


def test_default_space_covers_research_md_keys():
    paths = {p.path for p in research.load_space()}
    for key in (
        "strategy.lookbacks",
        "strategy.signal_power",
        "strategy.k_min",
        "strategy.k_max",
        "sizing.gross_leverage",
        "strategy.vol_lookback",
        "sizing.vol_target.target_ann_vol",
        "strategy.regime_filter.slope_min_bps_per_day",
        "risk.stops.atr_mult_sl",
        "risk.stops.trail_atr_mult",
    ):
        assert key in paths
    # Every categorical choice and both ends of every range are valid on the default config.
    config = xsmom.Config.default()
    for p in research.load_space():
        values = p.choices if p.type == "categorical" else (p.low, p.high)
        for v in values:
            config.with_overrides({p.path: int(v) if p.type == "int" else v})


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("params: []", "non-empty list under the key 'params'"),
        ("params:\n  - {path: strategy.k_max, type: int, low: 5, high: 2}", "low 5 is above high 2"),
        ("params:\n  - {path: strategy.k_max, type: weird, low: 1, high: 2}", "type must be int, float"),
        ("params:\n  - {path: strategy.k_max, type: int, low: 1, hi: 2}", "unknown key(s) ['hi']"),
        ("params:\n  - {path: a.b, type: float, low: 0, high: 1, log: true}", "log needs low > 0"),
        ("params:\n  - {path: a.b, type: categorical}", "needs a non-empty 'choices'"),
        ("params: [", "not valid YAML"),
    ],
)
def test_bad_space_files_give_one_line_errors(tmp_path, text, needle):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(research.ResearchError) as err:
        research.load_space(path)
    assert needle in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


# --- gate -------------------------------------------------------------------------------------


GOOD = {"psr": 0.99, "max_drawdown": 0.12, "n_bars": 1000.0, "round_trips": 100.0}
BASE = {"psr": 0.97, "max_drawdown": 0.10, "n_bars": 1000.0, "round_trips": 100.0}
MC = {"max_drawdown": {"p99": 0.30}}
PAIRED = {"p_delta_sharpe": 0.95}


def test_deployment_gate_checks_every_threshold():
    verdict = deployment_gate(GOOD, BASE, MC, PAIRED, 0.2)
    assert verdict["verdict"] == "deploy" and verdict["passed"] and len(verdict["checks"]) == 7
    assert {c["name"] for c in verdict["checks"]} == {
        "psr_oos",
        "p_delta_sharpe",
        "delta_max_drawdown",
        "mc_p99_max_drawdown",
        "fragility",
        "oos_bars",
        "oos_trades",
    }
    failing = {
        "psr_oos": ({**GOOD, "psr": 0.94}, MC, PAIRED, 0.2),
        "p_delta_sharpe": (GOOD, MC, {"p_delta_sharpe": 0.89}, 0.2),
        "delta_max_drawdown": ({**GOOD, "max_drawdown": 0.16}, MC, PAIRED, 0.2),
        "mc_p99_max_drawdown": (GOOD, {"max_drawdown": {"p99": 0.36}}, PAIRED, 0.2),
        "fragility": (GOOD, MC, PAIRED, 0.51),
        "oos_bars": ({**GOOD, "n_bars": 199.0}, MC, PAIRED, 0.2),
        "oos_trades": ({**GOOD, "round_trips": 29.0}, MC, PAIRED, 0.2),
    }
    for name, (cand, mc_, paired, fragility) in failing.items():
        verdict = deployment_gate(cand, BASE, mc_, paired, fragility)
        assert not verdict["passed"] and verdict["verdict"] == "keep", name
        assert [c["name"] for c in verdict["checks"] if not c["passed"]] == [name]
    assert not deployment_gate({**GOOD, "psr": math.nan}, BASE, MC, PAIRED, 0.2)["passed"]
    assert not deployment_gate(GOOD, BASE, MC, PAIRED, math.nan)["passed"]
    # Thresholds are configurable.
    relaxed = Gate(oos_min_trades=20)
    assert deployment_gate({**GOOD, "round_trips": 29.0}, BASE, MC, PAIRED, 0.2, relaxed)["passed"]
    # The skill statistic of the procedure may be deflated (pipeline_trials > 1).
    assert not deployment_gate(GOOD, BASE, MC, PAIRED, 0.2, dsr_procedure=0.9)["passed"]


def test_verdicts_deploy_keep_and_stand_aside():
    no_skill = {**BASE, "psr": 0.5}
    # deploy: every check passes, whatever the baseline.
    assert deployment_gate(GOOD, no_skill, MC, PAIRED, 0.2)["verdict"] == "deploy"
    # keep: the candidate fails a relative check and the live config has skill.
    keep = deployment_gate(GOOD, BASE, MC, {"p_delta_sharpe": 0.5}, 0.2)
    assert keep["verdict"] == "keep" and "p_delta_sharpe" in keep["reason"]
    # stand aside: neither has skill, even when the candidate beats the baseline.
    aside = deployment_gate({**GOOD, "psr": 0.6}, no_skill, MC, {"p_delta_sharpe": 0.99}, 0.2)
    assert aside["verdict"] == "stand aside" and "should not trade" in aside["reason"]
    # A skilled candidate that fails an absolute check next to an unskilled baseline: nothing to trade.
    frail = deployment_gate(GOOD, no_skill, MC, PAIRED, 0.9)
    assert frail["verdict"] == "stand aside" and "fragility" in frail["reason"]
    # The baseline's skill threshold is the same min_psr.
    assert deployment_gate(GOOD, {**BASE, "psr": 0.95}, MC, {"p_delta_sharpe": 0.1}, 0.2)["verdict"] == "keep"
    assert deployment_gate(GOOD, {**BASE, "psr": 0.949}, MC, {"p_delta_sharpe": 0.1}, 0.2)["verdict"] == (
        "stand aside"
    )


def test_gate_settings_are_checked():
    with pytest.raises(
        research.ResearchError, match="pipeline_sharpe_var is required when pipeline_trials > 1"
    ):
        Gate(pipeline_trials=5)
    with pytest.raises(research.ResearchError, match="gate.pipeline_trials must be an integer"):
        Gate(pipeline_trials=0)
    with pytest.raises(research.ResearchError, match="gate.pipeline_sharpe_var must be a finite number"):
        Gate(pipeline_trials=2, pipeline_sharpe_var=-1.0)
    assert Gate(pipeline_trials=5, pipeline_sharpe_var=0.5).pipeline_trials == 5


def test_paired_bootstrap_uses_the_same_indices_for_both_series():
    import numpy as np

    rng = np.random.default_rng(4)
    base = list(rng.normal(0.0, 0.01, 600))
    # Twice the returns: the same Sharpe on every paired path (Sharpe is scale-free), a higher CAGR.
    double = [2 * r for r in base]
    paired = research.paired_bootstrap(double, base, 8760.0, n_paths=300, seed=1)
    for q in ("p5", "p50", "p95"):
        assert abs(paired["delta_sharpe"][q]) < 1e-9
    # An independent series with the same distribution: Δsharpe spreads widely around 0.
    other = list(rng.normal(0.0, 0.01, 600))
    wide = research.paired_bootstrap(other, base, 8760.0, n_paths=300, seed=1)
    assert wide["delta_sharpe"]["p95"] - wide["delta_sharpe"]["p5"] > 1.0
    assert 0.0 < wide["p_delta_sharpe"] < 1.0
    # A real per-bar edge on top of the same noise: Δsharpe > 0 on (nearly) every path.
    edge = [r + 0.002 for r in base]
    assert research.paired_bootstrap(edge, base, 8760.0, n_paths=300, seed=1)["p_delta_sharpe"] > 0.99
    with pytest.raises(research.ResearchError, match="candidate has 3 returns, baseline 600"):
        research.paired_bootstrap(base[:3], base, 8760.0)


# --- the optimizer ----------------------------------------------------------------------------


def test_planted_signal_is_found_and_passes_the_gate(planted):
    result = research.optimize(
        planted, base_config(), space=small_space(), n_trials=16, seed=0, wfo=WFO, mc_paths=200, n_jobs=2
    )
    assert len(result.segments) == 6
    assert all(s.params["strategy.lookbacks"] == [48] for s in result.segments)
    assert result.params["strategy.lookbacks"] == [48]
    assert result.verdict["verdict"] == "deploy", result.verdict
    assert result.candidate["sharpe"] > result.baseline["sharpe"] + 1.0
    # pipeline_trials = 1: the DSR of the procedure is the PSR of the stitched OOS.
    assert result.dsr == pytest.approx(_core.psr(result.oos_returns)) and result.psr > 0.95
    assert result.n_trials == 7 * 16
    assert all(s.n_distinct <= 16 and math.isfinite(s.train_dsr) for s in result.segments)
    # The deployed candidate is the final study on the newest train window, ending at the last bar.
    assert result.final.bounds["train_end"] == 24 * 200
    assert result.final.dates[1] == result.data_range[1]
    assert result.params == result.final.params
    assert 0.0 <= result.pbo <= 0.5
    assert result.candidate_config.to_dict()["strategy"]["lookbacks"] == [48]
    assert set(result.stress) == {"costs_x1.5", "costs_x2", "costs_x3", "fill_next_open"}
    assert result.stress["costs_x3"]["total_return"] < result.candidate["total_return"]


def test_noise_is_refused_by_the_gate(noise):
    result = research.optimize(
        noise, base_config(), space=small_space(), n_trials=16, seed=0, wfo=WFO, mc_paths=200, n_jobs=2
    )
    assert result.verdict["verdict"] == "stand aside"
    failed = {c["name"] for c in result.verdict["checks"] if not c["passed"]}
    assert "psr_oos" in failed
    assert result.psr < 0.95


def test_pipeline_trials_deflate_the_skill_statistic(planted):
    kwargs = dict(space=small_space(), n_trials=8, seed=0, wfo=WFO, mc_paths=50, n_jobs=2)
    plain = research.optimize(planted, base_config(), **kwargs)
    # 50 variants whose annualised OOS Sharpes spread with variance 400: the benchmark is high.
    gate = Gate(pipeline_trials=50, pipeline_sharpe_var=400.0)
    deflated = research.optimize(planted, base_config(), gate=gate, **kwargs)
    assert plain.dsr == pytest.approx(plain.psr)
    assert deflated.psr == pytest.approx(plain.psr) and deflated.dsr < plain.dsr
    expected = _core.deflated_sharpe(deflated.oos_returns, 50, 400.0 / 8760.0)
    assert deflated.dsr == pytest.approx(expected)
    check = next(c for c in deflated.verdict["checks"] if c["name"] == "psr_oos")
    assert check["value"] == pytest.approx(deflated.dsr)


def test_same_seed_same_result_and_another_seed_differs(noise):
    def run(seed):
        return research.optimize(
            noise, base_config(), space=small_space(), n_trials=12, seed=seed, wfo=WFO, mc_paths=50, n_jobs=3
        )

    a, b, c = run(7), run(7), run(8)
    assert [s.params for s in a.segments] == [s.params for s in b.segments]
    assert a.oos_returns == b.oos_returns and a.verdict == b.verdict and a.mc == b.mc
    values = [[t.value for t in s.trials] for s in a.extra["studies"]]
    assert values == [[t.value for t in s.trials] for s in b.extra["studies"]]
    assert values != [[t.value for t in s.trials] for s in c.extra["studies"]]


def test_invalid_configurations_are_pruned_not_scored(noise):
    space = [Param("strategy.k_min", "int", 1, 6), Param("strategy.k_max", "int", 1, 6)]
    result = research.optimize(
        noise,
        base_config(),
        space=space,
        n_trials=14,
        seed=0,
        wfo=WalkForward(60, 20, 1),
        mc_paths=50,
        n_jobs=4,
    )
    pruned = [
        t for s in result.extra["studies"] for t in s.trials if t.state == optuna.trial.TrialState.PRUNED
    ]
    assert pruned, "k_min > k_max must occur in 14 × 6 trials"
    for t in pruned:
        assert t.params["strategy.k_min"] > t.params["strategy.k_max"] and "k_min" in t.user_attrs["error"]
    assert sum(s.n_pruned for s in result.segments) == len(pruned)
    assert all(s.params["strategy.k_min"] <= s.params["strategy.k_max"] for s in result.segments)


def test_executor_evaluates_like_the_local_call(noise):
    kwargs = dict(space=small_space(), n_trials=8, seed=3, wfo=WFO, mc_paths=50, n_jobs=4)
    local = research.optimize(noise, base_config(), **kwargs)
    # spawn: a forked child would inherit the parent's polars/rayon thread pools without their threads.
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        remote = research.optimize(noise, base_config(), executor=pool, **kwargs)
        # A Dataset (validated once) is shipped to the workers as its validated bars.
        remote_dataset = research.optimize(xsmom.Dataset(noise), base_config(), executor=pool, **kwargs)
    assert [s.params for s in remote.segments] == [s.params for s in local.segments]
    assert remote.oos_returns == local.oos_returns
    assert remote_dataset.oos_returns == local.oos_returns
    assert research.optimize(xsmom.Dataset(noise), base_config(), **kwargs).oos_returns == local.oos_returns


def test_two_workers_share_one_study_and_evaluate_no_parameter_set_twice(tmp_path, noise):
    bars = tmp_path / "bars.parquet"
    noise.filter(noise["ts"] < noise["ts"].min() + __import__("datetime").timedelta(days=102)).write_parquet(
        bars
    )
    storage = str(tmp_path / "shared.journal")
    space = tmp_path / "space.yaml"
    # 4 × 4 = 16 parameter sets for 48 trials per study: duplicates must be asked for, and a study
    # lasts long enough for the worker (polling every 0.2 s) to join it on a loaded machine.
    space.write_text(
        "params:\n  - {path: strategy.signal_power, type: float, low: 0.8, high: 2.0, step: 0.4}\n"
        "  - {path: strategy.k_max, type: int, low: 2, high: 5}\n"
    )
    common = ["--bars", str(bars), "--storage", storage, "--study", "shared", "--trials", "48", "--jobs", "1"]
    common += ["--train-days", "60", "--oos-days", "20", "--embargo-days", "1", "--space", str(space)]
    worker = subprocess.Popen(
        [sys.executable, "-m", "xsmom", "optimize", "--worker", "--worker-index", "1", *common],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The worker has started (imports done) and polls for the study when it prints this line.
        assert "worker joining study shared" in worker.stderr.readline()
        code = main(["optimize", *common, "--out", str(tmp_path / "out"), "--mc-paths", "50", "--no-notify"])
        out, err = worker.communicate(timeout=120)
    finally:
        worker.kill()
    assert code == 0
    assert worker.returncode == 0, err
    storage_obj = research.journal_storage(tmp_path / "shared.journal")
    names = [s.study_name for s in optuna.get_all_study_summaries(storage_obj)]
    assert sorted(names) == ["shared-final", "shared-seg00", "shared-seg01"]
    who = set()
    for name in names:
        trials = optuna.load_study(study_name=name, storage=storage_obj).trials
        # Each process checks the count before it asks: with batches of 1 and 2 processes a study can
        # end with one trial more than asked for, never a lost one.
        assert 48 <= len(trials) <= 49 and sorted(t.number for t in trials) == list(range(len(trials)))
        assert all(t.state.is_finished() for t in trials)
        evaluated = [t for t in trials if "evaluated_by" in t.user_attrs]
        keys = [json.dumps(t.params, sort_keys=True) for t in evaluated]
        assert len(keys) == len(set(keys)), f"{name}: a parameter set was evaluated twice"
        assert len(evaluated) <= 16 and any("duplicate_of" in t.user_attrs for t in trials)
        who |= {t.user_attrs["asked_by"] for t in trials}
    assert len(who) == 2, f"both processes ask for trials: {who}"


def test_worker_seeds_differ_and_the_main_process_is_index_zero():
    assert research.sampler_seed(5, 0, 0) == 5 and research.sampler_seed(5, 0, 1) == 6
    seeds = {research.sampler_seed(5, j, w) for j in range(10) for w in range(4)}
    assert len(seeds) == 40
    with pytest.raises(research.ResearchError, match="worker index ≥ 1"):
        research.optimize(synthetic_bars(4, 24 * 100, seed=3), worker=True, storage="x.journal")


# --- Rust statistics through the bindings -----------------------------------------------------


def test_psr_dsr_and_expected_max_sharpe_match_the_formulas():
    from statistics import NormalDist

    returns = [0.001 + 0.01 * ((t * 37 % 101) / 101 - 0.5) for t in range(500)]
    n = len(returns)
    mean = sum(returns) / n
    sd = math.sqrt(sum((r - mean) ** 2 for r in returns) / (n - 1))
    m2 = sum((r - mean) ** 2 for r in returns) / n
    skew = sum((r - mean) ** 3 for r in returns) / n / m2**1.5
    kurt = sum((r - mean) ** 4 for r in returns) / n / m2**2
    sr = mean / sd
    phi, inv = NormalDist().cdf, NormalDist().inv_cdf

    def psr(bench):
        return phi((sr - bench) * math.sqrt(n - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr * sr))

    assert _core.psr(returns) == pytest.approx(psr(0.0), abs=1e-12)
    gamma = 0.5772156649015329
    emax = math.sqrt(0.002) * ((1 - gamma) * inv(1 - 1 / 50) + gamma * inv(1 - 1 / (50 * math.e)))
    assert _core.expected_max_sharpe(50, 0.002) == pytest.approx(emax, rel=1e-9)
    assert _core.deflated_sharpe(returns, 50, 0.002) == pytest.approx(psr(emax), abs=1e-9)


def test_pbo_binding_and_monte_carlo_are_seeded():
    import random

    rng = random.Random(1)
    trials = [[rng.gauss(0, 1) for _ in range(320)] for _ in range(8)]
    edge = [[x + (0.5 if k == 0 else 0.0) for x in t] for k, t in enumerate(trials)]
    assert _core.pbo(edge, 8) == 0.0
    assert 0.0 < _core.pbo(trials, 8) < 1.0
    with pytest.raises(ValueError, match="n_blocks must be even"):
        _core.pbo(trials, 7)
    with pytest.raises(ValueError, match="trial 1 has 3 returns"):
        _core.pbo([[0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3]], 2)
    returns = [0.001 * rng.gauss(0.2, 1) for _ in range(400)]
    a = _core.mc_bootstrap(returns, 100, 5, None, 8760.0, True)
    b = _core.mc_bootstrap(returns, 100, 5, None, 8760.0, True)
    assert a == b and len(a["fan"]["p50"]) == 400
    q = a["summary"]["max_drawdown"]
    assert q["p99"] >= q["p95"] >= q["p50"] >= q["p5"]
    assert a["block"] == pytest.approx(_core.block_length(returns))
    with pytest.raises(ValueError, match="block length"):
        _core.mc_bootstrap(returns, 10, 0, 0.5, 8760.0)


hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.floats(-0.05, 0.05, allow_nan=False), min_size=5, max_size=200),
    st.integers(0, 2**32),
)
def test_monte_carlo_summary_properties(returns, seed):
    out = _core.mc_bootstrap(returns, 40, seed, None, 8760.0, False)
    summary = out["summary"]
    for stat in ("total_return", "max_drawdown", "sharpe", "time_under_water"):
        q = [summary[stat][p] for p in ("p1", "p5", "p50", "p95", "p99")]
        finite = [v for v in q if not math.isnan(v)]
        assert finite == sorted(finite)
    assert 0.0 <= summary["probability_of_loss"] <= 1.0
    assert summary["cvar_5_total_return"] <= summary["total_return"]["p5"] + 1e-12
    assert all(0.0 <= d < 1.0 for d in out["paths"]["max_drawdown"])
    shuffled = _core.mc_reshuffle(returns, 20, seed, 100.0)
    total = _core.path_stats(returns, 100.0)["total_return"]
    assert all(t == pytest.approx(total, rel=1e-9, abs=1e-12) for t in shuffled["paths"]["total_return"])


# --- CLI --------------------------------------------------------------------------------------


def test_cli_optimize_and_montecarlo_end_to_end(tmp_path, data_dir, capsys):
    out = tmp_path / "report"
    args = ["optimize", "--bars", str(data_dir), "--trials", "6", "--train-days", "60", "--oos-days", "20"]
    args += ["--embargo-days", "1", "--out", str(out), "--mc-paths", "100", "--seed", "2", "--no-notify"]
    assert main(args) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "verdict:" in printed and "report:" in printed
    # Progress off a terminal: plain lines, each phase's last one at least (trials, then Monte Carlo).
    trial_rows = json.loads((out / "trials.json").read_text())
    n_segments = len({t["segment"] for t in trial_rows} - {"final"})
    total = 6 * (n_segments + 1)
    assert f"xsmom: optimize {total}/{total}: trials, final study\n" in captured.err
    assert "xsmom: optimize 200/200: Monte Carlo, reshuffle of round trips\n" in captured.err
    for name in (
        "report.md",
        "oos_equity.png",
        "param_importance.png",
        "trial_history.png",
        "mc_fan.png",
        "drawdown_distribution.png",
        "candidate.yaml",
        "candidate.json",
        "oos.json",
        "optuna.journal",
    ):
        assert (out / name).stat().st_size > 0, name
    doc = json.loads((out / "candidate.json").read_text())
    assert {"verdict", "baseline", "candidate", "params", "study", "data_range", "mc"} <= set(doc)
    assert {"passed", "checks"} <= set(doc["verdict"])
    assert all({"name", "value", "threshold", "passed"} <= set(c) for c in doc["verdict"]["checks"])
    start, end = doc["data_range"]
    assert isinstance(start, int) and end > start
    loaded = xsmom.Config.load(out / "candidate.yaml").to_dict()
    for key, value in doc["params"].items():
        node = loaded
        for part in key.split("."):
            node = node[part]
        assert node == pytest.approx(value)
    report = (out / "report.md").read_text()
    # The verdict in one sentence first, then the checks table, then the plots.
    lines = report.splitlines()
    assert lines[2].startswith(f"**Verdict: {doc['verdict']['verdict'].upper()}") and "Why: " in lines[2]
    assert (
        report.index("## Deployment gate") < report.index("![stitched OOS equity]") < report.index("mc_fan")
    )
    assert "newest train window" in report and "Monte Carlo" in report
    start, end = doc["final_study"]["dates"]
    assert end == doc["data_range"][1] and research.iso_date(start) in report
    trials = json.loads((out / "trials.json").read_text())
    assert {t["segment"] for t in trials} >= {0, "final"}
    assert main(["montecarlo", "--result", str(out), "--paths", "300"]) == 0
    err = capsys.readouterr().err
    assert "xsmom: montecarlo 600/600: Monte Carlo, reshuffle of round trips\n" in err
    assert main(["montecarlo", "--result", str(out), "--paths", "120", "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # --json: no progress
    summary = json.loads(captured.out)
    assert summary["bootstrap"]["summary"]["n_paths"] == 120
    assert json.loads((out / "mc.json").read_text()) == summary


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["optimize", "--bars", "/no/such/dir"], "/no/such/dir: no such file"),
        (["optimize", "--bars", "data", "--trials", "0"], "--trials must be at least 1"),
        (["optimize", "--bars", "data", "--worker"], "--worker needs --storage"),
        (
            ["optimize", "--bars", "data", "--worker", "--storage", "x.journal"],
            "--worker needs --worker-index N",
        ),
        (["optimize", "--bars", "data", "--worker-index", "2"], "--worker-index needs --worker"),
        (
            ["optimize", "--bars", "data", "--pipeline-trials", "4"],
            "gate.pipeline_sharpe_var is required when pipeline_trials > 1 (got pipeline_trials=4)",
        ),
        (["optimize", "--bars", "data", "--resume"], "cannot resume: "),
        (["optimize", "--bars", "data", "--space", "/no/space.yaml"], "/no/space.yaml: cannot read"),
        (["montecarlo", "--result", "/no/dir"], "/no/dir/oos.json: no such file"),
        (["optimize", "--bars", "data", "--train-days", "400"], "too few for one walk-forward segment"),
        (
            [
                "optimize",
                "--bars",
                "data",
                "--trials",
                "2",
                "--train-days",
                "60",
                "--oos-days",
                "20",
                "--space",
                "tests/bad_key_space.yaml",
            ],
            "bad_key_space.yaml: strategy.no_such_key: unknown config key",
        ),
        (
            [
                "optimize",
                "--bars",
                "data",
                "--trials",
                "2",
                "--storage",
                "postgresql://u:hunter2@127.0.0.1:9/x",
            ],
            "storage postgresql://u:***@127.0.0.1:9/x",
        ),
    ],
)
def test_cli_research_errors_are_one_line(args, needle, capsys, monkeypatch, data_dir, tmp_path):
    monkeypatch.chdir(data_dir.parent)
    bad = tmp_path / "bad_key_space.yaml"
    bad.write_text("params:\n  - {path: strategy.no_such_key, type: int, low: 1, high: 3}\n")
    args = [str(bad) if a == "tests/bad_key_space.yaml" else a for a in args]
    args += ["--out", str(tmp_path / "out")] if args[0] == "optimize" else []
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("xsmom: error: ") and needle in err and err.count("\n") == 1
    assert "hunter2" not in err


def test_discord_verdict_is_sent_when_the_webhook_is_set(tmp_path, planted, monkeypatch):
    """The real ``xsmom.notify.send_discord`` against a local HTTP server (skipped without the module)."""
    pytest.importorskip("xsmom.notify")
    import http.server
    import threading

    received = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/hook/secret-token"
    monkeypatch.setenv("DISCORD_WEBHOOK_URL", url)
    try:
        result = research.optimize(
            planted,
            base_config(),
            space=small_space(),
            n_trials=4,
            seed=0,
            wfo=WFO,
            mc_paths=20,
            out=tmp_path,
        )
    finally:
        server.shutdown()
    assert result.notified is True and len(received) == 1
    body = received[0]
    assert b"xsmom optimize" in body and b"oos_equity.png" in body and b"candidate.json" in body
    assert result.verdict["verdict"].upper().encode() in body
    for path in tmp_path.iterdir():
        if path.is_file() and path.suffix in (".md", ".json", ".yaml"):
            assert "secret-token" not in path.read_text()


def test_optimizer_on_a_dask_cluster_of_two_processes_matches_the_local_run(tmp_path, noise, capsys):
    distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed (xsmom[dask])")
    from xsmom.parallel import executor_from_cli

    kwargs = dict(space=small_space(), n_trials=8, seed=3, wfo=WFO, mc_paths=50, n_jobs=4)
    local = research.optimize(noise, base_config(), **kwargs)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1"
    ) as cluster:
        executor = executor_from_cli(cluster.scheduler_address)
        try:
            client = executor._client
            scattered, submitted = [], []
            real_scatter, real_submit = client.scatter, executor.submit

            def scatter(data, **kw):
                scattered.append((type(data).__name__, kw.get("broadcast")))
                return real_scatter(data, **kw)

            def submit(fn, *args, **kw):
                submitted.append(args)
                return real_submit(fn, *args, **kw)

            client.scatter, executor.submit = scatter, submit
            with distributed.get_task_stream(client) as stream:
                remote = research.optimize(noise, base_config(), executor=executor, **kwargs)
            workers = {t["worker"] for t in stream.data}
        finally:
            executor.shutdown()
        assert len(workers) == 2, f"both worker processes evaluated batches: {workers}"
        # The bars are scattered to every worker once per run (no funding here); tasks carry the future.
        assert scattered == [("DataFrame", True)]
        assert len(submitted) > 10
        assert not any(isinstance(a, pl.DataFrame) for args in submitted for a in args)
        assert all(isinstance(args[1], distributed.Future) for args in submitted)
        assert [s.params for s in remote.segments] == [s.params for s in local.segments]
        assert remote.oos_returns == local.oos_returns

        # The CLI flag: the same cluster by its address.
        bars = tmp_path / "bars.parquet"
        noise.write_parquet(bars)
        out = tmp_path / "report"
        args = ["optimize", "--bars", str(bars), "--trials", "6", "--train-days", "60", "--oos-days", "20"]
        args += ["--embargo-days", "1", "--out", str(out), "--mc-paths", "50", "--no-notify"]
        assert main([*args, "--dask-scheduler", cluster.scheduler_address]) == 0
        assert "verdict:" in capsys.readouterr().out
        assert json.loads((out / "candidate.json").read_text())["verdict"]["checks"]


# --- gate calibration at small scale (the full one: python -m xsmom.bench_gate) ---------------

CALIBRATION_WFO = WalkForward(train_days=40, oos_days=15, embargo_days=1)


@pytest.fixture(scope="module")
def real_bars(data_dir):
    return xsmom.read_bars(data_dir)


def _calibration_run(panel, seed):
    return research.optimize(
        panel,
        base_config(),
        space=small_space(),
        n_trials=8,
        seed=seed,
        wfo=CALIBRATION_WFO,
        mc_paths=200,
        n_jobs=2,
        gate=Gate(bootstrap_paths=300),
    )


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_null_panels_are_not_deployed(real_bars, seed):
    from xsmom.research.synthetic import shuffled_panel

    panel = shuffled_panel(real_bars, seed=seed)
    # The shuffle keeps every bar's moves, only who gets which one changes.
    assert panel.height == real_bars.height and set(panel["symbol"]) == set(real_bars["symbol"])
    result = _calibration_run(panel, seed)
    assert result.verdict["verdict"] != "deploy", result.verdict["reason"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_cross_sectional_edge_is_deployed(real_bars, seed):
    from xsmom.research.synthetic import shuffled_panel

    result = _calibration_run(shuffled_panel(real_bars, seed=seed, planted=0.2), seed)
    assert result.verdict["verdict"] == "deploy", result.verdict
    assert sum(s.params["strategy.lookbacks"] == [48] for s in result.segments) > len(result.segments) / 2


def test_resume_refuses_a_study_on_other_data_and_existing_studies_need_resume(tmp_path, noise):
    out = tmp_path / "out"
    kwargs = dict(space=small_space(), n_trials=6, seed=0, wfo=WFO, mc_paths=20, n_jobs=2)
    first = research.optimize(noise, base_config(), out=out, **kwargs)
    assert (out / "optuna.journal").stat().st_size > 0
    assert first.study.startswith("xsmom-20240101-20240719-s0-")
    # The same data, config, space and seed: resumed, no trial evaluated again (the budget is reached).
    again = research.optimize(noise, base_config(), out=out, resume=True, **kwargs)
    assert again.study == first.study and again.n_trials == first.n_trials
    assert [s.params for s in again.segments] == [s.params for s in first.segments]
    # Other data: refused, naming the data range.
    shorter = noise.filter(noise["ts"] < noise["ts"].max() - __import__("datetime").timedelta(days=20))
    with pytest.raises(research.ResearchError, match=r"data range differs \(stored 2024-01-01T00:00Z to"):
        research.optimize(shorter, base_config(), out=out, resume=True, **kwargs)
    # ... also when the study name is given explicitly.
    with pytest.raises(
        research.ResearchError, match=r"cannot resume study '.*-seg00': its data range differs"
    ):
        research.optimize(shorter, base_config(), out=out, resume=True, study_name=first.study, **kwargs)
    # Another config: refused, naming the config.
    other = base_config().with_overrides({"strategy.k_min": 3})
    with pytest.raises(research.ResearchError, match="config differs"):
        research.optimize(noise, other, out=out, resume=True, study_name=first.study, **kwargs)
    # An explicit storage holding the study: reused only with resume.
    storage = str(out / "optuna.journal")
    with pytest.raises(research.ResearchError, match="already exists in .*pass --resume"):
        research.optimize(noise, base_config(), storage=storage, **kwargs)
    # The CLI: one line, exit 2.


def test_cli_resume_refusal_is_one_line(tmp_path, data_dir, capsys):
    out = tmp_path / "out"
    args = ["optimize", "--bars", str(data_dir), "--trials", "3", "--train-days", "60", "--oos-days", "20"]
    args += ["--embargo-days", "1", "--out", str(out), "--mc-paths", "20", "--no-notify"]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--resume", "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("xsmom: error: cannot resume: ") and "seed differs (stored 0, now 1)" in err
    assert err.count("\n") == 1


def test_missing_optuna_gives_the_install_hint(monkeypatch, capsys, data_dir):
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError
    assert main(["optimize", "--bars", str(data_dir)]) == 2
    assert capsys.readouterr().err == "xsmom: error: optimize needs optuna: pip install 'xsmom[research]'\n"
    with pytest.raises(
        research.ResearchError, match=r"^optimize needs optuna: pip install 'xsmom\[research\]'$"
    ):
        research.optimize(synthetic_bars(4, 24 * 100, seed=3))


def test_report_flags_a_cost_stress_table_that_is_not_monotone():
    from types import SimpleNamespace

    from xsmom.research.report import stress_note

    def result(sharpes):
        stress = {
            k: {"sharpe": v} for k, v in zip(("costs_x1.5", "costs_x2", "costs_x3"), sharpes[1:], strict=True)
        }
        return SimpleNamespace(
            candidate={"sharpe": sharpes[0]},
            stress=stress,
            fragility={"std": 0.8, "runs": 8, "jitter": 0.01},
            gate=Gate(),
        )

    assert stress_note(result([1.0, 0.8, 0.5, 0.1])) is None
    note = stress_note(result([-5.05, -4.05, -4.5, -6.0]))
    assert "not monotone" in note and "×1 → ×1.5: -5.05 → -4.05" in note and "fragility" in note
    assert "0.8" in note and "limit 0.5" in note


def test_trial_history_plot_shows_pruned_trials(tmp_path, monkeypatch):
    from xsmom.research import report

    drawn = []
    real_plot = report.plt.Axes.plot

    def spy(self, *args, **kwargs):
        drawn.append((args, kwargs))
        return real_plot(self, *args, **kwargs)

    monkeypatch.setattr(report.plt.Axes, "plot", spy)
    trials = [
        {"segment": 0, "number": 0, "state": "COMPLETE", "value": 1.0},
        {"segment": 0, "number": 1, "state": "PRUNED", "value": None},
        {"segment": "final", "number": 0, "state": "COMPLETE", "value": 2.0},
    ]
    report.plot_trial_history(trials, tmp_path / "t.png")
    crosses = [a for a, k in drawn if len(a) >= 3 and a[2] == "x" and a[0]]
    assert crosses and list(crosses[0][0]) == [1]
    assert any(k.get("label") == "final study" for _, k in drawn)
    assert any("pruned (1" in str(k.get("label")) for _, k in drawn)


def test_a_stand_aside_verdict_deploys_with_stand_aside_only(tmp_path, noise, capsys):
    import yaml

    out = tmp_path / "out"
    result = research.optimize(
        noise, base_config(), space=small_space(), n_trials=6, seed=0, wfo=WFO, mc_paths=20, out=out
    )
    assert result.verdict["verdict"] == "stand aside"
    live = tmp_path / "configs" / "live.yaml"
    live.parent.mkdir()
    live.write_text(base_config().to_yaml())
    # The candidate of a stand-aside verdict is refused as a deploy ...
    assert main(["config", "deploy", str(out / "candidate.yaml"), "--live", str(live)]) == 2
    assert "(verdict: stand aside)" in capsys.readouterr().err
    # ... and --stand-aside with the same verdict writes live.trading: false.
    assert main(["config", "deploy", "--stand-aside", str(out / "candidate.json"), "--live", str(live)]) == 0
    assert yaml.safe_load(live.read_text())["live"]["trading"] is False
    capsys.readouterr()
    assert main(["config", "versions", "--live", str(live), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["gate"] for r in rows if r["live"]] == ["stand aside"]


# -- findings: fixed configurations on the walk-forward OOS windows (notebooks/03_findings.ipynb) ---


def test_study_fixed_configs_on_a_slice(data_dir, bars, funding):
    from xsmom.research.findings import COLUMNS, FINDINGS_CONFIGS, study_fixed_configs

    symbols = sorted(bars["symbol"].unique().to_list())[:10]
    before = pl.col("ts") < pl.datetime(2025, 8, 10, time_zone="UTC")
    small = bars.filter(pl.col("symbol").is_in(symbols) & before)
    wfo = WalkForward(train_days=25, oos_days=10, embargo_days=1)
    configs = {k: FINDINGS_CONFIGS[k] for k in ("default", "daily rebalance", "tsmom", "carry sleeve")}
    configs["no costs"] = {f"costs.{k}": 0.0 for k in ("maker_fee_bps", "taker_fee_bps", "slippage_bps")}
    gate = Gate(fragility_runs=3, bootstrap_paths=50)
    table = study_fixed_configs(small, configs, funding=funding, wfo=wfo, gate=gate, mc_paths=50)

    assert table.columns == list(COLUMNS)
    assert table["config"].to_list() == list(configs)
    assert set(table["verdict"].to_list()) <= set(research.VERDICTS)
    # The OOS is the segments' windows stitched: the same bars for every configuration.
    segments = _core.segments(small["ts"].n_unique(), 25 * 24, 10 * 24, 24, 96)
    assert len(segments) >= 2
    n_oos = sum(s["oos_end"] - s["oos_start"] for s in segments)
    assert table["n_bars"].to_list() == [float(n_oos)] * len(configs)
    rows = {r["config"]: r for r in table.iter_rows(named=True)}
    # The default row is the baseline itself: Δsharpe is 0 on every bootstrap path.
    assert rows["default"]["p_delta_sharpe"] == 0.0
    # Fragility jitters each configuration's own costs: ±1 % of zero is zero.
    assert rows["no costs"]["fragility"] == 0.0 and rows["default"]["fragility"] > 0.0
    assert len({round(r["sharpe"], 9) for r in rows.values()}) == len(configs), (
        "each override changes the OOS"
    )
    for r in rows.values():
        assert 0.0 <= r["psr"] <= 1.0 and r["dsr"] <= r["psr"] + 1e-12
        assert math.isfinite(r["fragility"]) and r["fragility"] >= 0.0
        skilled = r["dsr"] >= gate.min_psr
        assert r["verdict"] != "deploy" or skilled
        assert ("psr_oos" in r["failed"]) == (not skilled)
    # The stitched Sharpe is the warm OOS backtest of the config on those windows, nothing else.
    evaluate = research.Evaluator(small, xsmom.Config.default(), funding=funding)
    overrides = research.override_pairs(configs["daily rebalance"])
    parts = evaluate([(overrides, s["oos_start"], s["oos_end"]) for s in segments], series=True)
    expected = research.stitched_metrics(parts, evaluate.panel.bars_per_year)
    assert rows["daily rebalance"]["sharpe"] == expected["sharpe"]
    with pytest.raises(research.ResearchError, match="configuration 'bad'"):
        study_fixed_configs(small, {"bad": {"strategy.k_maxx": 3}}, wfo=wfo)


def test_evaluator_scatters_bars_and_funding_once_to_a_dask_client(bars, funding):
    """A Dask-like executor (a ``_client`` with ``scatter``): the frames go out once, tasks carry futures."""
    from concurrent.futures import Executor, Future

    class Scattered:
        def __init__(self, data):
            self.data = data

    class Client:
        def __init__(self):
            self.scattered = []

        def scatter(self, data, broadcast=False):
            self.scattered.append((type(data).__name__, broadcast))
            return Scattered(data)

    class DaskLike(Executor):
        _max_workers = 2

        def __init__(self):
            self._client = Client()
            self.calls = []

        def submit(self, fn, *args):
            self.calls.append(args)
            future = Future()
            future.set_result(fn(*(a.data if isinstance(a, Scattered) else a for a in args)))
            return future

    symbols = sorted(bars["symbol"].unique().to_list())[:8]
    small = bars.filter(
        pl.col("symbol").is_in(symbols) & (pl.col("ts") < pl.datetime(2025, 7, 15, time_zone="UTC"))
    )
    config = xsmom.Config.default().with_overrides({"strategy.carry.enabled": True})
    executor = DaskLike()
    remote = research.Evaluator(small, config, funding=funding, executor=executor)
    local = research.Evaluator(small, config, funding=funding)
    jobs = [(research.override_pairs({"strategy.k_max": k}), 24 * 20, 24 * 44) for k in (3, 4, 5, 6)]
    for _ in range(3):  # three batches, as a study asks them
        assert remote(jobs, series=True) == local(jobs, series=True)
    assert executor._client.scattered == [("DataFrame", True), ("DataFrame", True)]
    assert len(executor.calls) == 3 * 2
    assert not any(isinstance(a, pl.DataFrame) for args in executor.calls for a in args)
    assert any(r["metrics"]["funding"] != 0.0 for r in local(jobs)), "the funding reached the backtests"
