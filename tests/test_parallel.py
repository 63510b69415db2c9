"""Scale-out: sweeps on a process pool and on a real Dask LocalCluster give the local results."""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor

import polars as pl
import pytest
import xsmom
from xsmom.parallel import chunks, executor_from_cli

OVERRIDES = [
    {"strategy.k_max": k, "strategy.signal_power": p, "risk.stops.atr_mult_sl": sl}
    for k in (3, 5)
    for p in (1.0, 1.5)
    for sl in (1.5, 2.5)
] + [{"strategy.lookbacks": [6, 12, 24], "strategy.lookback_weights": [0.5, 0.3, 0.2]}]


@pytest.fixture(scope="module")
def small(bars):
    symbols = sorted(bars["symbol"].unique().to_list())[:12]
    before = pl.col("ts") < pl.datetime(2025, 8, 1, time_zone="UTC")
    return bars.filter(pl.col("symbol").is_in(symbols) & before)


def test_chunks_cover_every_index_once():
    for n_items in range(0, 30):
        for n_chunks in range(1, 9):
            ranges = chunks(n_items, n_chunks)
            assert [i for r in ranges for i in r] == list(range(n_items))
            assert len(ranges) <= n_chunks
            if n_items:
                sizes = [len(r) for r in ranges]
                assert max(sizes) - min(sizes) <= max(1, n_items // n_chunks)


def test_process_pool_matches_local(small):
    config = xsmom.Config.default()
    local = xsmom.sweep(small, config, OVERRIDES, n_jobs=1)
    assert len({round(r["sharpe"], 12) for r in local}) > 3, "the overrides must change the results"
    with ProcessPoolExecutor(max_workers=2) as pool:
        remote = xsmom.sweep(small, config, OVERRIDES, n_jobs=1, executor=pool)
    assert remote == local


def test_store_path_and_funding_match_local(data_dir):
    """A store path: the workers get the bars and the store's funding as DataFrames."""
    config = xsmom.Config.default().with_overrides({"strategy.carry.enabled": True})
    overrides = [{"strategy.k_max": 3}, {"strategy.k_max": 6}, {"strategy.carry.budget": 0.4}]
    local = xsmom.sweep(data_dir, config, overrides, n_jobs=1)
    with ProcessPoolExecutor(max_workers=2) as pool:
        remote = xsmom.sweep(data_dir, config, overrides, n_jobs=1, executor=pool)
    assert remote == local
    assert all(r["funding"] != 0.0 for r in local), "the store's funding was applied"


def test_bad_override_names_its_index_in_the_whole_list(small):
    overrides = [{"strategy.k_max": 4}] * 5 + [{"strategy.k_maxx": 4}]
    with ProcessPoolExecutor(max_workers=1) as pool:
        with pytest.raises(ValueError, match=r"override set 5: .*k_maxx"):
            xsmom.sweep(small, None, overrides, executor=pool)


def test_dask_local_cluster_matches_local(small):
    distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed (xsmom[dask])")
    config = xsmom.Config.default()
    local = xsmom.sweep(small, config, OVERRIDES, n_jobs=1)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1"
    ) as cluster:
        executor = executor_from_cli(cluster.scheduler_address)
        try:
            client = executor._client
            assert len(client.scheduler_info()["workers"]) == 2
            with distributed.get_task_stream(client) as stream:
                started = time.perf_counter()
                remote = xsmom.sweep(small, config, OVERRIDES, n_jobs=1, executor=executor)
                elapsed = time.perf_counter() - started
            tasks = [t for t in stream.data if "_sweep_chunk" in str(t["key"])]
            assert len(tasks) >= 2
            assert len({t["worker"] for t in tasks}) == 2, "both worker processes ran chunks"
        finally:
            executor.shutdown()
    assert remote == local
    print(f"dask sweep of {len(OVERRIDES)} configs on 2 worker processes: {elapsed:.2f} s")


def test_executor_from_cli_local_cluster(small):
    pytest.importorskip("distributed")
    overrides = OVERRIDES[:3]
    executor = executor_from_cli("local:1")
    try:
        assert len(executor._client.scheduler_info()["workers"]) == 1
        assert executor.n_workers == 1
        remote = xsmom.sweep(small, None, overrides, n_jobs=1, executor=executor)
    finally:
        executor.shutdown()
    assert remote == xsmom.sweep(small, None, overrides, n_jobs=1)


def test_executor_from_cli_errors():
    assert executor_from_cli(None) is None
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        executor_from_cli("nohost")
    with pytest.raises(ValueError, match="local or local:N"):
        executor_from_cli("local:zero")
    pytest.importorskip("distributed")
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.perf_counter()
    with pytest.raises(OSError, match=f"cannot connect to the Dask scheduler at tcp://127.0.0.1:{port}"):
        from xsmom.parallel import dask_executor

        dask_executor(f"tcp://127.0.0.1:{port}", timeout=2)
    assert time.perf_counter() - started < 20


# -- one optuna study shared by two worker processes through PostgreSQL ---------------------------

WORKER = r"""
import json, os, sys
import optuna
import xsmom

url, study_name, bars_path, worker, n_trials = sys.argv[1:6]
optuna.logging.set_verbosity(optuna.logging.WARNING)
sampler = optuna.samplers.TPESampler(
    seed=int(worker), n_startup_trials=4, multivariate=True, constant_liar=True
)
study = optuna.create_study(study_name=study_name, storage=url, direction="maximize", sampler=sampler,
                            load_if_exists=True)
config = xsmom.Config.default()
done = []
for _ in range(int(n_trials) // 2):
    trials = [study.ask() for _ in range(2)]
    overrides = [
        {
            "strategy.k_max": t.suggest_int("k_max", 3, 8),
            "strategy.signal_power": t.suggest_float("power", 0.8, 2.0),
        }
        for t in trials
    ]
    results = xsmom.sweep(bars_path, config, overrides, n_jobs=1)
    for trial, metrics in zip(trials, results):
        trial.set_user_attr("worker", int(worker))
        trial.set_user_attr("pid", os.getpid())
        study.tell(trial, metrics["sharpe"])
        done.append(trial.number)
print(json.dumps(done))
"""


@pytest.fixture
def postgres_url():
    """URL of a real PostgreSQL server started for the test on 127.0.0.1 (tests/pg_server.py)."""
    pytest.importorskip("psycopg", reason="psycopg is not installed (xsmom[postgres])")
    from pg_server import PostgresUnavailable, postgres_server

    server = postgres_server()
    try:
        url = server.__enter__()
    except PostgresUnavailable as err:
        pytest.skip(str(err))
    try:
        yield url
    finally:
        server.__exit__(None, None, None)


def test_two_workers_share_one_study_in_postgresql(tmp_path, small, postgres_url):
    optuna = pytest.importorskip("optuna")
    import json
    import subprocess
    import sys

    url = postgres_url
    bars_path = tmp_path / "bars.parquet"
    small.write_parquet(bars_path)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    n_trials = 8
    # The study exists before the workers start, as `xsmom optimize` creates it for `--worker`s.
    optuna.create_study(study_name="shared", storage=url, direction="maximize")
    workers = [
        subprocess.Popen(
            [sys.executable, str(script), url, "shared", str(bars_path), str(w), str(n_trials)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in (1, 2)
    ]
    outputs = [w.communicate(timeout=300) for w in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
    numbers = [json.loads(out) for out, _ in outputs]
    study = optuna.load_study(study_name="shared", storage=url)
    trials = study.get_trials(deepcopy=False)
    pids = {t.user_attrs["pid"] for t in trials}

    assert len(trials) == 2 * n_trials, "every trial is counted exactly once"
    assert sorted(t.number for t in trials) == list(range(2 * n_trials))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert set(numbers[0]).isdisjoint(numbers[1])
    assert sorted(numbers[0] + numbers[1]) == list(range(2 * n_trials))
    assert len(pids) == 2, "both processes contributed"
    for worker, done in zip((1, 2), numbers, strict=True):
        assert {t.number for t in trials if t.user_attrs["worker"] == worker} == set(done)
    # Each stored value is the backtest of its parameters.
    overrides = [
        {"strategy.k_max": t.params["k_max"], "strategy.signal_power": t.params["power"]} for t in trials
    ]
    expected = xsmom.sweep(small, xsmom.Config.default(), overrides)
    assert [t.value for t in trials] == [m["sharpe"] for m in expected]


def _wait_for_a_study(dsn: str, process, timeout: float = 60.0) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with psycopg.connect(dsn) as connection:
                if connection.execute("SELECT count(*) FROM studies").fetchone()[0] > 0:
                    return
        except psycopg.Error:
            pass  # the optimizer has not created its tables yet
        time.sleep(0.1)
    raise AssertionError(f"no optuna study appeared in the storage (optimizer exit code {process.poll()})")


def test_optimize_worker_processes_share_the_study_in_postgresql(tmp_path, data_dir, postgres_url):
    """`xsmom optimize` and `xsmom optimize --worker` on one PostgreSQL storage (research.md §2)."""
    optuna = pytest.importorskip("optuna")
    import subprocess
    import sys

    url = postgres_url
    n_trials = 100
    common = ["--bars", str(data_dir), "--storage", url, "--trials", str(n_trials)]

    def start(*extra: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "xsmom", "optimize", *common, *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    # As in operation: the optimizer creates the storage and its study, then workers join.
    runs = [start("--out", str(tmp_path / "main"))]
    _wait_for_a_study(url.replace("+psycopg", ""), runs[0])
    runs.append(start("--worker", "--worker-index", "1", "--out", str(tmp_path / "worker")))
    outputs = [run.communicate(timeout=600) for run in runs]
    for run, (_, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err
    names = optuna.get_all_study_names(url)
    studies = {name: optuna.load_study(study_name=name, storage=url) for name in names}
    trials = {name: study.get_trials(deepcopy=False) for name, study in studies.items()}

    assert studies, "the optimizer created its studies in PostgreSQL"
    finished = {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    who = set()
    for name, found in trials.items():
        assert sorted(t.number for t in found) == list(range(len(found))), name
        assert len(found) >= n_trials, f"{name}: {len(found)} trials"
        assert all(t.state in finished for t in found), f"{name}: unfinished trials"
        # Duplicate parameter sets are not evaluated again (they carry duplicate_of instead).
        evaluated = [t for t in found if "duplicate_of" not in t.user_attrs]
        keys = [
            repr(sorted(t.params.items())) for t in evaluated if t.state == optuna.trial.TrialState.COMPLETE
        ]
        assert len(keys) == len(set(keys)), f"{name}: a parameter set was evaluated twice"
        who |= {t.user_attrs.get("evaluated_by") for t in evaluated}
    assert None not in who and len(who) == 2, f"both processes evaluated trials: {who}"
    assert (tmp_path / "main" / "candidate.json").exists()
