"""A mock Bybit v5 REST server for offline tests of the live runner and `xsmom data fetch`.

Run: ``python3 tests/mock_bybit.py --port 0 --bars data --now-ms MS [--key K --secret S]``; it
prints ``READY <port>`` when listening. It checks signatures and the recv-window, serves klines
(newest first, ``limit`` ≤ 1000, only bars closed at the mock clock; mark- and index-price klines
from the store's ``kind=mark`` / ``kind=index`` bars), instruments, tickers,
funding history and server time from a Hive bar store, keeps orders, positions and the USDT
balance (positions and open orders in pages of 20 with ``nextPageCursor``), checks signed
timestamps against its own clock as Bybit does, and matches orders bar by bar when the clock moves
(``POST /mock/clock``): a post-only limit fills when a later bar trades through its price; a market
order fills when it is created, at the last trade plus slippage, with the taker fee.

As Bybit does, an ``orderLinkId`` is refused (110072) once used, also after its order was cancelled
or filled; a post-only limit that would take liquidity is accepted and then cancelled at once
(``orderStatus`` Cancelled, ``rejectReason`` EC_PostOnlyWillTakeLiquidity); ``/v5/order/realtime``
serves open orders, or with ``orderLinkId`` and ``openOnly=1`` the closed ones; ``/v5/execution/list``
serves the fills in pages of 20 (``nextPageCursor``).

Test hooks (no auth): ``POST /mock/clock {"now_ms"}``, ``POST /mock/faults {"path", "kind",
"count", "ms"}`` (``path`` ``*`` matches every path) with kind ``timeout | http500 | ratelimit | postonly
| reject | drop_after_accept | partial | fill_on_cancel | partial_on_cancel | auth | forbidden |
delay`` (``delay``: the request waits ``ms`` and then goes through; ``timeout``: it waits ``ms``,
then retCode 10016; ``drop_after_accept``: the order is accepted and no response comes, the
connection closes after ``ms``; ``auth``: retCode 10003;
``forbidden``: HTTP 403; ``fill_on_cancel`` / ``partial_on_cancel``: the order fills (half) just
before the cancel arrives),
``POST /mock/price {"symbol", "last"}`` (the ticker's last trade, for stop tests), ``POST
/mock/positions {"SYM": qty}`` and ``POST /mock/balance {"balance"}`` (set the account), ``GET
/mock/state`` (orders, positions, balance, the last closes, request log; ``POST`` with ``{"log_from":
n}``: the log from its n-th request), ``POST /mock/reset``. Each logged request has the mock clock
(``now_ms``), the fault it took (``fault``) and, for the wallet balance, the equity served (``equity``);
the time endpoint reports the running exchange clock (the mock clock plus the host time since it was
set) that signatures are checked on.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import polars as pl

HOUR_MS = 3_600_000
# Largest page of the account lists: clients must follow ``nextPageCursor``.
PAGE = 20
HALF_SPREAD = 1e-4
MAKER_FEE, TAKER_FEE, SLIPPAGE = 1e-4, 5.5e-4, 2e-4


class Exchange:
    """State of the mock account and its market data."""

    def __init__(self, bars_root: Path | None, symbols: list[str] | None, now_ms: int, balance: float):
        self.lock = threading.RLock()
        self.bars: dict[str, list[tuple]] = {}
        self.funding: dict[str, list[tuple[int, float]]] = {}
        # Mark- and index-price bars (ts, open, high, low, close) from the store's kind=<kind>/.
        self.price_bars: dict[str, dict[str, list[tuple]]] = {"mark": {}, "index": {}}
        if bars_root is not None:
            self._load(bars_root, symbols)
        self.now_ms = now_ms
        # Host time when the mock clock was last set: the exchange's wall clock runs on from there.
        self.clock_set_at = time.time()
        self.start_balance = balance
        self.reset()

    def _load(self, root: Path, symbols: list[str] | None) -> None:
        frame = pl.scan_parquet(
            str(root / "bars" / "timeframe=1h" / "symbol=*" / "*.parquet"), hive_partitioning=True
        )
        if symbols:
            frame = frame.filter(pl.col("symbol").is_in(symbols))
        frame = frame.sort(["symbol", "ts"]).collect()
        if "turnover" not in frame.columns:
            # Quote volume as Bybit reports it; the store's panel derives it the same way.
            frame = frame.with_columns((pl.col("close") * pl.col("volume")).alias("turnover"))
        turnover = "turnover"
        for (symbol,), part in frame.group_by(["symbol"], maintain_order=True):
            self.bars[symbol] = list(
                zip(
                    part["ts"].to_list(),
                    part["open"].to_list(),
                    part["high"].to_list(),
                    part["low"].to_list(),
                    part["close"].to_list(),
                    part["volume"].to_list(),
                    part[turnover].to_list(),
                    strict=True,
                )
            )
        for kind in ("mark", "index"):
            kind_dir = root / "bars" / "timeframe=1h" / f"kind={kind}"
            if not any(kind_dir.glob("symbol=*/*.parquet")):
                continue
            marks = pl.scan_parquet(str(kind_dir / "symbol=*" / "*.parquet"), hive_partitioning=True)
            marks = marks.sort(["symbol", "ts"]).collect()
            for (symbol,), part in marks.group_by(["symbol"], maintain_order=True):
                if symbols and symbol not in symbols:
                    continue
                columns = [part[c].to_list() for c in ("ts", "open", "high", "low", "close")]
                self.price_bars[kind][symbol] = list(zip(*columns, strict=True))
        funding_dir = root / "funding"
        if funding_dir.exists():
            funding = pl.scan_parquet(str(funding_dir / "**" / "*.parquet"), hive_partitioning=True).collect()
            for (symbol,), part in funding.group_by(["symbol"]):
                if symbols and symbol not in symbols:
                    continue
                self.funding[symbol] = sorted(zip(part["ts"].to_list(), part["rate"].to_list(), strict=True))

    def reset(self) -> None:
        with self.lock:
            self.balance = self.start_balance
            self.positions: dict[str, float] = {}
            self.avg_price: dict[str, float] = {}
            self.orders: list[dict] = []
            self.closed_orders: list[dict] = []
            self.executions: list[dict] = []
            self.faults: list[dict] = []
            self.log: list[dict] = []
            self.next_id = 1
            self.used_link_ids: set[str] = set()
            self.refused_duplicates = 0
            self.next_exec = 1
            self.price_override: dict[str, float] = {}
            self.skew_ms = 0
            self.kline_from_start = False

    # Market data -------------------------------------------------------------------------------
    def closed(self, symbol: str) -> list[tuple]:
        return [b for b in self.bars.get(symbol, []) if b[0] + HOUR_MS <= self.now_ms]

    def last_close(self, symbol: str) -> float:
        closed = self.closed(symbol)
        return closed[-1][4] if closed else float("nan")

    def wall_ms(self) -> int:
        """The exchange's running clock: the mock clock plus the host time since it was set."""
        return self.now_ms + int((time.time() - self.clock_set_at) * 1000)

    def equity(self) -> float:
        # Positions a test set on symbols without bars have no price: they are left out.
        marked = (q * self.last_close(s) for s, q in self.positions.items() if q and s in self.bars)
        return self.balance + sum(marked)

    # Matching ----------------------------------------------------------------------------------
    def advance(self, now_ms: int) -> None:
        with self.lock:
            previous = self.now_ms
            self.now_ms = now_ms
            self.clock_set_at = time.time()
            for order in list(self.orders):
                bars = [b for b in self.bars.get(order["symbol"], []) if previous <= b[0] + HOUR_MS <= now_ms]
                for bar in bars:
                    if bar[0] < order["created_bar_end"]:
                        continue
                    if self._try_fill(order, bar):
                        break
            working = ("New", "PartiallyFilled")
            self.closed_orders.extend(o for o in self.orders if o["orderStatus"] not in working)
            self.orders = [o for o in self.orders if o["orderStatus"] in working]

    def fill_market(self, order: dict) -> None:
        """A market order fills at once at the last trade (reduce-only capped at the position)."""
        symbol = order["symbol"]
        side = 1.0 if order["side"] == "Buy" else -1.0
        last = self.price_override.get(symbol, self.last_close(symbol))
        qty = float(order["qty"])
        if order["reduceOnly"]:
            position = self.positions.get(symbol, 0.0)
            qty = min(qty, abs(position)) if position * side < 0 else 0.0
        if qty > 0:
            self._execute(order, qty, last * (1 + side * SLIPPAGE), TAKER_FEE)
            order["orderStatus"] = "Filled"
        else:
            order["orderStatus"] = "Cancelled"
        self.orders = [o for o in self.orders if o is not order]
        self.closed_orders.append(order)

    def _try_fill(self, order: dict, bar: tuple) -> bool:
        _, open_, high, low, *_ = bar
        side = 1.0 if order["side"] == "Buy" else -1.0
        if order["orderType"] == "Market":
            price, fee = open_ * (1 + side * SLIPPAGE), TAKER_FEE
        else:
            price = float(order["price"])
            if (side > 0 and low < price) or (side < 0 and high > price):
                price, fee = (min(price, open_) if side > 0 else max(price, open_)), MAKER_FEE
            else:
                return False
        qty = float(order["qty"]) - float(order["cumExecQty"])
        if order["reduceOnly"]:
            position = self.positions.get(order["symbol"], 0.0)
            qty = min(qty, abs(position)) if position * side < 0 else 0.0
        if qty > 0:
            self._execute(order, qty, price, fee)
        order["orderStatus"] = "Filled"
        return True

    def _execute(self, order: dict, qty: float, price: float, fee_rate: float) -> None:
        side = 1.0 if order["side"] == "Buy" else -1.0
        symbol = order["symbol"]
        self.balance -= side * qty * price + qty * price * fee_rate
        before = self.positions.get(symbol, 0.0)
        after = before + side * qty
        self.positions[symbol] = 0.0 if abs(after) < 1e-12 else after
        self.avg_price[symbol] = price
        order["cumExecQty"] = str(float(order["cumExecQty"]) + qty)
        self.executions.append(
            {
                "symbol": symbol,
                "side": order["side"],
                "qty": qty,
                "price": price,
                "orderLinkId": order["orderLinkId"],
                "orderId": order["orderId"],
                "execId": f"exec-{self.next_exec}",
                "ts": self.now_ms,
            }
        )
        self.next_exec += 1

    def close(self, order: dict, status: str, reason: str = "EC_NoError") -> None:
        """End an open order (cancelled by the user or the exchange): it stays queryable as closed."""
        order["orderStatus"] = status
        order["rejectReason"] = reason
        self.orders = [o for o in self.orders if o is not order]
        self.closed_orders.append(order)

    def take_fault(self, path: str) -> dict | None:
        with self.lock:
            for fault in self.faults:
                if fault["path"] in (path, "*") and fault["count"] > 0:
                    fault["count"] -= 1
                    return fault
        return None


def page(rows: list, query: dict) -> dict:
    """One page of ``rows`` (``limit`` ≤ PAGE) from the opaque ``cursor``, with ``nextPageCursor``."""
    start = int(query.get("cursor") or 0)
    size = min(int(query.get("limit", PAGE)), PAGE)
    end = start + size
    return {
        "category": "linear",
        "list": rows[start:end],
        "nextPageCursor": str(end) if end < len(rows) else "",
    }


def public(order: dict) -> dict:
    """An order as Bybit lists it (without the mock's own bookkeeping)."""
    return {k: v for k, v in order.items() if k != "created_bar_end"}


def ok(result) -> dict:
    return {"retCode": 0, "retMsg": "OK", "result": result, "time": int(time.time() * 1000)}


def error(code: int, message: str) -> dict:
    return {"retCode": code, "retMsg": message, "result": {}, "time": int(time.time() * 1000)}


class Handler(BaseHTTPRequestHandler):
    exchange: Exchange
    key: str
    secret: str

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - silence the default access log
        pass

    def _send(self, payload: dict, status: int = 200) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _auth(self, payload: str) -> dict | None:
        key = self.headers.get("X-BAPI-API-KEY")
        timestamp = self.headers.get("X-BAPI-TIMESTAMP")
        window = self.headers.get("X-BAPI-RECV-WINDOW", "5000")
        signature = self.headers.get("X-BAPI-SIGN")
        if not key or not timestamp or not signature:
            return error(10003, "missing authentication headers")
        if key != self.key:
            return error(10003, "API key is invalid.")
        # Bybit's rule on its own clock: server_time - recv_window <= timestamp < server_time + 1000.
        ex = self.exchange
        wall = ex.wall_ms() + ex.skew_ms
        if not wall - int(window) <= int(timestamp) < wall + 1000:
            return error(10002, "invalid request, please check your server timestamp or recv_window param")
        expected = hmac.new(
            self.secret.encode(), f"{timestamp}{key}{window}{payload}".encode(), hashlib.sha256
        )
        if not hmac.compare_digest(expected.hexdigest(), signature):
            return error(10004, "error sign! origin_string[...]")
        return None

    def do_GET(self) -> None:  # noqa: N802
        parts = urlsplit(self.path)
        self._handle("GET", parts.path, dict(parse_qsl(parts.query)), parts.query, None)

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length", "0"))
        text = self.rfile.read(length).decode() if length else ""
        body = json.loads(text) if text else {}
        self._handle("POST", urlsplit(self.path).path, {}, text, body)

    def _handle(self, method: str, path: str, query: dict, payload: str, body: dict | None) -> None:
        ex = self.exchange
        if path.startswith("/mock/"):
            return self._send(self._mock(path, body or {}))
        entry = {"method": method, "path": path, "query": query, "body": body, "t": time.time()}
        with ex.lock:
            entry["now_ms"] = ex.now_ms
            ex.log.append(entry)
        taken = ex.take_fault(path)
        fault = taken["kind"] if taken else None
        if fault:
            entry["fault"] = fault
        if fault == "delay":
            # A request that hangs (the exchange is slow), then goes through.
            time.sleep(taken.get("ms", 3000) / 1000)
        if fault == "auth":
            return self._send(error(10003, "API key is invalid."))
        if fault == "forbidden":
            return self._send({"error": "forbidden"}, status=403)
        if fault == "timeout":
            time.sleep(taken.get("ms", 3000) / 1000)
            return self._send(error(10016, "late"))
        if fault == "http500":
            return self._send({"error": "internal"}, status=500)
        if fault == "ratelimit":
            return self._send(error(10006, "Too many visits!"))
        private = path.startswith(("/v5/order", "/v5/position", "/v5/account"))
        if private:
            failure = self._auth(payload)
            if failure:
                return self._send(failure)
        try:
            response = self._route(method, path, query, body or {}, fault)
            if path == "/v5/account/wallet-balance" and response and response["retCode"] == 0:
                entry["equity"] = float(response["result"]["list"][0]["totalEquity"])
        except KeyError as missing:
            response = error(10001, f"missing parameter {missing}")
        if response is None:
            # drop_after_accept: the order exists, the response never arrives.
            time.sleep(taken.get("ms", 3000) / 1000 if taken else 3)
            return None
        return self._send(response)

    def _mock(self, path: str, body: dict) -> dict:
        ex = self.exchange
        if path == "/mock/clock":
            ex.advance(int(body["now_ms"]))
        elif path == "/mock/faults":
            with ex.lock:
                if int(body.get("count", 1)) == 0:  # count 0 clears the path's faults
                    ex.faults = [f for f in ex.faults if f["path"] != body["path"]]
                else:
                    ex.faults.append(
                        {
                            "path": body["path"],
                            "kind": body["kind"],
                            "count": int(body.get("count", 1)),
                            "ms": int(body.get("ms", 3000)),
                        }
                    )
        elif path == "/mock/kline_order":
            with ex.lock:
                ex.kline_from_start = body["fill_from"] == "start"
        elif path == "/mock/skew":
            # The exchange's clock runs `skew_ms` off the clock its /v5/market/time reported.
            with ex.lock:
                ex.skew_ms = int(body["skew_ms"])
        elif path == "/mock/balance":
            with ex.lock:
                ex.balance = float(body["balance"])
        elif path == "/mock/positions":
            with ex.lock:
                ex.positions.update({s: float(q) for s, q in body.items()})
        elif path == "/mock/price":
            with ex.lock:
                ex.price_override[body["symbol"]] = float(body["last"])
        elif path == "/mock/reset":
            ex.reset()
        with ex.lock:
            return {
                "now_ms": ex.now_ms,
                "balance": ex.balance,
                "equity": ex.equity(),
                "positions": {s: q for s, q in ex.positions.items() if q},
                "closes": {s: ex.last_close(s) for s in ex.bars},
                "orders": ex.orders,
                "closed_orders": ex.closed_orders,
                "executions": ex.executions,
                "refused_duplicates": ex.refused_duplicates,
                # ``{"log_from": n}``: only the requests from the n-th on (a test polling the state).
                "log": ex.log[int(body.get("log_from", 0)) :],
            }

    def _route(self, method: str, path: str, q: dict, body: dict, fault: str | None) -> dict | None:
        ex = self.exchange
        with ex.lock:
            if path == "/v5/market/time":
                # The running clock the signatures are checked on (less the skew a test set).
                wall = ex.wall_ms()
                return ok({"timeSecond": str(wall // 1000), "timeNano": str(wall * 1_000_000)})
            if path == "/v5/market/kline":
                symbol, limit = q["symbol"], min(int(q.get("limit", 200)), 1000)
                if q.get("interval") != "60":
                    return error(10001, "the mock serves 1h klines only")
                start, end = int(q.get("start", 0)), int(q.get("end", 2**62))
                rows = [b for b in ex.closed(symbol) if start <= b[0] <= end]
                # Bybit fills a page from the newest bar; the mock can fill it from the oldest instead.
                rows = rows[:limit] if ex.kline_from_start else rows[-limit:]
                listed = [[str(v) for v in b] for b in reversed(rows)]
                return ok({"category": "linear", "symbol": symbol, "list": listed})
            if path in ("/v5/market/mark-price-kline", "/v5/market/index-price-kline"):
                # Rows [startTime, open, high, low, close]: no volume, as Bybit serves them.
                kind = "mark" if path.endswith("mark-price-kline") else "index"
                symbol, limit = q["symbol"], min(int(q.get("limit", 200)), 1000)
                if q.get("interval") != "60":
                    return error(10001, "the mock serves 1h klines only")
                start, end = int(q.get("start", 0)), int(q.get("end", 2**62))
                closed = [b for b in ex.price_bars[kind].get(symbol, []) if b[0] + HOUR_MS <= ex.now_ms]
                rows = [b for b in closed if start <= b[0] <= end]
                rows = rows[:limit] if ex.kline_from_start else rows[-limit:]
                listed = [[str(v) for v in b] for b in reversed(rows)]
                return ok({"category": "linear", "symbol": symbol, "list": listed})
            if path == "/v5/market/instruments-info":
                symbol = q["symbol"]
                if symbol not in ex.bars:
                    return ok({"category": "linear", "list": []})
                price = ex.last_close(symbol)
                tick = 10 ** (len(str(int(price))) - 6) if price == price else 0.01
                return ok(
                    {
                        "category": "linear",
                        "list": [
                            {
                                "symbol": symbol,
                                "lotSizeFilter": {
                                    "qtyStep": "0.001",
                                    "minOrderQty": "0.001",
                                    "maxOrderQty": "1000000",
                                    "minNotionalValue": "5",
                                },
                                "priceFilter": {"tickSize": f"{tick:.10f}".rstrip("0")},
                            }
                        ],
                    }
                )
            if path == "/v5/market/tickers":
                last = ex.price_override.get(q["symbol"], ex.last_close(q["symbol"]))
                return ok(
                    {
                        "category": "linear",
                        "list": [
                            {
                                "symbol": q["symbol"],
                                "lastPrice": str(last),
                                "bid1Price": str(last * (1 - HALF_SPREAD)),
                                "ask1Price": str(last * (1 + HALF_SPREAD)),
                            }
                        ],
                    }
                )
            if path == "/v5/market/funding/history":
                symbol, limit = q["symbol"], min(int(q.get("limit", 200)), 200)
                start, end = int(q.get("startTime", 0)), int(q.get("endTime", 2**62))
                rows = [e for e in ex.funding.get(symbol, []) if start <= e[0] <= end and e[0] <= ex.now_ms]
                rows = rows[-limit:]
                return ok(
                    {
                        "category": "linear",
                        "list": [
                            {"symbol": symbol, "fundingRate": str(r), "fundingRateTimestamp": str(t)}
                            for t, r in reversed(rows)
                        ],
                    }
                )
            if path == "/v5/account/wallet-balance":
                return ok({"list": [{"accountType": "UNIFIED", "totalEquity": str(ex.equity())}]})
            if path == "/v5/position/list":
                rows = [
                    {
                        "symbol": s,
                        "side": "Buy" if qty > 0 else "Sell",
                        "size": str(abs(qty)),
                        "avgPrice": str(ex.avg_price.get(s, 0.0)),
                    }
                    for s, qty in sorted(ex.positions.items())
                    if qty
                ]
                return ok(page(rows, q))
            if path == "/v5/order/realtime":
                orders = ex.orders
                if "orderLinkId" in q:
                    pool = ex.closed_orders if q.get("openOnly") == "1" else ex.orders
                    orders = [o for o in pool if o["orderLinkId"] == q["orderLinkId"]]
                elif "symbol" in q:
                    orders = [o for o in orders if o["symbol"] == q["symbol"]]
                return ok(page([public(o) for o in orders], q))
            if path == "/v5/execution/list":
                rows = [
                    e
                    for e in reversed(ex.executions)
                    if int(q.get("startTime", 0)) <= e["ts"] <= int(q.get("endTime", 2**62))
                    and q.get("orderLinkId", e["orderLinkId"]) == e["orderLinkId"]
                    and q.get("symbol", e["symbol"]) == e["symbol"]
                ]
                listed = [
                    {
                        "symbol": e["symbol"],
                        "orderId": e["orderId"],
                        "orderLinkId": e["orderLinkId"],
                        "side": e["side"],
                        "execQty": str(e["qty"]),
                        "execPrice": str(e["price"]),
                        "execTime": str(e["ts"]),
                        "execId": e["execId"],
                        "execType": "Trade",
                    }
                    for e in rows
                ]
                return ok(page(listed, q))
            if path == "/v5/order/create":
                return self._create(body, fault)
            if path == "/v5/order/cancel":
                found = [o for o in ex.orders if o["orderLinkId"] == body.get("orderLinkId")]
                if not found:
                    return error(110001, "order not exists or too late to cancel")
                order = found[0]
                left = float(order["qty"]) - float(order["cumExecQty"])
                price = float(order["price"]) if float(order["price"]) > 0 else ex.last_close(order["symbol"])
                if fault == "fill_on_cancel":
                    # The fill races the cancel: the order is done before the cancel arrives.
                    ex._execute(order, left, price, MAKER_FEE)
                    ex.close(order, "Filled")
                    return error(110001, "order not exists or too late to cancel")
                if fault == "partial_on_cancel":
                    ex._execute(order, round(left / 2, 3), price, MAKER_FEE)
                ex.close(order, "Cancelled")
                return ok({"orderLinkId": body.get("orderLinkId")})
            if path == "/v5/order/cancel-all":
                symbol = body.get("symbol")
                for order in [o for o in ex.orders if symbol is None or o["symbol"] == symbol]:
                    ex.close(order, "Cancelled")
                return ok({"list": []})
            return error(10001, f"unknown path {path}")

    def _create(self, body: dict, fault: str | None) -> dict | None:
        ex = self.exchange
        link_id = body["orderLinkId"]
        # Bybit refuses an orderLinkId once used, whatever became of its order.
        if link_id in ex.used_link_ids:
            ex.refused_duplicates += 1
            return error(110072, "OrderLinkedID is duplicate")
        symbol = body["symbol"]
        if symbol not in ex.bars:
            return error(10001, f"symbol {symbol} invalid")
        last = ex.price_override.get(symbol, ex.last_close(symbol))
        side = 1.0 if body["side"] == "Buy" else -1.0
        if fault == "reject":
            return error(110017, "reduce-only rule not satisfied")
        ex.used_link_ids.add(link_id)
        # A post-only limit that would take liquidity is accepted, then cancelled by the exchange.
        take = False
        if body["orderType"] == "Limit" and body.get("timeInForce") == "PostOnly":
            price = float(body["price"])
            crosses = price >= last * (1 + HALF_SPREAD) if side > 0 else price <= last * (1 - HALF_SPREAD)
            take = crosses or fault == "postonly"
        order = {
            "orderId": f"mock-{ex.next_id}",
            "orderLinkId": link_id,
            "symbol": symbol,
            "side": body["side"],
            "orderType": body["orderType"],
            "qty": body["qty"],
            "price": body.get("price", "0"),
            "cumExecQty": "0",
            "orderStatus": "New",
            "reduceOnly": bool(body.get("reduceOnly", False)),
            "createdTime": str(ex.now_ms),
            "created_bar_end": ex.now_ms,
            "rejectReason": "EC_NoError",
        }
        ex.next_id += 1
        ex.orders.append(order)
        if take:
            ex.close(order, "Cancelled", "EC_PostOnlyWillTakeLiquidity")
        elif order["orderType"] == "Market":
            ex.fill_market(order)
        if fault == "partial" and order["orderType"] == "Limit" and not take:
            ex._execute(order, float(order["qty"]) / 2, float(order["price"]), MAKER_FEE)
            order["orderStatus"] = "PartiallyFilled"
        if fault == "drop_after_accept":
            return None
        return ok({"orderId": order["orderId"], "orderLinkId": link_id})


def serve(exchange: Exchange, port: int, key: str, secret: str) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"exchange": exchange, "key": key, "secret": secret})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--bars", type=Path)
    parser.add_argument("--symbols", default="")
    parser.add_argument("--now-ms", type=int, default=int(time.time() * 1000))
    parser.add_argument("--balance", type=float, default=10_000.0)
    parser.add_argument("--key", default="test-key")
    parser.add_argument("--secret", default="test-secret")
    args = parser.parse_args()
    symbols = [s for s in args.symbols.split(",") if s] or None
    exchange = Exchange(args.bars, symbols, args.now_ms, args.balance)
    server = serve(exchange, args.port, args.key, args.secret)
    print(f"READY {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
