"""The ``xsmom`` command line (interfaces.md): backtests, reports and bar-store maintenance.

Every error is one line on stderr (``xsmom: error: …``) and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import matplotlib

matplotlib.use("Agg")

from xsmom import _core  # noqa: E402
from xsmom.api import backtest  # noqa: E402
from xsmom.config import Config  # noqa: E402
from xsmom.report import json_metrics, metrics_table, write_report  # noqa: E402


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise CliError(message)


def _progress(message: str) -> None:
    """Progress on stderr, only for a person at a terminal."""
    if sys.stderr.isatty():
        print(f"xsmom: {message}", file=sys.stderr, flush=True)


def _build_parser() -> _Parser:
    parser = _Parser(prog="xsmom", description="Cross-sectional momentum research and backtesting.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    bt = commands.add_parser("backtest", help="run a backtest and print its metrics")
    bt.add_argument("--config", type=Path, help="YAML config file (default: the built-in defaults)")
    bt.add_argument(
        "--bars", type=Path, default=None, help="bar store or long Parquet/CSV file (default: ./data)"
    )
    bt.add_argument(
        "--funding", type=Path, default=None, help="funding file or store (default: the bar store's)"
    )
    bt.add_argument("--profile", help="named profile: default | xsmom-bot-v1")
    bt.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    bt.add_argument("--out", type=Path, help="write metrics, outputs, tearsheet.png and report.html here")
    bt.add_argument("--json", action="store_true", help="print the metrics as one JSON object")

    data = commands.add_parser("data", help="bar store maintenance")
    data_commands = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    ingest = data_commands.add_parser("ingest", help="append long-format Parquet/CSV files to a store")
    ingest.add_argument("files", nargs="+", type=Path)
    ingest.add_argument("--store", type=Path, required=True)
    ingest.add_argument("--timeframe", default="1h")
    validate = data_commands.add_parser("validate", help="report data problems (exit 1 on errors)")
    validate.add_argument("path", nargs="?", type=Path, help="a long Parquet/CSV file")
    validate.add_argument("--store", type=Path)
    validate.add_argument("--timeframe", default="1h")
    validate.add_argument("--json", action="store_true")
    resample = data_commands.add_parser(
        "resample", help="resample a store's finest timeframe to a coarser one"
    )
    resample.add_argument("--store", type=Path, required=True)
    resample.add_argument("--to", required=True)
    resample.add_argument("--from", dest="source", default=None)
    return parser


def _config(args: argparse.Namespace) -> Config:
    if args.config is not None and args.profile is not None:
        raise CliError("use either --config or --profile, not both")
    if args.config is not None:
        config = Config.load(args.config)
    else:
        config = Config.profile(args.profile or "default")
    if args.overrides:
        pairs = []
        for assignment in args.overrides:
            if "=" not in assignment:
                raise CliError(f"--set {assignment!r} is not of the form key.path=value")
            key, value = assignment.split("=", 1)
            pairs.append((key.strip(), value))
        config = Config._trusted(_core.config_with_overrides(config.to_yaml(), pairs))
    return config


def _backtest(args: argparse.Namespace) -> int:
    bars = args.bars if args.bars is not None else Path("data")
    if not bars.exists():
        hint = "" if args.bars is not None else " (no --bars given and ./data does not exist)"
        raise CliError(f"{bars}: no such file or directory{hint}")
    config = _config(args)
    _progress(f"backtesting {bars} …")
    started = time.perf_counter()
    result = backtest(bars, config, funding=args.funding)
    elapsed = time.perf_counter() - started
    if args.out is not None:
        _progress(f"writing report to {args.out} …")
        write_report(result, args.out)
    if args.json:
        print(json.dumps(json_metrics(result.metrics)))
        return 0
    span = f"{result.start} → {result.end}"
    print(f"xsmom backtest: {len(result.symbols)} symbols, {span} ({elapsed * 1e3:.0f} ms)")
    print(metrics_table(result.metrics))
    for warning in result.warnings:
        print(f"warning: {warning}")
    if args.out is not None:
        print(f"report: {args.out / 'report.html'}")
    return 0


def _data(args: argparse.Namespace) -> int:
    if args.data_command == "ingest":
        stats = _core.ingest([str(f) for f in args.files], str(args.store), args.timeframe)
        print(
            f"ingested {len(args.files)} file(s) into {args.store}: {stats['rows_added']} rows added, "
            f"{stats['rows_replaced']} replaced, {stats['files_written']} partition file(s) written"
        )
        return 0
    if args.data_command == "validate":
        if (args.path is None) == (args.store is None):
            raise CliError("data validate needs exactly one of --store DIR or FILE")
        target = args.store if args.store is not None else args.path
        import polars as pl

        findings = pl.DataFrame(_core.validate_path(str(target), args.timeframe))
        errors = findings.filter(pl.col("severity") == "error").height
        if args.json:
            print(findings.write_json())
        else:
            with pl.Config(tbl_rows=50, fmt_str_lengths=80):
                print(findings if findings.height else "no findings")
            print(f"{errors} error(s), {findings.height - errors} warning(s)")
        return 1 if errors else 0
    if args.data_command == "resample":
        stats = _core.resample_store(str(args.store), args.to, args.source)
        added, replaced = stats["rows_added"], stats["rows_replaced"]
        print(f"resampled {args.store} to {args.to}: {added} bars added, {replaced} replaced")
        return 0
    raise CliError(f"unknown data command {args.data_command!r}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "backtest":
            return _backtest(args)
        return _data(args)
    except (CliError, ValueError, OSError) as err:
        message = " ".join(str(err).split())
        print(f"xsmom: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xsmom: error: interrupted", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
