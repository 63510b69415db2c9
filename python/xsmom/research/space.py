"""The search space: parameters loaded from YAML, suggested per trial, encoded as config overrides."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from xsmom.config import Config
from xsmom.exceptions import UnknownKeyError
from xsmom.research.settings import ResearchError

DEFAULT_SPACE = "default.yaml"


@dataclass(frozen=True)
class Param:
    """One dimension of the search space: a config key path and its range or choices."""

    path: str
    type: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """The value optuna suggests for this parameter (categorical choices decoded)."""
        if self.type == "int":
            return trial.suggest_int(
                self.path, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        if self.type == "float":
            return trial.suggest_float(self.path, self.low, self.high, step=self.step, log=self.log)
        label = trial.suggest_categorical(self.path, [_label(c) for c in self.choices])
        return self.decode(label)

    def decode(self, value: Any) -> Any:
        """A stored optuna parameter value → the config value."""
        if self.type == "categorical":
            for choice in self.choices:
                if _label(choice) == value:
                    return choice
            raise ResearchError(f"{self.path}: {value!r} is not one of the choices {list(self.choices)}")
        return value


def _label(choice: Any) -> Any:
    """Optuna categorical choices must be scalars: lists are stored as their JSON text."""
    return json.dumps(choice) if isinstance(choice, list | dict) else choice


def load_space(path: str | Path | None = None) -> list[Param]:
    """The search space from a YAML file (the shipped ``spaces/default.yaml`` when ``None``)."""
    import yaml

    if path is None:
        text = resources.files("xsmom").joinpath("spaces", DEFAULT_SPACE).read_text()
        source = f"xsmom/spaces/{DEFAULT_SPACE}"
    else:
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise ResearchError(f"{path}: cannot read the search space: {err.strerror}") from None
        source = str(path)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ResearchError(f"{source}: not valid YAML: {' '.join(str(err).split())}") from None
    entries = doc.get("params") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ResearchError(f"{source}: expected a non-empty list under the key 'params'")
    params, seen = [], set()
    for k, entry in enumerate(entries):
        where = f"{source}: params[{k}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise ResearchError(f"{where}: each entry needs a 'path' (a config key path)")
        path_ = entry["path"]
        unknown = set(entry) - {"path", "type", "low", "high", "step", "log", "choices"}
        if unknown:
            raise ResearchError(f"{where} ({path_}): unknown key(s) {sorted(unknown)}")
        if path_ in seen:
            raise ResearchError(f"{where}: {path_} appears twice")
        seen.add(path_)
        kind = entry.get("type")
        if kind == "categorical":
            choices = entry.get("choices")
            if not isinstance(choices, list) or not choices:
                raise ResearchError(f"{where} ({path_}): a categorical needs a non-empty 'choices' list")
            params.append(Param(path_, kind, choices=tuple(choices)))
            continue
        if kind not in ("int", "float"):
            raise ResearchError(f"{where} ({path_}): type must be int, float or categorical, got {kind!r}")
        low, high, step, log = entry.get("low"), entry.get("high"), entry.get("step"), entry.get("log", False)
        for name, value in (("low", low), ("high", high)):
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
                raise ResearchError(f"{where} ({path_}): {name} must be a number, got {value!r}")
        if low > high:
            raise ResearchError(f"{where} ({path_}): low {low} is above high {high}")
        if step is not None and (not isinstance(step, int | float) or step <= 0):
            raise ResearchError(f"{where} ({path_}): step must be a positive number, got {step!r}")
        if not isinstance(log, bool):
            raise ResearchError(f"{where} ({path_}): log must be true or false, got {log!r}")
        if log and (low <= 0 or step is not None):
            raise ResearchError(f"{where} ({path_}): log needs low > 0 and no step")
        if kind == "int" and any(v is not None and float(v) != int(v) for v in (low, high, step)):
            raise ResearchError(f"{where} ({path_}): an int parameter needs integer low/high/step")
        params.append(Param(path_, kind, float(low), float(high), step, log))
    return params


def params_of(trial: Any, space: Sequence[Param]) -> dict[str, Any]:
    """Config values of a finished (frozen) trial."""
    by_path = {p.path: p for p in space}
    return {
        key: by_path[key].decode(value) if key in by_path else value for key, value in trial.params.items()
    }


def param_key(values: dict[str, Any]) -> str:
    return json.dumps(values, sort_keys=True, default=str)


def check_paths(space: Sequence[Param], config: Config, source: str) -> None:
    """Every path of the space must be a config key (values may still clash per trial: pruned then)."""
    for p in space:
        value = p.choices[0] if p.type == "categorical" else p.low
        value = int(value) if p.type == "int" else value
        try:
            config.with_overrides({p.path: value})
        except UnknownKeyError as err:
            raise ResearchError(f"{source}: {p.path}: {' '.join(str(err).split())}") from None
        except ValueError:
            pass  # a value that clashes with the config: that trial is pruned


def purge_bars_for(config: Config, space: Sequence[Param]) -> int:
    lookbacks = list(config.to_dict()["strategy"]["lookbacks"])
    for p in space:
        if p.path == "strategy.lookbacks":
            lookbacks += [v for choice in p.choices for v in choice]
        elif p.path.startswith("strategy.lookbacks[") and p.high is not None:
            lookbacks.append(int(p.high))
    return int(max(lookbacks))
