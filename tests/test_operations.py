"""Every command in docs/operations.md, executed as written on a scratch root.

The commands are read from the document (its ``bash`` blocks and every inline code span that starts
with a command), so a command added to the document without a handler here fails the test. Absolute
paths are moved under a scratch root (``/etc/xsmom`` → ``<root>/etc/xsmom``, …), ``sudo`` is dropped
(the test runs as root) and the ``xsmom`` account is a numeric id. What cannot run in a test — systemd
and journald, creating a system account — is checked for what it relies on (the unit it names is
installed by the document's own commands) and listed in ``NOT_RUN`` with the reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import xsmom

ROOT = Path(__file__).resolve().parent.parent
OPERATIONS = ROOT / "docs" / "operations.md"
COMMAND_WORDS = ("sudo", "xsmom", "xsmom-live", "systemctl", "journalctl", "cargo", "pip")
XSMOM_UID = 64_123  # the `xsmom` system account of the document, as an unused numeric id
SANDBOXED = ("/etc/", "/var/lib/", "/usr/local", "/opt/", "/tmp/")


def documented_commands() -> list[str]:
    """Commands of operations.md in document order: lines of ```bash blocks (comments cut) and inline
    code spans whose first word is a command (one-word spans are names, not commands)."""
    text = OPERATIONS.read_text()
    commands: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                commands.append(line)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`([^`]+)`", prose):
        span = " ".join(span.split())
        words = span.split()
        if len(words) > 1 and words[0] in COMMAND_WORDS:
            commands.append(span)
    return commands


def xsmom_live_binary() -> str | None:
    """$XSMOM_LIVE (scripts/test.sh sets it), PATH, or the cargo target folder."""
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "xsmom-live"
    for candidate in (os.environ.get("XSMOM_LIVE"), shutil.which("xsmom-live"), str(target)):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


class Sandbox:
    """A scratch root standing in for ``/``, and the runs of the document's commands on it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ran: list[str] = []

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    def rewrite(self, command: str) -> str:
        # One pass: the root itself sits under /tmp/, so a second pass would move it again.
        prefixes = "|".join(re.escape(p) for p in SANDBOXED)
        command = re.sub(rf"(?<![\w./-])({prefixes})", lambda m: f"{self.root}{m.group(1)}", command)
        command = re.sub(r"^sudo (-u \w+ )?", "", command)
        return re.sub(r"-([og]) xsmom\b", rf"-\1 {XSMOM_UID}", command)

    def run(self, command: str, *, env: dict[str, str] | None = None, timeout: float = 600) -> str:
        """Run the rewritten command with bash in the clone; returns stdout, fails on exit ≠ 0."""
        rewritten = self.rewrite(command)
        live = xsmom_live_binary()
        full_env = {**os.environ, **(env or {})}
        # `xsmom` and `xsmom-live` as installed: this interpreter's package, the built binary.
        shims = self.root / "shims"
        shims.mkdir(exist_ok=True)
        (shims / "xsmom").write_text(f'#!/bin/sh\nexec {sys.executable} -m xsmom "$@"\n')
        (shims / "xsmom-live").write_text(f'#!/bin/sh\nexec {live} "$@"\n')
        for shim in shims.iterdir():
            shim.chmod(0o755)
        full_env["PATH"] = f"{shims}{os.pathsep}{full_env.get('PATH', '')}"
        proc = subprocess.run(
            ["bash", "-c", rewritten], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout
        )
        assert proc.returncode == 0, f"{command}\n(ran: {rewritten})\n{proc.stderr}"
        self.ran.append(command)
        self.last_stderr = proc.stderr
        return proc.stdout


def _installed_unit(box: Sandbox, name: str) -> None:
    unit = name if "." in name else f"{name}.service"
    assert box.path(f"/etc/systemd/system/{unit}").is_file(), f"{unit} is not installed by the document"


def _systemctl(box: Sandbox, command: str) -> None:
    """systemd does not run in a test: the unit a systemctl/journalctl command names must be one the
    document's install step put in /etc/systemd/system."""
    words = command.split()
    if words[-1] == "daemon-reload":
        assert list(box.path("/etc/systemd/system").glob("*.service")), "no unit installed"
        return
    if "list-timers" in words:
        assert {p.name for p in box.path("/etc/systemd/system").glob("xsmom*.timer")} == {
            "xsmom-optimize.timer",
            "xsmom-daily-report.timer",
            "xsmom-health.timer",
        }
        return
    name = words[words.index("-u") + 1] if "-u" in words else words[-1]
    _installed_unit(box, name)


def _cargo_install(box: Sandbox, command: str) -> None:
    box.run(command, timeout=1800)
    binary = box.path("/usr/local/bin/xsmom-live")
    assert binary.is_file()
    shown = subprocess.run([binary, "--help"], capture_output=True, text=True)
    assert shown.returncode == 0 and "xsmom-live run --config F" in shown.stdout, shown


def _install(box: Sandbox, command: str) -> None:
    box.run(command)
    target = box.rewrite(command).split()[-1]
    assert Path(target).exists(), target


def _replay(box: Sandbox, command: str) -> None:
    box.run(command, env={"XSMOM_LOG": "debug"})
    assert "DEBUG" in box.last_stderr, "XSMOM_LOG=debug, as the document says, turns on debug logs"
    out = box.path("/tmp/replay")
    assert {"weights.parquet", "fills.parquet", "equity.parquet"} <= {p.name for p in out.iterdir()}
    # The service's files live in /var/lib/xsmom: the later commands read them there.
    shutil.copy(box.path("/tmp/s.json"), box.path("/var/lib/xsmom/state.json"))
    shutil.copy(box.path("/tmp/h.json"), box.path("/var/lib/xsmom/heartbeat.json"))


def _health(box: Sandbox, command: str) -> None:
    assert "last bar" in box.run(command)


def _state_show(box: Sandbox, command: str) -> None:
    shown = box.run(command)
    assert "last bar 2025-" in shown and "{" not in shown


def _versions(box: Sandbox, command: str) -> None:
    box.run(command)


def _rollback(box: Sandbox, command: str) -> None:
    """Deploy a candidate that passed the gate (as the optimiser does), then roll back as written."""
    live_file = box.path("/etc/xsmom/live/live.yaml")
    original = live_file.read_bytes()
    candidate = box.path("/var/lib/xsmom/optimize/latest/candidate.yaml")  # where the optimiser writes it
    candidate.parent.mkdir(parents=True)
    candidate.write_text(xsmom.Config.load(live_file).with_overrides({"strategy.k_max": 2}).to_yaml())
    checks = [{"name": "delta_sharpe", "value": 0.2, "threshold": 0.05, "passed": True}]
    verdict = {"verdict": {"passed": True, "checks": checks}}
    candidate.with_suffix(".json").write_text(json.dumps(verdict))
    box.run(
        "xsmom config deploy /var/lib/xsmom/optimize/latest/candidate.yaml --live /etc/xsmom/live/live.yaml"
    )
    assert live_file.read_bytes() != original
    box.run(command.replace("[--to VERSION] ", ""))
    assert live_file.read_bytes() == original, "rollback restores the previous version byte for byte"


def _covered_by_the_test_command(box: Sandbox, command: str) -> None:
    """cargo test of the soak: scripts/test.sh runs every cargo test target, this one included."""
    assert "cargo test --release --all-targets" in (ROOT / "scripts" / "test.sh").read_text()
    assert "fn soak_a_hundred_bars" in (ROOT / "tests" / "live_bybit.rs").read_text()


def _live_cycle(box: Sandbox, command: str) -> None:
    out = box.run(command, env={"LIVE_CYCLE_WARMUP": "300", "LIVE_CYCLE_MEASURED": "50"}, timeout=900)
    assert "CPU" in out or "cpu" in out, out


def _pip_install(box: Sandbox, command: str) -> None:
    """`pip install .`: what it gives a user in a fresh venv is tests/test_fresh_install.py."""
    assert (ROOT / "tests" / "test_fresh_install.py").is_file()


def _prose(box: Sandbox, command: str) -> None:
    """A command named in a sentence (`xsmom config deploy`, `sudo -u xsmom`): run in its full form by
    the rollback step, and as the unprivileged user by tests/test_deploy_units.py."""


HANDLERS: list[tuple[str, Callable[[Sandbox, str], None]]] = [
    (r"cargo install --locked --path \. --bin xsmom-live --root /usr/local$", _cargo_install),
    (r"sudo useradd ", lambda box, c: None),
    (r"sudo install ", _install),
    (r"(sudo )?systemctl |journalctl ", _systemctl),
    (r"xsmom-live run --config examples/live\.yaml --mode replay ", _replay),
    (r"xsmom-live health --heartbeat /var/lib/xsmom/heartbeat\.json$", _health),
    (r"xsmom-live state show --state /var/lib/xsmom/state\.json$", _state_show),
    (r"xsmom config versions --live /etc/xsmom/live/live\.yaml$", _versions),
    (r"xsmom config rollback \[--to VERSION\] --live /etc/xsmom/live/live\.yaml$", _rollback),
    (r"cargo test --release --test live_bybit", _covered_by_the_test_command),
    (r"cargo run --release --example live_cycle$", _live_cycle),
    (r"pip install \.$", _pip_install),
    (r"xsmom config deploy(/rollback)?$|sudo -u xsmom$", _prose),
]

NOT_RUN = {
    "sudo useradd": "creates a system account: the sandbox uses the numeric id 64123 for xsmom",
    "systemctl": "no systemd in a test: the unit it names must be installed by the document's commands",
    "journalctl": "no journald in a test: the unit it names must be installed by the document's commands",
}


def _handler(command: str) -> Callable[[Sandbox, str], None]:
    matching = [h for pattern, h in HANDLERS if re.match(pattern, command)]
    assert len(matching) == 1, f"operations.md command with {len(matching)} handlers here: {command!r}"
    return matching[0]


def test_every_command_of_the_document_has_exactly_one_handler():
    commands = documented_commands()
    assert len(commands) >= 20, commands
    for command in commands:
        _handler(command)
    assert any(c.startswith("cargo install") for c in commands)


@pytest.mark.skipif(xsmom_live_binary() is None, reason="xsmom-live is not built (cargo build --release)")
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="install -o needs root")
def test_every_command_of_the_document_works_as_written():
    # Not pytest's tmp_path (under a 0700 directory): the layout's modes must be checkable as they are.
    root = Path(tempfile.mkdtemp(prefix="xsmom-ops-"))
    try:
        box = Sandbox(root)
        for prefix in ("/tmp", "/usr/local", "/etc/systemd/system"):
            box.path(prefix).mkdir(parents=True, exist_ok=True)
        commands = documented_commands()
        # Installation first (the block), then the rest in document order.
        for command in commands:
            _handler(command)(box, command)
        layout = {
            "/etc/xsmom": (0, XSMOM_UID, 0o750),
            "/etc/xsmom/live": (XSMOM_UID, XSMOM_UID, 0o750),
            "/var/lib/xsmom": (XSMOM_UID, XSMOM_UID, 0o750),
        }
        for path, (uid, gid, mode) in layout.items():
            st = box.path(path).stat()
            assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (uid, gid, mode), path
        assert box.path("/etc/xsmom/xsmom.env").stat().st_mode & 0o777 == 0o600
        ran = {c.split()[0] if not c.startswith("sudo") else c.split()[1] for c in box.ran}
        assert {"cargo", "install", "xsmom-live", "xsmom"} <= ran, ran
    finally:
        shutil.rmtree(root)
