"""Configuration: a thin, immutable wrapper around the Rust config tree (validated in Rust)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xsmom import _core


def override_pairs(overrides: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The one encoding of overrides for the core: ``{"strategy.k_max": 4}`` → ``[("strategy.k_max",
    "4")]``, values as JSON (which is YAML, so lists and strings keep their type)."""
    return [(str(key), json.dumps(value)) for key, value in overrides.items()]


class Config:
    """A validated xsmom configuration. Build it with ``load``, ``default`` or ``profile``.

    Every change goes through Rust, which rejects unknown keys and out-of-range values with the
    key path in the message; the object itself never changes (``with_overrides`` returns a new one).
    """

    __slots__ = ("_yaml",)

    def __init__(self, yaml_text: str) -> None:
        self._yaml = _core.config_from_yaml(yaml_text, "<string>")

    @classmethod
    def _trusted(cls, yaml_text: str) -> Config:
        config = cls.__new__(cls)
        config._yaml = yaml_text
        return config

    @classmethod
    def load(cls, path: str | Path) -> Config:
        """Read and validate a YAML file."""
        return cls._trusted(_core.config_load(str(path)))

    @classmethod
    def default(cls) -> Config:
        return cls._trusted(_core.config_default())

    @classmethod
    def profile(cls, name: str) -> Config:
        """A named profile: ``default`` or ``xsmom-bot-v1``."""
        return cls._trusted(_core.config_profile(name))

    @classmethod
    def from_yaml(cls, text: str) -> Config:
        return cls(text)

    def with_overrides(self, overrides: Mapping[str, Any]) -> Config:
        """A copy with dotted-path overrides, e.g. ``{"strategy.k_max": 4, "strategy.lookbacks[0]": 6}``."""
        return Config._trusted(_core.config_with_overrides(self._yaml, override_pairs(overrides)))

    def with_override_text(self, pairs: list[tuple[str, str]]) -> Config:
        """A copy with overrides given as text, as typed on a command line (``("strategy.k_max",
        "4")``: the value is YAML)."""
        return Config._trusted(_core.config_with_overrides(self._yaml, pairs))

    def to_yaml(self) -> str:
        return self._yaml

    def to_dict(self) -> dict[str, Any]:
        return json.loads(_core.config_to_json(self._yaml))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self._yaml)

    def __repr__(self) -> str:
        d = self.to_dict()
        s = d["strategy"]
        return (
            f"Config(timeframe={d['data']['timeframe']!r}, lookbacks={s['lookbacks']}, "
            f"k_mode={s['k_mode']!r}, "
            f"k={s['k_min']}..{s['k_max']}, weighting={d['sizing']['weighting']!r}, "
            f"accounting={d['backtest']['accounting']!r})"
        )
