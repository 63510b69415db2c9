"""``xsmom data fetch``: Bybit v5 klines and funding history into the bar store (interfaces.md).

The work is done in Rust by the live runner's own Bybit client (``_core.fetch_store``): newest-first
pages without gaps or duplicates at page edges, closed bars only, and only the ranges the store does
not hold yet; each symbol is appended atomically by the store writer as soon as it is fetched.
Public market data only: no API key is needed or read.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from xsmom import _core
from xsmom.api import TimeLike, _epoch_ms


@dataclass(frozen=True)
class SymbolFetch:
    symbol: str
    ranges: list[tuple[int, int]]
    bars_fetched: int
    bars_added: int
    bars_replaced: int
    first_ts: int | None
    last_ts: int | None
    funding_ranges: list[tuple[int, int]]
    funding_fetched: int
    funding_added: int

    @property
    def fetched_from(self) -> dt.datetime | None:
        return _utc(self.first_ts)

    @property
    def fetched_to(self) -> dt.datetime | None:
        return _utc(self.last_ts)


@dataclass(frozen=True)
class FetchSummary:
    store: Path
    symbols: list[SymbolFetch]

    @property
    def bars_added(self) -> int:
        return sum(s.bars_added for s in self.symbols)

    @property
    def funding_added(self) -> int:
        return sum(s.funding_added for s in self.symbols)


def _utc(ms: int | None) -> dt.datetime | None:
    return None if ms is None else dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def _time(value: TimeLike, name: str) -> int | None:
    try:
        return _epoch_ms(value)
    except ValueError:
        raise ValueError(f"--{name} {value!r}: expected a date or ISO time such as 2025-06-01") from None


def fetch(
    store: str | Path,
    symbols: list[str],
    start: TimeLike,
    end: TimeLike = None,
    *,
    timeframe: str = "1h",
    funding: bool = False,
    base_url: str | None = None,
    timeout: float = 10.0,
    retries: int = 4,
    kind: str = "trade",
) -> FetchSummary:
    """Fetch ``[start, end)`` (end default: now) of ``symbols`` into ``store``; only what is missing.

    ``base_url``: ``mainnet`` (default), ``testnet`` or a URL (tests use a local mock server).
    ``kind``: ``trade`` (klines), ``mark`` or ``index`` (mark- / index-price klines, no volume,
    stored under ``bars/timeframe=<tf>/kind=<kind>/``).
    """
    start_ms = _time(start, "start")
    if start_ms is None:
        raise ValueError("--start is required")
    end_ms = _time(end, "end")
    rows = _core.fetch_store(
        str(store),
        [s.strip().upper() for s in symbols],
        start_ms,
        end_ms,
        timeframe,
        funding,
        base_url,
        timeout,
        retries,
        kind,
    )
    return FetchSummary(
        Path(store),
        [
            SymbolFetch(
                symbol=r["symbol"],
                ranges=[tuple(x) for x in r["ranges"]],
                bars_fetched=r["bars_fetched"],
                bars_added=r["bars_added"],
                bars_replaced=r["bars_replaced"],
                first_ts=r["first_ts"],
                last_ts=r["last_ts"],
                funding_ranges=[tuple(x) for x in r["funding_ranges"]],
                funding_fetched=r["funding_fetched"],
                funding_added=r["funding_added"],
            )
            for r in rows
        ],
    )
