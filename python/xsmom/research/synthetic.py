"""Synthetic hourly bar panels for tests, the walk-forward notebook and the optimizer benchmark.

``synthetic_bars(..., planted_lookback=L)`` plants a momentum effect at one horizon: each bar's
log return is ``kappa × (mean log return of the previous L bars) + noise``, so L-bar momentum
predicts the next return and a momentum strategy with lookback L beats much shorter or longer ones.
Without ``planted_lookback`` the panel is a pure random walk (no strategy has an edge).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import polars as pl

START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def synthetic_bars(
    n_symbols: int = 36,
    n_bars: int = 8760,
    seed: int = 0,
    planted_lookback: int | None = None,
    kappa: float = 0.6,
    vol: float = 0.01,
) -> pl.DataFrame:
    """Long-format hourly bars ``ts, symbol, open, high, low, close, volume``."""
    rng = np.random.default_rng(seed)
    sigma = vol * (0.6 + 0.8 * rng.random(n_symbols))
    noise = rng.standard_normal((n_bars, n_symbols)) * sigma
    if planted_lookback is None:
        log_returns = noise
    else:
        lookback = int(planted_lookback)
        log_returns = np.zeros_like(noise)
        window_sum = np.zeros(n_symbols)
        for t in range(n_bars):
            predicted = kappa * window_sum / lookback if t >= lookback else 0.0
            log_returns[t] = predicted + noise[t]
            window_sum += log_returns[t]
            if t >= lookback:
                window_sum -= log_returns[t - lookback]
    close = 10.0 * (1.0 + 9.0 * rng.random(n_symbols)) * np.exp(np.cumsum(log_returns, axis=0))
    open_ = np.vstack([close[:1] / np.exp(log_returns[:1]), close[:-1]])
    wiggle = np.abs(rng.standard_normal((n_bars, n_symbols))) * sigma * 0.5
    high = np.maximum(open_, close) * (1.0 + wiggle)
    low = np.minimum(open_, close) * (1.0 - wiggle)
    volume = 1e6 * (1.0 + rng.random((n_bars, n_symbols)))
    ts = pl.datetime_range(
        START, START + dt.timedelta(hours=n_bars - 1), interval="1h", time_unit="ms", eager=True
    ).dt.replace_time_zone("UTC")
    symbols = [f"S{i:03d}USDT" for i in range(n_symbols)]
    frame = pl.DataFrame(
        {
            "ts": np.tile(ts.to_numpy(), n_symbols),
            "symbol": np.repeat(symbols, n_bars),
            "open": open_.T.ravel(),
            "high": high.T.ravel(),
            "low": low.T.ravel(),
            "close": close.T.ravel(),
            "volume": volume.T.ravel(),
        }
    )
    return frame.with_columns(pl.col("ts").cast(pl.Datetime("ms", "UTC")))


def _matrices(bars: pl.DataFrame) -> tuple[Any, list[str], dict[str, np.ndarray]]:
    """Wide (bars × symbols) arrays of a long panel with every symbol on every bar."""
    frame = bars.sort(["symbol", "ts"])
    symbols = frame["symbol"].unique(maintain_order=True).to_list()
    ts = frame.filter(pl.col("symbol") == symbols[0])["ts"]
    n = len(ts)
    if frame.height != n * len(symbols):
        raise ValueError(
            f"the panel is not rectangular: {frame.height} rows for {len(symbols)} symbols × {n} bars"
        )
    wide = {
        c: frame[c].to_numpy().reshape(len(symbols), n).T.copy()
        for c in ("open", "high", "low", "close", "volume")
    }
    return ts, symbols, wide


def _long(ts: Any, symbols: list[str], wide: dict[str, np.ndarray]) -> pl.DataFrame:
    n = len(ts)
    frame = pl.DataFrame(
        {
            "ts": pl.concat([ts] * len(symbols)),
            "symbol": np.repeat(symbols, n),
            **{c: wide[c].T.ravel() for c in ("open", "high", "low", "close", "volume")},
        }
    )
    return frame


def shuffled_panel(
    bars: pl.DataFrame, seed: int = 0, planted: float = 0.0, lookback: int = 48
) -> pl.DataFrame:
    """A null panel from real bars: on every bar the symbols' bar moves (open/high/low/close relative
    to the previous close, and the traded notional) are dealt to the symbols in an independent random
    order, and prices rebuilt from each symbol's first close. Cross-sectional momentum has no edge
    there by construction; the return distribution per bar is the real one.

    ``planted > 0`` adds a cross-sectional edge: each bar's log return of symbol s gets
    ``planted × (mean log return of s over the previous `lookback` bars − its cross-sectional
    mean)``, so past cross-sectional winners keep winning at that horizon.
    """
    rng = np.random.default_rng(seed)
    ts, symbols, w = _matrices(bars)
    n, k = w["close"].shape
    prev = np.vstack([w["open"][:1], w["close"][:-1]])
    moves = np.stack(
        [w["open"] / prev, w["high"] / prev, w["low"] / prev, w["close"] / prev, w["volume"] * w["close"]]
    )
    order = np.argsort(rng.random((n, k)), axis=1)
    moves = np.take_along_axis(moves, order[None, :, :], axis=2)
    log_close = np.log(moves[3])
    if planted:
        window = np.zeros(k)
        for t in range(n):
            if t >= lookback:
                signal = window / lookback
                extra = planted * (signal - signal.mean())
                log_close[t] += extra
                moves[:3, t] *= np.exp(extra)
            window += log_close[t]
            if t >= lookback:
                window -= log_close[t - lookback]
    close = w["close"][0] / moves[3][0] * np.exp(np.cumsum(log_close, axis=0))
    prev = np.vstack([close[:1] / np.exp(log_close[:1]), close[:-1]])
    out = {
        "open": moves[0] * prev,
        "close": close,
        "high": np.maximum(moves[1] * prev, np.maximum(moves[0] * prev, close)),
        "low": np.minimum(moves[2] * prev, np.minimum(moves[0] * prev, close)),
        "volume": moves[4] / close,
    }
    return _long(ts, symbols, out)
