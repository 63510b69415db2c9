"""``xsmom optimize`` (walk-forward Bayesian optimisation → report folder and deploy verdict) and
``xsmom montecarlo`` (the Monte Carlo of an optimize result folder, again)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from xsmom.cli.common import CliError, print_json, progress, require
from xsmom.cli.overrides import load_config
from xsmom.config import Config
from xsmom.progress import Progress


def register(commands: Any) -> None:
    _add_optimize(commands)
    _add_montecarlo(commands)


def _add_optimize(commands: Any) -> None:
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
    opt.set_defaults(handler=optimize)


def _add_montecarlo(commands: Any) -> None:
    mc = commands.add_parser("montecarlo", help="re-run the Monte Carlo of an optimize result folder")
    mc.add_argument("--result", type=Path, required=True, help="an optimize --out folder (reads oos.json)")
    mc.add_argument("--paths", type=int, default=1000)
    mc.add_argument("--seed", type=int, default=0)
    mc.add_argument("--block", type=float, default=None, help="mean block length (default: Politis–White)")
    mc.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    mc.set_defaults(handler=montecarlo)


def _check_extras(args: argparse.Namespace) -> None:
    """Fail in one line, before any work, when optimize needs an extra that is not installed."""
    require("optuna", "optimize")
    if args.dask_scheduler is not None:
        require("distributed", "--dask-scheduler")
    if str(args.storage or "").startswith("postgres"):
        from xsmom.research import redact

        require("psycopg", f"storage {redact(args.storage)}")


def _check_optimize_args(args: argparse.Namespace) -> None:
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


def _executor(args: argparse.Namespace) -> Any:
    """The Dask executor of ``--dask-scheduler`` (None without it)."""
    if args.dask_scheduler is None:
        return None
    try:
        from xsmom.parallel import executor_from_cli
    except ImportError:
        raise CliError("--dask-scheduler needs xsmom.parallel (the scale-out module)") from None
    return executor_from_cli(args.dask_scheduler)


def optimize(args: argparse.Namespace) -> int:
    _check_extras(args)
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise CliError("optimize needs optuna: pip install 'xsmom[research]'") from None
    from xsmom import research

    _check_optimize_args(args)
    gate = research.Gate(pipeline_trials=args.pipeline_trials, pipeline_sharpe_var=args.pipeline_sharpe_var)
    config = load_config(args)
    research.load_space(args.space)  # a bad space file fails before any data is read
    executor = _executor(args)
    progress(f"optimizing on {args.bars} …")
    if args.worker:
        storage = research.redact(args.storage)
        study = args.study or "(derived name)"
        print(f"xsmom optimize: worker joining study {study} at {storage}", file=sys.stderr, flush=True)
    try:
        with Progress("optimize", args.trials) as bar:
            result = _run_optimize(args, research, config, gate, executor, bar)
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
    args: argparse.Namespace, research: Any, config: Config, gate: Any, executor: Any, bar: Progress
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
        progress=bar.callback(),
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


def _read_oos(args: argparse.Namespace) -> dict[str, Any]:
    """The oos.json of the ``--result`` folder, with the keys the Monte Carlo reads."""
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
    return doc


def montecarlo(args: argparse.Namespace) -> int:
    from xsmom import research
    from xsmom.research.report import write_json

    doc = _read_oos(args)
    with Progress("montecarlo", args.paths, quiet=args.json) as bar:
        mc = research.monte_carlo(
            doc["returns"],
            doc["trade_returns"],
            doc["bars_per_year"],
            args.paths,
            args.seed,
            args.block,
            progress=bar.callback(),
        )
    summary = research.summarise_mc(mc)
    write_json(args.result / "mc.json", summary)
    if args.json:
        return print_json(research.report.json_safe(summary))
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
