from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return ROOT / "data"


@pytest.fixture(scope="session")
def bars(data_dir):
    import xsmom

    return xsmom.read_bars(data_dir)


@pytest.fixture(scope="session")
def funding(data_dir):
    import xsmom

    return xsmom.read_funding(data_dir)
