"""``python -m xsmom.bench_optimize``: wall time of a 100-trial study on 36 symbols × 1 year of
hourly bars (synthetic random walks, as ``tests/common/mod.rs`` builds them in Rust).

Two cases:
- ``single``: one study of ``--trials`` trials over the whole year (one walk-forward segment:
  train 330 days, embargo 2, OOS 30), everything included (OOS, Monte Carlo, cost stress).
- ``wfo``: the default walk-forward (train 120 / OOS 30 / embargo 2 days → 8 segments), a fresh
  study of ``--trials`` trials per segment, i.e. 8 × ``--trials`` backtests.

Each ``optimize`` also runs the final study on the newest train window (research.md §5), so the
single case is 2 × ``--trials`` trials. ``--storage journal`` (default) keeps the studies in an optuna
journal file in a temporary folder, as ``xsmom optimize`` does by default; ``shared`` with optuna's
file-locked backend (fsync per append) that ``--worker`` processes on one machine share; ``memory``
in memory; ``all`` runs each case with all three to compare. No report files. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import xsmom
from xsmom import research
from xsmom.research.synthetic import synthetic_bars


def _run(
    bars, config, trials: int, wfo: research.WalkForward, jobs: int | None, storage_kind: str = "journal"
) -> tuple[float, object]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "optuna.journal"
        # journal: the default storage of `xsmom optimize` (one writer); shared: optuna's file-locked,
        # fsync-per-append backend that --worker processes on one machine use.
        storage = {
            "journal": lambda: research.journal_storage(path, own=True),
            "shared": lambda: research.journal_storage(path),
            "memory": lambda: None,
        }[storage_kind]()
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
    parser.add_argument("--storage", choices=["journal", "shared", "memory", "all"], default="journal")
    args = parser.parse_args()
    bars = synthetic_bars(args.symbols, args.days * 24, seed=0)
    config = xsmom.Config.default()
    print(f"bars: {args.symbols} symbols × {args.days * 24} hourly bars; {os.cpu_count()} cores")
    cases = ["single", "wfo"] if args.case == "both" else [args.case]
    storages = ["memory", "journal", "shared"] if args.storage == "all" else [args.storage]
    for case in cases:
        if case == "single":
            wfo = research.WalkForward(train_days=args.days - 35, oos_days=30, embargo_days=2)
        else:
            wfo = research.WalkForward()
        for kind in storages:
            cpu = time.process_time()
            elapsed, result = _run(bars, config, args.trials, wfo, args.jobs, kind)
            cpu = time.process_time() - cpu
            n_seg = len(result.segments)
            print(
                f"{case:>6} [{kind:>7}]: {n_seg} segment(s) + final study × {args.trials} trials = "
                f"{result.n_trials} trials in {elapsed:.1f} s, CPU {cpu:.1f} s "
                f"({elapsed / result.n_trials * 1e3:.0f} ms per trial, all included)",
                flush=True,
            )


if __name__ == "__main__":
    main()
