"""``xsmom backtest``: one backtest, its metrics on stdout and, with ``--out``, the report folder."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from xsmom import _core
from xsmom.api import backtest
from xsmom.cli.common import CliError, print_json, progress, user_terms, warn
from xsmom.cli.overrides import load_config
from xsmom.config import Config
from xsmom.report import json_metrics, metrics_table, write_report


def register(commands: Any) -> None:
    bt = commands.add_parser("backtest", help="run a backtest and print its metrics")
    bt.add_argument("--config", type=Path, help="YAML config file (default: the built-in defaults)")
    bt.add_argument(
        "--bars",
        type=Path,
        default=None,
        help="bar store or long Parquet/CSV file (default: ./data, else the bundled sample)",
    )
    bt.add_argument(
        "--funding", type=Path, default=None, help="funding file or store (default: the bar store's)"
    )
    bt.add_argument("--profile", help="named profile: default | xsmom-bot-v1")
    bt.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    bt.add_argument("--out", type=Path, help="write metrics, outputs, tearsheet.png and report.html here")
    bt.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    bt.set_defaults(handler=run)


def _bars(args: argparse.Namespace) -> Path:
    """``--bars``, else ./data, else the bundled sample store (said on stderr)."""
    bars = args.bars if args.bars is not None else Path("data")
    if args.bars is None and not bars.exists():
        from xsmom.datasets import sample_store

        bars = sample_store()
        print(
            "xsmom: no --bars given and ./data does not exist: using the bundled sample store "
            f"(12 symbols, hourly, Aug–Oct 2025) at {bars}",
            file=sys.stderr,
        )
    if not bars.exists():
        raise CliError(f"{bars}: no such file or directory")
    return bars


def _where(args: argparse.Namespace, bars: Path, data_section: dict[str, Any]) -> str:
    """Where the full validation table is: the report folder, or the ``data validate`` command."""
    if args.out is not None:
        return f"full table in {args.out / 'validation.parquet'}"
    timeframe = data_section["timeframe"]
    defaults = Config.default().to_dict()["data"]
    spike_flags = "".join(
        f" --{key.replace('_', '-')} {data_section[key]}"
        for key in ("spike_mads", "spike_window")
        if data_section[key] != defaults[key]
    )
    return (
        f"full table: xsmom data validate {'--store ' * bars.is_dir()}{bars} --timeframe {timeframe}"
        f"{spike_flags}"
    )


def run(args: argparse.Namespace) -> int:
    bars = _bars(args)
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise CliError(f"--out {args.out}: exists and is not a directory")
    config = load_config(args)
    progress(f"backtesting {bars} …")
    started = time.perf_counter()
    result = backtest(bars, config, funding=args.funding)
    elapsed = time.perf_counter() - started
    data_section = config.to_dict()["data"]
    timeframe = data_section["timeframe"]
    findings = _findings(bars, timeframe, data_section["spike_mads"], data_section["spike_window"])
    warnings = _summarised_warnings(result.warnings, findings, _where(args, bars, data_section))
    result.warnings[:] = warnings
    if args.out is not None:
        progress(f"writing report to {args.out} …")
        from xsmom.api import read_bars

        frame = read_bars(bars, start=result.start, timeframe=timeframe) if result.symbols else None
        write_report(result, args.out, validation=findings, bars=frame)
    for warning in warnings:
        warn(user_terms(warning, "backtest"))
    if args.json:
        return print_json(json_metrics(result.metrics))
    span = f"{result.start} → {result.end}"
    print(f"xsmom backtest: {len(result.symbols)} symbols, {span} ({elapsed * 1e3:.0f} ms)")
    print(metrics_table(result.metrics))
    if args.out is not None:
        print(f"report: {args.out / 'report.html'}")
    return 0


def _findings(bars: Path, timeframe: str, spike_mads: float, spike_window: int):
    """The data findings of ``bars`` (``data validate``'s table) as a polars frame."""
    import polars as pl

    return pl.DataFrame(_core.validate_path(str(bars), timeframe, spike_mads, spike_window))


def _summarised_warnings(warnings: list[str], findings, where: str, top: int = 5) -> list[str]:
    """The core's "data <kind>: N finding(s)" lines replaced by one line per kind, counted per symbol."""
    import polars as pl

    if findings.height == 0:
        return list(warnings)
    kinds = findings["kind"].unique(maintain_order=True).to_list()
    out = [w for w in warnings if not any(w.startswith(f"data {k}:") for k in kinds)]
    for kind in kinds:
        rows = findings.filter(pl.col("kind") == kind)
        per = rows.group_by("symbol").len().sort(["len", "symbol"], descending=[True, False])
        counts = ", ".join(f"{s} {n}" for s, n in per.head(top).iter_rows())
        more = f", {per.height - top} more" if per.height > top else ""
        severity = rows["severity"][0]
        out.append(
            f"data {kind} ({severity}): {rows.height} finding(s) in {per.height} symbol(s) "
            f"({counts}{more}); {where}"
        )
    return out
