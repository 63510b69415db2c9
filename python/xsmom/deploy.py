"""Versioned deployment of configs with a gate, atomic replacement and rollback (research.md §5).

Layout, next to the live config ``F``::

    <dir of F>/versions/<UTC yyyymmddTHHMMSSZ>_<sha8>.yaml   # the exact bytes of a config
    <dir of F>/versions/<UTC yyyymmddTHHMMSSZ>_<sha8>.json   # verdict, metrics, params, provenance
    <dir of F>/history.jsonl                                 # one line per deploy and rollback

- ``deploy(candidate, live)`` refuses an invalid candidate (validated by ``Config.load``) and one whose
  verdict (``candidate.json`` beside it) did not pass, unless ``force`` (recorded). Before the live file
  is replaced, its current bytes are kept as a version (unless a version already holds them).
- The live file is replaced atomically: temp file in the same directory, fsync, rename, fsync of the
  directory. A failure at any point before the rename leaves the live file as it was.
- ``rollback(live, to=None)`` restores a version byte for byte; without ``to`` it restores the config
  that was live before the current one was deployed.
- Deploying (or rolling back to) the bytes that are already live changes nothing and records nothing
  (``Outcome.action == "unchanged"``).
- Operations on one live file are serialised by an ``flock`` on ``<dir>/.deploy.lock``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import getpass
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xsmom.config import Config
from xsmom.exceptions import DeployError
from xsmom.files import atomic_write

VERSION_RE = re.compile(r"^(\d{8}T\d{6}Z)_([0-9a-f]{8})(?:-(\d+))?$")


@dataclass(frozen=True)
class Version:
    id: str
    path: Path
    created: dt.datetime
    sha256: str
    meta: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.meta.get("kind", "candidate"))


@dataclass(frozen=True)
class Outcome:
    action: str
    version: str
    previous: str | None
    live: Path
    forced: bool = False
    passed: bool | None = None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _append_line(path: Path, record: dict[str, Any]) -> None:
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


class Deployment:
    """The versions, history and live file of one deployment directory."""

    def __init__(self, live: str | Path) -> None:
        self.live = Path(live)
        self.dir = self.live.parent
        self.versions_dir = self.dir / "versions"
        self.history_path = self.dir / "history.jsonl"

    # -- locking ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if not self.dir.is_dir():
            raise DeployError(f"{self.dir}: the live config's directory does not exist")
        with open(self.dir / ".deploy.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- versions --------------------------------------------------------------------------------
    def versions(self) -> list[Version]:
        """Every stored version, oldest first."""
        out = []
        if not self.versions_dir.is_dir():
            return out
        for path in sorted(self.versions_dir.glob("*.yaml")):
            match = VERSION_RE.match(path.stem)
            if match is None:
                continue
            meta_path = path.with_suffix(".json")
            try:
                meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
            except ValueError as err:
                raise DeployError(f"{meta_path}: not valid JSON ({err})") from None
            created = dt.datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
            sha = meta.get("sha256") or _sha256(path.read_bytes())
            out.append(Version(path.stem, path, created, sha, meta))
        return out

    def find(self, ref: str) -> Version:
        """A version by id (``20250101T000000Z_abcdef12``), file name or unique sha prefix (≥ 8)."""
        name = Path(ref).name
        name = name[: -len(".yaml")] if name.endswith(".yaml") else name
        name = name[: -len(".json")] if name.endswith(".json") else name
        versions = self.versions()
        exact = [v for v in versions if v.id == name]
        if exact:
            return exact[0]
        if re.fullmatch(r"[0-9a-f]{8,64}", name):
            by_sha = {v.sha256: v for v in versions if v.sha256.startswith(name)}
            if len(by_sha) == 1:
                return next(iter(by_sha.values()))
            if len(by_sha) > 1:
                raise DeployError(f"version {ref!r} is ambiguous: {', '.join(v.id for v in by_sha.values())}")
        known = ", ".join(v.id for v in versions[-5:]) or "none"
        raise DeployError(f"no version {ref!r} in {self.versions_dir} (latest: {known})")

    def current(self) -> Version | None:
        """The version whose bytes the live file holds (the newest such), or None."""
        if not self.live.exists():
            return None
        sha = _sha256(self.live.read_bytes())
        matches = [v for v in self.versions() if v.sha256 == sha]
        return matches[-1] if matches else None

    def history(self) -> list[dict[str, Any]]:
        if not self.history_path.exists():
            return []
        records = []
        for number, line in enumerate(self.history_path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except ValueError as err:
                raise DeployError(f"{self.history_path}:{number}: not valid JSON ({err})") from None
        return records

    def _store(self, data: bytes, meta: dict[str, Any], when: dt.datetime) -> Version:
        """Store ``data`` as a new version (or return the existing one with the same bytes)."""
        sha = _sha256(data)
        for version in self.versions():
            if version.sha256 == sha and version.path.read_bytes() == data:
                return version
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        base = f"{when:%Y%m%dT%H%M%SZ}_{sha[:8]}"
        name, n = base, 1
        while (self.versions_dir / f"{name}.yaml").exists():
            n += 1
            name = f"{base}-{n}"
        meta = {**meta, "id": name, "sha256": sha, "created": when.isoformat().replace("+00:00", "Z")}
        yaml_path = self.versions_dir / f"{name}.yaml"
        # The JSON first: a version without its sidecar is never visible half-written.
        atomic_write(yaml_path.with_suffix(".json"), (json.dumps(meta, indent=2) + "\n").encode())
        atomic_write(yaml_path, data)
        return Version(name, yaml_path, when, sha, meta)

    def _preserve_live(self, when: dt.datetime) -> Version | None:
        """Keep the live file's current bytes as a version; None when there is no live file."""
        if not self.live.exists():
            return None
        data = self.live.read_bytes()
        meta = {"kind": "previous_live", "source": str(self.live)}
        return self._store(data, meta, when)

    def _record(self, action: str, version: Version, previous: Version | None, **extra: Any) -> None:
        record = {
            "ts": _now().isoformat().replace("+00:00", "Z"),
            "action": action,
            "version": version.id,
            "sha256": version.sha256,
            "previous": previous.id if previous else None,
            "live": str(self.live),
            "user": _user(),
            **extra,
        }
        _append_line(self.history_path, record)

    # -- operations ------------------------------------------------------------------------------
    def deploy(
        self, candidate: str | Path, *, force: bool = False, verdict: str | Path | None = None
    ) -> Outcome:
        candidate = Path(candidate)
        try:
            data = candidate.read_bytes()
        except OSError as err:
            raise DeployError(f"{candidate}: cannot read the candidate ({err.strerror or err})") from None
        try:
            Config.load(candidate)
        except (ValueError, OSError) as err:
            message = " ".join(str(err).split())
            raise DeployError(f"{candidate}: not a valid config, nothing deployed: {message}") from None
        verdict_path = Path(verdict) if verdict is not None else candidate.with_suffix(".json")
        report = _read_verdict(verdict_path, required=not force)
        passed = _passed(report, verdict_path) if report is not None else None
        if not force and not passed:
            failed = [
                f"{c.get('name')}={c.get('value')} (needs {c.get('threshold')})"
                for c in report.get("verdict", {}).get("checks", [])
                if not c.get("passed")
            ]
            detail = f"; failed: {', '.join(failed)}" if failed else ""
            said = report.get("verdict", {}).get("verdict")
            word = f" (verdict: {said})" if isinstance(said, str) else ""
            raise DeployError(
                f"{verdict_path}: the deployment gate did not pass{word}{detail}; nothing deployed "
                "(use --force to override, it is recorded)"
            )
        with self._locked():
            when = _now()
            previous = self._preserve_live(when)
            meta = {
                "kind": "candidate",
                "source": str(candidate.resolve()),
                "forced": force,
                "verdict_file": str(verdict_path) if report is not None else None,
            }
            if report is not None:
                meta.update({k: v for k, v in report.items() if k not in meta})
            version = self._store(data, meta, when)
            if previous is not None and previous.sha256 == version.sha256:
                # Already live: nothing to replace, nothing to record.
                return Outcome("unchanged", version.id, None, self.live, force, passed)
            atomic_write(self.live, data)
            self._record("deploy", version, previous, forced=force, passed=passed)
        return Outcome("deploy", version.id, previous.id if previous else None, self.live, force, passed)

    def stand_aside(self, verdict: str | Path | None = None, *, force: bool = False) -> Outcome:
        """Write the live config with ``live.trading: false`` (research.md §5): the runner flattens and
        stays flat. Everything else in the live file is kept (as YAML; comments are not). The verdict
        file (``candidate.json`` of an optimize run) must say ``stand aside`` unless ``force``.

        The written config is validated through ``Config`` before it replaces the live one.
        """
        import yaml

        report = None
        verdict_path = None
        if verdict is not None:
            verdict_path = Path(verdict)
            verdict_path = (
                verdict_path.with_suffix(".json") if verdict_path.suffix != ".json" else verdict_path
            )
            report = _read_verdict(verdict_path, required=True)
        elif not force:
            raise DeployError(
                "--stand-aside needs the optimize verdict (candidate.json) that says 'stand aside', "
                "or --force, which is recorded"
            )
        said = (report or {}).get("verdict", {}).get("verdict") if report else None
        if report is not None and said != "stand aside" and not force:
            raise DeployError(
                f"{verdict_path}: the verdict is {said or 'missing'!r}, not 'stand aside'; nothing deployed "
                "(use --force to override, it is recorded)"
            )
        if not self.live.exists():
            raise DeployError(f"{self.live}: no live config to stand aside from")
        try:
            doc = yaml.safe_load(self.live.read_text()) or {}
        except yaml.YAMLError as err:
            raise DeployError(f"{self.live}: not valid YAML ({' '.join(str(err).split())})") from None
        if not isinstance(doc, dict):
            raise DeployError(f"{self.live}: expected a YAML mapping at the top level")
        section = doc.get("live")
        if section is None:
            section = doc["live"] = {}
        if not isinstance(section, dict):
            raise DeployError(f"{self.live}: 'live' must be a mapping, got {section!r}")
        section["trading"] = False
        header = "# xsmom config deploy --stand-aside: no skill found; the runner closes every position\n"
        text = header + yaml.safe_dump(doc, sort_keys=False)
        try:
            Config.from_yaml(text)
        except ValueError as err:
            raise DeployError(f"{self.live}: the stand-aside config is not valid: {err}") from None
        data = text.encode()
        with self._locked():
            when = _now()
            previous = self._preserve_live(when)
            meta: dict[str, Any] = {
                "kind": "stand_aside",
                "source": str(self.live),
                "forced": force and said != "stand aside",
                "verdict_file": str(verdict_path) if verdict_path else None,
            }
            if report is not None:
                meta.update({k: v for k, v in report.items() if k not in meta})
            version = self._store(data, meta, when)
            if previous is not None and previous.sha256 == version.sha256:
                return Outcome("unchanged", version.id, None, self.live, force, False)
            atomic_write(self.live, data)
            self._record("stand_aside", version, previous, forced=meta["forced"], passed=False)
        return Outcome("stand_aside", version.id, previous.id if previous else None, self.live, force, False)

    def rollback(self, to: str | None = None) -> Outcome:
        with self._locked():
            if not self.live.exists() and to is None:
                raise DeployError(f"{self.live}: no live config to roll back from; use --to VERSION")
            current = self.current()
            if to is not None:
                target = self.find(to)
            else:
                target = self._before(current)
            data = target.path.read_bytes()
            if _sha256(data) != target.sha256:
                raise DeployError(f"{target.path}: its bytes do not match the recorded sha256; not restored")
            try:
                Config.load(target.path)
            except (ValueError, OSError) as err:
                message = " ".join(str(err).split())
                raise DeployError(
                    f"{target.path}: no longer a valid config, not restored: {message}"
                ) from None
            previous = self._preserve_live(_now())
            if previous is not None and previous.sha256 == target.sha256:
                return Outcome("unchanged", target.id, None, self.live)
            atomic_write(self.live, data)
            self._record("rollback", target, previous)
        return Outcome("rollback", target.id, previous.id if previous else None, self.live)

    def _before(self, current: Version | None) -> Version:
        """The version live before ``current`` was deployed (the latest deploy that made it live)."""
        if current is None:
            raise DeployError(
                f"{self.live}: the live config is not one of the stored versions; use --to VERSION"
            )
        history = self.history()
        for record in reversed(history):
            if record.get("action") in ("deploy", "stand_aside") and record.get("sha256") == current.sha256:
                if record.get("previous"):
                    return self.find(record["previous"])
                break
        raise DeployError(f"{self.live}: no config was live before version {current.id}; use --to VERSION")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _read_verdict(path: Path, required: bool) -> dict[str, Any] | None:
    if not path.exists():
        if required:
            raise DeployError(
                f"{path}: no verdict file beside the candidate; nothing deployed "
                "(run xsmom optimize, or use --force, which is recorded)"
            )
        return None
    try:
        report = json.loads(path.read_text())
    except ValueError as err:
        raise DeployError(f"{path}: not valid JSON ({err}); nothing deployed") from None
    if not isinstance(report, dict):
        raise DeployError(f"{path}: expected a JSON object with a 'verdict'; nothing deployed")
    return report


def _passed(report: dict[str, Any], path: Path) -> bool:
    verdict = report.get("verdict")
    if not isinstance(verdict, dict) or not isinstance(verdict.get("passed"), bool):
        raise DeployError(f"{path}: verdict.passed missing or not true/false; nothing deployed")
    checks = verdict.get("checks", [])
    if verdict["passed"] and any(isinstance(c, dict) and c.get("passed") is False for c in checks):
        raise DeployError(f"{path}: verdict.passed is true but a check failed; nothing deployed")
    return verdict["passed"]


def deploy(candidate: str | Path, live: str | Path, force: bool = False) -> Outcome:
    """Deploy ``candidate`` as the live config ``live`` (see the module docs)."""
    return Deployment(live).deploy(candidate, force=force)


def rollback(live: str | Path, to: str | None = None) -> Outcome:
    """Restore a stored version into ``live`` byte for byte (default: the one before the current)."""
    return Deployment(live).rollback(to)


def versions(live: str | Path) -> list[Version]:
    return Deployment(live).versions()
