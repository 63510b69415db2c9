"""The live runner's side: ``xsmom config deploy | rollback | versions`` (versioned live configs)
and ``xsmom report daily``."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from xsmom.cli.common import CliError, Parser, notify, print_json
from xsmom.config import Config


def register(commands: Any) -> None:
    _add_config(commands)
    _add_report(commands)


def _add_config(commands: Any) -> None:
    config = commands.add_parser("config", help="deploy, roll back and list versions of the live config")
    config_commands = config.add_subparsers(dest="config_command", required=True, parser_class=Parser)
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
    deploy.set_defaults(handler=run_deploy)
    rollback = config_commands.add_parser("rollback", help="restore a stored version byte for byte")
    rollback.add_argument("--to", default=None, help="version id (default: the one before the current)")
    rollback.add_argument("--live", type=Path, required=True)
    rollback.add_argument("--notify", action="store_true", help="send the outcome to Discord")
    rollback.set_defaults(handler=run_rollback)
    versions = config_commands.add_parser("versions", help="list stored versions and the history")
    versions.add_argument("--live", type=Path, required=True)
    versions.add_argument("--json", action="store_true")
    versions.set_defaults(handler=run_versions)


def _add_report(commands: Any) -> None:
    report = commands.add_parser("report", help="reports of the live runner")
    report_commands = report.add_subparsers(dest="report_command", required=True, parser_class=Parser)
    daily = report_commands.add_parser("daily", help="the daily report from the live runner's state file")
    daily.add_argument("--state", type=Path, required=True, help="the xsmom-live state JSON")
    daily.add_argument("--equity", type=Path, default=None, help="equity.parquet of the runner's --out")
    daily.add_argument("--config", type=Path, default=None, help="live config (for the kill-switch limit)")
    daily.add_argument("--notify", action="store_true", help="send the report to Discord")
    daily.set_defaults(handler=run_daily)


@contextlib.contextmanager
def _deployment(args: argparse.Namespace) -> Iterator[Any]:
    """The deployment of ``--live``; a ``DeployError`` inside the block is a one-line error."""
    from xsmom.deploy import DeployError, Deployment

    deployment = Deployment(args.live)
    try:
        yield deployment
    except DeployError as err:
        raise CliError(str(err)) from None


def _announce(args: argparse.Namespace, outcome: Any, message: str) -> int:
    """Print what a deploy or rollback did (and send it with ``--notify``)."""
    if outcome.action == "unchanged":
        message = f"{args.live} already holds {outcome.version}; nothing changed"
    print(message)
    if args.notify:
        notify(f"xsmom config: {message}")
    return 0


def run_deploy(args: argparse.Namespace) -> int:
    with _deployment(args) as deployment:
        if args.stand_aside:
            outcome = deployment.stand_aside(args.candidate, force=args.force)
            message = f"stood aside: {args.live} has live.trading: false ({outcome.version})"
        else:
            if args.candidate is None:
                raise CliError("config deploy needs a candidate.yaml (or --stand-aside)")
            outcome = deployment.deploy(args.candidate, force=args.force)
            forced = " (FORCED past the gate)" if outcome.forced and not outcome.passed else ""
            previous = outcome.previous or "none"
            message = f"deployed {outcome.version} to {args.live}{forced}; previous: {previous}"
    return _announce(args, outcome, message)


def run_rollback(args: argparse.Namespace) -> int:
    with _deployment(args) as deployment:
        outcome = deployment.rollback(args.to)
    previous = outcome.previous or "none"
    return _announce(args, outcome, f"rolled back {args.live} to {outcome.version}; previous: {previous}")


def run_versions(args: argparse.Namespace) -> int:
    with _deployment(args) as deployment:
        return _versions(deployment, args.json)


def _versions(deployment: Any, as_json: bool) -> int:
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
        return print_json(rows)
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


def _gate_label(version: Any) -> str:
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


def run_daily(args: argparse.Namespace) -> int:
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
        notify(report.text)
    return 0
