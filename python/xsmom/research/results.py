"""What an optimisation returns: per-segment results, the final study and the whole result."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xsmom.config import Config
from xsmom.research.settings import Gate


@dataclass
class SegmentResult:
    index: int
    bounds: dict[str, int]
    study_name: str
    n_trials: int
    n_pruned: int
    best_value: float
    params: dict[str, Any]
    oos: dict[str, float]
    baseline_oos: dict[str, float]
    pbo: float
    n_distinct: int = 0
    train_sharpe: float = math.nan
    train_dsr: float = math.nan
    trial_sharpes: list[float] = field(default_factory=list)


@dataclass
class FinalStudy:
    """The study on the newest train window (ending at the last bar) whose choice is deployed."""

    study_name: str
    bounds: dict[str, int]
    dates: tuple[int, int]
    n_trials: int
    n_pruned: int
    best_value: float
    params: dict[str, Any]


@dataclass
class OptimizeResult:
    """What ``optimize`` produced; ``out`` holds the report folder when one was written."""

    verdict: dict[str, Any]
    candidate: dict[str, float]
    baseline: dict[str, float]
    params: dict[str, Any]
    candidate_config: Config
    segments: list[SegmentResult]
    final: FinalStudy
    psr: float
    dsr: float
    paired: dict[str, Any]
    fragility: dict[str, Any]
    pbo: float
    n_trials: int
    study: str
    storage: str
    data_range: tuple[int, int]
    mc: dict[str, Any]
    stress: dict[str, dict[str, float]]
    oos_returns: list[float]
    baseline_returns: list[float]
    oos_ts: list[int]
    trade_returns: list[float]
    elapsed_s: float
    gate: Gate = field(default_factory=Gate)
    out: Path | None = None
    notified: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The candidate.json document."""
        return {
            "verdict": self.verdict,
            "baseline": self.baseline,
            "candidate": self.candidate,
            "params": self.params,
            "study": self.study,
            "data_range": list(self.data_range),
            "final_study": asdict(self.final),
            "mc": self.mc,
            "psr": self.psr,
            "dsr": self.dsr,
            "pipeline_trials": self.gate.pipeline_trials,
            "paired": self.paired,
            "fragility": self.fragility,
            "pbo": self.pbo,
            "n_trials": self.n_trials,
            "stress": self.stress,
            "segments": [{k: v for k, v in asdict(s).items() if k != "trial_sharpes"} for s in self.segments],
            "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
