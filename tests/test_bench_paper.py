"""The paper-vs-backtest stop measurement runs on the fixture and finds every backtest stop on 5m bars."""

from pathlib import Path

import xsmom
from xsmom.bench_paper import measure

ROOT = Path(__file__).resolve().parent.parent


def test_every_backtest_stop_exit_is_found_on_the_5m_bars_of_its_hour():
    # A 1h bar's low is the lowest 5m low of its hour: a level the 1h bar hits, one of its 5m bars hits.
    result = measure(ROOT / "data", xsmom.Config.default())
    assert result["stop_exits"] > 5
    assert result["matched_on_5m"] == result["stop_exits"]
    assert abs(result["mean_cost_bps"]) < 100
