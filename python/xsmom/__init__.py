"""xsmom: cross-sectional momentum research and backtesting for crypto perpetual futures.

The numeric work happens in the Rust core (``xsmom._core``); this package turns its Arrow
outputs into polars DataFrames and adds configuration, plotting, reports and the CLI.
"""

from xsmom._core import __version__
from xsmom.api import (
    BacktestResult,
    Dataset,
    backtest,
    read_bars,
    read_funding,
    signals,
    sweep,
    validate_bars,
)
from xsmom.config import Config

__all__ = [
    "BacktestResult",
    "Config",
    "Dataset",
    "__version__",
    "backtest",
    "read_bars",
    "read_funding",
    "signals",
    "sweep",
    "validate_bars",
]
