"""Recipes: YAML or dict -> typed, validated configuration dataclasses.

A recipe has one block per technique; each block maps onto one config dataclass, so that what a recipe can
say is exactly what the Python API can say::

    model: {teacher: path-or-hub-id, student: {from_teacher_layers: [0, 2, 4]}}
    data: {task: ner, train_file: train.txt, validation_file: valid.txt}
    distillation: {temperature: 2.0, alpha: 0.5, hidden_states: {weight: 1.0, layer_map: {0: 1, 1: 3, 2: 5}}}
    training: {num_train_epochs: 3, learning_rate: 1.0e-4}

Every problem (unknown key, wrong type, value out of range) raises :class:`RecipeError` naming the key, the
bad value and what is allowed, before any model is loaded.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from .configs import (
    CalibrationConfig,
    DataConfig,
    DistillationConfig,
    ExportConfig,
    LayerLossConfig,
    LowRankConfig,
    ModelConfig,
    PruningConfig,
    QuantizationConfig,
    RecipeError,
    StudentConfig,
)

__all__ = [
    "CalibrationConfig",
    "DataConfig",
    "DistillationConfig",
    "ExportConfig",
    "LayerLossConfig",
    "LowRankConfig",
    "ModelConfig",
    "PruningConfig",
    "QuantizationConfig",
    "Recipe",
    "RecipeError",
    "StudentConfig",
]


# --------------------------------------------------------------------------------------------------- recipe
@dataclass
class Recipe:
    """A whole compression recipe. Build it with :meth:`from_yaml` or :meth:`from_dict`.

    Attributes:
        model / data / distillation / pruning / quantization / lowrank / export: the blocks above (a technique is off
            when its block is absent).
        training: keyword arguments of :class:`transformers.TrainingArguments` (checked by name and type).
    """

    model: ModelConfig | None = None
    data: DataConfig | None = None
    distillation: DistillationConfig | None = None
    pruning: PruningConfig | None = None
    quantization: QuantizationConfig | None = None
    lowrank: LowRankConfig | None = None
    export: ExportConfig | None = None
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_training_arguments(self.training)
        if self.export is not None and self.export.int8 == "qat" and self.quantization is None:
            raise RecipeError("export.int8", "qat", "needs a 'quantization' block (QAT); or use dynamic or static")
        if self.lowrank is not None and self.lowrank.targets is None and self.pruning is not None:
            if self.pruning.structure == "neurons":
                raise RecipeError(
                    "pruning.structure",
                    "neurons",
                    "cannot compose with the 'lowrank' block: FFN neurons are rows and columns of the FFN linears, "
                    "which lowrank (by default) replaces by two factors; use structure: unstructured or heads, "
                    "set lowrank.targets to other layers, or drop one of the two blocks",
                )
        if self.distillation is not None and self.model is not None and self.model.teacher is None:
            raise RecipeError(
                "distillation", "set", "the 'distillation' block needs a teacher: set model.teacher, or drop the block"
            )

    # construction ---------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, base_dir: str | os.PathLike | None = None) -> Recipe:
        """Build and validate a recipe from a plain dict; relative data paths are resolved against ``base_dir``."""
        recipe = _build(cls, data or {}, "")
        if base_dir is not None and recipe.data is not None:
            for key in ("train_file", "validation_file"):
                value = getattr(recipe.data, key)
                if value is not None and not os.path.isabs(value):
                    setattr(recipe.data, key, os.path.normpath(os.path.join(base_dir, value)))
        return recipe

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> Recipe:
        """Read a YAML recipe; ``overrides`` maps dotted keys (``distillation.alpha``) to values."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"recipe file not found: {path}")
        with open(path, encoding="utf-8") as handle:
            try:
                data = load_yaml(handle)
            except yaml.YAMLError as error:
                raise RecipeError("<file>", str(path), f"not valid YAML: {error}") from None
        if data is not None and not isinstance(data, dict):
            raise RecipeError("<top level>", data, "a recipe is a mapping of blocks (model, data, ...)")
        data = apply_overrides(data or {}, overrides or {})
        return cls.from_dict(data, base_dir=path.parent)

    @classmethod
    def coerce(cls, recipe: Recipe | dict | str | os.PathLike | None) -> Recipe:
        """Accept a Recipe, a dict, a YAML path or None (an empty recipe)."""
        if recipe is None:
            return cls()
        if isinstance(recipe, Recipe):
            return recipe
        if isinstance(recipe, dict):
            return cls.from_dict(recipe)
        return cls.from_yaml(recipe)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (YAML-ready) with the blocks that are set."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, {})}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


class _YamlLoader(yaml.SafeLoader):
    """YAML with the booleans of YAML 1.2 (``true``/``false`` only): ``save_strategy: no`` stays the string ``no``."""


_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml(stream) -> Any:
    """Parse YAML (a string or a file) as a recipe does: YAML 1.2 booleans, nothing but plain data."""
    return yaml.load(stream, Loader=_YamlLoader)


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys (``training.learning_rate``) in a copy of ``data``; string values are parsed as YAML."""
    data = copy.deepcopy(data)
    for dotted, value in overrides.items():
        if isinstance(value, str):
            value = load_yaml(value) if value.strip() else value
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise RecipeError(dotted, value, f"'{part}' is {child!r}, not a block")
            node = child
        node[leaf] = value
    return data


# --------------------------------------------------------------------------------------------------- builder
def _build(cls: type, data: Any, path: str) -> Any:
    """Build dataclass ``cls`` from ``data``, checking keys and types; errors carry the dotted key."""
    if cls is StudentConfig and isinstance(data, str):
        data = {"name_or_path": data}
    if not isinstance(data, dict):
        raise RecipeError(path or "<top level>", data, f"expected a mapping for {cls.__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        dotted = f"{path}.{key}" if path else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise RecipeError(dotted, value, f"unknown key; {hint}allowed keys: {', '.join(names)}")
        kwargs[key] = _coerce(hints[key], value, dotted)
    try:
        return cls(**kwargs)
    except RecipeError as error:
        raise error.under(path) from None


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _coerce(options[0], value, key)
        errors = []
        for option in options:
            try:
                return _coerce(option, value, key)
            except RecipeError as error:
                errors.append(error.allowed)
        raise RecipeError(key, value, " or ".join(dict.fromkeys(errors)))
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    if origin is Literal:
        if value not in args:
            raise RecipeError(key, value, f"allowed: {', '.join(map(str, args))}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise RecipeError(key, value, "allowed: a list")
        return [_coerce(args[0], item, f"{key}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(key, value, "allowed: a mapping")
        return {_coerce(args[0], k, f"{key}.{k}"): _coerce(args[1], v, f"{key}.{k}") for k, v in value.items()}
    return _coerce_scalar(hint, value, key)


def _coerce_scalar(hint: Any, value: Any, key: str) -> Any:
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise RecipeError(key, value, "allowed: true or false")
    if hint is int:
        if isinstance(value, str) and value.lstrip("-").isdigit():  # mapping keys from the command line
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise RecipeError(key, value, "allowed: an integer")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise RecipeError(key, value, "allowed: a number")
    if hint is str:
        if isinstance(value, str):
            return value
        raise RecipeError(key, value, "allowed: a string")
    return value


def _check_training_arguments(training: dict[str, Any]) -> None:
    """Check ``training:`` keys against :class:`transformers.TrainingArguments` and simple field types."""
    from transformers import TrainingArguments

    fields = {f.name: f for f in dataclasses.fields(TrainingArguments) if f.init}
    hints = typing.get_type_hints(TrainingArguments)
    for key, value in training.items():
        dotted = f"training.{key}"
        if key == "output_dir":
            raise RecipeError(dotted, value, "give the output directory on the command line or in Python")
        if key == "save_safetensors" and value is not True:
            raise RecipeError(
                dotted, value, "models and checkpoints are written as safetensors (no pickles): allowed: true"
            )
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise RecipeError(dotted, value, f"unknown key; {hint}allowed: any transformers.TrainingArguments field")
        hint_type = hints.get(key)
        simple = {int, float, bool, str, int | None, float | None, bool | None, str | None}
        if hint_type in simple:
            _coerce(hint_type, value, dotted)
            if (
                hint_type in (float, float | None)
                and isinstance(value, (int, float))
                and value < 0
                and key in {"learning_rate", "weight_decay", "num_train_epochs", "warmup_ratio"}
            ):
                raise RecipeError(dotted, value, "allowed: a number >= 0")
