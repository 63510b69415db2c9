"""Scale-out of sweeps over a ``concurrent.futures.Executor`` (a process pool, a Dask cluster, …).

The override list is cut into chunks; each chunk is one task that runs the Rust ``_core.sweep`` on
the worker (all its cores, GIL released). Bars (and funding) travel as polars DataFrames, so workers
need the ``xsmom`` package but not the data files; with a Dask executor they are scattered to the
workers once instead of being pickled into every task. Results come back in the order of the
override list and are identical to a local ``xsmom.sweep``.

``dask_executor(address)`` connects to a Dask scheduler (``distributed.Client(address).get_executor()``),
``executor_from_cli(value)`` is the glue behind ``--dask-scheduler ADDR`` (``local`` or ``local:N``
starts a ``LocalCluster`` of N worker processes on this machine).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import polars as pl

from xsmom import _core
from xsmom.config import override_pairs

OverrideSets = list[list[tuple[str, str]]]


def encode_overrides(overrides_list: Sequence[dict[str, Any]]) -> OverrideSets:
    """``{"strategy.k_max": 4}`` → ``[("strategy.k_max", "4")]`` (JSON-encoded values), per set."""
    return [override_pairs(overrides) for overrides in overrides_list]


def _sweep_chunk(
    bars: Any, config_yaml: str, sets: OverrideSets, funding: Any, n_jobs: int | None, mark: Any = None
) -> list[dict[str, float]]:
    """One task: a Rust sweep of ``sets`` on the worker. Module-level so that it pickles by name."""
    from xsmom import _core as core

    return [dict(r) for r in core.sweep(bars, config_yaml, sets, funding, n_jobs, mark)]


def executor_workers(executor: Executor) -> int:
    """Threads an executor runs at once: a Dask cluster's threads, a pool's workers, else the cores."""
    client = getattr(executor, "_client", None)
    if client is not None:
        try:
            return max(1, sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values()))
        except Exception:  # noqa: BLE001 - only a sizing hint
            return 2
    return int(getattr(executor, "_max_workers", None) or os.cpu_count() or 2)


def chunks(n_items: int, n_chunks: int) -> list[range]:
    """``n_items`` split into at most ``n_chunks`` contiguous, nearly equal ranges."""
    n_chunks = max(1, min(n_chunks, n_items))
    size = math.ceil(n_items / n_chunks) if n_items else 0
    return [range(start, min(start + size, n_items)) for start in range(0, n_items, size or 1)]


def as_frames(
    bars: Any, funding: Any, timeframe: str, mark: Any = None, with_store_mark: bool = False
) -> tuple[pl.DataFrame, pl.DataFrame | None, pl.DataFrame | None]:
    """Bars, funding and mark bars as DataFrames to ship to executor workers, with the data a local
    run would use: a store's own funding (and, with ``with_store_mark``, its ``kind=mark`` bars), or
    a ``Dataset``'s validated bars, aligned funding and attached mark closes."""
    from xsmom.api import Dataset, read_bars, read_funding

    if isinstance(bars, Dataset):
        funding_table, mark_table = bars.funding(), bars.mark()
        return (
            pl.DataFrame(bars.bars()),
            None if funding_table is None else pl.DataFrame(funding_table),
            None if mark_table is None else pl.DataFrame(mark_table),
        )
    funding_frame = None
    mark_frame = None
    if isinstance(bars, str | Path):
        path = Path(bars)
        bars_frame = read_bars(path, timeframe=timeframe)
        if funding is None and path.is_dir() and (path / "funding").exists():
            funding_frame = read_funding(path)  # the store's own funding, as the local run reads it
        has_mark = (path / "bars" / f"timeframe={timeframe}" / "kind=mark").is_dir()
        if mark is None and with_store_mark and has_mark:
            mark_frame = read_bars(path, timeframe=timeframe, kind="mark")
    else:
        bars_frame = bars
    if funding is not None:
        funding_frame = read_funding(funding) if isinstance(funding, str | Path) else funding
    if mark is not None:
        is_path = isinstance(mark, str | Path)
        mark_frame = read_bars(mark, timeframe=timeframe, kind="mark") if is_path else mark
    return bars_frame, funding_frame, mark_frame


def sweep_on_executor(
    executor: Executor,
    bars: Any,
    config_yaml: str,
    overrides_list: Sequence[dict[str, Any]],
    *,
    funding: Any = None,
    n_jobs: int | None = None,
    n_chunks: int | None = None,
    mark: Any = None,
) -> list[dict[str, float]]:
    """Metrics per override set, the chunks evaluated as tasks on ``executor``, in input order."""
    sets = encode_overrides(overrides_list)
    # Validate every set here, so that an error names its index in the whole list.
    any_wants_mark = _core.config_wants_mark(config_yaml)
    for index, pairs in enumerate(sets):
        try:
            overridden = _core.config_with_overrides(config_yaml, pairs)
            any_wants_mark = _core.config_wants_mark(overridden) or any_wants_mark
        except ValueError as err:
            raise ValueError(f"override set {index}: {err}") from None
    if not sets:
        return []
    timeframe = json.loads(_core.config_to_json(config_yaml))["data"]["timeframe"]
    bars_frame, funding_frame, mark_frame = as_frames(bars, funding, timeframe, mark, any_wants_mark)
    ranges = chunks(len(sets), n_chunks or 2 * executor_workers(executor))
    client = getattr(executor, "_client", None)
    shipped: list[Any] = [bars_frame, funding_frame, mark_frame]
    if client is not None and len(ranges) > 1:
        shipped = [None if frame is None else client.scatter(frame, broadcast=True) for frame in shipped]
    bars_arg, funding_arg, mark_arg = shipped
    futures = [
        executor.submit(
            _sweep_chunk, bars_arg, config_yaml, [sets[i] for i in r], funding_arg, n_jobs, mark_arg
        )
        for r in ranges
    ]
    results: list[dict[str, float]] = []
    for future in futures:
        results.extend(future.result())
    if len(results) != len(sets):
        raise RuntimeError(f"executor returned {len(results)} results for {len(sets)} override sets")
    return results


def dask_executor(address: str, timeout: float = 10.0, **client_kwargs: Any) -> Executor:
    """An Executor on the Dask scheduler at ``address`` (``tcp://host:8786``).

    ``executor.shutdown()`` closes the client as well.
    """
    try:
        from distributed import Client
    except ImportError:
        raise ImportError("the Dask executor needs dask.distributed: pip install 'xsmom[dask]'") from None
    try:
        client = Client(address, timeout=timeout, **client_kwargs)
    except (OSError, TimeoutError) as err:
        raise OSError(f"cannot connect to the Dask scheduler at {address}: {err}") from None
    return _OwningExecutor(client)


class _OwningExecutor(Executor):
    """``client.get_executor()`` that also closes its client (and cluster) on shutdown."""

    def __init__(self, client: Any, cluster: Any = None) -> None:
        self._client = client
        self._cluster = cluster
        self._inner = client.get_executor()

    @property
    def n_workers(self) -> int:
        """Worker threads on the cluster now (for sizing chunks)."""
        return executor_workers(self)

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[override]
        return self._inner.submit(fn, *args, **kwargs)

    def map(self, fn, *iterables, timeout=None, chunksize=1):  # type: ignore[override]
        return self._inner.map(fn, *iterables, timeout=timeout)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._inner.shutdown(wait=wait)
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()


def local_dask_executor(n_workers: int = 2, threads_per_worker: int = 1) -> Executor:
    """A ``LocalCluster`` of worker processes on this machine, with its executor."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        processes=True,
        dashboard_address=None,
        host="127.0.0.1",
    )
    return _OwningExecutor(Client(cluster), cluster)


def executor_from_cli(address: str | None) -> Executor | None:
    """The executor for ``--dask-scheduler ADDR`` (None without one).

    ``ADDR`` is a scheduler address (``tcp://host:8786``, ``host:8786``), or ``local`` / ``local:N`` for a
    LocalCluster of N (default 2) worker processes here. Errors are one clear line (ValueError/OSError).
    """
    if address is None or address == "":
        return None
    address = address.strip()
    if address == "local" or address.startswith("local:"):
        count = address.partition(":")[2] or "2"
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"--dask-scheduler {address!r}: expected local or local:N with N ≥ 1")
        return local_dask_executor(int(count))
    host = address.split("://", 1)[-1]
    if ":" not in host or not host.rsplit(":", 1)[1].isdigit():
        raise ValueError(f"--dask-scheduler {address!r}: expected HOST:PORT, tcp://HOST:PORT or local[:N]")
    return dask_executor(address if "://" in address else f"tcp://{address}")
