"""The small sample bar store shipped inside the package, for first runs and notebooks.

12 Binance USDT-M perpetuals (BTC, ETH, SOL, XRP, DOGE, ADA, AVAX, LINK, LTC, BCH, DOT, TRX), hourly bars
2025-08-01 → 2025-10-31 UTC with their funding events, cut from the bundled ``data/`` fixture (see
``data/README.md`` for the source), and the mark-price bars of the 10 of them that have a mark file
(``bars/timeframe=1h/kind=mark/``; none for SOL and DOGE). It is a real market sample, small enough
for a wheel (1.4 MB).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SAMPLE_SYMBOLS = (
    "BTCUSDT ETHUSDT SOLUSDT XRPUSDT DOGEUSDT ADAUSDT AVAXUSDT LINKUSDT LTCUSDT BCHUSDT DOTUSDT TRXUSDT"
).split()


def sample_store() -> Path:
    """Path of the bundled sample store (Hive layout: ``bars/timeframe=1h/…``, ``funding/…``)."""
    path = Path(str(resources.files("xsmom") / "sample_data"))
    if not (path / "bars").is_dir():
        raise FileNotFoundError(f"{path}: the sample store is missing from this installation")
    return path
