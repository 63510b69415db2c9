"""The daily report of the live runner (``xsmom report daily``), built from its state file.

The state file is the JSON that ``xsmom-live`` writes atomically after every cycle (schema in
``src/live/state.rs``, ``schema_version`` 1): config version, mode, last processed bar, the account
kill-switch (UTC day, day start and day high equity, fired), the API circuit breaker, and per symbol
the model's target weight, open stop and whether it is blocked (cooldown or scoring ban).

Equity is taken from the state's ``equity`` field when the runner writes one, otherwise from an
``equity.parquet`` of the runner's ``--out`` directory (``--equity``), otherwise the report says that
it is unknown. Nothing here reads or prints a secret.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xsmom.exceptions import StateError

SCHEMA_VERSION = 1
MS_PER_DAY = 86_400_000


def load_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise StateError(f"{path}: no such state file") from None
    except OSError as err:
        raise StateError(f"{path}: cannot read the state file ({err.strerror or err})") from None
    try:
        state = json.loads(text)
    except ValueError as err:
        raise StateError(f"{path}: corrupt state file ({err})") from None
    if not isinstance(state, dict):
        raise StateError(f"{path}: corrupt state file (not a JSON object)")
    version = state.get("schema_version")
    if version != SCHEMA_VERSION:
        raise StateError(f"{path}: state schema_version {version} is not the supported {SCHEMA_VERSION}")
    for key in ("config_version", "mode", "symbols"):
        if key not in state:
            raise StateError(f"{path}: state has no {key!r}")
    if not isinstance(state["symbols"], dict):
        raise StateError(f"{path}: state 'symbols' is not an object")
    return state


def last_equity(path: str | Path) -> tuple[int, float]:
    """``(ts ms, equity)`` of the last row of an ``equity.parquet`` (or CSV) written by the runner."""
    import polars as pl

    path = Path(path)
    if not path.exists():
        raise StateError(f"{path}: no such equity file")
    frame = pl.read_csv(path) if path.suffix == ".csv" else pl.read_parquet(path)
    if "equity" not in frame.columns or "ts" not in frame.columns or frame.height == 0:
        raise StateError(f"{path}: expected a non-empty table with columns ts, equity")
    row = frame.sort("ts").row(-1, named=True)
    ts = row["ts"]
    if isinstance(ts, dt.datetime):
        ts = int((ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC)).timestamp() * 1000)
    return int(ts), float(row["equity"])


@dataclass(frozen=True)
class DailyReport:
    text: str
    equity: float | None
    kill_switch_fired: bool
    blocked: list[str]
    open_stops: int


def _time(ms: int | None) -> str:
    if ms is None:
        return "never"
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _age(ms: int) -> str:
    minutes = ms / 60_000
    if minutes < 120:
        return f"{minutes:.0f} min"
    if minutes < 48 * 60:
        return f"{minutes / 60:.1f} h"
    return f"{minutes / 1440:.0f} days"


def _money(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:,.2f}"


def _pct(value: float) -> str:
    return f"{value:+.2%}"


def build_report(
    state: dict[str, Any],
    *,
    now: dt.datetime | None = None,
    equity: float | None = None,
    max_daily_loss_pct: float | None = None,
) -> DailyReport:
    """The report text (plain text, Discord-friendly) and its key facts."""
    now = now or dt.datetime.now(dt.UTC)
    now_ms = int(now.timestamp() * 1000)
    if equity is None and isinstance(state.get("equity"), int | float):
        equity = float(state["equity"])
    kill = state.get("kill_switch") or {}
    start, high = kill.get("day_start_equity"), kill.get("day_high_equity")
    fired = bool(kill.get("fired"))
    lines = [f"**xsmom daily report** — {now:%Y-%m-%d %H:%M} UTC"]
    updated = state.get("updated_ms")
    age = "" if not updated else f" ({_age(now_ms - updated)} ago)"
    lines.append(
        f"mode {state.get('mode')} · config {state.get('config_version')} · last bar "
        f"{_time(state.get('last_bar_ts'))} · state updated {_time(updated)}{age}"
    )

    parts = [f"equity {_money(equity)} USDT"]
    if kill.get("day") is not None:
        day = dt.date(1970, 1, 1) + dt.timedelta(days=int(kill["day"]))
        parts.append(f"day {day.isoformat()}")
    if start is not None:
        change = f" ({_pct(equity / start - 1)})" if equity is not None and start else ""
        parts.append(f"day start {_money(start)}{change}")
    if high is not None:
        off = f" ({_pct(equity / high - 1)} from high)" if equity is not None and high else ""
        parts.append(f"day high {_money(high)}{off}")
    lines.append(" · ".join(parts))

    limit = "" if max_daily_loss_pct is None else f" (limit {max_daily_loss_pct:g} % daily loss)"
    if not kill:
        lines.append(f"kill-switch: no data yet{limit}")
    elif fired:
        lines.append(f"kill-switch: **FIRED** today — flattened and paused until the next UTC day{limit}")
    else:
        lines.append(f"kill-switch: armed{limit}")

    paused_until = state.get("breaker_paused_until_ms")
    errors = len(state.get("breaker_errors_ms") or [])
    if paused_until and paused_until > now_ms:
        lines.append(f"circuit breaker: **OPEN** until {_time(paused_until)} ({errors} recent API errors)")
    else:
        lines.append(f"circuit breaker: closed ({errors} recent API errors)")

    symbols: dict[str, Any] = state.get("symbols", {})
    held = {s: v for s, v in symbols.items() if abs(float(v.get("target_weight") or 0.0)) > 0.0}
    stops = {s: v["stop"] for s, v in symbols.items() if v.get("stop")}
    blocked = sorted(s for s, v in symbols.items() if v.get("blocked"))
    gross = sum(abs(float(v.get("target_weight") or 0.0)) for v in symbols.values())
    net = sum(float(v.get("target_weight") or 0.0) for v in symbols.values())
    lines.append(
        f"targets: {len(held)} of {len(symbols)} symbols held · gross {gross:.1%} · net {net:+.1%} · "
        f"{len(stops)} open stop(s)"
    )
    if held or stops:
        lines.append("```")
        lines.append(f"{'symbol':<14}{'target':>9}  {'side':<5}{'entry':>12}{'stop':>12}{'catastr.':>12}")
        order = sorted(set(held) | set(stops), key=lambda s: (-abs(symbols[s].get("target_weight") or 0), s))
        for symbol in order:
            weight = float(symbols[symbol].get("target_weight") or 0.0)
            stop = stops.get(symbol)
            if stop:
                side = "long" if stop.get("side", 0) > 0 else "short"
                levels = (stop["entry_price"], stop["stop"], stop["catastrophic"])
                cells = f"{side:<5}" + "".join(f"{v:>12.6g}" for v in levels)
            else:
                cells = f"{'-':<5}{'-':>12}{'-':>12}{'-':>12}"
            lines.append(f"{symbol:<14}{weight:>+9.2%}  {cells}")
        lines.append("```")
    lines.append(f"bans / cooldowns: {', '.join(blocked) if blocked else 'none'}")
    return DailyReport("\n".join(lines), equity, fired, blocked, len(stops))
