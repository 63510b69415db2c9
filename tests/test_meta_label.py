"""The meta-labeler (strategy.meta_label): its fit kernel against scikit-learn, its outputs and report."""

import math

import numpy as np
import pytest
import xsmom
from sklearn.linear_model import LogisticRegression
from xsmom import _core
from xsmom.report import meta_calibration, write_report


@pytest.mark.parametrize(("seed", "n", "d", "c"), [(1, 400, 3, 1.0), (2, 1500, 10, 0.1), (3, 250, 6, 10.0)])
def test_fit_logistic_matches_scikit_learn(seed, n, d, c):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    true = rng.normal(size=d)
    y = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-(x @ true + 0.3)))).astype(float)
    coef, intercept = _core.fit_logistic(x.tolist(), y.tolist(), c)
    reference = LogisticRegression(C=c, tol=1e-12, max_iter=100_000).fit(x, y)
    np.testing.assert_allclose(coef, reference.coef_[0], atol=1e-4, rtol=0)
    assert abs(intercept - reference.intercept_[0]) < 1e-4
    again = _core.fit_logistic(x.tolist(), y.tolist(), c)
    assert again == (coef, intercept), "bit-identical refits"


def test_fit_logistic_rejects_bad_input():
    with pytest.raises(ValueError):
        _core.fit_logistic([[1.0, 2.0], [3.0]], [0.0, 1.0], 1.0)
    with pytest.raises(ValueError):
        _core.fit_logistic([[1.0], [2.0]], [0.0, 1.0], 0.0)


META_ON = {
    "strategy.meta_label.enabled": True,
    "strategy.meta_label.min_train_trades": 30,
    "strategy.meta_label.refit_bars": 48,
}


def test_backtest_outputs_meta_p_and_skipped_entries(bars, funding):
    config = xsmom.Config.default().with_overrides(META_ON)
    res = xsmom.backtest(bars, config, funding=funding)
    scored = res.fills.filter(res.fills["meta_p"].is_not_nan())
    assert scored.height > 0
    assert ((scored["meta_p"] > 0) & (scored["meta_p"] < 1)).all()
    assert (scored["reason"] == "rebalance").all(), "only entries are scored"
    skipped = res.meta_skipped
    assert skipped.height > 0 and (skipped["p"] < 0.5).all()
    assert set(skipped["side"].unique()) <= {"long", "short"}
    calibration = meta_calibration(res)
    assert calibration["entries"].sum() > 0
    assert calibration["decile"].to_list() == sorted(calibration["decile"])
    assert calibration["mean_p"].is_sorted()


def test_report_shows_the_meta_labeler_only_when_on(bars, funding, tmp_path):
    on = xsmom.backtest(bars, xsmom.Config.default().with_overrides(META_ON), funding=funding)
    page = (write_report(on, tmp_path / "on") / "report.html").read_text()
    assert 'id="meta-label"' in page and "Skipped entries" in page and "Realised hit rate" in page
    off = xsmom.backtest(bars, xsmom.Config.default(), funding=funding)
    page = (write_report(off, tmp_path / "off") / "report.html").read_text()
    assert 'id="meta-label"' not in page


def test_meta_label_config_is_validated():
    with pytest.raises(ValueError, match="strategy.meta_label.threshold"):
        xsmom.Config.default().with_overrides({"strategy.meta_label.threshold": 2.0})
    with pytest.raises(ValueError, match="thresh"):
        xsmom.Config.from_yaml("strategy:\n  meta_label:\n    thresh: 0.6\n")
    cfg = xsmom.Config.default().to_dict()["strategy"]["meta_label"]
    assert cfg["enabled"] is False and cfg["refit_bars"] == 168 and cfg["min_train_trades"] == 200
    assert math.isclose(cfg["threshold"], 0.5)
