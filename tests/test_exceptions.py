"""Errors arrive as the classes of xsmom.exceptions — chosen by the core's error kind, not by text —
and stay the builtins callers caught before (ValueError, OSError)."""

import socket

import polars as pl
import pytest
import xsmom
from xsmom import _core
from xsmom.exceptions import (
    ConfigError,
    DataError,
    DataFormatError,
    ExchangeError,
    FileAccessError,
    InvalidArgumentError,
    ResearchError,
    UnknownKeyError,
    XsmomError,
)


def test_a_typo_in_a_key_is_an_unknown_key_a_bad_value_is_a_config_error():
    with pytest.raises(UnknownKeyError, match="unknown config key 'strategy.kmax'") as typo:
        xsmom.Config.default().with_overrides({"strategy.kmax": 4})
    assert isinstance(typo.value, ConfigError | ValueError | XsmomError)
    assert typo.value.key == "strategy.kmax", "the key itself, not to be parsed from the text"
    with pytest.raises(ConfigError, match="out of range") as ranged:
        xsmom.Config.default().with_overrides({"strategy.k_max": 0})
    assert not isinstance(ranged.value, UnknownKeyError)
    with pytest.raises(UnknownKeyError, match="unknown field `kmax`") as in_yaml:
        xsmom.Config.from_yaml("strategy:\n  kmax: 4\n")
    assert in_yaml.value.key == "strategy.kmax"


def test_files_data_and_formats(tmp_path, bars):
    with pytest.raises(FileAccessError) as missing:
        xsmom.read_bars(tmp_path / "nowhere")
    assert isinstance(missing.value, OSError) and "nowhere" in str(missing.value)
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet at all")
    with pytest.raises(DataFormatError) as bad:
        xsmom.read_bars(junk)
    assert isinstance(bad.value, DataError | ValueError)
    doubled = pl.concat([bars.head(50), bars.head(50)])
    with pytest.raises(DataError) as refused:
        xsmom.Dataset(doubled)
    assert "duplicate" in str(refused.value) and not isinstance(refused.value, DataFormatError)


def test_inconsistent_arguments_and_research_input():
    with pytest.raises(InvalidArgumentError):
        _core.mc_bootstrap([0.01], 10, 0, None, 8760.0)
    from xsmom import research

    assert issubclass(research.ResearchError, XsmomError) and research.ResearchError is ResearchError
    with pytest.raises(ResearchError):
        research.load_space("/no/space.yaml")


def test_an_unreachable_exchange_is_an_exchange_error(tmp_path):
    with socket.socket() as probe:  # a port with nothing listening on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ExchangeError) as unreachable:
        _core.fetch_store(
            str(tmp_path / "store"),
            ["BTCUSDT"],
            1_735_689_600_000,
            1_735_696_800_000,
            base_url=f"http://127.0.0.1:{port}",
            timeout_secs=1.0,
            retries=0,
        )
    assert isinstance(unreachable.value, ConnectionError | OSError)
    assert str(unreachable.value).startswith("exchange: ")
