"""The settings of a study: walk-forward layout, objective, gate thresholds, and the error type."""

from __future__ import annotations

import datetime as dt
import math
import os
import socket
from dataclasses import dataclass

from xsmom.exceptions import ResearchError  # noqa: F401 - re-exported: research raises it

WHO = f"{socket.gethostname()}:{os.getpid()}"


COST_MULTIPLIERS = (1.5, 2.0, 3.0)


@dataclass(frozen=True)
class WalkForward:
    """Walk-forward windows in days (research.md §1); ``purge_bars`` None = max(lookbacks)."""

    train_days: float = 120.0
    oos_days: float = 30.0
    embargo_days: float = 2.0
    mode: str = "rolling"
    purge_bars: int | None = None


@dataclass(frozen=True)
class Objective:
    """``sharpe − λ_turnover·turnover_per_year/1000 − λ_dd·max_drawdown`` on the purged train window."""

    lambda_turnover: float = 0.1
    lambda_dd: float = 0.5

    def __call__(self, metrics: dict[str, float]) -> float:
        return (
            metrics["sharpe"]
            - self.lambda_turnover * metrics["turnover_per_year"] / 1000.0
            - self.lambda_dd * metrics["max_drawdown"]
        )


@dataclass(frozen=True)
class Gate:
    """Deployment gate thresholds and statistics settings (research.md §3, §5).

    ``pipeline_trials`` is the number of pipeline variants (spaces, objectives, data ranges) tried on
    this data; ``pipeline_sharpe_var`` the variance of their annualised OOS Sharpes (required when
    ``pipeline_trials > 1``). With the default 1 the deflated Sharpe of the procedure is the PSR.
    """

    min_psr: float = 0.95
    min_p_delta_sharpe: float = 0.90
    max_delta_drawdown: float = 0.05
    tail_dd_limit: float = 0.35
    max_fragility: float = 0.5
    fragility_runs: int = 8
    fragility_jitter: float = 0.01
    oos_min_bars: int = 200
    oos_min_trades: int = 30
    pipeline_trials: int = 1
    pipeline_sharpe_var: float | None = None
    bootstrap_paths: int = 1000

    def __post_init__(self) -> None:
        if not isinstance(self.pipeline_trials, int) or self.pipeline_trials < 1:
            raise ResearchError(f"gate.pipeline_trials must be an integer ≥ 1, got {self.pipeline_trials!r}")
        var = self.pipeline_sharpe_var
        if self.pipeline_trials > 1 and var is None:
            raise ResearchError(
                f"gate.pipeline_sharpe_var is required when pipeline_trials > 1 "
                f"(got pipeline_trials={self.pipeline_trials})"
            )
        if var is not None and (not math.isfinite(var) or var < 0):
            raise ResearchError(f"gate.pipeline_sharpe_var must be a finite number ≥ 0, got {var!r}")
        if self.fragility_runs < 2:
            raise ResearchError(f"gate.fragility_runs must be at least 2, got {self.fragility_runs}")
        if self.bootstrap_paths < 10:
            raise ResearchError(f"gate.bootstrap_paths must be at least 10, got {self.bootstrap_paths}")


def iso_date(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%MZ")
