"""Synthetic hourly bar panels for tests, the walk-forward notebook and the optimizer benchmark.

``synthetic_bars(..., planted_lookback=L)`` plants a momentum effect at one horizon: each bar's
log return is ``kappa × (mean log return of the previous L bars) + noise``, so L-bar momentum
predicts the next return and a momentum strategy with lookback L beats much shorter or longer ones.
Without ``planted_lookback`` the panel is a pure random walk (no strategy has an edge).
"""

from __future__ import annotations

import datetime as dt

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
