"""The ``xsmom`` command line (interfaces.md): backtests, reports and bar-store maintenance.

Every error is one line on stderr (``xsmom: error: …``) and exit code 2.

One module per command group (``backtest``, ``research``: optimize and montecarlo, ``data`` and
``fetch``: the bar store, ``deploy``: config and report daily), ``parser`` builds the argparse tree
from them, ``common`` and ``overrides`` hold what they share.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

from xsmom.cli.common import EXTRAS, CliError, error, missing_extra, user_terms  # noqa: E402
from xsmom.cli.parser import build_parser  # noqa: E402

__all__ = ["CliError", "build_parser", "main"]

# The name of the parser builder when the command line was one module (kept for its callers).
_build_parser = build_parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = None
    try:
        args = parser.parse_args(argv)
        return args.handler(args)
    except ModuleNotFoundError as err:
        if err.name is None or err.name.split(".")[0] not in EXTRAS:
            raise
        return error(str(missing_extra(err.name, args.command)))
    except BrokenPipeError:
        # `xsmom … | head`: the reader left; stop quietly (and keep Python's exit flush quiet too).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (CliError, ValueError, OSError) as err:
        return error(user_terms(" ".join(str(err).split()), getattr(args, "command", "")))
    except KeyboardInterrupt:
        return error("interrupted")
