"""The report folder: analytics against hand-computed numbers, the HTML's sections, headless rendering."""

import datetime as dt
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pytest
import xsmom
from xsmom import report
from xsmom.api import BacktestResult
from xsmom.datasets import sample_store

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def _ts(n: int) -> list[dt.datetime]:
    return [T0 + dt.timedelta(hours=i) for i in range(n)]


def _tiny(equity: list[float], funding: list[float] | None = None) -> BacktestResult:
    n = len(equity)
    eq = pl.DataFrame(
        {
            "ts": _ts(n),
            "equity": equity,
            "gross": [0.5] * n,
            "net": [0.0] * n,
            "funding": funding or [0.0] * n,
            "vol_scale": [1.0] * n,
            "n_long": [1] * n,
            "n_short": [1] * n,
        }
    ).with_columns(pl.col("ts").dt.cast_time_unit("ms"))
    fills = pl.DataFrame(
        {
            "ts": _ts(2),
            "symbol": ["A", "A"],
            "side": ["buy", "sell"],
            "notional": [10_002.0, 9_998.0],
            "fee": [5.0, 4.0],
        }
    )
    trades = pl.DataFrame(
        {
            "symbol": ["A", "B", "C"],
            "side": ["long", "short", "short"],
            "pnl": [40.0, 20.0, -10.0],
            "return": [0.04, 0.02, -0.01],
            "bars_held": [3, 5, 1],
            "exit_reason": ["rebalance", "stop", "stop"],
        }
    )
    weights = pl.DataFrame({"ts": _ts(1), "symbol": ["A"], "target_weight": [0.1], "weight": [0.1]})
    return BacktestResult({}, eq, weights, fills, trades, xsmom.Config.default())


def test_drawdown_periods_by_hand():
    result = _tiny([100, 110, 99, 105, 111, 100, 120, 90])
    table = report.drawdown_periods(result.equity)
    ts = _ts(8)
    assert table["peak"].to_list() == [ts[6], ts[1], ts[4]]
    assert table["valley"].to_list() == [ts[7], ts[2], ts[5]]
    assert table["recovery"].to_list() == [None, ts[4], ts[6]]
    # 90/120 − 1, 99/110 − 1, 100/111 − 1
    assert table["depth_pct"].to_list() == pytest.approx([-25.0, -10.0, -9.9099099099])
    assert table["days"].to_list() == pytest.approx([1 / 24, 3 / 24, 2 / 24])
    assert report.drawdown_periods(result.equity, top=1).height == 1


def test_attribution_by_hand():
    result = _tiny([10_000.0, 10_020.0, 10_050.0], funding=[0.0, -1.0, -2.0])
    parts = report.attribution(result)
    usd = dict(zip(*parts["components"].select("component", "usd"), strict=True))
    # slippage 2 bps: 10 002 × 0.0002 / 1.0002 = 2 and 9 998 × 0.0002 / 0.9998 = 2
    assert usd["Slippage"] == pytest.approx(-4.0)
    assert usd["Fees"] == pytest.approx(-9.0)
    assert usd["Funding"] == pytest.approx(-3.0)
    assert usd["Net"] == pytest.approx(50.0)
    assert usd["Gross (price moves)"] == pytest.approx(50.0 + 9.0 + 4.0 + 3.0)
    legs = {r["side"]: r for r in parts["legs"].iter_rows(named=True)}
    assert legs["long"]["pnl_usd"] == 40.0 and legs["short"]["pnl_usd"] == 10.0
    assert legs["short"]["round_trips"] == 2 and legs["short"]["win_rate_pct"] == 50.0
    assert parts["best"]["symbol"].to_list() == ["A", "B", "C"]
    assert parts["worst"]["symbol"].to_list() == ["C", "B", "A"]
    exits = report.exit_reasons(result.trades)
    assert exits.row(0, named=True) == {
        "exit_reason": "stop",
        "round_trips": 2,
        "win_rate_pct": 50.0,
        "mean_return_pct": pytest.approx(0.5),
        "pnl_usd": 10.0,
        "mean_bars_held": 3.0,
    }


def test_annualisation_follows_the_config_timeframe():
    hourly = xsmom._core.research_panel(str(sample_store()), xsmom.Config.default().to_yaml()).bars_per_year
    assert xsmom._core.bars_per_year("1h") == hourly == 8760.0
    assert xsmom._core.bars_per_year("4h") == 2190.0 and xsmom._core.bars_per_year("5m") == 105_120.0
    with pytest.raises(ValueError):
        xsmom._core.bars_per_year("4x")


class _Sections(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.ids: set[str] = set()
        self.images: dict[str, list[str]] = {}
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "section":
            self.sections.append(a["id"])
            self.images[a["id"]] = []
        elif tag == "img":
            assert a["src"].startswith("data:image/png;base64,")
            self.images[self.sections[-1]].append(a["alt"])
        elif tag == "table":
            self._table = a.get("class", "")
            self.tables[self._table] = []
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._row is not None:
            self._row.append("".join(self._cell or []).strip())
            self._cell = None
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _write(tmp_path: Path, store: Path, config=None) -> tuple[BacktestResult, _Sections]:
    result = xsmom.backtest(store, config)
    bars = xsmom.read_bars(store) if result.symbols else None
    out = report.write_report(result, tmp_path / "r", bars=bars)
    parser = _Sections()
    parser.feed((out / "report.html").read_text())
    return result, parser


def test_report_sections_and_numbers(tmp_path):
    result, page = _write(tmp_path, sample_store())
    assert page.sections == [
        "summary",
        "benchmark",
        "drawdowns",
        "attribution",
        "exit-reasons",
        "exposure",
        "monthly",
        "weights",
        "warnings",
        "configuration",
    ]
    summary = dict(page.tables["metrics"])
    assert summary["Max drawdown"] == f"{result.metrics['max_drawdown'] * 100:.2f} %"
    drawdowns = page.tables["drawdowns"]
    assert drawdowns[0][0] == "Peak (UTC)" and len(drawdowns) == 1 + 5
    assert drawdowns[1][3] == f"{-result.metrics['max_drawdown'] * 100:.2f}"
    bench = {row[0]: row for row in page.tables["benchmark"][1:]}
    assert set(bench) == {"Strategy", "Equal-weight universe", "BTC"}
    assert bench["Strategy"][3] == f"{result.metrics['sharpe']:.2f}"
    components = {row[0]: row[1] for row in page.tables["components"][1:]}
    final = result.equity["equity"]
    assert components["Net"] == f"{final[-1] - final[0]:+,.2f}"
    exits = {row[0]: int(row[1].replace(",", "")) for row in page.tables["exits"][1:]}
    assert exits == dict(result.trades["exit_reason"].value_counts().iter_rows())
    assert "no-trades" not in page.ids
    assert page.images["benchmark"] == ["equity against the benchmarks", "rolling beta to the benchmarks"]
    assert page.images["drawdowns"] == ["drawdown in percent"]


def test_a_4h_report_annualises_with_2190_bars_a_year(tmp_path):
    store = tmp_path / "store"
    shutil.copytree(sample_store(), store)
    xsmom._core.resample_store(str(store), "4h")
    config = xsmom.Config.default().with_overrides({"data.timeframe": "4h"})
    result = xsmom.backtest(store, config)
    assert result.bars_per_year == 2190.0
    out = report.write_report(result, tmp_path / "r", bars=xsmom.read_bars(store, timeframe="4h"))
    page = _Sections()
    text = (out / "report.html").read_text()
    page.feed(text)
    assert "4h bars; annualised with 2,190 bars per year." in text
    # The report's own Sharpe of the strategy (from its equity, at the report's bars per year) is
    # the core's: an hourly 8760 would make it twice as large.
    bench = {row[0]: row for row in page.tables["benchmark"][1:]}
    assert result.metrics["sharpe"] != 0.0
    assert bench["Strategy"][3] == f"{result.metrics['sharpe']:.2f}"


def test_report_of_a_run_without_trades_says_so(tmp_path):
    one = tmp_path / "one.parquet"
    xsmom.read_bars(sample_store(), symbols=["BTCUSDT"]).write_parquet(one)
    result, page = _write(tmp_path, one)
    assert result.fills.height == 0
    assert "no-trades" in page.ids
    assert any(w.startswith("no decision bar") for w in result.warnings)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed (scripts/test.sh installs it)")
def test_report_renders_in_headless_chromium(tmp_path):
    _write(tmp_path, sample_store())
    page = (tmp_path / "r" / "report.html").resolve()
    ARTIFACTS.mkdir(exist_ok=True)
    shot = tmp_path / "report.png"
    common = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    proc = subprocess.run(
        [*common, "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert '<section id="summary">' in proc.stdout
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == [], console
    proc = subprocess.run(
        [*common, "--window-size=1200,3000", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Kept for people to look at; replaced in one rename, so the tracked copy is never missing.
    kept = ARTIFACTS / ".report.png.tmp"
    shutil.copyfile(shot, kept)
    kept.replace(ARTIFACTS / "report.png")
