import math

import polars as pl
import pytest
import xsmom
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from xsmom import _core

UTC_MS = pl.Datetime("ms", "UTC")


def test_read_bars_selection(data_dir):
    bars = xsmom.read_bars(data_dir, symbols=["BTCUSDT", "ETHUSDT"], start="2025-07-01", end="2025-07-02")
    assert bars.schema["ts"] == UTC_MS
    assert bars.height == 48
    assert sorted(bars["symbol"].unique().to_list()) == ["BTCUSDT", "ETHUSDT"]
    assert bars["ts"].min().isoformat() == "2025-07-01T00:00:00+00:00"


def test_backtest_result_schemas(bars, funding, data_dir):
    res = xsmom.backtest(bars, xsmom.Config.default(), funding=funding)
    assert res.equity.schema["ts"] == UTC_MS
    assert res.equity.columns[:12] == [
        "ts",
        "equity",
        "cash",
        "gross",
        "net",
        "turnover",
        "fees",
        "funding",
        "n_long",
        "n_short",
        "regime",
        "k",
    ]
    assert res.weights.columns == ["ts", "symbol", "target_weight", "model_weight", "weight", "units"]
    assert res.weights.schema["ts"] == UTC_MS
    fill_columns = ["ts", "symbol", "side", "qty", "price", "notional", "fee", "reason", "meta_p"]
    assert res.fills.columns == fill_columns
    assert res.fills["meta_p"].is_nan().all(), "the meta-labeler is off by default"
    assert res.meta_skipped.columns == ["ts", "symbol", "side", "p"] and res.meta_skipped.height == 0
    assert res.trades.columns == [
        "symbol",
        "side",
        "entry_ts",
        "exit_ts",
        "entry_price",
        "exit_price",
        "qty",
        "pnl",
        "return",
        "bars_held",
        "exit_reason",
    ]
    assert res.trades.schema["entry_ts"] == UTC_MS
    assert res.equity.height == bars["ts"].n_unique()
    assert set(res.fills["reason"].unique()) <= {
        "rebalance",
        "stop",
        "trail",
        "breakeven",
        "take_profit",
        "time",
        "kill_switch",
        "flatten",
    }
    for key in [
        "total_return",
        "cagr",
        "vol",
        "sharpe",
        "sortino",
        "max_drawdown",
        "calmar",
        "turnover_per_year",
        "exposure",
        "fees",
        "funding",
        "round_trips",
        "win_rate",
        "profit_factor",
        "avg_bars_held",
        "skew",
        "kurtosis",
        "psr",
    ]:
        assert key in res.metrics
    # Equity and metrics agree.
    assert math.isclose(res.metrics["final_equity"], res.equity["equity"][-1])
    # The store path and the DataFrame give the same result.
    from_path = xsmom.backtest(data_dir, xsmom.Config.default())
    assert from_path.metrics == res.metrics


def test_missing_funding_is_reported(bars):
    res = xsmom.backtest(bars, xsmom.Config.profile("xsmom-bot-v1"))
    assert any("no funding data" in w for w in res.warnings)


def test_sweep_equals_sequential_backtests(bars, funding):
    cfg = xsmom.Config.profile("xsmom-bot-v1")
    overrides = [{"strategy.k_max": k, "strategy.signal_power": p} for k in (3, 5) for p in (1.0, 1.5)]
    swept = xsmom.sweep(bars, cfg, overrides, n_jobs=2, funding=funding)
    for override, metrics in zip(overrides, swept, strict=True):
        single = xsmom.backtest(bars, cfg.with_overrides(override), funding=funding).metrics
        assert metrics == pytest.approx(single, nan_ok=True, rel=0, abs=0)


def test_alternating_configs_each_run_as_their_own(bars, funding):
    # The core keeps the last parsed config: alternating configs must not run on a stale one.
    a = xsmom.Config.default()
    b = a.with_overrides({"strategy.k_max": 3, "strategy.signal_power": 1.5})
    first = {name: xsmom.backtest(bars, cfg, funding=funding) for name, cfg in (("a", a), ("b", b))}
    again_a = xsmom.backtest(bars, a, funding=funding)
    again_b = xsmom.backtest(bars, b, funding=funding)
    assert first["a"].metrics != first["b"].metrics
    assert again_a.metrics == first["a"].metrics and again_b.metrics == first["b"].metrics
    assert again_a.config == a and again_b.config == b
    for _ in range(2):
        with pytest.raises(ValueError, match="unknown field `nope`"):
            _core.backtest(bars, a.to_yaml() + "nope: 1\n")


def test_sweep_rejects_a_bad_override_set(bars):
    with pytest.raises(ValueError, match="override set 1: unknown config key 'strategy.nope'"):
        xsmom.sweep(bars, None, [{"strategy.k_max": 3}, {"strategy.nope": 1}])


def test_signals_frame(bars):
    sig = xsmom.signals(
        bars.filter(pl.col("symbol").is_in(["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT"]))
    )
    assert sig.columns == ["ts", "symbol", "momentum", "z", "signal", "eligible"]
    eligible = sig.filter(pl.col("eligible"))
    assert eligible.height > 0
    # z has mean 0 over the eligible set of each bar.
    per_bar = eligible.group_by("ts").agg(pl.col("z").mean().abs().alias("m"), pl.len().alias("n"))
    assert per_bar.filter(pl.col("n") >= 2)["m"].max() < 1e-9


def test_validate_bars_reports_duplicates(bars):
    dup = pl.concat([bars.head(5), bars.head(1)])
    findings = xsmom.validate_bars(dup)
    assert findings.columns == ["symbol", "ts", "kind", "severity", "detail"]
    assert "duplicate" in findings["kind"].to_list()
    with pytest.raises(
        ValueError, match=r"validation error\(s\) in the bars; first: 1000PEPEUSDT .* duplicate"
    ):
        xsmom.backtest(dup)


def test_result_plot(bars, funding):
    import matplotlib

    matplotlib.use("Agg")
    fig = xsmom.backtest(bars, None, funding=funding).plot()
    assert len(fig.axes) >= 4


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    k_max=st.integers(2, 8),
    power=st.floats(0.5, 2.5),
    weighting=st.sampled_from(["equal", "inverse_vol", "signal_inverse_vol"]),
    fill=st.sampled_from(["close", "next_open"]),
)
def test_metrics_finite_for_valid_configs(bars, k_max, power, weighting, fill):
    cfg = xsmom.Config.default().with_overrides(
        {
            "strategy.k_max": k_max,
            "strategy.signal_power": power,
            "sizing.weighting": weighting,
            "backtest.fill": fill,
        }
    )
    res = xsmom.backtest(bars, cfg)
    for key in ["total_return", "sharpe", "max_drawdown", "vol", "final_equity"]:
        assert math.isfinite(res.metrics[key]), key
    assert res.equity["equity"].min() > 0
