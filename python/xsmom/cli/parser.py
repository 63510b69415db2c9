"""The argparse tree of ``xsmom``: each command group registers its sub-parsers, and each command
its handler (``set_defaults(handler=...)``), which ``main`` calls."""

from __future__ import annotations

from xsmom.cli import backtest, data, deploy, research
from xsmom.cli.common import Parser

# The top-level commands in the order ``xsmom --help`` lists them: backtest, optimize, montecarlo,
# data, config, report.
GROUPS = (backtest, research, data, deploy)


def build_parser() -> Parser:
    parser = Parser(prog="xsmom", description="Cross-sectional momentum research and backtesting.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for group in GROUPS:
        group.register(commands)
    return parser
