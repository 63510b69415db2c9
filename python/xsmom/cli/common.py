"""What every command of the ``xsmom`` command line shares: the one-line error, warnings and
progress on stderr, JSON on stdout, the optional extras and Discord notifications."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are ``CliError`` (one line, exit code 2)."""

    def error(self, message: str) -> NoReturn:
        raise CliError(message)


# Optional features: the import that is missing → the pyproject extra that brings it.
EXTRAS = {"optuna": "research", "sqlalchemy": "research", "dask": "dask", "distributed": "dask"}
EXTRAS["psycopg"] = "postgres"


def missing_extra(module: str, feature: str) -> CliError:
    extra = EXTRAS.get(module.split(".")[0], "dev")
    return CliError(f"{feature} needs {module.split('.')[0]}: pip install 'xsmom[{extra}]'")


def require(module: str, feature: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise missing_extra(module, feature)


def error(message: str) -> int:
    """Print ``xsmom: error: message`` on stderr; the exit code of every error (2)."""
    print(f"xsmom: error: {message}", file=sys.stderr)
    return 2


def warn(message: str) -> None:
    print(f"xsmom: warning: {message}", file=sys.stderr)


def progress(message: str) -> None:
    """Progress on stderr, only for a person at a terminal."""
    if sys.stderr.isatty():
        print(f"xsmom: {message}", file=sys.stderr, flush=True)


def print_json(value: Any) -> int:
    """Print ``value`` as one JSON object on stdout; exit code 0."""
    print(json.dumps(value))
    return 0


def _utc(match: re.Match) -> str:
    when = dt.datetime.fromtimestamp(int(match.group(1)) / 1000, tz=dt.UTC)
    return f"{when:%Y-%m-%d %H:%M} UTC"


def user_terms(message: str, command: str) -> str:
    """Core messages in CLI terms: UTC dates for epoch milliseconds, CLI flags for config hints."""
    message = re.sub(r"\bts[= ](\d{12,13})\b", _utc, message)
    flag = "--set data.on_invalid=drop" if command in ("backtest", "optimize") else "data.on_invalid: drop"
    return message.replace("pass on_invalid=drop", f"pass {flag}")


def notify(text: str, files: Sequence[Path] = ()) -> None:
    """Send ``text`` to Discord for a ``--notify`` flag; a warning when it cannot be sent."""
    from xsmom.notify import send_discord, webhook_configured

    if not webhook_configured():
        warn("--notify: DISCORD_WEBHOOK_URL is not set; nothing sent")
        return
    if not send_discord(text, files):
        warn("the Discord notification was not sent (see the log)")
