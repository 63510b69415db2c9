"""``--config`` / ``--profile`` / ``--set KEY=VALUE``: the config of ``backtest`` and ``optimize``,
and the core's override errors in CLI terms."""

from __future__ import annotations

import argparse
import difflib
import re
from typing import Any

from xsmom.cli.common import CliError
from xsmom.config import Config
from xsmom.exceptions import UnknownKeyError

_EXPECTED = {
    "usize": "a whole number ≥ 0",
    "u32": "a whole number ≥ 0",
    "u64": "a whole number ≥ 0",
    "i64": "a whole number",
    "i32": "a whole number",
    "f64": "a number",
    "f32": "a number",
    "a boolean": "true or false",
}


def load_config(args: argparse.Namespace) -> Config:
    """The config that ``--config`` or ``--profile`` names, with the ``--set`` overrides applied."""
    if args.config is not None and args.profile is not None:
        raise CliError("use either --config or --profile, not both")
    if args.config is not None:
        config = Config.load(args.config)
    else:
        config = Config.profile(args.profile or "default")
    if args.overrides:
        pairs = []
        for assignment in args.overrides:
            if "=" not in assignment:
                raise CliError(f"--set {assignment!r} is not of the form key.path=value")
            key, value = assignment.split("=", 1)
            pairs.append((key.strip(), value))
        try:
            config = config.with_override_text(pairs)
        except UnknownKeyError as err:
            raise CliError(_unknown_key(err.key, config)) from None
        except ValueError as err:
            raise CliError(override_message(str(err), dict(pairs), config)) from None
    return config


def _leaf_keys(tree: Any, prefix: str = "") -> list[str]:
    if isinstance(tree, dict):
        return [k for name, sub in tree.items() for k in _leaf_keys(sub, f"{prefix}{name}.")]
    return [prefix[:-1]]


def _unknown_key(key: str, config: Config) -> str:
    leaves = _leaf_keys(config.to_dict())
    by_leaf = {k.rsplit(".", 1)[-1]: k for k in leaves}
    close = difflib.get_close_matches(key, leaves, n=3, cutoff=0.75)
    close += [by_leaf[m] for m in difflib.get_close_matches(key.rsplit(".", 1)[-1], by_leaf, n=2)]
    close = list(dict.fromkeys(close))[:3]
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    return f"--set {key}: unknown config key{hint}"


def override_message(message: str, pairs: dict[str, str], config: Config) -> str:
    """The core's override error in CLI terms: the --set key, its value and the expected type."""
    message = re.sub(r" at line \d+ column \d+$", "", message.strip())
    typed = re.match(r"overrides: ([^:]+): invalid type: (.+?), expected (.+)$", message)
    variant = re.match(r"overrides: ([^:]+): unknown variant `([^`]*)`, expected (.+)$", message)
    if typed or variant:
        key, _, expected = (typed or variant).groups()
        short = next((k for k in pairs if key == k or key.endswith("." + k.split(".")[-1])), key)
        value = pairs.get(short, pairs.get(key, ""))
        if variant:
            expected = "one of " + ", ".join(re.findall(r"`([^`]*)`", expected))
        expected = _EXPECTED.get(expected, expected)
        return f"--set {short}={value}: {key} expects {expected}, got {value!r}"
    ranged = re.match(r"overrides: (\S+) = (.+?) is out of range: (.+)$", message)
    if ranged:
        return f"--set {ranged.group(1)}={ranged.group(2)}: out of range, {ranged.group(3)}"
    return message.replace("overrides: ", "--set ", 1)
