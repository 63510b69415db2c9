"""``python -m xsmom.bench_optimize``: wall time of a 100-trial study on 36 symbols × 1 year of
hourly bars (synthetic random walks, as ``tests/common/mod.rs`` builds them in Rust).

Two cases:
- ``single``: one study of ``--trials`` trials over the whole year (one walk-forward segment:
  train 330 days, embargo 2, OOS 30), everything included (OOS, Monte Carlo, cost stress).
- ``wfo``: the default walk-forward (train 120 / OOS 30 / embargo 2 days → 8 segments), a fresh
  study of ``--trials`` trials per segment, i.e. 8 × ``--trials`` backtests.

SQLite storage in a temporary folder, as ``xsmom optimize`` uses by default; no report files.
A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import xsmom
from xsmom import research
from xsmom.research.synthetic import synthetic_bars


def _run(bars, config, trials: int, wfo: research.WalkForward, jobs: int | None) -> tuple[float, object]:
    with tempfile.TemporaryDirectory() as tmp:
        storage = f"sqlite:///{tmp}/optuna.db"
        started = time.perf_counter()
        result = research.optimize(
            bars, config, n_trials=trials, seed=0, storage=storage, wfo=wfo, n_jobs=jobs, notify=False
        )
        return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m xsmom.bench_optimize")
    parser.add_argument("--symbols", type=int, default=36)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=None, help="trials per batch (default: all cores)")
    parser.add_argument("--case", choices=["single", "wfo", "both"], default="both")
    args = parser.parse_args()
    bars = synthetic_bars(args.symbols, args.days * 24, seed=0)
    config = xsmom.Config.default()
    print(f"bars: {args.symbols} symbols × {args.days * 24} hourly bars; {os.cpu_count()} cores")
    cases = ["single", "wfo"] if args.case == "both" else [args.case]
    for case in cases:
        if case == "single":
            wfo = research.WalkForward(train_days=args.days - 35, oos_days=30, embargo_days=2)
        else:
            wfo = research.WalkForward()
        elapsed, result = _run(bars, config, args.trials, wfo, args.jobs)
        n_seg = len(result.segments)
        print(
            f"{case:>6}: {n_seg} segment(s) × {args.trials} trials = {result.n_trials} trials "
            f"in {elapsed:.1f} s ({elapsed / result.n_trials * 1e3:.0f} ms per trial, all included)"
        )


if __name__ == "__main__":
    main()
