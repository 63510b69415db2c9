"""A throwaway PostgreSQL server for tests: ``with postgres_server() as url: ...``.

It uses the Debian package's binaries (``initdb``, ``pg_ctl``, ``createdb`` on PATH or in
``/usr/lib/postgresql/<version>/bin``; ``scripts/test.sh`` installs the package when they are missing),
creates a cluster in a fresh temp directory, listens on 127.0.0.1 on a free port (its Unix socket in the
same directory), creates a database and yields an SQLAlchemy URL for it
(``postgresql+psycopg://postgres@127.0.0.1:<port>/<db>``). On exit the server is stopped and the
directory removed. ``initdb`` refuses to run as root, so as root every server command runs as the
``postgres`` system user (``runuser``, else ``su``) in a directory owned by it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries on this machine (the reason is the message)."""


def find_bin_dir() -> Path:
    found = shutil.which("initdb")
    if found:
        directory = Path(found).resolve().parent
        if (directory / "pg_ctl").exists():
            return directory
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if versions:
        return Path(versions[-1]).parent
    raise PostgresUnavailable(
        "PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin); "
        "scripts/test.sh installs the Debian package 'postgresql'"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _runner() -> tuple[list[str], str | None]:
    """The command prefix that runs a program as a non-root user, and that user's name."""
    if os.geteuid() != 0:
        return [], None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailable("running as root without a 'postgres' user to run the server") from None
    if shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--"], "postgres"
    return ["su", "postgres", "-s", "/bin/sh", "-c"], "postgres"


def _run(prefix: list[str], argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    if prefix and prefix[0] == "su":
        command = [*prefix, shlex.join(argv)]
    else:
        command = [*prefix, *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd="/")


@contextlib.contextmanager
def postgres_server(database: str = "xsmom_test") -> Iterator[str]:
    bin_dir = find_bin_dir()

    def pg(program: str) -> str:
        return str(bin_dir / program)

    prefix, user = _runner()
    root = Path(tempfile.mkdtemp(prefix="xsmom-pg-"))
    data = root / "data"
    log = root / "server.log"
    started = False
    try:
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        os.chmod(root, 0o700)
        init = _run(
            prefix,
            [pg("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
            timeout=120,
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr.strip() or init.stdout.strip()}")
        port = 0
        for _attempt in range(3):
            port = _free_port()
            options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
            start = _run(
                prefix,
                [pg("pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "60", "start"],
                timeout=90,
            )
            if start.returncode == 0:
                started = True
                break
        if not started:
            tail = log.read_text()[-2000:] if log.exists() else start.stderr
            raise RuntimeError(f"pg_ctl start failed: {tail.strip()}")
        createdb = [pg("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", database]
        create = _run(prefix, createdb)
        if create.returncode != 0:
            raise RuntimeError(f"createdb failed: {create.stderr.strip()}")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/{database}"
    finally:
        if started:
            stop = _run(prefix, [pg("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], timeout=60)
            if stop.returncode != 0:
                _run(prefix, [pg("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], timeout=60)
            time.sleep(0.1)
        shutil.rmtree(root, ignore_errors=True)
