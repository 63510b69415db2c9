"""The ``xsmom`` command end to end, in temporary directories, through the installed console script."""

import io
import json
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest
import xsmom


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("xsmom")
    assert exe, "the xsmom console script is installed"
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_backtest_default_prints_metrics_and_writes_report(tmp_path, data_dir):
    shutil.copytree(data_dir, tmp_path / "data")
    proc = run("backtest", "--out", "report", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "sharpe" in proc.stdout and "max_drawdown" in proc.stdout
    out = tmp_path / "report"
    for name in [
        "metrics.json",
        "equity.parquet",
        "weights.parquet",
        "fills.parquet",
        "trades.parquet",
        "report.html",
        "tearsheet.png",
    ]:
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    equity = pl.read_parquet(out / "equity.parquet")
    assert metrics["final_equity"] == pytest.approx(equity["equity"][-1])
    assert equity.schema["ts"] == pl.Datetime("ms", "UTC")
    page = (out / "report.html").read_text()
    assert "Sharpe" in page and "lookbacks" in page and "data:image/png;base64," in page
    assert "data spike" in page, "data warnings are in the report"
    assert (out / "tearsheet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_backtest_json_profile_and_set(tmp_path, data_dir):
    proc = run(
        "backtest",
        "--bars",
        str(data_dir),
        "--profile",
        "xsmom-bot-v1",
        "--set",
        "strategy.k_max=4",
        "--json",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout)
    expected = xsmom.backtest(
        data_dir, xsmom.Config.profile("xsmom-bot-v1").with_overrides({"strategy.k_max": 4})
    )
    assert metrics["sharpe"] == pytest.approx(expected.metrics["sharpe"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["backtest", "--bars", "nope"], "xsmom: error: nope: no such file or directory"),
        (
            ["backtest", "--bars", "{data}", "--profile", "nope"],
            "xsmom: error: unknown profile 'nope': known profiles are default, xsmom-bot-v1",
        ),
        (
            ["backtest", "--bars", "{data}", "--set", "strategy.kmax=3"],
            "xsmom: error: --set strategy.kmax: unknown config key (did you mean strategy.k_max",
        ),
        (
            ["backtest", "--bars", "{data}", "--set", "novalue"],
            "xsmom: error: --set 'novalue' is not of the form key.path=value",
        ),
        (
            ["backtest", "--bars", "{data}", "--set", "sizing.gross_leverage=50"],
            "xsmom: error: --set sizing.gross_leverage=50: out of range, allowed [0, 10]",
        ),
        (["backtest", "--bars", "{data}", "--config", "{bad_yaml}"], "strategy: unknown field `kmax`"),
        (["backtest", "--bars", "{corrupt}"], "not a valid Parquet file"),
        (["backtest", "--frobnicate"], "xsmom: error: unrecognized arguments: --frobnicate"),
        (["data", "validate"], "xsmom: error: data validate needs exactly one of --store DIR or FILE"),
    ],
)
def test_every_error_is_one_line_and_exit_2(tmp_path, data_dir, args, message):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("strategy:\n  kmax: 4\n")
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 garbage")
    subs = {"{data}": str(data_dir), "{bad_yaml}": str(bad_yaml), "{corrupt}": str(corrupt)}
    proc = run(*[subs.get(a, a) for a in args], cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert message in lines[0]
    assert lines[0].startswith("xsmom: error: ")


def test_data_ingest_validate_resample(tmp_path, data_dir):
    five = xsmom.read_bars(data_dir, symbols=["DOGEUSDT"], timeframe="5m")
    src = tmp_path / "doge_5m.parquet"
    five.write_parquet(src)
    store = tmp_path / "store"
    proc = run("data", "ingest", str(src), "--store", str(store), "--timeframe", "5m", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"{five.height} rows added" in proc.stdout
    proc = run("data", "ingest", str(src), "--store", str(store), "--timeframe", "5m", cwd=tmp_path)
    assert "0 rows added" in proc.stdout and f"{five.height} replaced" in proc.stdout

    proc = run("data", "validate", "--store", str(store), "--timeframe", "5m", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 error(s)" in proc.stdout

    proc = run("data", "resample", "--store", str(store), "--to", "1h", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    hourly = xsmom.read_bars(store, timeframe="1h")
    real = xsmom.read_bars(data_dir, symbols=["DOGEUSDT"], start="2025-06-01", end="2025-07-01")
    assert hourly.select("ts", "open", "high", "low", "close").equals(
        real.select("ts", "open", "high", "low", "close")
    )

    bad = pl.concat([five.head(10), five.head(1)])
    bad_file = tmp_path / "dup.parquet"
    bad.write_parquet(bad_file)
    proc = run("data", "validate", str(bad_file), "--timeframe", "5m", cwd=tmp_path)
    assert proc.returncode == 1
    assert "duplicate" in proc.stdout and "1 error(s)" in proc.stdout
    proc = run("data", "ingest", str(bad_file), "--store", str(store), "--timeframe", "5m", cwd=tmp_path)
    assert proc.returncode == 2 and "duplicate" in proc.stderr


def test_data_compact_rewrites_a_zstd_store_with_the_same_bars(tmp_path, data_dir):
    # A store as an earlier version wrote it: zstd files (polars' default codec).
    store = tmp_path / "store"
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    for part in ["bars/timeframe=1h", "funding"]:
        for symbol in symbols:
            source = data_dir / part / f"symbol={symbol}" / "2025.parquet"
            target = store / part / f"symbol={symbol}" / "2025.parquet"
            target.parent.mkdir(parents=True)
            pl.read_parquet(source).write_parquet(target, compression="zstd", statistics=True)
    bars, funding = xsmom.read_bars(store), xsmom.read_funding(store)
    before = xsmom.backtest(store)
    proc = run("data", "compact", "--store", str(store), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "6 file(s) rewritten" in proc.stdout
    assert xsmom.read_bars(store).equals(bars) and xsmom.read_funding(store).equals(funding)
    assert xsmom.backtest(store).equity.equals(before.equity)
    proc = run("data", "compact", "--store", str(store), cwd=tmp_path)
    assert "0 file(s) rewritten" in proc.stdout
    proc = run("data", "compact", "--store", str(tmp_path / "missing"), cwd=tmp_path)
    assert proc.returncode == 2 and "not a store directory" in proc.stderr


def test_backtest_from_an_empty_folder_runs_on_the_bundled_sample(tmp_path):
    from xsmom.datasets import sample_store

    store = sample_store()
    size = sum(p.stat().st_size for p in store.rglob("*.parquet"))
    assert size < 2_000_000 and any(store.glob("funding/symbol=*/*.parquet"))
    proc = run("backtest", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "using the bundled sample store" in proc.stderr and str(store) in proc.stderr
    expected = xsmom.backtest(store).metrics
    assert json.loads(proc.stdout)["final_equity"] == pytest.approx(expected["final_equity"])
    assert list(tmp_path.iterdir()) == []


BLOCK_OPTUNA = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "optuna":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
from xsmom.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_missing_extra_gives_one_line_naming_it(tmp_path, data_dir):
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_OPTUNA, "optimize", "--bars", str(data_dir), "--out", "o"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr == "xsmom: error: optimize needs optuna: pip install 'xsmom[research]'\n"
    assert not (tmp_path / "o").exists()


def _stderr_warnings(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("xsmom: warning: ")]


def test_backtest_that_cannot_trade_warns(tmp_path, data_dir):
    one = xsmom.read_bars(data_dir, symbols=["BTCUSDT"])
    one.write_parquet(tmp_path / "one.parquet")
    proc = run("backtest", "--bars", "one.parquet", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (
        "xsmom: warning: no decision bar: the strategy never took a position (strategy.k_min 2 needs at "
        "least 4 symbols, the data has 1); every metric is zero"
    ) in _stderr_warnings(proc)
    short = xsmom.read_bars(data_dir, end="2025-06-05")
    short.write_parquet(tmp_path / "short.parquet")
    proc = run("backtest", "--bars", "short.parquet", cwd=tmp_path)
    assert (
        "xsmom: warning: warm-up longer than the data: strategy.regime_filter.ema_len needs 200 bars before "
        f"the first decision, the data has {short['ts'].n_unique()}; every metric is zero"
    ) in _stderr_warnings(proc)


def test_gross_held_below_target_by_caps_warns(tmp_path, data_dir):
    proc = run("backtest", "--bars", str(data_dir), "--set", "sizing.gross_leverage=5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    [line] = [w for w in _stderr_warnings(proc) if "gross exposure" in w]
    assert line.startswith("xsmom: warning: gross exposure below sizing.gross_leverage 5 (× vol scale) on ")
    assert "the caps bind (sizing.max_weight_per_asset 0.09" in line
    # Caps loose enough to reach the target: no warning.
    proc = run(
        "backtest",
        "--bars",
        str(data_dir),
        "--set",
        "sizing.max_weight_per_asset=1",
        "--set",
        "sizing.gross_leverage=0.5",
        "--set",
        "sizing.vol_target.enabled=false",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert not [w for w in _stderr_warnings(proc) if "gross exposure" in w], proc.stderr


def test_spike_findings_summarised_per_symbol_and_written(tmp_path, data_dir):
    proc = run("backtest", "--bars", str(data_dir), "--out", "r", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    table = pl.read_parquet(tmp_path / "r" / "validation.parquet")
    spikes = table.filter(pl.col("kind") == "spike")
    per = spikes.group_by("symbol").len().sort(["len", "symbol"], descending=[True, False])
    top = ", ".join(f"{s} {n}" for s, n in per.head(5).iter_rows())
    expected = (
        f"xsmom: warning: data spike (warning): {spikes.height} finding(s) in {per.height} symbol(s) "
        f"({top}, {per.height - 5} more); full table in r/validation.parquet"
    )
    assert expected in _stderr_warnings(proc)
    assert not [w for w in _stderr_warnings(proc) if "finding(s) found (first" in w]


def test_spike_thresholds_from_set(tmp_path, data_dir):
    """`--set data.spike_mads=12` / `data.spike_window` reach the backtest's findings and their hint."""

    def spike_count(*sets):
        args = [a for s in sets for a in ("--set", s)]
        proc = run("backtest", "--bars", str(data_dir), "--out", "r", *args, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        table = pl.read_parquet(tmp_path / "r" / "validation.parquet")
        return table.filter(pl.col("kind") == "spike").height

    default = spike_count()
    stricter = spike_count("data.spike_mads=12")
    assert 0 < stricter < default
    assert spike_count("data.spike_mads=5") > default
    assert spike_count("data.spike_window=100") != default
    proc = run("backtest", "--bars", str(data_dir), "--set", "data.spike_mads=12", cwd=tmp_path)
    assert "--timeframe 1h --spike-mads 12.0" in proc.stderr, proc.stderr
    proc = run("data", "validate", "--store", str(data_dir), "--spike-mads", "12", "--json", cwd=tmp_path)
    assert pl.read_json(io.StringIO(proc.stdout)).filter(pl.col("kind") == "spike").height == stricter
    proc = run("backtest", "--bars", str(data_dir), "--set", "data.spike_window=5", cwd=tmp_path)
    assert proc.returncode == 2
    assert "data.spike_window=5: out of range, allowed [10, 50000]" in proc.stderr, proc.stderr


def test_ingest_spacing_and_resample_source_warn(tmp_path, data_dir):
    hourly = xsmom.read_bars(data_dir, symbols=["BTCUSDT"], end="2025-06-03")
    hourly.write_parquet(tmp_path / "btc.parquet")
    proc = run("data", "ingest", "btc.parquet", "--store", "s", "--timeframe", "5m", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert _stderr_warnings(proc) == [
        "xsmom: warning: btc.parquet: bars are 1h apart (median), not --timeframe 5m; "
        "they are stored as 5m bars"
    ]
    proc = run("data", "ingest", "btc.parquet", "--store", "s2", "--timeframe", "1h", cwd=tmp_path)
    assert _stderr_warnings(proc) == []
    shutil.copytree(data_dir, tmp_path / "store")
    five = sorted(p.name.split("=")[1] for p in (tmp_path / "store/bars/timeframe=5m").iterdir())
    proc = run("data", "resample", "--store", "store", "--to", "4h", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    n_hourly = len(list((tmp_path / "store/bars/timeframe=1h").glob("symbol=*")))
    assert _stderr_warnings(proc) == [
        f"xsmom: warning: no --from given: resampling the store's finest timeframe 5m ({len(five)} "
        f"symbol(s): {', '.join(five)}); also in the store: 1h ({n_hourly} symbols); pass --from 5m to make "
        "this explicit"
    ]
    proc = run("data", "resample", "--store", "store", "--to", "4h", "--from", "1h", cwd=tmp_path)
    assert proc.returncode == 0 and _stderr_warnings(proc) == [], proc.stderr


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        (
            "strategy.k_max=four",
            "xsmom: error: --set strategy.k_max=four: strategy.k_max expects a whole number ≥ 0, got 'four'",
        ),
        (
            "risk.atr_mult_sl=abc",
            "xsmom: error: --set risk.atr_mult_sl=abc: risk.stops.atr_mult_sl expects a number, got 'abc'",
        ),
        (
            "data.on_invalid=foo",
            "xsmom: error: --set data.on_invalid=foo: data.on_invalid expects one of reject, drop, got 'foo'",
        ),
        (
            "strategy.regime_filter.enabled=maybe",
            "xsmom: error: --set strategy.regime_filter.enabled=maybe: strategy.regime_filter.enabled "
            "expects true or false, got 'maybe'",
        ),
        (
            "strategy.kmax=3",
            "xsmom: error: --set strategy.kmax: unknown config key "
            "(did you mean strategy.k_max or strategy.k_min or strategy.k_mode?)",
        ),
        (
            "risk.atr_mult=2",
            "xsmom: error: --set risk.atr_mult: unknown config key "
            "(did you mean risk.stops.atr_mult_sl or risk.stops.trail_atr_mult?)",
        ),
        ("nothing_like_it=2", "xsmom: error: --set nothing_like_it: unknown config key"),
    ],
)
def test_set_errors_in_cli_terms(tmp_path, data_dir, assignment, message):
    proc = run("backtest", "--bars", str(data_dir), "--set", assignment, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == message + "\n"


def test_invalid_bars_hint_uses_the_cli_flag_and_utc_dates(tmp_path, data_dir):
    bars = xsmom.read_bars(data_dir, end="2025-06-20")
    dup = pl.concat([bars, bars.head(1)])
    dup.write_parquet(tmp_path / "dup.parquet")
    proc = run("backtest", "--bars", "dup.parquet", cwd=tmp_path)
    assert proc.returncode == 2
    first = bars.sort("symbol", "ts").row(0, named=True)
    when = first["ts"].strftime("%Y-%m-%d %H:%M")
    assert f"{first['symbol']} at {when} UTC: duplicate (second row for {when} UTC)" in proc.stderr
    assert proc.stderr.rstrip().endswith("pass --set data.on_invalid=drop to drop the offending rows")
    proc = run("backtest", "--bars", "dup.parquet", "--set", "data.on_invalid=drop", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_out_onto_a_file_fails_before_the_run(tmp_path, data_dir):
    (tmp_path / "taken").write_text("keep me")
    proc = run("backtest", "--bars", str(data_dir), "--out", "taken", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == "xsmom: error: --out taken: exists and is not a directory\n"
    assert proc.stdout == "" and (tmp_path / "taken").read_text() == "keep me"


def test_fetch_network_error_names_the_cause(tmp_path):
    args = ["data", "fetch", "--store", "s", "--symbols", "BTCUSDT", "--start", "2025-01-01"]
    proc = run(*args, "--end", "2025-01-02", "--base-url", "http://127.0.0.1:9", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "xsmom: fetching 1/1: BTCUSDT",
        (
            "xsmom: error: cannot reach http://127.0.0.1:9: "
            "connecting to 127.0.0.1:9 failed: Connection refused"
        ),
    ]
    proc = run(*args, "--end", "2025-01-02", "--base-url", "http://nonexistent.invalid", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1].startswith(
        "xsmom: error: cannot reach http://nonexistent.invalid: cannot resolve host 'nonexistent.invalid' ("
    )
    assert proc.stderr.endswith("); check the network or --base-url\n")


def test_closed_pipe_exits_quietly(tmp_path, data_dir):
    exe = shutil.which("xsmom")
    proc = subprocess.Popen(
        [exe, "backtest", "--bars", str(data_dir)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stdout.close()  # the reader is gone before anything is written, as with `| head -0`
    stderr = proc.stderr.read()
    assert proc.wait(timeout=300) == 0
    assert "Broken pipe" not in stderr and "Traceback" not in stderr and "error" not in stderr, stderr


def test_progress_plain_lines_off_a_terminal_bar_on_one_nothing_when_quiet(capsys, monkeypatch):
    from xsmom import progress
    from xsmom.progress import steps

    assert list(steps(["BTCUSDT", "ETHUSDT"], "fetching")) == ["BTCUSDT", "ETHUSDT"]
    assert capsys.readouterr().err == "xsmom: fetching 1/2: BTCUSDT\nxsmom: fetching 2/2: ETHUSDT\n"
    assert list(steps(["A"], "fetching", quiet=True)) == ["A"]
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: True)
    assert list(steps(["A", "B"], "fetching")) == ["A", "B"]
    err = capsys.readouterr().err
    assert "xsmom: fetching:" in err and "/2 [" in err and ", B]" in err and "\r" in err
