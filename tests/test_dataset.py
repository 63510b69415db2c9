"""Validate once, backtest many (``xsmom.Dataset``) and tables built by choice (``outputs``)."""

import polars as pl
import pytest
import xsmom
from polars.testing import assert_frame_equal


@pytest.fixture(scope="module")
def dataset(bars, funding):
    return xsmom.Dataset(bars, funding)


def test_a_dataset_backtests_as_its_frame_does(bars, funding, dataset, data_dir):
    cfg = xsmom.Config.default()
    from_frame = xsmom.backtest(bars, cfg, funding=funding, outputs=("equity", "weights", "fills", "trades"))
    from_dataset = xsmom.backtest(dataset, cfg)
    assert from_dataset.metrics == from_frame.metrics
    for name in ("equity", "weights", "fills", "trades"):
        assert_frame_equal(getattr(from_dataset, name), getattr(from_frame, name))
    assert from_dataset.warnings == from_frame.warnings
    # The same from a store path (the store's own funding) and from the dataset's own long tables.
    assert xsmom.backtest(xsmom.Dataset(data_dir), cfg).metrics == from_frame.metrics
    again = xsmom.Dataset(pl.DataFrame(dataset.bars()), pl.DataFrame(dataset.funding()))
    assert xsmom.backtest(again, cfg).metrics == from_frame.metrics


def test_dataset_facts_and_findings(bars, dataset):
    assert dataset.n_symbols == bars["symbol"].n_unique()
    assert dataset.n_bars == bars["ts"].n_unique()
    assert dataset.symbols == sorted(bars["symbol"].unique().to_list())
    assert dataset.has_funding
    assert_frame_equal(xsmom.validate_bars(dataset), xsmom.validate_bars(bars))
    assert "Dataset(32 symbols" in repr(dataset)
    # Findings of a bad frame: the dataset keeps them, and refuses errors unless told to drop them.
    dup = pl.concat([bars, bars.head(1)])
    with pytest.raises(ValueError, match="duplicate"):
        xsmom.Dataset(dup)
    dropped = xsmom.Dataset(dup, on_invalid="drop")
    findings = pl.DataFrame(dropped.findings())
    assert findings.filter(pl.col("kind") == "duplicate").height == 1
    with pytest.raises(ValueError, match="on_invalid: expected refuse or drop"):
        xsmom.Dataset(bars, on_invalid="keep")


def test_spike_thresholds_of_a_dataset(bars, dataset):
    def spikes(findings):
        return pl.DataFrame(findings).filter(pl.col("kind") == "spike").height

    default = spikes(dataset.findings())
    assert spikes(xsmom.Dataset(bars, spike_mads=8.0, spike_window=500).findings()) == default
    stricter = xsmom.Dataset(bars, spike_mads=12)
    assert 0 < spikes(stricter.findings()) < default
    assert_frame_equal(pl.DataFrame(stricter.findings()), xsmom.validate_bars(bars, spike_mads=12))
    assert spikes(xsmom.Dataset(bars, spike_window=50).findings()) != default
    with pytest.raises(ValueError, match=r"data.spike_mads = 0.5 is out of range: allowed \[1, 1000\]"):
        xsmom.Dataset(bars, spike_mads=0.5)
    with pytest.raises(ValueError, match=r"data.spike_window = 60000 is out of range"):
        xsmom.validate_bars(bars, spike_window=60000)


def test_a_dataset_is_used_as_it_was_built(dataset, funding):
    with pytest.raises(ValueError, match="carries its own funding"):
        xsmom.backtest(dataset, None, funding=funding)
    four_hours = xsmom.Config.default().with_overrides({"data.timeframe": "4h"})
    with pytest.raises(ValueError, match="config data.timeframe 4h differs from the dataset's 1h"):
        xsmom.backtest(dataset, four_hours)


def test_sweep_and_signals_take_a_dataset(bars, funding, dataset):
    grid = [{"strategy.k_max": k} for k in (3, 5)]
    assert xsmom.sweep(dataset, None, grid) == xsmom.sweep(bars, None, grid, funding=funding)
    assert_frame_equal(xsmom.signals(xsmom.Dataset(bars)), xsmom.signals(bars))


def test_outputs_by_choice(dataset):
    cfg = xsmom.Config.default()
    lean = xsmom.backtest(dataset, cfg, outputs=("equity",))
    assert set(lean._tables) == {"equity"}
    full = xsmom.backtest(dataset, cfg, outputs=("equity", "weights", "fills", "trades"))
    # Tables not asked for are built on first access from the finished run, and are the same.
    assert_frame_equal(lean.weights, full.weights)
    assert_frame_equal(lean.fills, full.fills)
    assert set(lean._tables) == {"equity", "weights", "fills"}
    assert lean.has_target and lean.first_decision is not None
    # Tables built with the run stay Arrow until first read, then are one polars frame, kept.
    assert not isinstance(full._tables["trades"], pl.DataFrame)
    trades = full.trades
    assert isinstance(trades, pl.DataFrame) and full.trades is trades
    assert_frame_equal(trades, lean.trades)
    with pytest.raises(ValueError, match='outputs: unknown table "orders"'):
        xsmom.backtest(dataset, cfg, outputs=("orders",))


def test_weights_wide_is_the_long_table_pivoted(dataset):
    result = xsmom.backtest(dataset)
    for column in ("target_weight", "model_weight", "weight", "units"):
        wide = result.weights_wide(column)
        assert wide.columns == ["ts", *result.symbols]
        pivoted = (
            result.weights.pivot(on="symbol", index="ts", values=column)
            .sort("ts")
            .fill_null(0.0)
            .select(wide.columns)
        )
        assert_frame_equal(wide, pivoted, check_dtypes=False)
    with pytest.raises(ValueError, match="column: expected"):
        result.weights_wide("price")


@pytest.mark.parametrize("symbol_type", [pl.Categorical, pl.String], ids=["categorical", "string"])
def test_symbol_columns_of_any_text_type(bars, funding, symbol_type):
    cfg = xsmom.Config.default()
    want = xsmom.backtest(bars, cfg, funding=funding).metrics
    cast = bars.with_columns(pl.col("symbol").cast(symbol_type))
    assert xsmom.backtest(cast, cfg, funding=funding).metrics == want
    # Unsorted input in several chunks: copied, sorted and reported, with the same result.
    shuffled = pl.concat([cast.sample(fraction=1.0, shuffle=True, seed=3).slice(0, 1000), cast.slice(0, 0)])
    rest = cast.join(shuffled, on=["ts", "symbol"], how="anti")
    mixed = pl.concat([shuffled, rest], rechunk=False)
    result = xsmom.backtest(mixed, cfg, funding=funding)
    assert result.metrics == want
    assert any(w.startswith("data unsorted") for w in result.warnings)


def _with_defects(bars: pl.DataFrame) -> pl.DataFrame:
    """The fixture with a spike, a zero volume and a gap planted in one symbol each."""
    symbols = sorted(bars["symbol"].unique().to_list())
    ts = sorted(bars["ts"].unique().to_list())
    spike = (pl.col("symbol") == symbols[0]) & (pl.col("ts") == ts[len(ts) // 2])
    zero = (pl.col("symbol") == symbols[1]) & (pl.col("ts") == ts[len(ts) // 3])
    gap = (pl.col("symbol") == symbols[2]) & (pl.col("ts") == ts[len(ts) // 4])
    planted = bars.with_columns(
        pl.when(spike).then(pl.col("close") * 3).otherwise(pl.col("close")).alias("close"),
        pl.when(spike).then(pl.col("high") * 3).otherwise(pl.col("high")).alias("high"),
        pl.when(zero).then(0.0).otherwise(pl.col("volume")).alias("volume"),
    ).filter(~gap)
    return planted.sort("symbol", "ts")


def test_warnings_found_beside_the_engine_are_the_validations(bars, funding, tmp_path):
    # A backtest from a frame or a file finds the warnings of error-free bars while the engine
    # runs; they must be the same lines, in the same place, as a Dataset's validation done first.
    cfg = xsmom.Config.default()
    planted = _with_defects(bars)
    from_dataset = xsmom.backtest(xsmom.Dataset(planted, funding), cfg)
    kinds = [w.split(":")[0] for w in from_dataset.warnings]
    assert {"data gap", "data spike", "data zero_volume"} <= set(kinds), from_dataset.warnings
    file = tmp_path / "planted.parquet"
    planted.write_parquet(file)
    for source in (planted, file):
        result = xsmom.backtest(source, cfg, funding=funding)
        assert result.warnings == from_dataset.warnings
        assert result.metrics == from_dataset.metrics
        assert_frame_equal(result.equity, from_dataset.equity)


def test_bars_with_an_error_still_take_the_validation_first(bars, funding):
    cfg = xsmom.Config.default()
    row_10 = pl.int_range(pl.len()) == 10
    broken = bars.with_columns(pl.when(row_10).then(float("nan")).otherwise(pl.col("close")).alias("close"))
    with pytest.raises(ValueError, match="non_finite"):
        xsmom.backtest(broken, cfg, funding=funding)
    with pytest.raises(ValueError, match="non_finite"):
        xsmom.signals(broken, cfg)
    dropping = cfg.with_overrides({"data.on_invalid": "drop"})
    dropped = xsmom.backtest(broken, dropping, funding=funding)
    expected = xsmom.backtest(xsmom.Dataset(broken, funding, on_invalid="drop"), dropping)
    assert dropped.warnings == expected.warnings
    assert any("dropped" in w for w in dropped.warnings)
    assert dropped.metrics == expected.metrics
