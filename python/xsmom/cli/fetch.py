"""``xsmom data fetch``: closed klines (and funding) from Bybit v5 into a bar store."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from xsmom.cli.common import CliError
from xsmom.exceptions import ExchangeUnreachableError
from xsmom.progress import steps


def register(data_commands: Any) -> None:
    fetch = data_commands.add_parser(
        "fetch", help="fetch closed klines (and funding) from Bybit v5 into a store"
    )
    fetch.add_argument("--store", type=Path, required=True)
    fetch.add_argument("--symbols", required=True, help="comma-separated, e.g. BTCUSDT,ETHUSDT")
    fetch.add_argument("--start", required=True, help="first bar (date or ISO time, UTC)")
    fetch.add_argument("--end", default=None, help="end, exclusive (default: now; only closed bars)")
    fetch.add_argument("--timeframe", default="1h")
    fetch.add_argument("--funding", action="store_true", help="also fetch the funding rate history")
    fetch.add_argument(
        "--kind",
        choices=["trade", "mark", "index"],
        default="trade",
        help="traded klines (default) or mark / index-price klines (stored under kind=<kind>)",
    )
    fetch.add_argument("--base-url", default=None, help="API base URL (default: Bybit mainnet)")
    fetch.set_defaults(handler=run)


def _fetch_all(args: argparse.Namespace, symbols: list[str]) -> Any:
    """Fetch symbol by symbol (progress per symbol); a network failure is one line with its cause."""
    from xsmom.fetch import FetchSummary, fetch

    try:
        parts = [
            fetch(
                args.store,
                [symbol],
                args.start,
                args.end,
                timeframe=args.timeframe,
                funding=args.funding,
                base_url=args.base_url,
                kind=args.kind,
            )
            for symbol in steps(symbols, "fetching")
        ]
        return FetchSummary(args.store, [row for part in parts for row in part.symbols])
    except ExchangeUnreachableError:
        base = args.base_url or "https://api.bybit.com"
        raise CliError(f"cannot reach {base}: {_network_cause(base)}") from None


def run(args: argparse.Namespace) -> int:
    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
    if not symbols:
        raise CliError("--symbols: give at least one symbol, e.g. BTCUSDT,ETHUSDT")
    summary = _fetch_all(args, symbols)
    for row in summary.symbols:
        line = f"{row.symbol}: {row.bars_added} bar(s) added"
        if row.fetched_from is not None:
            line += f" ({row.fetched_from} → {row.fetched_to})"
        else:
            line += " (up to date)"
        if args.funding:
            line += f", {row.funding_added} funding event(s) added"
        print(line)
    print(f"{summary.bars_added} bar(s), {summary.funding_added} funding event(s) written to {args.store}")
    return 0


def _network_cause(base_url: str) -> str:
    """Why ``base_url`` cannot be reached, found by resolving and connecting once (the core's HTTP
    client only says "error sending request")."""
    import socket
    import urllib.parse

    url = urllib.parse.urlsplit(base_url)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        return f"cannot resolve host {host!r} ({err.strerror}); check the network or --base-url"
    try:
        family, kind, proto, _, address = addresses[0]
        with socket.socket(family, kind, proto) as sock:
            sock.settimeout(5.0)
            sock.connect(address)
    except TimeoutError:
        return f"connecting to {host}:{port} timed out (offline or blocked by a firewall?)"
    except OSError as err:
        return f"connecting to {host}:{port} failed: {err.strerror or err}"
    return f"{host}:{port} accepts connections but the HTTP request failed (proxy, TLS or server error)"
