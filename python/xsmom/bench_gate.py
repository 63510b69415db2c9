"""``python -m xsmom.bench_gate``: the calibration of the deployment gate (research.md §5).

Runs the whole walk-forward + gate on
- ``--null`` panels (20): the bundled real bars with the symbols' bar moves dealt out in an
  independent random order on every bar (``synthetic.shuffled_panel``): no cross-sectional edge;
- ``--planted`` panels (20): the same shuffles plus a planted cross-sectional momentum edge of
  strength ``--strength`` at ``--lookback`` bars (the default gives an OOS Sharpe near 4),

with the default config and the default search space, and counts the verdicts. The requirement:
``deploy`` at most once on the null panels, at least 16 times on the planted ones. The exit code is
0 when both hold, 1 otherwise. A benchmark, not a test (the suite runs a small version of it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import xsmom
from xsmom import research
from xsmom.research.synthetic import shuffled_panel


def run_panel(bars, config, seed: int, strength: float, args: argparse.Namespace) -> dict:
    panel = shuffled_panel(bars, seed=seed, planted=strength, lookback=args.lookback)
    started = time.perf_counter()
    result = research.optimize(
        panel,
        config,
        n_trials=args.trials,
        seed=seed,
        wfo=research.WalkForward(args.train_days, args.oos_days, args.embargo_days),
        mc_paths=args.mc_paths,
        n_jobs=args.jobs,
        notify=False,
    )
    return {
        "kind": "planted" if strength else "null",
        "seed": seed,
        "verdict": result.verdict["verdict"],
        "failed": [c["name"] for c in result.verdict["checks"] if not c["passed"]],
        "oos_sharpe": result.candidate["sharpe"],
        "psr": result.psr,
        "baseline_psr": result.baseline["psr"],
        "p_delta_sharpe": result.paired["p_delta_sharpe"],
        "fragility": result.fragility["std"],
        "seconds": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xsmom.bench_gate")
    parser.add_argument(
        "--bars",
        type=Path,
        default=Path("data/calibration/bars_1h_2025.parquet"),
        help="real bars (default: data/calibration/bars_1h_2025.parquet, 32 symbols × 245 days)",
    )
    parser.add_argument("--null", type=int, default=20)
    parser.add_argument("--planted", type=int, default=20)
    parser.add_argument("--strength", type=float, default=0.325, help="planted edge strength (0.325)")
    parser.add_argument("--lookback", type=int, default=48, help="planted edge horizon in bars (48)")
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--train-days", type=float, default=40.0)
    parser.add_argument("--oos-days", type=float, default=15.0)
    parser.add_argument("--embargo-days", type=float, default=1.0)
    parser.add_argument("--mc-paths", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="write every panel's row here")
    args = parser.parse_args(argv)
    bars = xsmom.read_bars(args.bars)
    config = xsmom.Config.default()
    print(
        f"gate calibration: {bars['symbol'].n_unique()} symbols × {bars.height // bars['symbol'].n_unique()} "
        f"bars from {args.bars}, default config and space, {args.trials} trials per study, "
        f"train/oos/embargo {args.train_days:g}/{args.oos_days:g}/{args.embargo_days:g} days",
        flush=True,
    )
    rows = []
    jobs = [(s, 0.0) for s in range(args.null)] + [(1000 + s, args.strength) for s in range(args.planted)]
    for seed, strength in jobs:
        row = run_panel(bars, config, seed, strength, args)
        rows.append(row)
        print(
            f"{row['kind']:>7} seed {seed:>4}: {row['verdict']:<11} OOS sharpe {row['oos_sharpe']:7.2f} "
            f"PSR {row['psr']:.3f} (baseline {row['baseline_psr']:.3f}) P(Δsharpe>0) "
            f"{row['p_delta_sharpe']:.2f} fragility {row['fragility']:.3f} "
            f"failed {','.join(row['failed']) or '-'} [{row['seconds']:.0f} s]",
            flush=True,
        )
    ok = True
    for kind, limit in (("null", "≤ 1"), ("planted", "≥ 16")):
        part = [r for r in rows if r["kind"] == kind]
        if not part:
            continue
        counts = Counter(r["verdict"] for r in part)
        deploys = counts.get("deploy", 0)
        needed = deploys <= max(1, len(part) // 20) if kind == "null" else deploys >= 0.8 * len(part)
        ok &= needed
        sharpes = [r["oos_sharpe"] for r in part]
        print(
            f"{kind}: {len(part)} panels, deploy {deploys} (required {limit} of 20), "
            f"verdicts {dict(counts)}, median OOS sharpe {statistics.median(sharpes):.2f} — "
            f"{'OK' if needed else 'NOT MET'}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
