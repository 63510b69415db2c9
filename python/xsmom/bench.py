"""``python -m xsmom.bench``: what a backtest costs from every entry point, against the engine alone.

For the bundled fixture and synthetic panels (36 × 8 760 and 200 × 43 800 by default) it prints,
as medians over ``--repeats`` runs in one process — more for short runs, for half a second at least —
(each ratio is the median of per-run ratios to engine runs timed just before and after it, so that a
shared machine's drift cancels):

- ``engine``: the Rust engine on a prepared panel (no loading, validation or output tables);
- ``dataset``: ``xsmom.backtest(Dataset)`` — validated once, backtested many times;
- ``frame`` / ``file`` / ``store``: ``xsmom.backtest`` from a polars DataFrame, one Parquet file and
  a Hive store (each validates on every call), with the ratio to the engine;
- ``sweep/item``: ``xsmom.sweep`` over 8 configs divided by 8 (one thread, so it compares with
  the engine), and the sweep's throughput in backtests per second on all cores;
- ``window/it``: the walk-forward window evaluation (``run_window``, the optimizer's batch call) of
  the same 8 configs over the whole panel, per item, one thread;
- ``signals`` / ``sig/frame``: ``xsmom.signals`` of the Dataset and of the DataFrame;
- peak RSS of the case's process above the RSS with the input frame loaded, for a backtest from
  the frame without the weights table;
- with vectorbt installed (``pip install 'xsmom[bench]'``), its ``Portfolio.from_orders`` on the
  same close prices and xsmom's own target weights (``targetpercent``), timed in the same process.

Each case runs in a fresh child process so peak RSS belongs to that case. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

import xsmom
from xsmom import _core
from xsmom.config import override_pairs

CASES = ("real", "36x8760", "200x43800")
SWEEP_SETS = [{"strategy.k_max": k, "strategy.signal_power": p} for k in (3, 4, 5, 6) for p in (1.0, 1.35)]


def synthetic_bars(n_symbols: int, n_bars: int, seed: int = 7) -> pl.DataFrame:
    """Random-walk hourly bars (fat-tailed returns, ragged listing starts) in long format."""
    rng = np.random.default_rng(seed)
    start_ms = 1_704_067_200_000  # 2024-01-01 UTC
    frames = []
    for i in range(n_symbols):
        first = 0 if i % 3 else int(rng.integers(0, n_bars // 4))
        n = n_bars - first
        returns = rng.standard_t(4, n) * 0.006 + 0.0001 * np.sin(np.arange(n) / (50 + i))
        close = 100.0 * (1 + i % 7) * np.exp(np.cumsum(returns))
        open_ = np.concatenate([[close[0]], close[:-1]])
        spread = np.abs(rng.standard_normal(n)) * 0.002 + 0.0005
        frames.append(
            pl.DataFrame(
                {
                    "ts": start_ms + (first + np.arange(n, dtype=np.int64)) * 3_600_000,
                    "symbol": f"S{i:03d}USDT",
                    "open": open_,
                    "high": np.maximum(open_, close) * (1 + spread),
                    "low": np.minimum(open_, close) * (1 - spread),
                    "close": close,
                    "volume": rng.uniform(500, 5_000, n),
                }
            )
        )
    bars = pl.concat(frames).with_columns(pl.col("ts").cast(pl.Datetime("ms", "UTC")))
    return bars.rechunk()


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> bool:
    """Reset the kernel's peak RSS of this process (Linux: ``clear_refs`` 5), so that the next
    peak belongs to what runs after; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        return True
    except OSError:
        return False


def _median_ms(run: Any, repeats: int) -> float:
    run()  # warm-up: page faults, allocator, caches
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


# Short runs are repeated for at least this long: a few of a VM's 10-20 ms hiccups among 5 runs
# of 6 ms once made a median read 3-5x (docs/performance.md, round of 2026-12-07).
MIN_PAIRED_SECONDS = 0.5


def _paired(run: Any, engine_ms: Any, repeats: int, per: int = 1) -> tuple[float, float]:
    """Median ms of ``run`` (divided by ``per``) and the median of its ratio to one engine run timed
    just before and one just after it: on a shared machine whose speed drifts, the pairs cancel it.
    ``repeats`` pairs at least, more while they took less than ``MIN_PAIRED_SECONDS`` (up to 200)."""
    run()  # warm-up: page faults, allocator, caches
    times: list[float] = []
    ratios: list[float] = []
    started_all = time.perf_counter()
    while len(times) < repeats or (
        time.perf_counter() - started_all < MIN_PAIRED_SECONDS and len(times) < 200
    ):
        before = engine_ms()
        started = time.perf_counter()
        run()
        ms = (time.perf_counter() - started) * 1e3 / per
        after = engine_ms()
        times.append(ms)
        ratios.append(ms / ((before + after) / 2))
    return statistics.median(times), statistics.median(ratios)


def _wide_pandas(frame: pl.DataFrame) -> Any:
    """A wide ``ts, <symbol>…`` frame as pandas indexed by ts, through numpy (no pyarrow needed)."""
    import pandas as pd

    columns = [c for c in frame.columns if c != "ts"]
    index = pd.DatetimeIndex(frame["ts"].to_numpy(), name="ts")
    return pd.DataFrame(frame.select(columns).to_numpy(), index=index, columns=columns)


def _vectorbt_ms(
    bars: pl.DataFrame, result: xsmom.BacktestResult, config: xsmom.Config, repeats: int
) -> float | None:
    try:
        import vectorbt as vbt
    except ImportError:
        return None
    close = _wide_pandas(bars.pivot(on="symbol", index="ts", values="close").sort("ts"))
    target = _wide_pandas(result.weights_wide("target_weight"))[close.columns]
    close = close.ffill()
    fees = config.to_dict()["costs"]["taker_fee_bps"] / _core.BPS

    def simulate() -> None:
        vbt.Portfolio.from_orders(
            close,
            size=target,
            size_type="targetpercent",
            group_by=True,
            cash_sharing=True,
            call_seq="auto",
            fees=fees,
            freq="1h",
        ).total_return()

    return _median_ms(simulate, repeats)


def run_case(case: str, repeats: int, data_dir: Path) -> dict[str, Any]:
    config = xsmom.Config.default()
    yaml = config.to_yaml()
    work = Path(tempfile.mkdtemp(prefix="xsmom-bench-"))
    if case == "real":
        store = data_dir
        if not (store / "bars").is_dir():
            from xsmom.datasets import sample_store

            store = sample_store()
        bars, funding = xsmom.read_bars(store), xsmom.read_funding(store)
    else:
        n_symbols, n_bars = (int(x) for x in case.split("x"))
        bars, funding = synthetic_bars(n_symbols, n_bars), None
    # Peak RSS of a backtest from the frame without weights, above the RSS with the input loaded:
    # first, before writing files or anything else has grown the core allocator's caches.
    rss_input = _status_mib("VmRSS")
    peak_above_input = float("nan")
    if _reset_peak():
        xsmom.backtest(bars, config, funding=funding)
        peak_above_input = _status_mib("VmHWM") - rss_input
    file = work / "bars.parquet"
    bars.write_parquet(file)
    if case != "real":
        store = work / "store"
        _core.ingest([str(file)], str(store), "1h")
    dataset = xsmom.Dataset(bars, funding)
    engine = statistics.median(_core.time_engine(dataset, yaml, repeats + 1)[1:]) * 1e3
    out: dict[str, Any] = {
        "case": case,
        "symbols": dataset.n_symbols,
        "bars": dataset.n_bars,
        "rows": bars.height,
        "engine_ms": engine,
        "rss_input_mib": rss_input,
        "peak_above_input_mib": peak_above_input,
    }
    del dataset
    dataset = xsmom.Dataset(bars, funding)

    def engine_ms() -> float:
        return _core.time_engine(dataset, yaml, 1)[0] * 1e3

    entry_points = {
        "dataset": lambda: xsmom.backtest(dataset, config),
        "frame": lambda: xsmom.backtest(bars, config, funding=funding),
        "file": lambda: xsmom.backtest(file, config, funding=funding),
        "store": lambda: xsmom.backtest(store, config),
        "signals": lambda: xsmom.signals(dataset, config),
        "signals_frame": lambda: xsmom.signals(bars, config),
    }
    for name, run in entry_points.items():
        out[f"{name}_ms"], out[f"{name}_ratio"] = _paired(run, engine_ms, repeats)
    sweep_repeats = max(1, repeats // 4)
    out["sweep_item_ms"], out["sweep_item_ratio"] = _paired(
        lambda: xsmom.sweep(dataset, config, SWEEP_SETS, n_jobs=1), engine_ms, sweep_repeats, len(SWEEP_SETS)
    )
    # A walk-forward window (`run_window`, through the optimizer's batch call) over the whole panel,
    # so that it compares with the engine's full run.
    windows = [(sorted(override_pairs(s)), 0, dataset.n_bars) for s in SWEEP_SETS]
    out["window_item_ms"], out["window_item_ratio"] = _paired(
        lambda: _core.evaluate_windows(dataset, yaml, windows, False, 1),
        engine_ms,
        sweep_repeats,
        len(windows),
    )
    all_cores = _median_ms(lambda: xsmom.sweep(dataset, config, SWEEP_SETS), sweep_repeats)
    out["sweep_per_s"] = len(SWEEP_SETS) / (all_cores / 1e3)
    result = xsmom.backtest(dataset, config)
    out["vectorbt_ms"] = _vectorbt_ms(bars, result, config, max(1, repeats // 2))
    return out


def _print(rows: list[dict[str, Any]]) -> None:
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, xsmom {xsmom.__version__}")
    head = (
        f"{'case':>10} {'cells':>10} {'engine':>9} {'dataset':>9} {'frame':>9} {'file':>9} {'store':>9} "
        f"{'sweep/it':>9} {'window/it':>9} {'signals':>9} {'sig/frame':>9} {'bt/s':>7} {'RSS+':>7} "
        f"{'vectorbt':>9}"
    )
    print(head)
    for r in rows:
        e = r["engine_ms"]

        def cell(key: str, r: dict[str, Any] = r, e: float = e) -> str:
            ratio = r.get(key.removesuffix("_ms") + "_ratio", r[key] / e)
            return f"{ratio:8.2f}×"

        vbt = r["vectorbt_ms"]
        print(
            f"{r['case']:>10} {r['symbols'] * r['bars']:>10} {e:7.2f}ms "
            f"{cell('dataset_ms')} {cell('frame_ms')} "
            f"{cell('file_ms')} {cell('store_ms')} {cell('sweep_item_ms')} {cell('window_item_ms')} "
            f"{cell('signals_ms')} {cell('signals_frame_ms')} "
            f"{r['sweep_per_s']:7.1f} {r['peak_above_input_mib']:5.0f}Mi "
            + (f"{vbt:7.1f}ms" if vbt is not None else "        -")
        )
    print(
        "ratios: medians of end-to-end time / the engine's time, each run paired with engine runs just "
        "before and after it; RSS+ = peak RSS above the loaded input"
    )
    for r in rows:
        if r["vectorbt_ms"] is not None:
            print(
                f"{r['case']}: xsmom.backtest(frame) {r['frame_ms']:.1f} ms vs vectorbt from_orders "
                f"{r['vectorbt_ms']:.1f} ms on the same weights → {r['vectorbt_ms'] / r['frame_ms']:.2f}×"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xsmom.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--data",
        type=Path,
        default=Path("data"),
        help="the store of the real case (default: ./data, else the sample store)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = run_case(args.child, args.repeats, args.data)
        print(json.dumps(result))
        return 0
    rows = []
    for case in args.cases.split(","):
        child = subprocess.run(
            [
                sys.executable,
                "-m",
                "xsmom.bench",
                "--child",
                case,
                "--repeats",
                str(args.repeats),
                "--data",
                str(args.data),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if child.returncode != 0:
            print(f"{case}: failed\n{child.stderr}", file=sys.stderr)
            return 1
        rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
    _print(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
