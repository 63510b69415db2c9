"""Documentation that states facts about the code is checked against the code."""

import re
from pathlib import Path

import pytest
import xsmom

ROOT = Path(__file__).resolve().parent.parent


def test_configuration_doc_shows_the_current_defaults():
    text = (ROOT / "docs" / "configuration.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", text, re.S)
    assert block, "docs/configuration.md has the default YAML"
    assert block.group(1).strip() == xsmom.Config.default().to_yaml().strip()


def test_readme_starts_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1).strip().splitlines()
    assert first_block == [
        "pip install . && xsmom backtest --bars data --out reports/quickstart",
        "bash scripts/test.sh",
    ]
    assert (ROOT / ".ci" / "run").read_text().count("bash scripts/test.sh") == 1


def test_example_live_config_is_valid_for_testnet_with_a_few_symbols():
    config = xsmom.Config.load(ROOT / "examples" / "live.yaml").to_dict()
    symbols = config["universe"]["include"]
    assert 2 * config["strategy"]["k_max"] <= len(symbols) <= 10
    assert "--mode testnet" in (ROOT / "examples" / "live.yaml").read_text()
    longest = max(config["strategy"]["lookbacks"] + [config["strategy"]["regime_filter"]["ema_len"]])
    assert config["live"]["warmup_bars"] > longest


def _xsmom_live() -> str | None:
    """The xsmom-live binary: $XSMOM_LIVE, PATH, or the cargo target folder scripts/test.sh builds into."""
    import os
    import shutil

    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "xsmom-live"
    for candidate in (os.environ.get("XSMOM_LIVE"), shutil.which("xsmom-live"), str(target)):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.mark.skipif(_xsmom_live() is None, reason="xsmom-live is not built (cargo build --release)")
def test_operations_first_run_commands_work_as_written(tmp_path):
    import subprocess

    text = (ROOT / "docs" / "operations.md").read_text()
    replay = re.search(r"`(xsmom-live run --config examples/live.yaml --mode replay [^`]*)`", text).group(1)
    args = replay.replace("/tmp/", f"{tmp_path}/").split()[1:]
    env = {"PATH": "/usr/bin:/bin", "XSMOM_LOG": "debug"}
    proc = subprocess.run(
        [_xsmom_live(), *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    assert "DEBUG" in proc.stderr, "XSMOM_LOG=debug, as operations.md says, turns on debug logs"
    assert {"weights.parquet", "fills.parquet", "equity.parquet"} <= {
        p.name for p in (tmp_path / "replay").iterdir()
    }
    health = re.search(r"`xsmom-live health --heartbeat (\S+)`", text)
    proc = subprocess.run(
        [_xsmom_live(), "health", "--heartbeat", str(tmp_path / "h.json")], capture_output=True
    )
    assert health and proc.returncode == 0
    assert re.search(r"`xsmom-live state show --state (\S+)`", text)
    proc = subprocess.run(
        [_xsmom_live(), "state", "show", "--state", str(tmp_path / "s.json")], capture_output=True
    )
    assert proc.returncode == 0 and b"last bar 2025-" in proc.stdout and b"{" not in proc.stdout
