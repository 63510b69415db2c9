"""Gated, versioned deployment and rollback (research.md §5), and the daily report of the live runner."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import xsmom
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_notify import TOKEN, serve_webhook
from xsmom.cli import main
from xsmom.daily import StateError, build_report, last_equity, load_state
from xsmom.deploy import VERSION_RE, DeployError, Deployment

ROOT = Path(__file__).resolve().parent.parent

# The live config as an operator wrote it by hand: comments and layout that no serialiser reproduces.
LIVE_TEXT = (
    "# live config, edited by hand\nstrategy:\n  k_max: 5   # fewer names\n\nsizing: {gross_leverage: 0.9}\n"
)


def _verdict(passed: bool, said: str | None = None) -> dict:
    checks = [
        {"name": "psr_oos", "value": 0.99 if passed else 0.4, "threshold": 0.95},
        {"name": "p_delta_sharpe", "value": 0.97 if passed else 0.5, "threshold": 0.9},
        {"name": "mc_p99_max_drawdown", "value": 0.22, "threshold": 0.35},
    ]
    for check in checks:
        value, threshold = check["value"], check["threshold"]
        check["passed"] = value <= threshold if check["name"] == "mc_p99_max_drawdown" else value >= threshold
    ok = all(c["passed"] for c in checks)
    return {
        "verdict": {"passed": ok, "verdict": said or ("deploy" if ok else "keep"), "checks": checks},
        "baseline": {"sharpe": 1.0, "cagr": 0.2, "max_drawdown": 0.15},
        "candidate": {"sharpe": 1.21, "cagr": 0.25, "max_drawdown": 0.14},
        "params": {"strategy.k_max": 4},
        "study": "wfo-test",
        "data_range": ["2025-06-01T00:00:00Z", "2025-11-01T00:00:00Z"],
        "mc": {"p99_max_drawdown": 0.22},
    }


def _candidate(directory: Path, passed: bool = True, k_max: int = 4) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "candidate.yaml"
    path.write_text(xsmom.Config.default().with_overrides({"strategy.k_max": k_max}).to_yaml())
    (directory / "candidate.json").write_text(json.dumps(_verdict(passed)))
    return path


@pytest.fixture
def webhook():
    with serve_webhook() as hook:
        yield hook


@pytest.fixture
def live(tmp_path) -> Path:
    path = tmp_path / "configs" / "live.yaml"
    path.parent.mkdir()
    path.write_text(LIVE_TEXT)
    return path


def _history(live: Path) -> list[dict]:
    return [json.loads(line) for line in (live.parent / "history.jsonl").read_text().splitlines()]


def _snapshot(directory: Path) -> dict[str, bytes]:
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    return {str(p.relative_to(directory)): p.read_bytes() for p in files}


def test_deploy_then_rollback_restores_byte_for_byte(tmp_path, live):
    original = live.read_bytes()
    candidate = _candidate(tmp_path / "run1")
    outcome = Deployment(live).deploy(candidate)
    assert live.read_bytes() == candidate.read_bytes()
    assert outcome.passed is True and outcome.forced is False

    versions = Deployment(live).versions()
    assert len(versions) == 2, "the candidate and the previous live config are both versions"
    kinds = {v.kind: v for v in versions}
    previous, deployed = kinds["previous_live"], kinds["candidate"]
    assert previous.path.read_bytes() == original
    assert deployed.path.read_bytes() == candidate.read_bytes()
    for version in versions:
        match = VERSION_RE.match(version.id)
        assert match is not None, version.id
        assert match.group(2) == hashlib.sha256(version.path.read_bytes()).hexdigest()[:8]
        assert version.path.with_suffix(".json").exists()
    meta = json.loads(deployed.path.with_suffix(".json").read_text())
    assert meta["verdict"]["passed"] is True and meta["study"] == "wfo-test"
    assert meta["params"] == {"strategy.k_max": 4} and meta["data_range"][0].startswith("2025-06-01")
    assert Deployment(live).current().id == deployed.id

    rolled = Deployment(live).rollback()
    assert live.read_bytes() == original, "rollback must restore the exact bytes"
    assert rolled.version == previous.id and rolled.previous == deployed.id

    history = _history(live)
    assert [h["action"] for h in history] == ["deploy", "rollback"]
    assert history[0]["version"] == deployed.id and history[0]["previous"] == previous.id
    assert history[0]["forced"] is False and history[0]["passed"] is True
    assert history[1]["version"] == previous.id and history[1]["previous"] == deployed.id
    for record in history:
        dt.datetime.fromisoformat(record["ts"])
        assert record["live"] == str(live)

    # Rolling forward again by id restores the candidate's bytes, and nothing new was stored.
    Deployment(live).rollback(to=deployed.id)
    assert live.read_bytes() == candidate.read_bytes()
    assert len(Deployment(live).versions()) == 2
    assert len(_history(live)) == 3


def test_rollback_walks_back_through_the_deploy_lineage(tmp_path, live):
    original = live.read_bytes()
    first = _candidate(tmp_path / "run1", k_max=4)
    second = _candidate(tmp_path / "run2", k_max=3)
    Deployment(live).deploy(first)
    Deployment(live).deploy(second)
    assert live.read_bytes() == second.read_bytes()
    Deployment(live).rollback()
    assert live.read_bytes() == first.read_bytes()
    Deployment(live).rollback()
    assert live.read_bytes() == original
    with pytest.raises(DeployError, match="no config was live before"):
        Deployment(live).rollback()


def test_refused_gate_touches_nothing(tmp_path, live):
    before = _snapshot(live.parent)
    candidate = _candidate(tmp_path / "run", passed=False)
    with pytest.raises(
        DeployError, match=r"gate did not pass \(verdict: keep\); failed: psr_oos=0\.4 \(needs 0\.95\)"
    ):
        Deployment(live).deploy(candidate)
    assert _snapshot(live.parent) == before


def test_force_deploys_a_failed_candidate_and_records_it(tmp_path, live, capsys):
    candidate = _candidate(tmp_path / "run", passed=False)
    assert main(["config", "deploy", str(candidate), "--live", str(live), "--force"]) == 0
    assert "FORCED past the gate" in capsys.readouterr().out
    assert live.read_bytes() == candidate.read_bytes()
    record = _history(live)[-1]
    assert record["forced"] is True and record["passed"] is False
    version = Deployment(live).current()
    assert version.meta["forced"] is True


def test_invalid_candidate_is_refused_and_nothing_touched(tmp_path, live, capsys):
    before = _snapshot(live.parent)
    bad = tmp_path / "run" / "candidate.yaml"
    bad.parent.mkdir()
    bad.write_text("strategy:\n  k_max: -3\n")
    (bad.parent / "candidate.json").write_text(json.dumps(_verdict(True)))
    assert main(["config", "deploy", str(bad), "--live", str(live)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("xsmom: error: ") and err.count("\n") == 1
    assert "candidate.yaml: not a valid config, nothing deployed" in err and "k_max" in err
    unknown = bad.parent / "typo.yaml"
    unknown.write_text("strategy:\n  k_maxx: 3\n")
    with pytest.raises(DeployError, match="k_maxx"):
        Deployment(live).deploy(unknown, force=True)
    assert _snapshot(live.parent) == before


def test_missing_or_malformed_verdict_is_refused(tmp_path, live):
    candidate = _candidate(tmp_path / "run")
    verdict = candidate.with_suffix(".json")
    verdict.unlink()
    with pytest.raises(DeployError, match="no verdict file beside the candidate"):
        Deployment(live).deploy(candidate)
    verdict.write_text('{"verdict": {"passed": "yes"}}')
    with pytest.raises(DeployError, match="verdict.passed missing or not true/false"):
        Deployment(live).deploy(candidate)
    bad = _verdict(True)
    bad["verdict"]["checks"][0]["passed"] = False
    verdict.write_text(json.dumps(bad))
    with pytest.raises(DeployError, match="but a check failed"):
        Deployment(live).deploy(candidate)
    assert live.read_text() == LIVE_TEXT
    assert not (live.parent / "history.jsonl").exists()


def test_failure_before_rename_leaves_the_live_file_intact(tmp_path, live, monkeypatch):
    candidate = _candidate(tmp_path / "run")
    real_replace = os.replace

    def failing_replace(src, dst, *args, **kwargs):
        if Path(dst) == live:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        Deployment(live).deploy(candidate)
    assert live.read_text() == LIVE_TEXT
    assert not list(live.parent.glob(".live.yaml.*")), "the temp file is removed"
    assert not (live.parent / "history.jsonl").exists(), "no history line for a deploy that did not happen"
    monkeypatch.setattr(os, "replace", real_replace)
    Deployment(live).deploy(candidate)
    assert live.read_bytes() == candidate.read_bytes()
    assert len(_history(live)) == 1


def test_a_killed_deploy_never_leaves_a_partial_live_file(tmp_path, live):
    """Many deploys in a child process killed at random moments: the live file is always whole."""
    first = _candidate(tmp_path / "a", k_max=4)
    second = _candidate(tmp_path / "b", k_max=3)
    whole = {LIVE_TEXT.encode(), first.read_bytes(), second.read_bytes()}
    script = (
        "import sys\nfrom xsmom.deploy import Deployment\n"
        "d = Deployment(sys.argv[1])\nd.deploy(sys.argv[2])\nprint('go', flush=True)\n"
        "for i in range(100_000):\n    d.deploy(sys.argv[2 + i % 2])\n"
    )
    import time

    for delay in (0.0, 0.013, 0.05, 0.11, 0.2, 0.37):
        child = subprocess.Popen(
            [sys.executable, "-c", script, str(live), str(first), str(second)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout.readline() == "go\n"
        time.sleep(delay)
        child.kill()
        child.wait()
        child.stdout.close()
        assert live.read_bytes() in whole
        lines = (live.parent / "history.jsonl").read_bytes().split(b"\n")
        for line in lines[:-1]:
            json.loads(line)
        for version in (live.parent / "versions").glob("*.yaml"):
            assert version.read_bytes() in whole
    assert len(Deployment(live).versions()) == 3


def test_cli_versions_and_rollback(tmp_path, live, capsys):
    candidate = _candidate(tmp_path / "run")
    assert main(["config", "deploy", str(candidate), "--live", str(live)]) == 0
    assert capsys.readouterr().out.startswith("deployed ")
    assert main(["config", "versions", "--live", str(live), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["kind"] for r in rows if r["live"]] == ["candidate"]
    assert {r["kind"] for r in rows} == {"candidate", "previous_live"}
    assert main(["config", "versions", "--live", str(live)]) == 0
    table = capsys.readouterr().out
    assert "* " in table and "deploy" in table
    previous = next(r["id"] for r in rows if r["kind"] == "previous_live")
    assert main(["config", "rollback", "--to", previous, "--live", str(live)]) == 0
    assert live.read_text() == LIVE_TEXT
    assert main(["config", "rollback", "--to", "20000101T000000Z_deadbeef", "--live", str(live)]) == 2
    assert "no version '20000101T000000Z_deadbeef'" in capsys.readouterr().err


def test_deploy_notifies_discord_without_leaking_the_url(tmp_path, live, monkeypatch, capsys, webhook):
    monkeypatch.setenv("DISCORD_WEBHOOK_URL", webhook.url)
    candidate = _candidate(tmp_path / "run")
    assert main(["config", "deploy", str(candidate), "--live", str(live), "--notify"]) == 0
    assert len(webhook.requests) == 1
    assert webhook.requests[0]["payload"]["content"].startswith("xsmom config: deployed ")
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err
    for path in live.parent.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    monkeypatch.delenv("DISCORD_WEBHOOK_URL")
    assert main(["config", "rollback", "--live", str(live), "--notify"]) == 0
    assert "DISCORD_WEBHOOK_URL is not set; nothing sent" in capsys.readouterr().err
    assert live.read_text() == LIVE_TEXT, "the rollback itself happened"
    assert len(webhook.requests) == 1


# -- the daily report ------------------------------------------------------------------------------

STATE = {
    "schema_version": 1,
    "config_version": "c0b0ce44",
    "mode": "bybit",
    "model_start_ts": 1_748_736_000_000,
    "last_bar_ts": 1_752_534_000_000,
    "kill_switch": {
        "day": 20_284,
        "day_start_equity": 10_000.0,
        "day_high_equity": 10_250.0,
        "fired": False,
    },
    "breaker_errors_ms": [1_752_537_000_000, 1_752_537_100_000],
    "breaker_paused_until_ms": None,
    "symbols": {
        "BTCUSDT": {
            "target_weight": 0.08,
            "stop": {"side": 1.0, "entry_price": 117_000.0, "stop": 114_500.0, "catastrophic": 112_000.0},
            "blocked": False,
        },
        "DOGEUSDT": {
            "target_weight": -0.07,
            "stop": {"side": -1.0, "entry_price": 0.2, "stop": 0.21, "catastrophic": 0.22},
            "blocked": False,
        },
        "SOLUSDT": {"target_weight": 0.0, "stop": None, "blocked": True},
        "XRPUSDT": {"target_weight": 0.0, "stop": None, "blocked": False},
    },
    "updated_ms": 1_752_537_605_000,
}


def test_daily_report_from_a_state_fixture(tmp_path, capsys):
    path = tmp_path / "state.json"
    path.write_text(json.dumps(STATE, indent=2))
    now = dt.datetime(2025, 7, 15, 0, 30, tzinfo=dt.UTC)
    report = build_report(load_state(path), now=now, equity=10_100.0, max_daily_loss_pct=5.0)
    text = report.text
    assert "equity 10,100.00 USDT" in text
    assert "day 2025-07-15" in text  # day 20284 since the epoch
    assert "day start 10,000.00 (+1.00%)" in text
    assert "day high 10,250.00 (-1.46% from high)" in text
    assert "kill-switch: armed (limit 5 % daily loss)" in text
    assert "circuit breaker: closed (2 recent API errors)" in text
    assert "targets: 2 of 4 symbols held · gross 15.0% · net +1.0% · 2 open stop(s)" in text
    btc = next(line for line in text.splitlines() if line.startswith("BTCUSDT"))
    assert btc.split() == ["BTCUSDT", "+8.00%", "long", "117000", "114500", "112000"]
    doge = next(line for line in text.splitlines() if line.startswith("DOGEUSDT"))
    assert doge.split()[:3] == ["DOGEUSDT", "-7.00%", "short"]
    assert "bans / cooldowns: SOLUSDT" in text
    assert report.blocked == ["SOLUSDT"] and report.open_stops == 2 and not report.kill_switch_fired

    fired = json.loads(json.dumps(STATE))
    fired["kill_switch"]["fired"] = True
    fired["breaker_paused_until_ms"] = int(now.timestamp() * 1000) + 600_000
    text = build_report(fired, now=now).text
    assert "kill-switch: **FIRED** today" in text
    assert "circuit breaker: **OPEN** until 2025-07-15 00:40 UTC" in text
    assert "equity n/a USDT" in text


def test_daily_report_rejects_bad_state_files(tmp_path, capsys):
    path = tmp_path / "state.json"
    with pytest.raises(StateError, match="no such state file"):
        load_state(path)
    path.write_text('{"schema_version": 1, "config_')
    with pytest.raises(StateError, match="state.json: corrupt state file"):
        load_state(path)
    path.write_text('{"schema_version": 7}')
    assert main(["report", "daily", "--state", str(path)]) == 2
    assert "state schema_version 7 is not the supported 1" in capsys.readouterr().err


def _live_binary() -> Path | None:
    target = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache" / "xsmom-target"))
    for candidate in (target / "release" / "xsmom-live", ROOT / "target" / "release" / "xsmom-live"):
        if candidate.exists():
            return candidate
    return None


def test_daily_report_of_a_replay_run(tmp_path, bars, capsys, monkeypatch, webhook):
    """A real state file: xsmom-live replays a tiny store, then `xsmom report daily --notify` reads it."""
    binary = _live_binary()
    if binary is None:
        pytest.skip("xsmom-live is not built (cargo build --release --bin xsmom-live)")
    import polars as pl

    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT", "XRPUSDT", "ADAUSDT"]
    tiny = bars.filter(pl.col("symbol").is_in(symbols)).sort("symbol", "ts").group_by("symbol").head(288)
    tiny.write_parquet(tmp_path / "bars.parquet")
    (tmp_path / "config.yaml").write_text(xsmom.Config.default().to_yaml())
    run = subprocess.run(
        [binary, "run", "--config", "config.yaml", "--mode", "replay", "--bars", "bars.parquet"]
        + ["--out", "out", "--state", "state.json", "--heartbeat", "heartbeat.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    state = json.loads((tmp_path / "state.json").read_text())
    _, equity = last_equity(tmp_path / "out" / "equity.parquet")
    assert f"equity {equity:.2f}" in run.stdout

    monkeypatch.setenv("DISCORD_WEBHOOK_URL", webhook.url)
    argv = ["report", "daily", "--state", str(tmp_path / "state.json")]
    argv += ["--equity", str(tmp_path / "out" / "equity.parquet"), "--config", str(tmp_path / "config.yaml")]
    assert main([*argv, "--notify"]) == 0
    text = capsys.readouterr().out
    assert [r["payload"]["content"] for r in webhook.requests] == [text.rstrip("\n")]
    assert TOKEN not in text
    assert f"equity {equity:,.2f} USDT" in text
    assert f"config {state['config_version']}" in text and "mode replay" in text
    start = state["kill_switch"]["day_start_equity"]
    assert f"day start {start:,.2f}" in text
    assert "kill-switch: armed (limit 5 % daily loss)" in text
    blocked = sorted(s for s, v in state["symbols"].items() if v["blocked"])
    assert f"bans / cooldowns: {', '.join(blocked) if blocked else 'none'}" in text
    assert f"of {len(symbols)} symbols held" in text
    shutil.rmtree(tmp_path / "out")


def test_deployment_doc_commands_parse():
    import re
    import shlex

    from xsmom.cli import _build_parser

    text = (ROOT / "docs" / "deployment.md").read_text()
    commands = [
        line
        for block in re.findall(r"```bash\n(.*?)```", text, re.S)
        for line in block.splitlines()
        if line.startswith("xsmom ")
    ]
    assert len(commands) >= 8
    parser = _build_parser()
    for command in commands:
        parser.parse_args(shlex.split(command)[1:])


def test_first_deploy_without_a_live_file(tmp_path):
    live = tmp_path / "configs" / "live.yaml"
    live.parent.mkdir()
    candidate = _candidate(tmp_path / "run")
    outcome = Deployment(live).deploy(candidate)
    assert outcome.previous is None and live.read_bytes() == candidate.read_bytes()
    assert len(Deployment(live).versions()) == 1
    with pytest.raises(DeployError, match="no config was live before"):
        Deployment(live).rollback()
    with pytest.raises(DeployError, match="directory does not exist"):
        Deployment(tmp_path / "nowhere" / "live.yaml").deploy(candidate)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ops=st.lists(
        st.one_of(st.integers(0, 2), st.just("back"), st.tuples(st.just("to"), st.integers(0, 3))), max_size=8
    )
)
def test_any_sequence_of_deploys_and_rollbacks_follows_the_lineage(tmp_path_factory, ops):
    """A model of the contract: live bytes, versions and history after any sequence of operations."""
    root = tmp_path_factory.mktemp("seq")
    live = root / "configs" / "live.yaml"
    live.parent.mkdir()
    live.write_text(LIVE_TEXT)
    candidates = [_candidate(root / f"c{k}", k_max=k + 3) for k in range(3)]
    contents = [LIVE_TEXT.encode()] + [c.read_bytes() for c in candidates]
    deployment = Deployment(live)
    current, before, records = contents[0], {}, 0  # before: bytes → bytes live before its latest deploy
    for op in ops:
        if isinstance(op, int):
            outcome = deployment.deploy(candidates[op])
            new = contents[op + 1]
            if new != current:
                before[new] = current
                current, records = new, records + 1
            assert outcome.action == ("deploy" if outcome.previous else "unchanged")
        elif op == "back":
            if current not in before:
                with pytest.raises(DeployError):
                    deployment.rollback()
                continue
            deployment.rollback()
            current, records = before[current], records + 1
        else:
            stored = {v.path.read_bytes(): v.id for v in deployment.versions()}
            target = contents[op[1]]
            if target not in stored:
                continue
            deployment.rollback(to=stored[target])
            if target != current:
                current, records = target, records + 1
        assert live.read_bytes() == current
        assert len(deployment.history()) == records
        assert deployment.current() is not None
        shas = [v.sha256 for v in deployment.versions()]
        assert len(shas) == len(set(shas)), "one version per distinct content"


def test_stand_aside_writes_live_trading_false_and_rolls_back(tmp_path, live, capsys):
    run = tmp_path / "run"
    _candidate(run, passed=False)
    verdict = run / "candidate.json"
    # A verdict that says keep is not a reason to stand aside.
    assert main(["config", "deploy", "--stand-aside", str(verdict), "--live", str(live)]) == 2
    assert "the verdict is 'keep', not 'stand aside'" in capsys.readouterr().err
    assert live.read_text() == LIVE_TEXT
    verdict.write_text(json.dumps(_verdict(False, said="stand aside")))
    assert main(["config", "deploy", "--stand-aside", str(run / "candidate.yaml"), "--live", str(live)]) == 0
    assert capsys.readouterr().out.startswith("stood aside: ")
    import yaml

    doc = yaml.safe_load(live.read_text())
    assert doc["live"]["trading"] is False
    from xsmom.config import Config

    assert Config.load(live).to_dict()["live"]["trading"] is False, "the core reads the stand-aside config"
    assert doc["strategy"]["k_max"] == 5 and doc["sizing"]["gross_leverage"] == 0.9  # the rest is kept
    assert _history(live)[-1]["action"] == "stand_aside"
    assert main(["config", "versions", "--live", str(live), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["kind"], r["gate"]) for r in rows if r["live"]] == [("stand_aside", "stand aside")]
    assert main(["config", "rollback", "--live", str(live)]) == 0
    assert live.read_text() == LIVE_TEXT
    # Without a verdict only --force stands aside, and the version says forced.
    live.write_text(LIVE_TEXT.replace("k_max: 5", "k_max: 6"))
    assert main(["config", "deploy", "--stand-aside", "--live", str(live)]) == 2
    assert "--stand-aside needs the optimize verdict" in capsys.readouterr().err
    assert main(["config", "deploy", "--stand-aside", "--force", "--live", str(live)]) == 0
    capsys.readouterr()
    assert main(["config", "versions", "--live", str(live)]) == 0
    table = capsys.readouterr().out
    live_row = next(line for line in table.splitlines() if line.startswith("* "))
    assert "stand_aside" in live_row and "forced" in live_row


def test_versions_show_each_versions_real_gate_result(tmp_path, live, capsys):
    assert main(["config", "deploy", str(_candidate(tmp_path / "a", k_max=3)), "--live", str(live)]) == 0
    forced = _candidate(tmp_path / "b", passed=False, k_max=2)
    assert main(["config", "deploy", str(forced), "--live", str(live), "--force"]) == 0
    capsys.readouterr()
    assert main(["config", "versions", "--live", str(live), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    gates = {r["kind"]: [] for r in rows}
    for r in rows:
        gates[r["kind"]].append(r["gate"])
    assert sorted(gates["candidate"]) == ["deploy", "forced"] and gates["previous_live"] == ["-"]
    assert [r["gate"] for r in rows if r["live"]] == ["forced"]
