import pytest
import xsmom


def test_yaml_round_trip_and_dict():
    cfg = xsmom.Config.default()
    again = xsmom.Config.from_yaml(cfg.to_yaml())
    assert again == cfg
    d = cfg.to_dict()
    assert d["strategy"]["lookbacks"] == [12, 24, 48, 96]
    assert d["sizing"]["vol_target"]["target_ann_vol"] == 0.24
    assert d["backtest"]["accounting"] == "units"


def test_load_from_file(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("strategy:\n  k_max: 4\n")
    cfg = xsmom.Config.load(path)
    assert cfg.to_dict()["strategy"]["k_max"] == 4
    assert cfg.to_dict()["strategy"]["k_min"] == 2  # defaults fill the rest


def test_overrides_including_list_index_and_shorthand():
    cfg = xsmom.Config.default().with_overrides(
        {
            "strategy.k_max": 4,
            "strategy.lookbacks[0]": 6,
            "risk.atr_mult_sl": 2.5,
            "sizing.weighting": "equal",
        }
    )
    d = cfg.to_dict()
    assert d["strategy"]["k_max"] == 4
    assert d["strategy"]["lookbacks"] == [6, 24, 48, 96]
    assert d["risk"]["stops"]["atr_mult_sl"] == 2.5
    assert d["sizing"]["weighting"] == "equal"
    assert xsmom.Config.default().to_dict()["strategy"]["k_max"] == 6, "the original is unchanged"


def test_override_errors_name_the_key():
    cfg = xsmom.Config.default()
    with pytest.raises(ValueError, match=r"unknown config key 'strategy.kmax'"):
        cfg.with_overrides({"strategy.kmax": 4})
    with pytest.raises(ValueError, match=r"strategy.k_max = 0 is out of range: allowed \[1, 1000\]"):
        cfg.with_overrides({"strategy.k_max": 0})
    with pytest.raises(ValueError, match=r"index 7 is out of range"):
        cfg.with_overrides({"strategy.lookbacks[7]": 3})


def test_unknown_key_in_file_and_profiles(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("strategy:\n  kmax: 4\n")
    with pytest.raises(ValueError, match=r"bad.yaml: strategy: unknown field `kmax`"):
        xsmom.Config.load(path)
    v1 = xsmom.Config.profile("xsmom-bot-v1").to_dict()
    assert v1["backtest"]["accounting"] == "weights" and v1["strategy"]["k_mode"] == "static"
    with pytest.raises(ValueError, match="unknown profile 'nope'"):
        xsmom.Config.profile("nope")
    with pytest.raises(OSError, match="missing.yaml"):
        xsmom.Config.load(tmp_path / "missing.yaml")


def test_overrides_as_text_are_yaml_values_like_the_cli_set():
    base = xsmom.Config.default()
    typed = base.with_overrides({"strategy.k_max": 4, "strategy.lookbacks[0]": 6})
    assert base.with_override_text([("strategy.k_max", "4"), ("strategy.lookbacks[0]", "6")]) == typed
    with pytest.raises(ValueError, match="unknown config key 'strategy.kmax'"):
        base.with_override_text([("strategy.kmax", "4")])
