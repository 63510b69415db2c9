"""Documentation that states facts about the code is checked against the code."""

import re
from pathlib import Path

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
