"""``python -m xsmom.bench``: Python-side overhead of a default backtest against the pure Rust run.

Both sides start from the same polars DataFrame of the bundled fixture. The Rust figure is the
core's own timing of the same work (Arrow import, validation, panel, engine); the Python figure is
``xsmom.backtest`` end to end (polars in, polars out). A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import xsmom
from xsmom import _core


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m xsmom.bench")
    parser.add_argument("--bars", type=Path, default=Path("data"))
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    bars = xsmom.read_bars(args.bars)
    funding = xsmom.read_funding(args.bars)
    config = xsmom.Config.default()
    xsmom.backtest(bars, config, funding=funding)  # warm-up
    python_times = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        xsmom.backtest(bars, config, funding=funding)
        python_times.append(time.perf_counter() - started)
    rust_times = _core.time_backtest(bars, config.to_yaml(), args.repeats, funding)
    py, rs = statistics.median(python_times), statistics.median(rust_times)
    print(f"bars: {bars.height} rows, {bars['symbol'].n_unique()} symbols")
    print(f"pure Rust (median of {args.repeats}):      {rs * 1e3:8.2f} ms")
    print(f"xsmom.backtest (median of {args.repeats}): {py * 1e3:8.2f} ms")
    print(f"ratio python/rust: {py / rs:.3f}  → Python-side overhead {100 * (py / rs - 1):.1f} %")


if __name__ == "__main__":
    main()
