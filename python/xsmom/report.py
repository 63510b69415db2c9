"""Report folders: metrics.json, Parquet outputs, tearsheet.png and a self-contained report.html."""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import math
from pathlib import Path

import polars as pl

from xsmom._core import BPS
from xsmom.api import BacktestResult
from xsmom.files import atomic_write

PERCENT_METRICS = {"total_return", "cagr", "vol", "max_drawdown", "exposure", "win_rate"}


def json_metrics(metrics: dict[str, float]) -> dict[str, float | None]:
    """Metrics for JSON: NaN becomes null, infinities stay readable as ±1e308 would not be."""
    out: dict[str, float | None] = {}
    for key, value in metrics.items():
        out[key] = None if math.isnan(value) else (value if math.isfinite(value) else None)
    return out


def format_metric(name: str, value: float) -> str:
    if math.isnan(value):
        return "–"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if name in PERCENT_METRICS:
        return f"{value:.2%}"
    if name in {"round_trips", "n_bars"}:
        return f"{value:,.0f}"
    return f"{value:,.4f}" if abs(value) < 1000 else f"{value:,.2f}"


def metrics_table(metrics: dict[str, float]) -> str:
    width = max(len(k) for k in metrics)
    return "\n".join(f"{name:<{width}}  {format_metric(name, value):>14}" for name, value in metrics.items())


LABELS = {
    "total_return": "Total return",
    "cagr": "CAGR",
    "vol": "Volatility (ann.)",
    "sharpe": "Sharpe (ann., rf 0)",
    "sortino": "Sortino (ann.)",
    "max_drawdown": "Max drawdown",
    "calmar": "Calmar",
    "turnover_per_year": "Turnover per year (× equity)",
    "exposure": "Time invested",
    "fees": "Fees (USD)",
    "funding": "Funding received (USD)",
    "round_trips": "Round trips",
    "win_rate": "Win rate",
    "profit_factor": "Profit factor",
    "avg_bars_held": "Average bars held",
    "skew": "Skew (per bar)",
    "kurtosis": "Excess kurtosis (per bar)",
    "psr": "Probabilistic Sharpe (vs 0)",
    "n_bars": "Bars",
    "final_equity": "Final equity (USD)",
}


def drawdown_periods(equity: pl.DataFrame, top: int = 5) -> pl.DataFrame:
    """The ``top`` deepest drawdowns of ``ts, equity``: peak, valley, recovery (null while under water),
    depth in % of the peak, and the length in days from peak to recovery (or to the last bar)."""
    ts, values = equity["ts"].to_list(), equity["equity"].to_list()
    rows, peak_i, valley_i = [], 0, None
    for i, value in enumerate(values):
        if value >= values[peak_i]:
            if valley_i is not None:
                rows.append((peak_i, valley_i, i))
            peak_i, valley_i = i, None
        elif valley_i is None or value < values[valley_i]:
            valley_i = i
    if valley_i is not None:
        rows.append((peak_i, valley_i, None))
    table = [
        {
            "peak": ts[p],
            "valley": ts[v],
            "recovery": None if r is None else ts[r],
            "depth_pct": (values[v] / values[p] - 1.0) * 100.0,
            "days": ((ts[r] if r is not None else ts[-1]) - ts[p]).total_seconds() / 86_400.0,
        }
        for p, v, r in rows
    ]
    schema = {
        "peak": pl.Datetime("ms", "UTC"),
        "valley": pl.Datetime("ms", "UTC"),
        "recovery": pl.Datetime("ms", "UTC"),
        "depth_pct": pl.Float64,
        "days": pl.Float64,
    }
    return pl.DataFrame(table, schema=schema).sort("depth_pct").head(top)


def slippage_costs(fills: pl.DataFrame, slippage_bps: float) -> pl.Series:
    """Per fill, the USD given up to slippage: the fill price is the base price moved ``slippage_bps``
    against the trade, so the cost is ``notional × s / (1 ± s)`` (+ for buys, − for sells)."""
    s = slippage_bps / BPS
    side = pl.when(pl.col("side") == "buy").then(1.0 + s).otherwise(1.0 - s)
    return fills.select((pl.col("notional").abs() * s / side).alias("slippage"))["slippage"]


def attribution(result: BacktestResult, top: int = 5) -> dict[str, pl.DataFrame]:
    """PnL split into price (gross), fees, slippage and funding; per leg; the best and worst symbols.

    ``gross`` is the PnL before costs: ``net + fees + slippage − funding received``. Legs and symbols
    sum the round trips' PnL as the engine books it (after their costs).
    """
    eq = result.equity
    cfg = result.config.to_dict()
    net = float(eq["equity"][-1] - eq["equity"][0]) if eq.height else 0.0
    fees = float(result.fills["fee"].sum()) if result.fills.height else 0.0
    slip = (
        float(slippage_costs(result.fills, cfg["costs"]["slippage_bps"]).sum())
        if result.fills.height
        else 0.0
    )
    funding = float(eq["funding"].sum()) if eq.height else 0.0
    capital = float(cfg["backtest"]["initial_capital"])
    parts = [
        ("Gross (price moves)", net + fees + slip - funding),
        ("Fees", -fees),
        ("Slippage", -slip),
        ("Funding", funding),
        ("Net", net),
    ]
    components = pl.DataFrame(
        {"component": [c for c, _ in parts], "usd": [v for _, v in parts]}
    ).with_columns(pct_of_capital=pl.col("usd") / capital * 100.0)
    trades = result.trades
    legs = (
        trades.group_by("side")
        .agg(
            pl.len().alias("round_trips"),
            pl.col("pnl").sum().alias("pnl_usd"),
            (pl.col("pnl") > 0).mean().mul(100.0).alias("win_rate_pct"),
        )
        .sort("side")
    )
    per_symbol = trades.group_by("symbol").agg(
        pl.len().alias("round_trips"), pl.col("pnl").sum().alias("pnl_usd")
    )
    best = per_symbol.sort(["pnl_usd", "symbol"], descending=[True, False]).head(top)
    worst = per_symbol.sort(["pnl_usd", "symbol"]).head(top)
    return {"components": components, "legs": legs, "best": best, "worst": worst}


def exit_reasons(trades: pl.DataFrame) -> pl.DataFrame:
    """Round trips by exit reason: count, win rate, mean return, total PnL, mean bars held."""
    return (
        trades.group_by("exit_reason")
        .agg(
            pl.len().alias("round_trips"),
            (pl.col("pnl") > 0).mean().mul(100.0).alias("win_rate_pct"),
            pl.col("return").mean().mul(100.0).alias("mean_return_pct"),
            pl.col("pnl").sum().alias("pnl_usd"),
            pl.col("bars_held").mean().alias("mean_bars_held"),
        )
        .sort(["round_trips", "exit_reason"], descending=[True, False])
    )


def meta_label_on(result: BacktestResult) -> bool:
    """Whether the backtest ran with ``strategy.meta_label`` enabled."""
    return bool(result.config.to_dict()["strategy"].get("meta_label", {}).get("enabled", False))


def meta_calibration(result: BacktestResult) -> pl.DataFrame:
    """The meta-labeler's calibration: round trips whose entry fill carries a ``meta_p`` (the model was
    active at the entry's decision), in deciles of p: entries, mean predicted p, realised hit rate
    (``pnl > 0``, net of costs). Only entries it took are here: skipped ones have no outcome."""
    if "meta_p" not in result.fills.columns:
        return pl.DataFrame(
            schema={"decile": pl.Int64, "entries": pl.UInt32, "mean_p": pl.Float64, "hit_rate": pl.Float64}
        )
    entries = result.fills.filter(pl.col("meta_p").is_not_nan()).select(
        "symbol", pl.col("ts").alias("entry_ts"), "meta_p"
    )
    scored = (
        result.trades.join(entries.unique(["symbol", "entry_ts"]), on=["symbol", "entry_ts"], how="inner")
        .sort("meta_p", "entry_ts", "symbol")
        .with_row_index("rank")
    )
    if scored.height == 0:
        return pl.DataFrame(
            schema={"decile": pl.Int64, "entries": pl.UInt32, "mean_p": pl.Float64, "hit_rate": pl.Float64}
        )
    n = scored.height
    return (
        scored.with_columns((pl.col("rank").cast(pl.Int64) * 10 // n + 1).alias("decile"))
        .group_by("decile")
        .agg(
            pl.len().alias("entries"),
            pl.col("meta_p").mean().alias("mean_p"),
            (pl.col("pnl") > 0).mean().alias("hit_rate"),
        )
        .sort("decile")
    )


def _meta_skipped(result: BacktestResult) -> pl.DataFrame:
    """The skipped entries, or an empty table for a result built from tables (no run to ask)."""
    try:
        return result.meta_skipped
    except ValueError:
        return pl.DataFrame(
            schema={"ts": pl.Datetime("ms", "UTC"), "symbol": pl.Utf8, "side": pl.Utf8, "p": pl.Float64}
        )


def _meta_section(result: BacktestResult) -> str:
    """The meta-labeler's calibration and skipped entries (empty when it was off)."""
    if not meta_label_on(result):
        return ""
    skipped = _meta_skipped(result)
    calibration = _table(
        meta_calibration(result),
        [
            ("decile", "Decile of p", "int"),
            ("entries", "Entries taken", "int"),
            ("mean_p", "Mean predicted p", "num3"),
            ("hit_rate", "Realised hit rate", "num3"),
        ],
        "meta-calibration",
    )
    shown = _table(
        skipped.sort("ts").head(50),
        [
            ("ts", "Decision bar (UTC)", "str"),
            ("symbol", "Symbol", "str"),
            ("side", "Side", "str"),
            ("p", "p", "num3"),
        ],
        "meta-skipped",
    )
    return f"""<section id="meta-label"><h2>Meta-labeler</h2>
<p>Predicted p (out of sample: each from the model fit on the round trips closed before the entry) against
the realised hit rate after costs, in deciles of p. Only entries it took have an outcome, so this says
nothing about the skipped ones (selection bias: the model trains only on entries it let through).</p>
{calibration}
<h3>Skipped entries ({skipped.height}; the first 50)</h3>{shown}</section>
"""


def metrics_window(result: BacktestResult) -> pl.DataFrame:
    """The equity rows the core's metrics cover: from the bar before the first decision (the first
    non-zero target weight) to the end; all rows when nothing was decided."""
    decided = result.weights.filter(pl.col("target_weight") != 0.0)
    if decided.height == 0:
        return result.equity
    first = result.equity.with_row_index().filter(pl.col("ts") >= decided["ts"].min())["index"][0]
    return result.equity.slice(max(int(first) - 1, 0))


def benchmark(result: BacktestResult, bars: pl.DataFrame | None) -> pl.DataFrame | None:
    """Per bar ``ts, strategy, universe`` (and ``btc`` when BTCUSDT is in the bars) over the metrics' window:
    the strategy's equity, an equal-weight buy-and-hold of the symbols with a price at the window's first
    bar, and BTC alone, both starting from the strategy's equity at that bar."""
    window = metrics_window(result)
    if bars is None or bars.height == 0 or window.height == 0:
        return None
    capital = float(window["equity"][0])
    wide = (
        bars.filter(pl.col("ts").is_between(window["ts"][0], window["ts"][-1]))
        .pivot(on="symbol", index="ts", values="close", aggregate_function="last")
        .sort("ts")
    )
    wide = window.select("ts", pl.col("equity").alias("strategy")).join(wide, on="ts", how="left")
    wide = wide.fill_null(strategy="forward")
    held = [c for c in wide.columns if c not in ("ts", "strategy") and wide[c][0] is not None]
    if not held:
        return None
    growth = [pl.col(c) / wide[c][0] for c in held]
    out = wide.select("ts", "strategy", (pl.mean_horizontal(growth) * capital).alias("universe"))
    if "BTCUSDT" in held:
        out = out.with_columns((wide["BTCUSDT"] / wide["BTCUSDT"][0] * capital).alias("btc"))
    return out


def benchmark_stats(bench: pl.DataFrame, bpy: float) -> pl.DataFrame:
    """Total return, CAGR, Sharpe and max drawdown of the strategy and each benchmark, and the strategy's
    correlation and beta to each, on daily returns (UTC days) to keep bar noise out of the co-movement."""
    from xsmom import _core

    names = {"strategy": "Strategy", "universe": "Equal-weight universe", "btc": "BTC"}
    series = {names[c]: bench[c] for c in bench.columns if c != "ts"}
    frame = pl.DataFrame({"ts": bench["ts"], **{k: v for k, v in series.items()}})
    daily = frame.group_by_dynamic("ts", every="1d").agg(pl.exclude("ts").last()).drop("ts")
    daily_ret = daily.select(pl.all().pct_change()).drop_nulls()
    rows = []
    for name, values in series.items():
        rets = (values / values.shift(1) - 1.0).drop_nulls().to_list()
        stats = dict(_core.path_stats(rets, bpy)) if len(rets) >= 2 else {}
        row = {
            "series": name,
            "total_return_pct": (float(values[-1] / values[0]) - 1.0) * 100.0,
            "cagr_pct": stats.get("cagr", math.nan) * 100.0,
            "sharpe": stats.get("sharpe", math.nan),
            "max_drawdown_pct": float((values / values.cum_max() - 1.0).min()) * -100.0,
            "correlation": math.nan,
            "beta": math.nan,
        }
        if name != "Strategy" and daily_ret.height >= 3:
            x, y = daily_ret[name], daily_ret["Strategy"]
            var = float(x.var())
            row["correlation"] = float(pl.DataFrame({"x": x, "y": y}).select(pl.corr("x", "y")).item())
            row["beta"] = (
                float(((x - x.mean()) * (y - y.mean())).sum() / (x.len() - 1) / var) if var else math.nan
            )
        rows.append(row)
    return pl.DataFrame(rows)


def write_report(
    result: BacktestResult,
    out_dir: str | Path,
    validation: pl.DataFrame | None = None,
    bars: pl.DataFrame | None = None,
) -> Path:
    """Write the report folder and return its path.

    ``validation``: data findings, written to validation.parquet; ``bars``: the backtest's bars, for the
    buy-and-hold benchmark (no benchmark section without them).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if validation is not None:
        atomic_write(out / "validation.parquet", lambda p: validation.write_parquet(p, compression="zstd"))
    atomic_write(
        out / "metrics.json",
        lambda p: p.write_text(json.dumps(json_metrics(result.metrics), indent=2) + "\n"),
    )
    for name in ("equity", "weights", "fills", "trades"):
        frame = getattr(result, name)
        atomic_write(out / f"{name}.parquet", lambda p, f=frame: f.write_parquet(p, compression="zstd"))
    if meta_label_on(result):
        skipped = _meta_skipped(result)
        atomic_write(out / "meta_skipped.parquet", lambda p: skipped.write_parquet(p, compression="zstd"))

    import matplotlib.pyplot as plt

    from xsmom.plotting import panels, plot_tearsheet, single

    bpy = result.bars_per_year
    bench = benchmark(result, bars)
    periods = drawdown_periods(result.equity)
    figure = plot_tearsheet(result, bpy, bench, periods)
    atomic_write(out / "tearsheet.png", lambda p: figure.savefig(p, dpi=90, format="png"))
    plt.close(figure)
    images = {}
    for name, (draw, height) in panels(result, bpy, bench, periods).items():
        fig = single(draw, height)
        buffer = io.BytesIO()
        fig.savefig(buffer, dpi=80, format="png")
        plt.close(fig)
        images[name] = base64.b64encode(buffer.getvalue()).decode("ascii")
    page = _html(result, bpy, bench, periods, images)
    atomic_write(out / "report.html", lambda p: p.write_text(page, encoding="utf-8"))
    return out


def _fmt(value: object, kind: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, float) and math.isnan(value):
        return "–"
    if kind == "pct":
        return f"{value:+.2f} %"
    if kind == "usd":
        return f"{value:+,.2f}"
    if kind == "int":
        return f"{value:,.0f}"
    if kind == "num":
        return f"{value:.2f}"
    if kind == "num3":
        return f"{value:.3f}"
    return str(value)


def _table(frame: pl.DataFrame | None, columns: list[tuple[str, str, str]], css: str) -> str:
    """An HTML table of ``frame``: ``columns`` = (column, header, format)."""
    if frame is None or frame.height == 0:
        return '<p class="empty">none</p>'
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(row[c], k))}</td>" for c, _, k in columns) + "</tr>"
        for row in frame.iter_rows(named=True)
    )
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _metric_cell(name: str, value: float) -> str:
    if name == "max_drawdown" and math.isfinite(value):
        return f"{value * 100:.2f} %"
    if name in PERCENT_METRICS and math.isfinite(value):
        return f"{value * 100:.2f} %"
    return format_metric(name, value)


_BENCHMARK_COLUMNS = [
    ("series", "", "str"),
    ("total_return_pct", "Total return", "pct"),
    ("cagr_pct", "CAGR", "pct"),
    ("sharpe", "Sharpe (ann.)", "num"),
    ("max_drawdown_pct", "Max drawdown (%)", "num"),
    ("correlation", "Correlation (daily)", "num"),
    ("beta", "Beta (daily)", "num"),
]
_DRAWDOWN_COLUMNS = [
    ("peak", "Peak (UTC)", "str"),
    ("valley", "Valley (UTC)", "str"),
    ("recovery", "Recovered (UTC)", "str"),
    ("depth_pct", "Depth (%)", "num"),
    ("days", "Length (days)", "num"),
]
_COMPONENT_COLUMNS = [
    ("component", "Component", "str"),
    ("usd", "USD", "usd"),
    ("pct_of_capital", "% of capital", "pct"),
]
_LEG_COLUMNS = [
    ("side", "Leg", "str"),
    ("round_trips", "Round trips", "int"),
    ("pnl_usd", "PnL (USD)", "usd"),
    ("win_rate_pct", "Win rate (%)", "num"),
]
_SYMBOL_COLUMNS = [
    ("symbol", "Symbol", "str"),
    ("round_trips", "Round trips", "int"),
    ("pnl_usd", "PnL (USD)", "usd"),
]
_EXIT_COLUMNS = [
    ("exit_reason", "Exit reason", "str"),
    ("round_trips", "Round trips", "int"),
    ("win_rate_pct", "Win rate (%)", "num"),
    ("mean_return_pct", "Mean return", "pct"),
    ("pnl_usd", "PnL (USD)", "usd"),
    ("mean_bars_held", "Mean bars held", "num"),
]


def _html_head(result, bpy) -> str:
    """The page up to the summary table: style, data range and the no-trades note."""
    e = html.escape
    rows = "".join(
        f"<tr><th>{e(LABELS.get(k, k))}</th><td>{e(_metric_cell(k, v))}</td></tr>"
        for k, v in result.metrics.items()
    )
    traded = result.fills.height > 0
    note = (
        "" if traded else '<p class="note" id="no-trades">No trades: the strategy never held a position.</p>'
    )
    timeframe = result.config.to_dict()["data"]["timeframe"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>xsmom backtest report</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;line-height:1.4}}
table{{border-collapse:collapse;margin:.5em 0 1em}}td,th{{padding:2px 12px;border-bottom:1px solid #ddd}}
th{{text-align:left;font-weight:600}}td{{text-align:right;font-variant-numeric:tabular-nums}}
img{{max-width:100%}}.note{{background:#f3f3f3;padding:.6em 1em;border-left:4px solid #8c8c8c}}
pre{{background:#f6f6f6;padding:1em;overflow:auto;font-size:12px}}</style></head><body>
<h1>xsmom backtest report</h1>
<p>Data: {e(_fmt(result.start, "str"))} → {e(_fmt(result.end, "str"))} UTC, {len(result.symbols)} symbols
({e(", ".join(result.symbols))}), {e(timeframe)} bars; annualised with {bpy:,.0f} bars per year.
Metrics cover the bars from the first decision on.</p>
{note}
<section id="summary"><h2>Summary</h2><table class="metrics">{rows}</table></section>
"""


def _html_tables(result, bpy, bench, periods) -> dict[str, str]:
    """The report's tables as HTML, by section."""
    attr = attribution(result)
    if bench is None:
        benchmark = "<p>No bars were given to the report, so there is no buy-and-hold benchmark.</p>"
    else:
        benchmark = _table(benchmark_stats(bench, bpy), _BENCHMARK_COLUMNS, "benchmark")
    return {
        "bench": benchmark,
        "drawdowns": _table(periods, _DRAWDOWN_COLUMNS, "drawdowns"),
        "components": _table(attr["components"], _COMPONENT_COLUMNS, "components"),
        "legs": _table(attr["legs"], _LEG_COLUMNS, "legs"),
        "best": _table(attr["best"], _SYMBOL_COLUMNS, "best"),
        "worst": _table(attr["worst"], _SYMBOL_COLUMNS, "worst"),
        "exits": _table(exit_reasons(result.trades), _EXIT_COLUMNS, "exits"),
    }


def _html(result, bpy, bench, periods, images) -> str:
    e = html.escape

    def image(name: str, alt: str) -> str:
        return f'<img alt="{e(alt)}" src="data:image/png;base64,{images[name]}">'

    t = _html_tables(result, bpy, bench, periods)
    warnings = "".join(f"<li>{e(w)}</li>" for w in result.warnings) or "<li>none</li>"
    return (
        _html_head(result, bpy)
        + f"""<section id="benchmark"><h2>Benchmark (buy and hold from the first decision)</h2>{t["bench"]}
{image("equity", "equity against the benchmarks")}
{image("rolling_beta", "rolling beta to the benchmarks")}</section>
<section id="drawdowns"><h2>Drawdowns</h2>{image("drawdown", "drawdown in percent")}
<h3>Five deepest drawdown periods</h3>{t["drawdowns"]}</section>
<section id="attribution"><h2>PnL attribution</h2>{t["components"]}
<h3>Long and short legs (round trips, after costs)</h3>{t["legs"]}
<h3>Best symbols</h3>{t["best"]}
<h3>Worst symbols</h3>{t["worst"]}</section>
<section id="exit-reasons"><h2>Round trips by exit reason</h2>{t["exits"]}</section>
<section id="exposure"><h2>Exposure and risk-adjusted return</h2>{image("exposure", "gross and net exposure")}
{image("rolling_sharpe", "rolling Sharpe")}</section>
<section id="monthly"><h2>Monthly returns</h2>{image("monthly", "monthly returns in percent")}</section>
<section id="weights"><h2>Positions</h2>{image("weights", "weights per symbol over time")}</section>
{_meta_section(result)}<section id="warnings"><h2>Warnings</h2><ul>{warnings}</ul></section>
<section id="configuration"><h2>Configuration</h2><pre>{e(result.config.to_yaml())}</pre></section>
</body></html>
"""
    )
