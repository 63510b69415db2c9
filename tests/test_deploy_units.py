"""The systemd units in deploy/systemd are what docs/operations.md promises."""

import configparser
from pathlib import Path

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
