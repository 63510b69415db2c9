"""Batch evaluation of (overrides, window) jobs in the Rust core, locally or on an executor."""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import polars as pl

from xsmom import _core
from xsmom.config import Config
from xsmom.parallel import as_frames, executor_workers
from xsmom.research.settings import WHO

Job = tuple[list[tuple[str, str]], int, int]


_PANELS: dict[str, Any] = {}


def _evaluate_chunk(
    token: str,
    bars: pl.DataFrame,
    funding: pl.DataFrame | None,
    config_yaml: str,
    jobs: list[Job],
    series: bool,
    mark: pl.DataFrame | None = None,
) -> list[dict[str, Any]]:
    """Run on an executor worker: evaluate the chunk in one call. The prepared panel is kept per
    worker process under the evaluator's ``token`` (the last two), so a study prepares it once."""
    panel = _PANELS.get(token)
    if panel is None:
        panel = _core.research_panel(bars, config_yaml, funding, mark)
        while len(_PANELS) >= 2:
            _PANELS.pop(next(iter(_PANELS)))
        _PANELS[token] = panel
    # An explicit thread count builds a fresh rayon pool: the global one is unusable in a forked child.
    threads = os.cpu_count() or 1
    return [dict(r) for r in _core.evaluate_windows(panel, config_yaml, jobs, series, threads)]


class Evaluator:
    """Evaluates (overrides, window) jobs: locally in one Rust call, or in chunks on an executor."""

    def __init__(
        self,
        bars: Any,
        config: Config,
        funding: Any = None,
        executor: Executor | None = None,
        n_jobs: int | None = None,
    ) -> None:
        self.config_yaml = config.to_yaml()
        bars_arg = str(bars) if isinstance(bars, str | Path) else bars
        funding_arg = str(funding) if isinstance(funding, str | Path) else funding
        self.panel = _core.research_panel(bars_arg, self.config_yaml, funding_arg)
        self.executor = executor
        self.n_jobs = n_jobs
        self._frames: tuple[Any, Any, Any] | None = None
        self.token = f"{WHO}:{id(self)}:{time.time_ns()}"
        if executor is not None:
            # The validated panel itself (bars, aligned funding, mark closes) goes to the workers, so
            # that they evaluate on exactly the data of a local run.
            frames = as_frames(self.panel, None, self.panel.timeframe)
            client = getattr(executor, "_client", None)
            if client is not None:
                # Dask: the bars (and funding) go to every worker once per evaluator (one optimize
                # run); each task then carries only their futures, resolved on the worker.
                frames = tuple(None if f is None else client.scatter(f, broadcast=True) for f in frames)
            self._frames = frames

    def __call__(self, jobs: list[Job], series: bool = False) -> list[dict[str, Any]]:
        if not jobs:
            return []
        if self.executor is None:
            results = _core.evaluate_windows(self.panel, self.config_yaml, jobs, series, self.n_jobs)
            return [dict(r) for r in results]
        assert self._frames is not None
        bars, funding, mark = self._frames
        n_chunks = max(1, min(len(jobs), executor_workers(self.executor)))
        size = math.ceil(len(jobs) / n_chunks)
        futures = [
            self.executor.submit(
                _evaluate_chunk, self.token, bars, funding, self.config_yaml, jobs[i : i + size], series, mark
            )
            for i in range(0, len(jobs), size)
        ]
        return [item for future in futures for item in future.result()]
