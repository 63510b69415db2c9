"""``xsmom data ingest | validate | resample | fetch``: bar store maintenance."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xsmom import _core
from xsmom.cli import fetch
from xsmom.cli.common import CliError, Parser, warn

_TF_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}


def register(commands: Any) -> None:
    data = commands.add_parser("data", help="bar store maintenance")
    data_commands = data.add_subparsers(dest="data_command", required=True, parser_class=Parser)
    ingest = data_commands.add_parser("ingest", help="append long-format Parquet/CSV files to a store")
    ingest.add_argument("files", nargs="+", type=Path)
    ingest.add_argument("--store", type=Path, required=True)
    ingest.add_argument("--timeframe", default="1h")
    ingest.add_argument(
        "--kind",
        choices=["trade", "mark", "index"],
        default="trade",
        help="traded bars (default) or mark / index-price bars (no volume column)",
    )
    ingest.set_defaults(handler=run_ingest)
    validate = data_commands.add_parser("validate", help="report data problems (exit 1 on errors)")
    validate.add_argument("path", nargs="?", type=Path, help="a long Parquet/CSV file")
    validate.add_argument("--store", type=Path)
    validate.add_argument("--timeframe", default="1h")
    validate.add_argument(
        "--spike-mads", type=float, default=None, help="data.spike_mads: spike threshold in MADs (8)"
    )
    validate.add_argument(
        "--spike-window", type=int, default=None, help="data.spike_window: bars of the rolling median (500)"
    )
    validate.add_argument("--json", action="store_true")
    validate.set_defaults(handler=run_validate)
    compact = data_commands.add_parser(
        "compact", help="rewrite a store's files written by an earlier version in the current codec"
    )
    compact.add_argument("--store", type=Path, required=True)
    compact.set_defaults(handler=run_compact)
    resample = data_commands.add_parser(
        "resample", help="resample a store's finest timeframe to a coarser one"
    )
    resample.add_argument("--store", type=Path, required=True)
    resample.add_argument("--to", required=True)
    resample.add_argument("--from", dest="source", default=None)
    resample.set_defaults(handler=run_resample)
    fetch.register(data_commands)


def run_ingest(args: argparse.Namespace) -> int:
    _check_spacing(args.files, args.timeframe)
    stats = _core.ingest([str(f) for f in args.files], str(args.store), args.timeframe, args.kind)
    kind = "" if args.kind == "trade" else f" ({args.kind} bars)"
    print(
        f"ingested {len(args.files)} file(s) into {args.store}{kind}: {stats['rows_added']} rows added, "
        f"{stats['rows_replaced']} replaced, {stats['files_written']} partition file(s) written"
    )
    return 0


def run_compact(args: argparse.Namespace) -> int:
    stats = _core.compact_store(str(args.store))
    print(f"compacted {args.store}: {stats['files_written']} file(s) rewritten")
    return 0


def run_validate(args: argparse.Namespace) -> int:
    if (args.path is None) == (args.store is None):
        raise CliError("data validate needs exactly one of --store DIR or FILE")
    target = args.store if args.store is not None else args.path
    import polars as pl

    findings = pl.DataFrame(
        _core.validate_path(str(target), args.timeframe, args.spike_mads, args.spike_window)
    )
    errors = findings.filter(pl.col("severity") == "error").height
    if args.json:
        print(findings.write_json())
    else:
        with pl.Config(tbl_rows=50, fmt_str_lengths=80):
            print(findings if findings.height else "no findings")
        print(f"{errors} error(s), {findings.height - errors} warning(s)")
    return 1 if errors else 0


def run_resample(args: argparse.Namespace) -> int:
    if args.source is None:
        _resample_source_note(args.store, args.to)
    stats = _core.resample_store(str(args.store), args.to, args.source)
    added, replaced = stats["rows_added"], stats["rows_replaced"]
    print(f"resampled {args.store} to {args.to}: {added} bars added, {replaced} replaced")
    return 0


def _timeframe_ms(timeframe: str) -> int | None:
    try:
        return int(timeframe[:-1]) * _TF_MS[timeframe[-1]]
    except (KeyError, ValueError):
        return None


def _spacing_ms(path: Path) -> int | None:
    """The median spacing of a long bar file's ``ts`` per symbol (None when it cannot be read)."""
    import polars as pl

    try:
        frame = pl.scan_csv(path) if path.suffix.lower() == ".csv" else pl.scan_parquet(path)
        names = frame.collect_schema().names()
        ts = pl.col("ts")
        ts = ts.dt.epoch("ms") if frame.collect_schema()["ts"].is_temporal() else ts.cast(pl.Int64)
        keys = ["symbol"] if "symbol" in names else []
        diffs = frame.select(*keys, ts.alias("t")).sort([*keys, "t"]).collect()
        diffs = diffs.group_by(keys or pl.lit(0), maintain_order=True).agg(pl.col("t").diff().median())
        value = diffs["t"].median()
    except Exception:
        return None
    return None if value is None else int(value)


def _human_ms(ms: int) -> str:
    for unit in ("w", "d", "h", "m"):
        if ms % _TF_MS[unit] == 0:
            return f"{ms // _TF_MS[unit]}{unit}"
    return f"{ms / 1000:g} s"


def _check_spacing(files: Sequence[Path], timeframe: str) -> None:
    expected = _timeframe_ms(timeframe)
    for path in files:
        spacing = _spacing_ms(path)
        if expected is not None and spacing is not None and spacing != expected:
            warn(
                f"{path}: bars are {_human_ms(spacing)} apart (median), not "
                f"--timeframe {timeframe}; they are stored as {timeframe} bars"
            )


def _resample_source_note(store: Path, to: str) -> None:
    """Say which source timeframe resample picks when --from is not given (the finest in the store)."""
    found = []
    for folder in sorted((store / "bars").glob("timeframe=*")):
        tf = folder.name.split("=", 1)[1]
        ms = _timeframe_ms(tf)
        if ms is not None and tf != to:
            found.append((ms, tf, sorted(p.name.split("=", 1)[1] for p in folder.glob("symbol=*"))))
    if not found:
        return
    ms, tf, symbols = min(found)
    shown = ", ".join(symbols[:5]) + (f" and {len(symbols) - 5} more" if len(symbols) > 5 else "")
    others = "; ".join(f"{t} ({len(s)} symbols)" for _, t, s in sorted(found) if t != tf)
    warn(
        f"no --from given: resampling the store's finest timeframe {tf} "
        f"({len(symbols)} symbol(s): {shown})"
        + (f"; also in the store: {others}" if others else "")
        + f"; pass --from {tf} to make this explicit"
    )
