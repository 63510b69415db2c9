"""Type stubs of the compiled core (``src/python.rs``). Tables are Arrow PyCapsule streams:
pass them to ``polars.DataFrame`` to get a frame without copies."""

from collections.abc import Callable
from typing import Any, Protocol

class ArrowStream(Protocol):
    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object: ...

__version__: str
BPS: float  # basis points per unit (src/model.rs): x bps is the fraction x / BPS

def read_bars(
    path: str,
    symbols: list[str] | None = None,
    start: int | None = None,
    end: int | None = None,
    timeframe: str = "1h",
    kind: str = "trade",
) -> ArrowStream: ...
def read_funding(
    path: str, symbols: list[str] | None = None, start: int | None = None, end: int | None = None
) -> ArrowStream: ...
def validate_bars(
    bars: ArrowStream | str,
    timeframe: str = "1h",
    spike_mads: float | None = None,
    spike_window: int | None = None,
) -> ArrowStream: ...
def validate_path(
    path: str, timeframe: str = "1h", spike_mads: float | None = None, spike_window: int | None = None
) -> ArrowStream: ...
def config_default() -> str: ...
def config_profile(name: str) -> str: ...
def config_load(path: str) -> str: ...
def config_from_yaml(text: str, source: str = "<string>") -> str: ...
def config_with_overrides(yaml: str, overrides: list[tuple[str, str]]) -> str: ...
def config_to_json(yaml: str) -> str: ...
def config_wants_mark(yaml: str) -> bool: ...
def bars_per_year(timeframe: str) -> float: ...

class Dataset:
    """Bars and funding validated and pivoted once; ``backtest``, ``sweep``, ``signals`` and the
    research functions accept it in place of bars and reuse it as it is."""

    def __init__(
        self,
        bars: ArrowStream | str,
        funding: ArrowStream | str | None = None,
        timeframe: str = "1h",
        on_invalid: str = "refuse",
        spike_mads: float | None = None,
        spike_window: int | None = None,
        mark: ArrowStream | str | None = None,
    ) -> None: ...
    @property
    def n_bars(self) -> int: ...
    @property
    def n_symbols(self) -> int: ...
    @property
    def symbols(self) -> list[str]: ...
    @property
    def ts(self) -> list[int]: ...
    @property
    def timeframe(self) -> str: ...
    @property
    def timeframe_ms(self) -> int: ...
    @property
    def bars_per_day(self) -> float: ...
    @property
    def bars_per_year(self) -> float: ...
    @property
    def warnings(self) -> list[str]: ...
    @property
    def has_funding(self) -> bool: ...
    @property
    def has_mark(self) -> bool: ...
    def findings(self) -> ArrowStream: ...
    def bars(self) -> ArrowStream: ...
    def funding(self) -> ArrowStream | None: ...
    def mark(self) -> ArrowStream | None: ...

class BacktestRun:
    """A finished backtest kept on the Rust side; builds its tables on request."""

    def table(self, name: str) -> ArrowStream: ...
    def wide(self, column: str = "weight") -> ArrowStream: ...

def backtest(
    bars: ArrowStream | str | Dataset,
    config_yaml: str,
    funding: ArrowStream | str | None = None,
    outputs: list[str] | None = None,
    mark: ArrowStream | str | None = None,
) -> dict[str, Any]: ...
def sweep(
    bars: ArrowStream | str | Dataset,
    config_yaml: str,
    overrides_list: list[list[tuple[str, str]]],
    funding: ArrowStream | str | None = None,
    n_jobs: int | None = None,
    mark: ArrowStream | str | None = None,
) -> list[dict[str, float]]: ...
def signals(
    bars: ArrowStream | str | Dataset, config_yaml: str, funding: ArrowStream | str | None = None
) -> ArrowStream: ...
def time_backtest(
    bars: ArrowStream, config_yaml: str, repeats: int, funding: ArrowStream | None = None
) -> list[float]: ...
def time_engine(dataset: Dataset, config_yaml: str, repeats: int) -> list[float]: ...
def ingest(paths: list[str], store: str, timeframe: str = "1h", kind: str = "trade") -> dict[str, int]: ...
def resample_store(store: str, to: str, source: str | None = None) -> dict[str, int]: ...

# --- research (src/python_research.rs) -------------------------------------------------------

def research_panel(
    bars: ArrowStream | str | Dataset,
    config_yaml: str,
    funding: ArrowStream | str | None = None,
    mark: ArrowStream | str | None = None,
) -> Dataset: ...
def evaluate_windows(
    panel: Dataset,
    config_yaml: str,
    jobs: list[tuple[list[tuple[str, str]], int, int]],
    series: bool = False,
    n_jobs: int | None = None,
) -> list[dict[str, Any]]: ...
def mc_bootstrap(
    returns: list[float],
    n_paths: int,
    seed: int,
    block: float | None,
    bars_per_year: float,
    fan: bool = False,
    progress: Callable[[int, int], object] | None = None,
) -> dict[str, Any]: ...
def mc_reshuffle(
    trade_returns: list[float],
    n_paths: int = 1000,
    seed: int = 0,
    periods_per_year: float = 252.0,
    progress: Callable[[int, int], object] | None = None,
) -> dict[str, Any]: ...
def path_stats(returns: list[float], periods_per_year: float) -> dict[str, float]: ...
def psr(returns: list[float], benchmark: float = 0.0) -> float: ...
def deflated_sharpe(returns: list[float], n_trials: int, sharpe_variance: float) -> float: ...
def expected_max_sharpe(n_trials: int, sharpe_variance: float) -> float: ...
def pbo(trials: list[list[float]], n_blocks: int = 16) -> float: ...
def block_length(series: list[float]) -> float: ...
def segments(
    n_bars: int, train: int, oos: int, embargo: int, purge: int, mode: str = "rolling"
) -> list[dict[str, int]]: ...

# Bybit v5 fetch into a bar store (python_fetch.rs)
def fetch_store(
    store: str,
    symbols: list[str],
    start_ms: int,
    end_ms: int | None = None,
    timeframe: str = "1h",
    funding: bool = False,
    base_url: str | None = None,
    timeout_secs: float = 10.0,
    retries: int = 4,
    kind: str = "trade",
) -> list[dict[str, Any]]: ...
def fetch_missing_ranges(
    stored: list[int], start: int, end: int, step: int, page: int
) -> list[tuple[int, int]]: ...
