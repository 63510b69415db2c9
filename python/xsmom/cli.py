"""The ``xsmom`` command line (interfaces.md): backtests, reports and bar-store maintenance.

Every error is one line on stderr (``xsmom: error: …``) and exit code 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import matplotlib

matplotlib.use("Agg")

from xsmom import _core  # noqa: E402
from xsmom.api import backtest  # noqa: E402
from xsmom.config import Config  # noqa: E402
from xsmom.progress import Progress, steps  # noqa: E402
from xsmom.report import json_metrics, metrics_table, write_report  # noqa: E402


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise CliError(message)


# Optional features: the import that is missing → the pyproject extra that brings it.
_EXTRAS = {"optuna": "research", "sqlalchemy": "research", "dask": "dask", "distributed": "dask"}
_EXTRAS["psycopg"] = "postgres"


def _missing_extra(module: str, feature: str) -> CliError:
    extra = _EXTRAS.get(module.split(".")[0], "dev")
    return CliError(f"{feature} needs {module.split('.')[0]}: pip install 'xsmom[{extra}]'")


def _require(module: str, feature: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise _missing_extra(module, feature)


def _check_extras(args: argparse.Namespace) -> None:
    """Fail in one line, before any work, when a command needs an extra that is not installed."""
    if args.command == "optimize":
        _require("optuna", "optimize")
    if args.command == "optimize" and args.dask_scheduler is not None:
        _require("distributed", "--dask-scheduler")
    if args.command == "optimize" and str(args.storage or "").startswith("postgres"):
        from xsmom.research import redact

        _require("psycopg", f"storage {redact(args.storage)}")


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

    _add_research_parsers(commands)

    data = commands.add_parser("data", help="bar store maintenance")
    data_commands = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
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
    resample = data_commands.add_parser(
        "resample", help="resample a store's finest timeframe to a coarser one"
    )
    resample.add_argument("--store", type=Path, required=True)
    resample.add_argument("--to", required=True)
    resample.add_argument("--from", dest="source", default=None)
    _add_fetch_parser(data_commands)
    _add_deploy_parsers(commands)
    return parser


def _add_research_parsers(commands: Any) -> None:
    opt = commands.add_parser(
        "optimize", help="walk-forward Bayesian optimisation → report folder and deploy verdict"
    )
    opt.add_argument("--config", type=Path, help="YAML config file (default: the built-in defaults)")
    opt.add_argument("--profile", help="named profile: default | xsmom-bot-v1")
    opt.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    opt.add_argument("--bars", type=Path, required=True, help="bar store or long Parquet/CSV file")
    opt.add_argument("--funding", type=Path, default=None, help="funding file or store")
    opt.add_argument("--space", type=Path, default=None, help="search space YAML (default: the shipped one)")
    opt.add_argument("--trials", type=int, default=100, help="trials per walk-forward segment (100)")
    opt.add_argument(
        "--storage", default=None, help="optuna RDB URL or *.journal file (default <out>/optuna.journal)"
    )
    opt.add_argument(
        "--study", default=None, help="study name (default: derived from data, config, space, seed)"
    )
    opt.add_argument("--resume", action="store_true", help="continue the existing study of that name")
    opt.add_argument("--worker", action="store_true", help="join a running study and only evaluate trials")
    opt.add_argument(
        "--worker-index", type=int, default=None, help="this worker's index (1, 2, …): seed + index"
    )
    opt.add_argument(
        "--pipeline-trials", type=int, default=1, help="pipeline variants tried on this data (1)"
    )
    opt.add_argument(
        "--pipeline-sharpe-var", type=float, default=None, help="variance of their OOS Sharpes (if > 1)"
    )
    opt.add_argument("--out", type=Path, default=Path("optimize-out"), help="report folder (./optimize-out)")
    opt.add_argument("--seed", type=int, default=0)
    opt.add_argument("--jobs", type=int, default=None, help="trials per batch / threads (default: all cores)")
    opt.add_argument("--train-days", type=float, default=120.0)
    opt.add_argument("--oos-days", type=float, default=30.0)
    opt.add_argument("--embargo-days", type=float, default=2.0)
    opt.add_argument("--wfo-mode", choices=["rolling", "anchored"], default="rolling")
    opt.add_argument("--purge-bars", type=int, default=None, help="default: max(lookbacks)")
    opt.add_argument("--lambda-turnover", type=float, default=0.1)
    opt.add_argument("--lambda-dd", type=float, default=0.5)
    opt.add_argument("--mc-paths", type=int, default=1000)
    opt.add_argument(
        "--dask-scheduler", default=None, metavar="ADDR", help="evaluate batches on a Dask cluster"
    )
    opt.add_argument("--no-notify", action="store_true", help="do not send the verdict to Discord")

    mc = commands.add_parser("montecarlo", help="re-run the Monte Carlo of an optimize result folder")
    mc.add_argument("--result", type=Path, required=True, help="an optimize --out folder (reads oos.json)")
    mc.add_argument("--paths", type=int, default=1000)
    mc.add_argument("--seed", type=int, default=0)
    mc.add_argument("--block", type=float, default=None, help="mean block length (default: Politis–White)")
    mc.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def _optimize(args: argparse.Namespace) -> int:
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise CliError("optimize needs optuna: pip install 'xsmom[research]'") from None
    from xsmom import research

    if not args.bars.exists():
        raise CliError(f"{args.bars}: no such file or directory")
    for name in ("trials", "mc_paths"):
        if getattr(args, name) < 1:
            raise CliError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.jobs is not None and args.jobs < 1:
        raise CliError(f"--jobs must be at least 1, got {args.jobs}")
    if args.worker and args.storage is None:
        raise CliError("--worker needs --storage URL of the study to join")
    if args.worker and (args.worker_index is None or args.worker_index < 1):
        raise CliError("--worker needs --worker-index N (1, 2, …; the main process is 0)")
    if not args.worker and args.worker_index is not None:
        raise CliError("--worker-index needs --worker")
    gate = research.Gate(pipeline_trials=args.pipeline_trials, pipeline_sharpe_var=args.pipeline_sharpe_var)
    config = _config(args)
    research.load_space(args.space)  # a bad space file fails before any data is read
    executor = None
    if args.dask_scheduler is not None:
        try:
            from xsmom.parallel import executor_from_cli
        except ImportError:
            raise CliError("--dask-scheduler needs xsmom.parallel (the scale-out module)") from None
        executor = executor_from_cli(args.dask_scheduler)
    _progress(f"optimizing on {args.bars} …")
    if args.worker:
        storage = research.redact(args.storage)
        study = args.study or "(derived name)"
        print(f"xsmom optimize: worker joining study {study} at {storage}", file=sys.stderr, flush=True)
    try:
        with Progress("optimize", args.trials) as progress:
            result = _run_optimize(args, research, config, gate, executor, progress)
    except Exception as err:  # optuna / SQLAlchemy storage errors: one line, no traceback
        if isinstance(err, CliError | ValueError | OSError):
            raise
        if isinstance(err, ImportError) or type(err).__module__.split(".")[0] in ("optuna", "sqlalchemy"):
            raise CliError(research.scrub(f"storage {args.storage}: {err}", args.storage)) from None
        raise
    finally:
        if executor is not None:
            executor.shutdown()
    return _print_optimize(args, research, result)


def _run_optimize(
    args: argparse.Namespace, research: Any, config: Config, gate: Any, executor: Any, progress: Progress
):
    return research.optimize(
        args.bars,
        config,
        space=args.space,
        n_trials=args.trials,
        seed=args.seed,
        n_jobs=args.jobs,
        storage=args.storage,
        out=None if args.worker else args.out,
        worker=args.worker,
        worker_index=args.worker_index or 0,
        resume=args.resume,
        study_name=args.study,
        gate=gate,
        wfo=research.WalkForward(
            args.train_days, args.oos_days, args.embargo_days, args.wfo_mode, args.purge_bars
        ),
        objective=research.Objective(args.lambda_turnover, args.lambda_dd),
        executor=executor,
        funding=args.funding,
        mc_paths=args.mc_paths,
        notify=not args.no_notify,
        progress=progress.callback(),
    )


def _print_optimize(args: argparse.Namespace, research: Any, result: Any) -> int:
    if result is None:
        print(f"xsmom optimize: worker done (study {args.study or '(derived name)'})")
        return 0
    v = result.verdict
    print(
        f"xsmom optimize: {len(result.segments)} segments, {result.n_trials} trials, "
        f"{result.elapsed_s:.1f} s — verdict: {v['verdict']}"
    )
    print(f"  {v['reason']}")
    if v["verdict"] == "stand aside":
        print(
            f"  to stop trading: xsmom config deploy --stand-aside {args.out / 'candidate.json'} --live LIVE"
        )
    for c in v["checks"]:
        mark = "ok  " if c["passed"] else "FAIL"
        print(f"  {mark} {c['name']:<22} {c['value']:>10.4g}  (threshold {c['threshold']:g})")
    print(f"report: {args.out / 'report.md'}")
    dates = " to ".join(research.iso_date(ms) for ms in result.final.dates)
    print(f"candidate: {args.out / 'candidate.yaml'} (final study on {dates})")
    return 0


def _montecarlo(args: argparse.Namespace) -> int:
    from xsmom import research
    from xsmom.research.report import write_json

    source = args.result / "oos.json"
    try:
        doc = json.loads(source.read_text())
    except FileNotFoundError:
        raise CliError(f"{source}: no such file (is {args.result} an optimize --out folder?)") from None
    except json.JSONDecodeError as err:
        raise CliError(f"{source}: not valid JSON: {err}") from None
    if args.paths < 1:
        raise CliError(f"--paths must be at least 1, got {args.paths}")
    for key in ("returns", "trade_returns", "bars_per_year"):
        if key not in doc:
            raise CliError(f"{source}: missing key {key!r}")
    with Progress("montecarlo", args.paths, quiet=args.json) as progress:
        mc = research.monte_carlo(
            doc["returns"],
            doc["trade_returns"],
            doc["bars_per_year"],
            args.paths,
            args.seed,
            args.block,
            progress=progress.callback(),
        )
    summary = research.summarise_mc(mc)
    write_json(args.result / "mc.json", summary)
    if args.json:
        print(json.dumps(research.report.json_safe(summary)))
        return 0
    boot = summary["bootstrap"]
    print(f"xsmom montecarlo: {args.paths} paths, block {boot['block']:.1f} bars, seed {args.seed}")
    print(f"{'statistic':<18} {'p1':>9} {'p5':>9} {'p50':>9} {'p95':>9} {'p99':>9}")
    for stat in ("total_return", "cagr", "max_drawdown", "sharpe", "time_under_water"):
        q = boot["summary"][stat]
        print(f"{stat:<18} " + " ".join(f"{q[p]:>9.4f}" for p in ("p1", "p5", "p50", "p95", "p99")))
    print(f"probability of loss {boot['summary']['probability_of_loss']:.3f}, ", end="")
    print(f"CVaR 5% of total return {boot['summary']['cvar_5_total_return']:.4f}")
    print(f"written: {args.result / 'mc.json'}")
    return 0


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
        try:
            config = config.with_override_text(pairs)
        except ValueError as err:
            raise CliError(_override_message(str(err), dict(pairs), config)) from None
    return config


_EXPECTED = {
    "usize": "a whole number ≥ 0",
    "u32": "a whole number ≥ 0",
    "u64": "a whole number ≥ 0",
    "i64": "a whole number",
    "i32": "a whole number",
    "f64": "a number",
    "f32": "a number",
    "a boolean": "true or false",
}


def _leaf_keys(tree: Any, prefix: str = "") -> list[str]:
    if isinstance(tree, dict):
        return [k for name, sub in tree.items() for k in _leaf_keys(sub, f"{prefix}{name}.")]
    return [prefix[:-1]]


def _override_message(message: str, pairs: dict[str, str], config: Config) -> str:
    """The core's override error in CLI terms: the --set key, its value and the expected type."""
    message = re.sub(r" at line \d+ column \d+$", "", message.strip())
    unknown = re.match(r"unknown config key '([^']+)'", message)
    if unknown:
        key = unknown.group(1)
        leaves = _leaf_keys(config.to_dict())
        by_leaf = {k.rsplit(".", 1)[-1]: k for k in leaves}
        close = difflib.get_close_matches(key, leaves, n=3, cutoff=0.75)
        close += [by_leaf[m] for m in difflib.get_close_matches(key.rsplit(".", 1)[-1], by_leaf, n=2)]
        close = list(dict.fromkeys(close))[:3]
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        return f"--set {key}: unknown config key{hint}"
    typed = re.match(r"overrides: ([^:]+): invalid type: (.+?), expected (.+)$", message)
    variant = re.match(r"overrides: ([^:]+): unknown variant `([^`]*)`, expected (.+)$", message)
    if typed or variant:
        key, _, expected = (typed or variant).groups()
        short = next((k for k in pairs if key == k or key.endswith("." + k.split(".")[-1])), key)
        value = pairs.get(short, pairs.get(key, ""))
        if variant:
            expected = "one of " + ", ".join(re.findall(r"`([^`]*)`", expected))
        expected = _EXPECTED.get(expected, expected)
        return f"--set {short}={value}: {key} expects {expected}, got {value!r}"
    ranged = re.match(r"overrides: (\S+) = (.+?) is out of range: (.+)$", message)
    if ranged:
        return f"--set {ranged.group(1)}={ranged.group(2)}: out of range, {ranged.group(3)}"
    return message.replace("overrides: ", "--set ", 1)


def _backtest(args: argparse.Namespace) -> int:
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
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise CliError(f"--out {args.out}: exists and is not a directory")
    config = _config(args)
    _progress(f"backtesting {bars} …")
    started = time.perf_counter()
    result = backtest(bars, config, funding=args.funding)
    elapsed = time.perf_counter() - started
    data_section = config.to_dict()["data"]
    timeframe = data_section["timeframe"]
    findings = _findings(bars, timeframe, data_section["spike_mads"], data_section["spike_window"])
    defaults = Config.default().to_dict()["data"]
    spike_flags = "".join(
        f" --{key.replace('_', '-')} {data_section[key]}"
        for key in ("spike_mads", "spike_window")
        if data_section[key] != defaults[key]
    )
    where = (
        f"full table in {args.out / 'validation.parquet'}"
        if args.out is not None
        else f"full table: xsmom data validate {'--store ' * bars.is_dir()}{bars} --timeframe {timeframe}"
        f"{spike_flags}"
    )
    warnings = _summarised_warnings(result.warnings, findings, where)
    result.warnings[:] = warnings
    if args.out is not None:
        _progress(f"writing report to {args.out} …")
        from xsmom.api import read_bars

        frame = read_bars(bars, start=result.start, timeframe=timeframe) if result.symbols else None
        write_report(result, args.out, validation=findings, bars=frame)
    for warning in warnings:
        print(f"xsmom: warning: {_user_terms(warning, 'backtest')}", file=sys.stderr)
    if args.json:
        print(json.dumps(json_metrics(result.metrics)))
        return 0
    span = f"{result.start} → {result.end}"
    print(f"xsmom backtest: {len(result.symbols)} symbols, {span} ({elapsed * 1e3:.0f} ms)")
    print(metrics_table(result.metrics))
    if args.out is not None:
        print(f"report: {args.out / 'report.html'}")
    return 0


def _utc(match: re.Match) -> str:
    when = dt.datetime.fromtimestamp(int(match.group(1)) / 1000, tz=dt.UTC)
    return f"{when:%Y-%m-%d %H:%M} UTC"


def _user_terms(message: str, command: str) -> str:
    """Core messages in CLI terms: UTC dates for epoch milliseconds, CLI flags for config hints."""
    message = re.sub(r"\bts[= ](\d{12,13})\b", _utc, message)
    flag = "--set data.on_invalid=drop" if command in ("backtest", "optimize") else "data.on_invalid: drop"
    return message.replace("pass on_invalid=drop", f"pass {flag}")


def _findings(bars: Path, timeframe: str, spike_mads: float, spike_window: int):
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


_TF_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}


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
            print(
                f"xsmom: warning: {path}: bars are {_human_ms(spacing)} apart (median), not "
                f"--timeframe {timeframe}; they are stored as {timeframe} bars",
                file=sys.stderr,
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
    print(
        f"xsmom: warning: no --from given: resampling the store's finest timeframe {tf} "
        f"({len(symbols)} symbol(s): {shown})"
        + (f"; also in the store: {others}" if others else "")
        + f"; pass --from {tf} to make this explicit",
        file=sys.stderr,
    )


def _data(args: argparse.Namespace) -> int:
    if args.data_command == "ingest":
        _check_spacing(args.files, args.timeframe)
        stats = _core.ingest([str(f) for f in args.files], str(args.store), args.timeframe, args.kind)
        kind = "" if args.kind == "trade" else f" ({args.kind} bars)"
        print(
            f"ingested {len(args.files)} file(s) into {args.store}{kind}: {stats['rows_added']} rows added, "
            f"{stats['rows_replaced']} replaced, {stats['files_written']} partition file(s) written"
        )
        return 0
    if args.data_command == "validate":
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
    if args.data_command == "fetch":
        return _fetch(args)
    if args.data_command == "resample":
        if args.source is None:
            _resample_source_note(args.store, args.to)
        stats = _core.resample_store(str(args.store), args.to, args.source)
        added, replaced = stats["rows_added"], stats["rows_replaced"]
        print(f"resampled {args.store} to {args.to}: {added} bars added, {replaced} replaced")
        return 0
    raise CliError(f"unknown data command {args.data_command!r}")


# -- config deploy | rollback | versions, report daily, data fetch ---------------------------------


def _add_fetch_parser(data_commands) -> None:
    fetch = data_commands.add_parser(
        "fetch", help="fetch closed klines (and funding) from Bybit v5 into a store"
    )
    fetch.add_argument("--store", type=Path, required=True)
    fetch.add_argument("--symbols", required=True, help="comma-separated, e.g. BTCUSDT,ETHUSDT")
    fetch.add_argument("--start", required=True, help="first bar (date or ISO time, UTC)")
    fetch.add_argument("--end", default=None, help="end, exclusive (default: now; only closed bars)")
    fetch.add_argument("--timeframe", default="1h")
    fetch.add_argument("--funding", action="store_true", help="also fetch the funding rate history")
    fetch.add_argument(
        "--kind",
        choices=["trade", "mark", "index"],
        default="trade",
        help="traded klines (default) or mark / index-price klines (stored under kind=<kind>)",
    )
    fetch.add_argument("--base-url", default=None, help="API base URL (default: Bybit mainnet)")


def _add_deploy_parsers(commands) -> None:
    config = commands.add_parser("config", help="deploy, roll back and list versions of the live config")
    config_commands = config.add_subparsers(dest="config_command", required=True, parser_class=_Parser)
    deploy = config_commands.add_parser("deploy", help="deploy a candidate whose verdict passed the gate")
    deploy.add_argument(
        "candidate", type=Path, nargs="?", help="candidate.yaml (its candidate.json verdict beside it)"
    )
    deploy.add_argument(
        "--stand-aside",
        action="store_true",
        help="write the live config with live.trading: false (the verdict must say stand aside)",
    )
    deploy.add_argument("--live", type=Path, required=True, help="the live config file to replace")
    deploy.add_argument("--force", action="store_true", help="deploy even if the gate failed (recorded)")
    deploy.add_argument("--notify", action="store_true", help="send the outcome to Discord")
    rollback = config_commands.add_parser("rollback", help="restore a stored version byte for byte")
    rollback.add_argument("--to", default=None, help="version id (default: the one before the current)")
    rollback.add_argument("--live", type=Path, required=True)
    rollback.add_argument("--notify", action="store_true", help="send the outcome to Discord")
    versions = config_commands.add_parser("versions", help="list stored versions and the history")
    versions.add_argument("--live", type=Path, required=True)
    versions.add_argument("--json", action="store_true")

    report = commands.add_parser("report", help="reports of the live runner")
    report_commands = report.add_subparsers(dest="report_command", required=True, parser_class=_Parser)
    daily = report_commands.add_parser("daily", help="the daily report from the live runner's state file")
    daily.add_argument("--state", type=Path, required=True, help="the xsmom-live state JSON")
    daily.add_argument("--equity", type=Path, default=None, help="equity.parquet of the runner's --out")
    daily.add_argument("--config", type=Path, default=None, help="live config (for the kill-switch limit)")
    daily.add_argument("--notify", action="store_true", help="send the report to Discord")


def _notify(text: str, files: Sequence[Path] = ()) -> None:
    from xsmom.notify import send_discord, webhook_configured

    if not webhook_configured():
        print("xsmom: warning: --notify: DISCORD_WEBHOOK_URL is not set; nothing sent", file=sys.stderr)
        return
    if not send_discord(text, files):
        print("xsmom: warning: the Discord notification was not sent (see the log)", file=sys.stderr)


def _config_command(args: argparse.Namespace) -> int:
    from xsmom.deploy import DeployError, Deployment

    deployment = Deployment(args.live)
    try:
        if args.config_command == "versions":
            return _versions(deployment, args.json)
        if args.config_command == "deploy" and args.stand_aside:
            outcome = deployment.stand_aside(args.candidate, force=args.force)
            message = f"stood aside: {args.live} has live.trading: false ({outcome.version})"
        elif args.config_command == "deploy":
            if args.candidate is None:
                raise CliError("config deploy needs a candidate.yaml (or --stand-aside)")
            outcome = deployment.deploy(args.candidate, force=args.force)
            forced = " (FORCED past the gate)" if outcome.forced and not outcome.passed else ""
            previous = outcome.previous or "none"
            message = f"deployed {outcome.version} to {args.live}{forced}; previous: {previous}"
        else:
            outcome = deployment.rollback(args.to)
            message = f"rolled back {args.live} to {outcome.version}; previous: {outcome.previous or 'none'}"
        if outcome.action == "unchanged":
            message = f"{args.live} already holds {outcome.version}; nothing changed"
    except DeployError as err:
        raise CliError(str(err)) from None
    print(message)
    if args.notify:
        _notify(f"xsmom config: {message}")
    return 0


def _versions(deployment, as_json: bool) -> int:
    versions = deployment.versions()
    current = deployment.current()
    if as_json:
        rows = [
            {
                "id": v.id,
                "created": v.created.isoformat(),
                "sha256": v.sha256,
                "kind": v.kind,
                "passed": (v.meta.get("verdict") or {}).get("passed"),
                "gate": _gate_label(v),
                "forced": v.meta.get("forced", False),
                "live": current is not None and v.id == current.id,
            }
            for v in versions
        ]
        print(json.dumps(rows))
        return 0
    if not versions:
        print(f"no versions in {deployment.versions_dir}")
        return 0
    print(f"{'':2}{'version':<28}{'kind':<15}{'gate':<13}source")
    for v in versions:
        mark = "* " if current is not None and v.id == current.id else "  "
        print(f"{mark}{v.id:<28}{v.kind:<15}{_gate_label(v):<13}{v.meta.get('source', '')}")
    if current is None and deployment.live.exists():
        print(f"(the live file {deployment.live} matches no stored version)")
    return 0


def _gate_label(version) -> str:
    """The gate result of a stored version: its verdict (deploy | keep | stand aside), ``forced``
    when it went live past the gate, ``-`` when it has none (a preserved previous live file)."""
    verdict = version.meta.get("verdict") or {}
    if version.meta.get("forced"):
        return "forced"
    said = verdict.get("verdict")
    if isinstance(said, str):
        return said
    passed = verdict.get("passed")
    return "-" if passed is None else ("passed" if passed else "failed")


def _report_command(args: argparse.Namespace) -> int:
    from xsmom.daily import build_report, last_equity, load_state

    state = load_state(args.state)
    equity = last_equity(args.equity)[1] if args.equity is not None else None
    limit = None
    if args.config is not None:
        kill = Config.load(args.config).to_dict()["risk"]["kill_switch"]
        limit = float(kill["max_daily_loss_pct"]) if kill.get("enabled") else None
    report = build_report(state, equity=equity, max_daily_loss_pct=limit)
    print(report.text)
    if args.notify:
        _notify(report.text)
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from xsmom.fetch import FetchSummary, fetch

    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
    if not symbols:
        raise CliError("--symbols: give at least one symbol, e.g. BTCUSDT,ETHUSDT")
    try:
        parts = [
            fetch(
                args.store,
                [symbol],
                args.start,
                args.end,
                timeframe=args.timeframe,
                funding=args.funding,
                base_url=args.base_url,
                kind=args.kind,
            )
            for symbol in steps(symbols, "fetching")
        ]
        summary = FetchSummary(args.store, [row for part in parts for row in part.symbols])
    except (ValueError, OSError) as err:
        if "error sending request" not in str(err):
            raise
        base = args.base_url or "https://api.bybit.com"
        raise CliError(f"cannot reach {base}: {_network_cause(base)}") from None
    for row in summary.symbols:
        line = f"{row.symbol}: {row.bars_added} bar(s) added"
        if row.fetched_from is not None:
            line += f" ({row.fetched_from} → {row.fetched_to})"
        else:
            line += " (up to date)"
        if args.funding:
            line += f", {row.funding_added} funding event(s) added"
        print(line)
    print(f"{summary.bars_added} bar(s), {summary.funding_added} funding event(s) written to {args.store}")
    return 0


def _network_cause(base_url: str) -> str:
    """Why ``base_url`` cannot be reached, found by resolving and connecting once (the core's HTTP
    client only says "error sending request")."""
    import socket
    import urllib.parse

    url = urllib.parse.urlsplit(base_url)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        return f"cannot resolve host {host!r} ({err.strerror}); check the network or --base-url"
    try:
        family, kind, proto, _, address = addresses[0]
        with socket.socket(family, kind, proto) as sock:
            sock.settimeout(5.0)
            sock.connect(address)
    except TimeoutError:
        return f"connecting to {host}:{port} timed out (offline or blocked by a firewall?)"
    except OSError as err:
        return f"connecting to {host}:{port} failed: {err.strerror or err}"
    return f"{host}:{port} accepts connections but the HTTP request failed (proxy, TLS or server error)"


_DEPLOY_COMMANDS = {"config": _config_command, "report": _report_command}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = None
    try:
        args = parser.parse_args(argv)
        _check_extras(args)
        if args.command == "backtest":
            return _backtest(args)
        if args.command == "optimize":
            return _optimize(args)
        if args.command == "montecarlo":
            return _montecarlo(args)
        if args.command in _DEPLOY_COMMANDS:
            return _DEPLOY_COMMANDS[args.command](args)
        return _data(args)
    except ModuleNotFoundError as err:
        if err.name is None or err.name.split(".")[0] not in _EXTRAS:
            raise
        print(f"xsmom: error: {_missing_extra(err.name, args.command)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `xsmom … | head`: the reader left; stop quietly (and keep Python's exit flush quiet too).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (CliError, ValueError, OSError) as err:
        message = _user_terms(" ".join(str(err).split()), getattr(args, "command", ""))
        print(f"xsmom: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xsmom: error: interrupted", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
