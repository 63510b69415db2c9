"""Optuna storages and studies: journal files, RDB URLs (redacted in every message), derived
study names and the resume check."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from xsmom.config import Config
from xsmom.research.settings import Objective, ResearchError, WalkForward, iso_date
from xsmom.research.space import Param


def _sampler(seed: int) -> Any:
    import optuna

    return optuna.samplers.TPESampler(multivariate=True, constant_liar=True, seed=seed, n_startup_trials=10)


def sampler_seed(seed: int, study_index: int, worker_index: int) -> int:
    """The TPE seed of study ``study_index`` (segment j, then the final study) in worker
    ``worker_index`` (0 = the main process): ``seed + worker_index``, offset per study."""
    return seed + worker_index + 10_007 * study_index


def study_identity(
    panel: Any, config: Config, space: Sequence[Param], seed: int, wfo: WalkForward, objective: Objective
) -> dict[str, Any]:
    """What a study's name is derived from (and what a ``resume`` must match)."""
    ts = panel.ts
    return {
        "data_range": [ts[0], ts[-1] + panel.timeframe_ms],
        "symbols": hashlib.sha256(",".join(panel.symbols).encode()).hexdigest()[:12],
        "config": hashlib.sha256(config.to_yaml().encode()).hexdigest()[:12],
        "space": hashlib.sha256(
            json.dumps([asdict(p) for p in space], sort_keys=True, default=str).encode()
        ).hexdigest()[:12],
        "seed": seed,
        "walk_forward": json.dumps(asdict(wfo), sort_keys=True),
        "objective": json.dumps(asdict(objective), sort_keys=True),
    }


def study_name_for(identity: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
    start, end = identity["data_range"]
    day = lambda ms: dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y%m%d")  # noqa: E731
    return f"xsmom-{day(start)}-{day(end)}-s{identity['seed']}-{digest}"


def _difference(stored: dict[str, Any], now: dict[str, Any]) -> str | None:
    """The first field in which two identities differ, in words; None when they match."""
    for key in ("data_range", "symbols", "config", "space", "seed", "walk_forward", "objective"):
        a, b = stored.get(key), now.get(key)
        if a == b:
            continue
        if key == "data_range" and isinstance(a, list) and len(a) == 2:
            stored, now = f"{iso_date(a[0])} to {iso_date(a[1])}", f"{iso_date(b[0])} to {iso_date(b[1])}"
            return f"data range differs (stored {stored}, now {now})"
        label = {"symbols": "symbol set", "space": "search space", "walk_forward": "walk-forward"}.get(
            key, key
        )
        return f"{label} differs (stored {a}, now {b})"
    return None


def open_study(
    name: str,
    storage: Any,
    seed: int,
    worker: bool,
    resume: bool,
    identity: dict[str, Any],
    where: str,
) -> Any:
    import optuna

    if worker:
        deadline = time.monotonic() + 60.0
        while True:
            try:
                return optuna.load_study(study_name=name, storage=storage, sampler=_sampler(seed))
            except KeyError:
                if time.monotonic() > deadline:
                    raise ResearchError(
                        f"study {name!r} does not exist in the storage (start optimize first)"
                    ) from None
                time.sleep(0.2)
    try:
        study = optuna.load_study(study_name=name, storage=storage, sampler=_sampler(seed))
    except KeyError:
        study = None
    if study is not None:
        if not resume:
            raise ResearchError(
                f"study {name!r} already exists in {where}; pass --resume to continue it "
                "(or use another --study or storage)"
            )
        difference = _difference(study.user_attrs.get("xsmom") or {}, identity)
        if difference:
            raise ResearchError(f"cannot resume study {name!r}: its {difference}")
        return study
    study = optuna.create_study(
        study_name=name, storage=storage, sampler=_sampler(seed), direction="maximize"
    )
    study.set_user_attr("xsmom", identity)
    return study


def check_resume_target(storage: Any, name: str, identity: dict[str, Any], where: str) -> None:
    """``resume`` of a study that does not exist: refuse, naming how the stored studies differ."""
    import optuna

    summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    names = {s.study_name for s in summaries}
    if any(n.startswith(f"{name}-") for n in names):
        return
    for s in summaries:
        stored = s.user_attrs.get("xsmom")
        if stored:
            difference = _difference(stored, identity) or "identity differs"
            prefix = s.study_name.rsplit("-", 1)[0]
            raise ResearchError(f"cannot resume: {where} holds study {prefix!r}, whose {difference}")
    raise ResearchError(f"cannot resume: {where} holds no study {name!r}")


def journal_storage(path: Path, own: bool = False) -> Any:
    """An optuna JournalStorage on the file ``path``. ``own``: this process is the only writer (the
    default storage of ``optimize``): the logs are kept in memory and appended to the file without
    an fsync per append (optuna's file backend fsyncs every write, ≈ 2.5× the wall time of a
    study here); the file is flushed after each append and has the same format, so a later
    ``resume`` or optuna's own ``JournalFileBackend`` reads it."""
    import optuna

    if own:
        return optuna.storages.JournalStorage(_OwnJournal(path))
    backend = optuna.storages.journal.JournalFileBackend(str(path))
    return optuna.storages.JournalStorage(backend)


class _OwnJournal:
    """A single-process journal backend (see ``journal_storage``)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.logs: list[dict[str, Any]] = []
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    self.logs.append(json.loads(line))
                except ValueError:  # a line cut short by a crash: the logs before it are valid
                    break
        self.file = open(self.path, "a")  # noqa: SIM115 (open for the life of the storage)

    def read_logs(self, log_number_from: int) -> list[dict[str, Any]]:
        return self.logs[log_number_from:]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        self.logs.extend(logs)
        self.file.write("".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs))
        self.file.flush()

    def __del__(self) -> None:
        file = getattr(self, "file", None)
        if file is not None and not file.closed:
            file.flush()
            os.fsync(file.fileno())
            file.close()


def open_any_storage(storage: Any, out_dir: Path | None, worker: bool, resume: bool) -> tuple[Any, str]:
    """The storage object and its (redacted) description. Default: the journal file
    ``<out>/optuna.journal`` (replaced by a fresh one unless ``resume``), in memory without ``out``."""
    import optuna

    if storage is not None and not isinstance(storage, str):
        return storage, type(storage).__name__  # an optuna storage object, used as given
    if storage is None:
        if worker:
            raise ResearchError("a worker needs the storage of the study it joins (storage=...)")
        if out_dir is None:
            return optuna.storages.InMemoryStorage(), "in memory"
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "optuna.journal"
        if not resume:
            # The default storage belongs to this run: start fresh (same seed → same result).
            path.unlink(missing_ok=True)
        return journal_storage(path, own=True), str(path)
    if storage == "sqlite:///:memory:":
        return optuna.storages.InMemoryStorage(), "in memory"
    if storage.startswith("journal:") or storage.endswith(".journal") or "://" not in storage:
        path = Path(storage.removeprefix("journal:").removeprefix("//"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return journal_storage(path), str(path)
    return (_open_as_worker(storage) if worker else open_storage(storage)), redact(storage)


def open_storage(url: str) -> Any:
    """An optuna storage for ``url``. SQLite files get WAL and ``synchronous=OFF``: each commit
    would otherwise fsync (≈ 13 ms here) and a study makes several commits per trial."""
    import optuna

    if not url.startswith("sqlite:///") or url == "sqlite:///:memory:":
        return url
    import sqlalchemy

    storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})

    def pragmas(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        # WAL is persistent in the file; switching needs a lock another process may hold, so only once.
        if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=OFF")
        cursor.close()

    sqlalchemy.event.listen(storage.engine, "connect", pragmas)
    storage.engine.dispose()  # connections opened while creating the schema lack the pragmas
    return optuna.storages._CachedStorage(storage)


def _open_as_worker(url: str, timeout: float = 60.0) -> Any:
    """Open a storage that the main process may be creating right now (schema creation races)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return open_storage(url)
        except Exception as err:  # SQLAlchemy/alembic errors while the schema is being created
            if isinstance(err, ImportError) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def redact(url: str) -> str:
    """A storage URL without its password (reports never carry secrets)."""
    if "://" in url and "@" in url.split("://", 1)[1]:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def scrub(message: str, url: str | None) -> str:
    """``message`` on one line with the password of storage ``url`` masked."""
    text = " ".join(str(message).split())
    if url and "://" in url and "@" in url.split("://", 1)[1]:
        creds = url.split("://", 1)[1].rsplit("@", 1)[0]
        if ":" in creds:
            text = text.replace(creds.split(":", 1)[1], "***")
    return text
