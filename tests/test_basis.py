"""Basis carry (issue 16): mark-price bars reach the carry sleeve from a store, a frame or a Dataset."""

from pathlib import Path

import polars as pl
import pytest
import xsmom

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
NO_MARK = ["1000PEPEUSDT", "DOGEUSDT", "ENAUSDT", "RENDERUSDT", "SOLUSDT", "SUIUSDT", "TONUSDT"]


def carry(basis_weight: float) -> xsmom.Config:
    return xsmom.Config.default().with_overrides(
        {
            "strategy.carry.enabled": True,
            "strategy.carry.basis_weight": basis_weight,
            "strategy.carry.min_funding_ann": 0.15,
        }
    )


def test_read_bars_of_kind_mark_and_the_traded_kind_unchanged():
    mark = xsmom.read_bars(DATA, kind="mark")
    assert mark["symbol"].n_unique() == 25 and not set(NO_MARK) & set(mark["symbol"].unique())
    assert mark["volume"].is_nan().all()
    traded = xsmom.read_bars(DATA)
    assert traded["symbol"].n_unique() == 32 and traded["volume"].is_finite().all()
    with pytest.raises(ValueError, match="unknown bar kind 'last'"):
        xsmom.read_bars(DATA, kind="last")


@pytest.fixture(scope="module")
def runs():
    return {w: xsmom.backtest(DATA, carry(w)) for w in (0.0, 1095.0)}


def test_a_store_backtest_reads_the_mark_bars_when_the_basis_term_is_on(runs):
    off, on = runs[0.0], runs[1095.0]
    assert not any("mark" in w for w in off.warnings)
    (warning,) = [w for w in on.warnings if "no mark data" in w]
    assert all(symbol in warning for symbol in NO_MARK) and "BTCUSDT" not in warning
    assert on.metrics != off.metrics, "the premium changes the carry book"
    # Basis weight 0 is the funding sleeve exactly, with or without mark bars given.
    mark = xsmom.read_bars(DATA, kind="mark")
    with_mark = xsmom.backtest(DATA, carry(0.0), mark=mark)
    assert with_mark.metrics == off.metrics


def test_mark_from_a_frame_and_from_a_dataset_match_the_store(runs):
    on = runs[1095.0]
    bars, funding = xsmom.read_bars(DATA), xsmom.read_funding(DATA)
    mark = xsmom.read_bars(DATA, kind="mark")
    from_frame = xsmom.backtest(bars, carry(1095.0), funding=funding, mark=mark)
    assert from_frame.metrics == on.metrics
    dataset = xsmom.Dataset(DATA)
    assert dataset.has_mark
    assert xsmom.backtest(dataset, carry(1095.0)).metrics == on.metrics
    assert not xsmom.Dataset(bars, funding).has_mark
    with pytest.raises(ValueError, match="mark: a Dataset carries its own mark data"):
        xsmom.backtest(dataset, carry(1095.0), mark=mark)
    # Without mark bars the sleeve runs on funding and says so.
    bare = xsmom.backtest(bars, carry(1095.0), funding=funding)
    assert any("there is no mark data" in w for w in bare.warnings)
    assert bare.metrics == xsmom.backtest(DATA, carry(0.0)).metrics


def test_basis_config_keys_are_validated():
    with pytest.raises(ValueError, match=r"strategy.carry.basis_weight = -1 is out of range"):
        xsmom.Config.default().with_overrides({"strategy.carry.basis_weight": -1})
    with pytest.raises(ValueError, match=r"strategy.carry.basis_ema_bars = 0 is out of range"):
        xsmom.Config.default().with_overrides({"strategy.carry.basis_ema_bars": 0})
    with pytest.raises(ValueError, match=r"unknown config key 'strategy.carry.basis_wieght'"):
        xsmom.Config.default().with_overrides({"strategy.carry.basis_wieght": 1})
    cfg = xsmom.Config.default().to_dict()["strategy"]["carry"]
    assert (cfg["basis_weight"], cfg["basis_ema_bars"]) == (0.0, 24)


def test_sample_store_has_mark_bars():
    from xsmom.datasets import sample_store

    store = sample_store()
    mark = xsmom.read_bars(store, kind="mark")
    assert mark["symbol"].n_unique() == 10
    size = sum(p.stat().st_size for p in store.rglob("*.parquet"))
    assert size < 2_000_000
    assert isinstance(pl.DataFrame(mark), pl.DataFrame)


def test_sweeps_over_the_basis_weight_see_the_mark_bars_locally_and_on_an_executor(runs):
    """A sweep from a base without the basis term still reads the store's mark bars when a set turns
    it on; an executor ships them (from a store or a Dataset) and gives the local results."""
    from concurrent.futures import ProcessPoolExecutor

    sets = [{"strategy.carry.basis_weight": 0.0}, {"strategy.carry.basis_weight": 1095.0}]
    local = xsmom.sweep(DATA, carry(0.0), sets, n_jobs=1)
    assert local[0] == runs[0.0].metrics and local[1] == runs[1095.0].metrics
    dataset = xsmom.Dataset(DATA)
    assert xsmom.sweep(dataset, carry(0.0), sets, n_jobs=1) == local
    mark = xsmom.read_bars(DATA, kind="mark")
    bars, funding = xsmom.read_bars(DATA), xsmom.read_funding(DATA)
    assert xsmom.sweep(bars, carry(0.0), sets, funding=funding, mark=mark, n_jobs=1) == local
    with ProcessPoolExecutor(max_workers=2) as pool:
        assert xsmom.sweep(DATA, carry(0.0), sets, n_jobs=1, executor=pool) == local
        assert xsmom.sweep(dataset, carry(0.0), sets, n_jobs=1, executor=pool) == local


def test_a_dataset_gives_back_its_mark_closes():
    dataset = xsmom.Dataset(DATA)
    mark = pl.DataFrame(dataset.mark())
    assert mark.columns[:6] == ["ts", "symbol", "open", "high", "low", "close"]
    assert mark["symbol"].n_unique() == 25
    assert (mark["open"] == mark["close"]).all() and (mark["high"] == mark["close"]).all()
    rebuilt = xsmom.Dataset(pl.DataFrame(dataset.bars()), pl.DataFrame(dataset.funding()), mark=mark)
    assert xsmom.backtest(rebuilt, carry(1095.0)).metrics == xsmom.backtest(dataset, carry(1095.0)).metrics
    assert xsmom.Dataset(xsmom.read_bars(DATA)).mark() is None


def test_resample_makes_coarser_mark_bars_beside_the_traded_ones(tmp_path):
    import shutil
    import subprocess
    import sys

    store = tmp_path / "store"
    shutil.copytree(DATA / "bars", store / "bars")
    shutil.copytree(DATA / "funding", store / "funding")
    subprocess.run(
        # The fixture's finest bars are 5m (traded only): resample its hourly bars, which have mark bars.
        [sys.executable, "-m", "xsmom", "data", "resample", "--store", str(store), "--to", "4h"]
        + ["--from", "1h"],
        capture_output=True,
        text=True,
        check=True,
    )
    hourly = xsmom.read_bars(DATA, kind="mark").filter(pl.col("symbol") == "BTCUSDT")
    four = xsmom.read_bars(store, timeframe="4h", kind="mark").filter(pl.col("symbol") == "BTCUSDT")
    assert hourly.height // 4 - 1 <= four.height <= hourly.height // 4
    last_hour = hourly.group_by_dynamic("ts", every="4h").agg(pl.col("close").last().alias("last"))
    joined = four.join(last_hour, on="ts")
    assert joined.height == four.height and (joined["close"] == joined["last"]).all()
    on = xsmom.backtest(store, carry(1095.0).with_overrides({"data.timeframe": "4h"}))
    assert not any("there is no mark data" in w for w in on.warnings)


def test_the_core_says_which_configs_read_mark_bars():
    from xsmom import _core

    assert _core.config_wants_mark(carry(1095.0).to_yaml())
    assert not _core.config_wants_mark(carry(0.0).to_yaml())
    no_carry = xsmom.Config.default().with_overrides({"strategy.carry.basis_weight": 5.0})
    assert not _core.config_wants_mark(no_carry.to_yaml()), "the basis term lives in the carry sleeve"
