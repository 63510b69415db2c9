"""The systemd units in deploy/systemd are what docs/operations.md promises."""

import configparser
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "deploy" / "systemd"


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keys are case-sensitive in systemd
    parser.read_string((UNITS / name).read_text().replace("\\\n", " "))
    return parser


def test_live_service_restarts_on_failure_hardened_and_secrets_from_the_environment_file():
    live = unit("xsmom-live.service")["Service"]
    assert live["Restart"] == "on-failure"
    assert live["KillSignal"] == "SIGTERM"
    assert live["EnvironmentFile"] == "/etc/xsmom/xsmom.env"
    for option in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "ProtectKernelTunables"):
        assert live[option] == "yes", option
    assert live["ProtectSystem"] == "strict"
    assert "xsmom-live run" in live["ExecStart"] and "--mode bybit" in live["ExecStart"]
    assert "API_KEY" not in live["ExecStart"] and "SECRET" not in live["ExecStart"]


def test_timers_never_start_their_jobs_on_install():
    timers = sorted(UNITS.glob("*.timer"))
    assert {t.stem for t in timers} == {"xsmom-optimize", "xsmom-daily-report", "xsmom-health"}
    for path in timers:
        timer = unit(path.name)["Timer"]
        assert "OnCalendar" in timer, path.name
        assert timer.get("Persistent", "false") == "false", path.name
        for immediate in ("OnActiveSec", "OnBootSec", "OnStartupSec"):
            assert immediate not in timer, f"{path.name}: {immediate} would run the job at install"
        assert (UNITS / f"{path.stem}.service").exists()


def test_env_example_holds_no_secret_values():
    for line in (UNITS / "xsmom.env.example").read_text().splitlines():
        if line.startswith(("BYBIT_API_KEY=", "BYBIT_API_SECRET=", "DISCORD_WEBHOOK_URL=")):
            assert line.endswith("="), line


OPERATIONS = ROOT / "docs" / "operations.md"
INSTALL_DIR = re.compile(r"install -d -o (\w+) -g (\w+) -m (0\d{3}) (\S+)")


def _documented_dirs() -> dict[str, tuple[str, str, int]]:
    """``path → (owner, group, mode)`` of every ``install -d`` in operations.md."""
    text = OPERATIONS.read_text()
    return {m[4]: (m[1], m[2], int(m[3], 8)) for m in INSTALL_DIR.finditer(text)}


def _flag(command: str, flag: str) -> str:
    return command.split(flag, 1)[1].split()[0]


def test_units_and_operations_agree_on_the_live_config_layout():
    optimize = unit("xsmom-optimize.service")["Service"]
    live = unit("xsmom-live.service")["Service"]
    target = Path(_flag(optimize["ExecStartPost"], "--live"))
    assert _flag(live["ExecStart"], "--config") == str(target)
    assert _flag(optimize["ExecStart"], "--config") == str(target)
    writable = optimize["ReadWritePaths"].split()
    assert str(target.parent) in writable, "the optimize unit can write where deploy replaces the file"
    assert "/etc/xsmom" not in writable, "but not the secrets' directory"
    assert any(str(target).startswith(p) for p in live["ReadOnlyPaths"].split()), "the runner cannot"
    dirs = _documented_dirs()
    assert dirs[str(target.parent)][0] == optimize["User"] == "xsmom"
    assert "XSMOM_LOG=" in OPERATIONS.read_text() and "RUST_LOG" not in OPERATIONS.read_text()
    for name in ("xsmom-optimize.service", "xsmom-daily-report.service"):
        assert "MPLCONFIGDIR=/var/lib/xsmom/" in unit(name)["Service"]["Environment"], name


def _deploy_as(uid: int, gid: int, candidate: Path, live_file: Path) -> str:
    """Deploy in a forked child running as ``uid:gid`` (modules imported before the fork, so the child
    needs no access to the interpreter's files); returns "ok" or the error."""
    from xsmom.deploy import Deployment

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop privileges for good, deploy, report through the pipe
        os.close(read)
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            Deployment(live_file).deploy(candidate)
            message = "ok"
        except BaseException as err:  # noqa: BLE001 - reported to the parent
            message = f"{type(err).__name__}: {err}"
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        message = pipe.read()
    os.waitpid(pid, 0)
    return message


def _layout(root: Path, dirs: dict[str, tuple[str, str, int]], ids: dict[str, int]) -> None:
    for path, (owner, group, mode) in sorted(dirs.items()):
        where = root / path.lstrip("/")
        where.mkdir(parents=True, exist_ok=True)
        os.chown(where, ids[owner], ids[group])
        os.chmod(where, mode)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to switch users")
def test_the_optimize_user_can_deploy_on_the_documented_layout():
    # pytest's tmp_path sits under a 0700 directory of root's; this tree must be reachable by the user.
    base = Path(tempfile.mkdtemp(prefix="xsmom-layout-"))
    try:
        _deploy_on_layouts(base)
    finally:
        shutil.rmtree(base)


def _deploy_on_layouts(tmp_path: Path) -> None:
    import xsmom
    from xsmom.deploy import Deployment

    uid = gid = 64_123  # an unused id: no account needed to hold files and run a process
    ids = {"root": 0, "xsmom": uid}
    os.chmod(tmp_path, 0o755)
    target = Path(_flag(unit("xsmom-optimize.service")["Service"]["ExecStartPost"], "--live"))
    candidate_dir = tmp_path / "var/lib/xsmom/optimize/latest"
    candidate_dir.mkdir(parents=True)
    candidate = candidate_dir / "candidate.yaml"
    candidate.write_text(xsmom.Config.default().with_overrides({"strategy.k_max": 4}).to_yaml())
    checks = [{"name": "delta_sharpe", "value": 0.2, "threshold": 0.05, "passed": True}]
    (candidate_dir / "candidate.json").write_text(json.dumps({"verdict": {"passed": True, "checks": checks}}))
    for path in (tmp_path / "var", tmp_path / "var/lib", tmp_path / "var/lib/xsmom", candidate_dir.parent):
        os.chmod(path, 0o755)
    os.chmod(candidate_dir, 0o755)

    # A first deploy as root on a scratch copy loads every module the deploy imports lazily, so that the
    # unprivileged child never needs to read the interpreter's files (under root's 0700 home here).
    scratch = tmp_path / "scratch" / "live.yaml"
    scratch.parent.mkdir()
    scratch.write_text(xsmom.Config.default().to_yaml())
    Deployment(scratch).deploy(candidate)

    documented = tmp_path / "documented"
    _layout(documented, _documented_dirs(), ids)
    live_file = documented / str(target).lstrip("/")
    live_file.write_text(xsmom.Config.default().to_yaml())
    os.chown(live_file, uid, gid)
    assert _deploy_as(uid, gid, candidate, live_file) == "ok"
    assert "k_max: 4" in live_file.read_text()
    assert (live_file.parent / "versions").is_dir()

    # The layout issue 14 reported: live.yaml directly in /etc/xsmom (root:xsmom 0750) — refused.
    old = tmp_path / "old"
    _layout(old, {"/etc/xsmom": ("root", "xsmom", 0o750)}, ids)
    old_file = old / "etc/xsmom/live.yaml"
    old_file.write_text(xsmom.Config.default().to_yaml())
    os.chown(old_file, 0, gid)
    os.chmod(old_file, 0o640)
    message = _deploy_as(uid, gid, candidate, old_file)
    assert message.startswith("PermissionError") and ".deploy.lock" in message, message
