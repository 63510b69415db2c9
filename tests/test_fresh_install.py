"""What a newcomer gets from README's `pip install .`: the wheel (built once by scripts/test.sh,
passed as XSMOM_WHEEL) installed into a fresh venv with only its declared dependencies, used from
an empty folder — no clone, no ./data, no extras."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

WHEEL = os.environ.get("XSMOM_WHEEL")

pytestmark = pytest.mark.skipif(
    not WHEEL, reason="XSMOM_WHEEL not set: scripts/test.sh builds the wheel and sets it"
)


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fresh-venv")
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(root)
    python = root / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", WHEEL],
        check=True,
        timeout=900,
    )
    return root


def _xsmom(venv_root: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{venv_root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        [str(venv_root / "bin" / "xsmom"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_fresh_venv_has_only_the_declared_dependencies(fresh_venv):
    probe = "import importlib.util as u; print(u.find_spec('optuna') is None, u.find_spec('pytest') is None)"
    out = subprocess.run(
        [str(fresh_venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["True", "True"], "the fresh venv must not see the test environment"
    assert sys.prefix != str(fresh_venv)


def test_optimize_without_the_research_extra_gives_one_line_naming_it(fresh_venv, tmp_path):
    proc = _xsmom(fresh_venv, "optimize", "--bars", "nowhere", "--out", "o", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == "xsmom: error: optimize needs optuna: pip install 'xsmom[research]'\n"
    assert not (tmp_path / "o").exists()


def test_backtest_from_an_empty_folder_runs_on_the_packaged_sample(fresh_venv, tmp_path):
    proc = _xsmom(fresh_venv, "backtest", "--out", "report", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "sample store" in proc.stderr
    assert "sharpe" in proc.stdout
    assert (tmp_path / "report" / "metrics.json").stat().st_size > 0
    assert (tmp_path / "report" / "report.html").stat().st_size > 0
