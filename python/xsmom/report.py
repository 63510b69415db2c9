"""Report folders: metrics.json, Parquet outputs, tearsheet.png and a self-contained report.html."""

from __future__ import annotations

import base64
import html
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from xsmom.api import BacktestResult

PERCENT_METRICS = {"total_return", "cagr", "vol", "max_drawdown", "exposure", "win_rate"}


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temp file in the same directory and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def write_report(result: BacktestResult, out_dir: str | Path, validation=None) -> Path:
    """Write the report folder and return its path (``validation``: data findings → validation.parquet)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if validation is not None:
        _atomic_write(out / "validation.parquet", lambda p: validation.write_parquet(p, compression="zstd"))
    _atomic_write(
        out / "metrics.json",
        lambda p: p.write_text(json.dumps(json_metrics(result.metrics), indent=2) + "\n"),
    )
    for name in ("equity", "weights", "fills", "trades"):
        frame = getattr(result, name)
        _atomic_write(out / f"{name}.parquet", lambda p, f=frame: f.write_parquet(p, compression="zstd"))

    from xsmom.plotting import plot_tearsheet

    bars_per_year = {"1h": 8760.0, "5m": 105120.0, "1d": 365.0}.get(
        result.config.to_dict()["data"]["timeframe"], 8760.0
    )
    figure = plot_tearsheet(result, bars_per_year)
    _atomic_write(out / "tearsheet.png", lambda p: figure.savefig(p, dpi=90, format="png"))
    import matplotlib.pyplot as plt

    plt.close(figure)
    png = base64.b64encode((out / "tearsheet.png").read_bytes()).decode("ascii")
    _atomic_write(out / "report.html", lambda p: p.write_text(_html(result, png), encoding="utf-8"))
    return out


def _html(result: BacktestResult, png_base64: str) -> str:
    rows = "\n".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(format_metric(k, v))}</td></tr>"
        for k, v in result.metrics.items()
    )
    warnings = "".join(f"<li>{html.escape(w)}</li>" for w in result.warnings) or "<li>none</li>"
    symbols = ", ".join(result.symbols)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>xsmom backtest report</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td{{padding:2px 12px;border-bottom:1px solid #ddd}}
td:last-child{{text-align:right;font-variant-numeric:tabular-nums}}pre{{background:#f6f6f6;padding:1em;
overflow:auto;font-size:12px}}</style></head><body>
<h1>xsmom backtest report</h1>
<p>Data: {html.escape(str(result.start))} → {html.escape(str(result.end))}, {len(result.symbols)} symbols
({html.escape(symbols)}).</p>
<h2>Metrics</h2><table>{rows}</table>
<h2>Warnings</h2><ul>{warnings}</ul>
<h2>Tearsheet</h2><img alt="tearsheet" style="max-width:100%" src="data:image/png;base64,{png_base64}">
<h2>Configuration</h2><pre>{html.escape(result.config.to_yaml())}</pre>
</body></html>
"""
