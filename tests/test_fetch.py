"""`xsmom data fetch` against the mock Bybit v5 server (tests/mock_bybit.py) on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import polars as pl
import pytest
import xsmom
import xsmom.cli
from hypothesis import given, settings
from hypothesis import strategies as st
from xsmom.cli import main
from xsmom.fetch import fetch

ROOT = Path(__file__).resolve().parent.parent
HOUR = 3_600_000
SYMBOLS = ["BTCUSDT", "ETHUSDT"]


def ms(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp() * 1000)


class Mock:
    def __init__(self, now_ms: int, bars: Path = ROOT / "data") -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "mock_bybit.py"), "--port", "0"]
            + ["--bars", str(bars), "--symbols", ",".join(SYMBOLS), "--now-ms", str(now_ms)],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.process.stdout.readline()
        assert line.startswith("READY "), f"mock said {line!r}"
        self.url = f"http://127.0.0.1:{line.split()[1]}"

    def post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def requests(self, path: str) -> list[dict]:
        with urllib.request.urlopen(self.url + "/mock/state", timeout=10) as response:
            log = json.loads(response.read())["log"]
        return [r for r in log if r["path"] == path]

    def clear_log(self) -> None:
        # The log is part of the state that /mock/reset clears; there are no orders to lose here.
        self.post("/mock/reset", {})

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.process.stdout.close()


@pytest.fixture
def mock():
    server = Mock(now_ms=ms("2025-08-15T00:30:00"))
    yield server
    server.close()


def fixture_bars(start: str, end_ms: int) -> pl.DataFrame:
    return xsmom.read_bars(ROOT / "data", symbols=SYMBOLS, start=start, end=end_ms).sort("symbol", "ts")


def fixture_funding(start: str, end_ms: int) -> pl.DataFrame:
    return xsmom.read_funding(ROOT / "data", symbols=SYMBOLS, start=start, end=end_ms).sort("symbol", "ts")


def stored(store: Path) -> pl.DataFrame:
    return xsmom.read_bars(store).sort("symbol", "ts")


def same_bars(got: pl.DataFrame, want: pl.DataFrame) -> None:
    columns = ["ts", "symbol", "open", "high", "low", "close", "volume"]
    assert got.height == want.height
    assert got.select(columns).equals(want.select(columns))


def test_fetch_pages_without_gaps_or_duplicates_then_only_new_bars(tmp_path, mock):
    store = tmp_path / "store"
    start = "2025-06-01"
    summary = fetch(store, SYMBOLS, start, base_url=mock.url, funding=True)

    # Closed bars only: at 00:30 the 00:00 bar is still forming.
    last_closed = ms("2025-08-15T00:00:00")
    want = fixture_bars(start, last_closed)
    assert want.height == 2 * 75 * 24  # 1800 bars per symbol: two newest-first pages of ≤ 1000
    got = stored(store)
    same_bars(got, want)
    assert got.group_by("symbol").agg(pl.col("ts").n_unique().alias("n"))["n"].to_list() == [1800, 1800]
    for row in summary.symbols:
        assert row.bars_added == 1800 and row.bars_replaced == 0
        assert row.first_ts == ms("2025-06-01T00:00:00") and row.last_ts == last_closed - HOUR
    pages = mock.requests("/v5/market/kline")
    assert len(pages) == 4, "1800 bars are two pages per symbol"
    assert all(int(p["query"]["limit"]) == 1000 for p in pages)
    # The hive layout is readable as is.
    scanned = pl.scan_parquet(str(store / "bars" / "**" / "*.parquet"), hive_partitioning=True).collect()
    assert scanned.height == 3600

    # Funding: 3 events a day, more than one page of 200 per symbol, all of them landed in funding/.
    funding = xsmom.read_funding(store).sort("symbol", "ts")
    want_funding = fixture_funding(start, ms("2025-08-15T00:30:00") + 1)
    assert funding.height == want_funding.height > 400
    assert funding.equals(want_funding.select(funding.columns))
    assert (store / "funding" / "symbol=BTCUSDT" / "2025.parquet").exists()
    assert len(mock.requests("/v5/market/funding/history")) >= 4
    assert summary.funding_added == funding.height

    # A second run after the clock moved fetches only the new bars.
    mock.clear_log()
    mock.post("/mock/clock", {"now_ms": ms("2025-09-01T05:10:00")})
    second = fetch(store, SYMBOLS, start, base_url=mock.url, funding=True)
    new_bars = 17 * 24 + 5
    assert [r.bars_added for r in second.symbols] == [new_bars, new_bars]
    assert [r.ranges for r in second.symbols] == [[(last_closed, ms("2025-09-01T05:00:00"))]] * 2
    pages = mock.requests("/v5/market/kline")
    assert len(pages) == 2 and all(int(p["query"]["start"]) == last_closed for p in pages)
    first_clock = dt.datetime(2025, 8, 15, 0, 30, tzinfo=dt.UTC)
    new_funding = fixture_funding(start, ms("2025-09-01T05:10:00") + 1).filter(pl.col("ts") > first_clock)
    per_symbol = new_funding.group_by("symbol").len().sort("symbol")["len"].to_list()
    assert [r.funding_added for r in second.symbols] == per_symbol and min(per_symbol) > 0
    assert xsmom.read_funding(store).height == funding.height + sum(per_symbol)
    same_bars(stored(store), fixture_bars(start, ms("2025-09-01T05:00:00")))

    # Nothing new: no kline request at all.
    mock.clear_log()
    third = fetch(store, SYMBOLS, start, base_url=mock.url)
    assert third.bars_added == 0 and mock.requests("/v5/market/kline") == []


def test_fetch_fills_the_range_before_the_store(tmp_path, mock):
    store = tmp_path / "store"
    fetch(store, SYMBOLS, "2025-07-01", "2025-07-10", base_url=mock.url)
    same_bars(stored(store), fixture_bars("2025-07-01", ms("2025-07-10T00:00:00")))
    mock.clear_log()
    summary = fetch(store, SYMBOLS, "2025-06-20", "2025-07-10", base_url=mock.url)
    head = (ms("2025-06-20T00:00:00"), ms("2025-07-01T00:00:00"))
    assert [r.ranges for r in summary.symbols] == [[head]] * 2
    assert summary.bars_added == 2 * 11 * 24
    same_bars(stored(store), fixture_bars("2025-06-20", ms("2025-07-10T00:00:00")))


def test_cli_fetch_and_errors(tmp_path, mock, capsys):
    store = tmp_path / "store"
    argv = ["data", "fetch", "--store", str(store), "--symbols", "BTCUSDT,ETHUSDT", "--start", "2025-08-01"]
    assert main([*argv, "--base-url", mock.url, "--funding"]) == 0
    out = capsys.readouterr().out
    assert "BTCUSDT: 336 bar(s) added (2025-08-01 00:00:00+00:00 → 2025-08-14 23:00:00+00:00)" in out
    assert "672 bar(s)" in out and "funding event(s) written" in out
    assert main(["data", "validate", "--store", str(store)]) == 0
    capsys.readouterr()

    assert main([*argv, "--base-url", mock.url, "--end", "2025-07-01"]) == 2
    assert "is not after start" in capsys.readouterr().err
    bad = ["data", "fetch", "--store", str(store), "--symbols", "BTC/USDT", "--start", "2025-08-01"]
    assert main(bad) == 2
    assert 'symbol "BTC/USDT" is not of the form BTCUSDT' in capsys.readouterr().err
    assert main([*argv[:-1], "yesterday-ish", "--base-url", mock.url]) == 2
    assert "--start 'yesterday-ish': expected a date" in capsys.readouterr().err


def test_unreachable_exchange_is_one_clear_error(tmp_path, capsys):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ConnectionError, match="exchange: server: time"):
        fetch(tmp_path / "s", ["BTCUSDT"], "2025-08-01", base_url=f"http://127.0.0.1:{port}", retries=0)
    assert not (tmp_path / "s").exists()


def test_fetch_fills_a_gap_between_two_earlier_fetches(tmp_path, mock):
    store = tmp_path / "store"
    fetch(store, SYMBOLS, "2025-07-01", "2025-07-10", base_url=mock.url)
    fetch(store, SYMBOLS, "2025-08-01", "2025-08-10", base_url=mock.url)
    mock.clear_log()
    summary = fetch(store, SYMBOLS, "2025-07-01", "2025-08-10", base_url=mock.url)
    gap = (ms("2025-07-10T00:00:00"), ms("2025-08-01T00:00:00"))
    assert [r.ranges for r in summary.symbols] == [[gap]] * 2
    assert summary.bars_added == 2 * 22 * 24
    same_bars(stored(store), fixture_bars("2025-07-01", ms("2025-08-10T00:00:00")))


def test_a_gap_on_the_exchange_costs_one_request_per_run(tmp_path):
    """Bars the exchange does not have are asked for again (one request), never invented."""
    exchange = tmp_path / "exchange"
    bars = xsmom.read_bars(ROOT / "data", symbols=SYMBOLS, end="2025-08-15")
    hole = (pl.col("symbol") == "BTCUSDT") & pl.col("ts").is_between(
        dt.datetime(2025, 7, 3, tzinfo=dt.UTC), dt.datetime(2025, 7, 3, 5, tzinfo=dt.UTC)
    )
    bars.filter(~hole).write_parquet(tmp_path / "bars.parquet")
    xsmom.cli.main(["data", "ingest", str(tmp_path / "bars.parquet"), "--store", str(exchange)])
    server = Mock(now_ms=ms("2025-08-15T00:30:00"), bars=exchange)
    try:
        store = tmp_path / "store"
        first = fetch(store, SYMBOLS, "2025-07-01", base_url=server.url)
        assert [r.bars_added for r in first.symbols] == [45 * 24 - 6, 45 * 24]
        server.clear_log()
        second = fetch(store, SYMBOLS, "2025-07-01", base_url=server.url)
        assert second.bars_added == 0
        hole_range = (ms("2025-07-03T00:00:00"), ms("2025-07-03T06:00:00"))
        assert [r.ranges for r in second.symbols] == [[hole_range], []]
        assert len(server.requests("/v5/market/kline")) == 1
    finally:
        server.close()
    july = pl.col("ts") >= dt.datetime(2025, 7, 1, tzinfo=dt.UTC)
    same_bars(stored(store), bars.filter(~hole & july).sort("symbol", "ts"))


@settings(max_examples=300, deadline=None)
@given(
    present=st.lists(st.booleans(), min_size=0, max_size=120),
    start=st.integers(-5, 130),
    length=st.integers(0, 140),
    page=st.integers(1, 30),
)
def test_missing_ranges_cover_exactly_the_missing_bars(present, start, length, page):
    from xsmom import _core

    step = 10
    stored = [i * step for i, here in enumerate(present) if here]
    lo, hi = start * step, (start + length) * step
    ranges = _core.fetch_missing_ranges(stored, lo, hi, step, page)
    covered = {t for a, b in ranges for t in range(a, b, step)}
    missing = {t for t in range(lo, hi, step) if t not in set(stored)}
    assert missing <= covered, "every missing bar is requested"
    assert all(lo <= a < b <= hi for a, b in ranges)
    assert all(b1 < a2 for (_, b1), (a2, _) in zip(ranges, ranges[1:], strict=False)), "sorted, disjoint"
    for a, b in ranges:
        # A range starts and ends at missing bars, and only a single run may exceed one page.
        assert a in missing and b - step in missing
        run_inside = all(t in missing for t in range(a, b, step))
        assert run_inside or (b - a) <= page * step
    if not missing:
        assert ranges == []


def test_faults_are_retried_without_gaps_or_duplicates(tmp_path, mock):
    """Rate limits, HTTP 500 and a timeout on kline and funding pages: retried, the result is whole."""
    faults = [
        ("/v5/market/kline", "ratelimit", 1),
        ("/v5/market/kline", "http500", 1),
        ("/v5/market/kline", "timeout", 1),
        ("/v5/market/funding/history", "http500", 1),
    ]
    for path, kind, count in faults:
        mock.post("/mock/faults", {"path": path, "kind": kind, "count": count})
    store = tmp_path / "store"
    summary = fetch(store, SYMBOLS, "2025-06-01", base_url=mock.url, funding=True, timeout=1.0)
    assert summary.bars_added == 3600
    same_bars(stored(store), fixture_bars("2025-06-01", ms("2025-08-15T00:00:00")))
    funding = xsmom.read_funding(store).sort("symbol", "ts")
    want = fixture_funding("2025-06-01", ms("2025-08-15T00:30:00") + 1)
    assert funding.equals(want.select(funding.columns))
    assert len(mock.requests("/v5/market/kline")) == 4 + 3, "four pages plus three failed attempts"


# --- mark- and index-price klines (issue 16) --------------------------------------------------------


def test_fetch_mark_and_index_klines_into_their_kind(tmp_path):
    # A mock store with traded, mark (the fixture's) and index bars (made here: mark × 0.999).
    source = tmp_path / "source"
    for symbol in SYMBOLS:
        part = Path("bars") / "timeframe=1h" / f"symbol={symbol}"
        (source / part).mkdir(parents=True)
        (source / part / "2025.parquet").write_bytes((ROOT / "data" / part / "2025.parquet").read_bytes())
    marks = xsmom.read_bars(ROOT / "data", symbols=SYMBOLS, kind="mark")
    assert marks["volume"].is_nan().all()
    index = marks.with_columns([(pl.col(c) * 0.999).alias(c) for c in ("open", "high", "low", "close")])
    for kind, frame in (("mark", marks), ("index", index)):
        path = tmp_path / f"{kind}.parquet"
        frame.drop("volume").write_parquet(path)
        assert main(["data", "ingest", str(path), "--store", str(source), "--kind", kind]) == 0
    assert xsmom.read_bars(source).equals(xsmom.read_bars(ROOT / "data", symbols=SYMBOLS))

    server = Mock(now_ms=ms("2025-07-01T00:30:00"), bars=source)
    try:
        store = tmp_path / "store"
        assert (
            main(
                ["data", "fetch", "--store", str(store), "--symbols", ",".join(SYMBOLS)]
                + ["--start", "2025-06-01", "--kind", "mark", "--base-url", server.url]
            )
            == 0
        )
        pages = server.requests("/v5/market/mark-price-kline")
        assert pages and not server.requests("/v5/market/kline")
        want = marks.filter(pl.col("ts") < dt.datetime(2025, 7, 1, tzinfo=dt.UTC)).sort("symbol", "ts")
        got = xsmom.read_bars(store, kind="mark").sort("symbol", "ts")
        assert got.height == want.height == 2 * 30 * 24
        columns = ["ts", "symbol", "open", "high", "low", "close"]
        assert got.select(columns).equals(want.select(columns))
        assert got["volume"].is_nan().all()
        # Only mark bars were written: the traded kind of the store has none.
        assert not any((store / "bars" / "timeframe=1h").glob("symbol=*"))
        assert (store / "bars" / "timeframe=1h" / "kind=mark" / "symbol=BTCUSDT" / "2025.parquet").exists()

        summary = fetch(store, SYMBOLS, "2025-06-01", base_url=server.url, kind="index")
        assert summary.bars_added == 2 * 30 * 24
        got_index = xsmom.read_bars(store, kind="index").sort("symbol", "ts")
        want_index = index.filter(pl.col("ts") < dt.datetime(2025, 7, 1, tzinfo=dt.UTC)).sort("symbol", "ts")
        assert got_index.select(columns).equals(want_index.select(columns))
        # Incremental as for klines: a second run requests nothing new.
        again = fetch(store, SYMBOLS, "2025-06-01", base_url=server.url, kind="mark")
        assert again.bars_added == 0 and all(not r.ranges for r in again.symbols)
    finally:
        server.close()
