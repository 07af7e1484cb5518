"""Recipes: YAML or dict -> typed, validated configuration dataclasses.

A recipe has a block for the models, the data, the export and the training arguments, and one block per
technique (its recipe key, from the technique registry); each block maps onto one config dataclass, so that what
a recipe can say is exactly what the Python API can say::

    imports: [my_technique]          # optional: modules defining techniques (imported first)
    model: {teacher: path-or-hub-id, student: {from_teacher_layers: [0, 2, 4]}}
    data: {task: ner, train_file: train.txt, validation_file: valid.txt}
    <technique key>: {...}           # one block per registered technique, e.g. its schedule and targets
    training: {num_train_epochs: 3, learning_rate: 1.0e-4}

Every problem (unknown key, wrong type, value out of range, blocks that do not compose) raises
:class:`RecipeError` naming the key, the bad value and what is allowed, before any model is loaded.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from .checks import TRAINING_RANGES, Number, check_value, short_repr
from .configs import (
    CalibrationConfig,
    DataConfig,
    ExportConfig,
    ModelConfig,
    RecipeError,
    StudentConfig,
    VocabularyConfig,
)
from .int8_routes import resolve_int8_route
from .plugins import import_modules
from .technique import get_technique, registered_techniques

__all__ = [
    "CalibrationConfig",
    "DataConfig",
    "ExportConfig",
    "ModelConfig",
    "Recipe",
    "RecipeError",
    "StudentConfig",
    "VocabularyConfig",
]

#: The blocks every recipe may have besides the techniques', with their config classes.
_BLOCKS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "export": ExportConfig}


# --------------------------------------------------------------------------------------------------- recipe
class Recipe:
    """A whole compression recipe. Build it with :meth:`from_yaml`, :meth:`from_dict` or keywords.

    Attributes:
        model / data / export: :class:`ModelConfig`, :class:`DataConfig`, :class:`ExportConfig` (or None).
        training: keyword arguments of :class:`transformers.TrainingArguments` (checked by name and type).
        imports: modules imported before the technique blocks are read (techniques defined outside the package and
            not installed as plugins); kept in the saved recipe, so that every process reading it knows them.
        techniques: the technique blocks that are set, by recipe key, in surgery order; each is also an attribute
            (``recipe.<key>``, None when absent). A technique is off when its block is absent.
    """

    def __init__(
        self,
        model: ModelConfig | None = None,
        data: DataConfig | None = None,
        export: ExportConfig | None = None,
        training: dict[str, Any] | None = None,
        imports: list[str] | None = None,
        **techniques: Any,
    ):
        self.model, self.data, self.export = model, data, export
        self.training = dict(training or {})
        self.imports = import_modules(imports or [])
        blocks = {}
        for name, config in techniques.items():
            technique = get_technique(name)
            if technique is None:
                raise TypeError(f"Recipe() got an unknown block {name!r}; allowed: {', '.join(_allowed_keys())}")
            several = technique.repeatable and isinstance(config, list) and config
            if config is not None and not all(
                isinstance(c, technique.config_class) for c in (config if several else [config])
            ):
                kind = technique.config_class.__name__
                raise TypeError(
                    f"Recipe({name}=...) takes a {kind}" + (f" or a list of {kind}" if technique.repeatable else "")
                )
            if config is not None:
                blocks[name] = config
        order = [t.name for t in registered_techniques()]
        self.techniques: dict[str, Any] = {name: blocks[name] for name in order if name in blocks}
        _check_training_arguments(self.training)
        if self.export is not None:
            try:
                route = resolve_int8_route(self.export.int8)
            except RecipeError as error:
                raise error.under("export") from None
            if route is not None:
                route.check_recipe(self)
        for name in self.techniques:
            get_technique(name).check_recipe(self)

    def check_architecture(self, model_config: Any) -> None:
        """Raise :class:`RecipeError` naming the key, the architecture and the reason when the model of
        ``model_config`` (a transformers config) cannot do what this recipe asks
        (:attr:`~hf_compress.architectures.Architecture.refused`)."""
        from .architectures import UnsupportedCapabilityError, require

        needs: dict[str, str] = {}
        for key in ("from_teacher_layers", "from_teacher_layers_by_influence"):
            if self.model is not None and getattr(self.model.student, key) is not None:
                needs["student_layers"] = f"model.student.{key}"
        if self.model is not None and self.model.student.width is not None:
            if self.model.student.width.hidden_size is not None:
                needs["width_pruning"] = "model.student.width.hidden_size"
            if self.model.student.width.intermediate_size is not None:
                needs["neuron_pruning"] = "model.student.width.intermediate_size"
        for name, block in self.techniques.items():
            needs.update(get_technique(name).capabilities(block))
        if self.export is not None and self.export.onnx:
            needs["export"] = "export"
        for capability, key in needs.items():
            try:
                require(model_config, capability)
            except UnsupportedCapabilityError as error:
                raise RecipeError(key, error.architecture, str(error)) from None

    def __getattr__(self, name: str) -> Any:
        if name != "techniques" and get_technique(name) is not None:
            return self.__dict__.get("techniques", {}).get(name)
        raise AttributeError(f"'Recipe' object has no attribute {name!r}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Recipe) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Recipe({self.to_dict()!r})"

    @property
    def is_empty(self) -> bool:
        """Nothing set: the plain Trainer's behaviour."""
        return not self.to_dict()

    # construction ---------------------------------------------------------------------------------------
    @classmethod
    def from_dict(
        cls,
        data: dict[str, Any] | None,
        base_dir: str | os.PathLike | None = None,
        *,
        fallback_dir: str | os.PathLike | None = None,
    ) -> Recipe:
        """Build and validate a recipe from a plain dict; relative data paths are resolved against ``base_dir``
        (and, when they name nothing there, against ``fallback_dir`` if it is given)."""
        data = data or {}
        if not isinstance(data, dict):
            raise RecipeError("<top level>", data, "a recipe is a mapping of blocks (model, data, ...)")
        imports = data.get("imports")
        if imports is not None and not isinstance(imports, list):
            raise RecipeError("imports", imports, "allowed: a list of Python module names")
        blocks: dict[str, Any] = {"imports": import_modules(imports or [])}  # first: they define technique blocks
        for key, value in data.items():
            if key == "imports":
                continue
            config_class = _BLOCKS.get(key) or getattr(get_technique(str(key)), "config_class", None)
            if key == "training":
                if not isinstance(value, dict):
                    raise RecipeError("training", value, "allowed: a mapping of TrainingArguments fields")
                blocks[key] = value
            elif isinstance(value, list) and getattr(get_technique(str(key)), "repeatable", False):
                if not value:
                    raise RecipeError(key, value, f"one {key} block or a non-empty list of them")
                blocks[key] = [_build(config_class, block, f"{key}.{i}") for i, block in enumerate(value)]
                if len(blocks[key]) == 1:
                    blocks[key] = blocks[key][0]
            elif config_class is not None:
                blocks[key] = None if value is None else _build(config_class, value, key)
            else:
                allowed = _allowed_keys()
                raise _unknown_key(_key_text(key), key, value, allowed, f"allowed keys: {', '.join(allowed)}")
        recipe = cls(**blocks)
        if base_dir is not None:
            for dotted in _path_keys():
                block, *parents, leaf = dotted.split(".")
                node = getattr(recipe, block, None)
                for part in parents:
                    node = getattr(node, part, None)
                if node is not None and getattr(node, leaf, None) is not None:
                    setattr(node, leaf, _absolute(getattr(node, leaf), base_dir, fallback_dir))
        return recipe

    @classmethod
    def from_yaml(
        cls,
        path: str | os.PathLike,
        overrides: dict[str, Any] | None = None,
        *,
        fallback_dir: str | os.PathLike | None = None,
    ) -> Recipe:
        """Read a YAML recipe; ``overrides`` maps dotted keys (``training.learning_rate``) to values.

        Data files named in the file are relative to the file; those given as overrides (the command line's
        ``--data.train_file``) to the working directory. With ``fallback_dir``, a relative path in the file that
        names nothing beside it is relative to ``fallback_dir`` instead (a shipped recipe's ``news.txt``: the
        user's file, in the working directory).
        """
        path = Path(path)
        path_keys = _path_keys()
        overrides = {
            key: _absolute(load_yaml(value) if key not in _DATA_FILE_KEYS else value)
            if key in path_keys and isinstance(value, str) and value
            else value
            for key, value in (overrides or {}).items()
        }
        if not path.is_file():
            raise FileNotFoundError(f"recipe file not found: {path}")
        with open(path, encoding="utf-8") as handle:
            try:
                data = load_yaml(handle)
            except yaml.YAMLError as error:
                raise RecipeError("<file>", str(path), f"not valid YAML: {error}") from None
            except RecursionError:
                raise RecipeError("<file>", str(path), "nested too deeply to be a recipe") from None
        if data is not None and not isinstance(data, dict):
            raise RecipeError("<top level>", data, "a recipe is a mapping of blocks (model, data, ...)")
        data = apply_overrides(data or {}, overrides or {})
        # saved recipes name the files wherever they go
        return cls.from_dict(data, base_dir=path.absolute().parent, fallback_dir=fallback_dir)

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

    def techniques_only(self) -> Recipe:
        """A copy with the technique blocks and the ``export`` block alone: what applies to a model built
        elsewhere (``CompressionTrainer(model=..., recipe=recipe.techniques_only())``), without the ``model``,
        ``data`` and ``training`` blocks of a recipe written for ``hf-compress train``."""
        return Recipe(export=copy.deepcopy(self.export), **copy.deepcopy(self.techniques))

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (YAML-ready) with the blocks that are set: imports, model, data, techniques, export,
        training."""
        blocks = {"model": self.model, "data": self.data, **self.techniques, "export": self.export}
        out: dict[str, Any] = {"imports": list(self.imports)} if self.imports else {}
        out.update(
            {
                k: [dataclasses.asdict(c) for c in v] if isinstance(v, list) else dataclasses.asdict(v)
                for k, v in blocks.items()
                if v is not None
            }
        )
        if self.training:
            out["training"] = dict(self.training)
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _allowed_keys() -> list[str]:
    return ["imports", "model", "data", *(t.name for t in registered_techniques()), "export", "training"]


def _key_text(key: Any) -> str:
    """A mapping key as it appears in an error's dotted key: a name as it is, anything else (a blank string
    too) as its repr."""
    return key if isinstance(key, str) and key.strip() and key.isprintable() else short_repr(key)


def _unknown_key(dotted: str, key: Any, value: Any, candidates: list[str], allowed: str) -> RecipeError:
    """The error for a key that is not allowed, with the closest candidate (for a key of any type)."""
    if not isinstance(key, str):
        return RecipeError(dotted, value, f"keys are names, not {short_repr(key)}; {allowed}")
    close = difflib.get_close_matches(key, candidates, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return RecipeError(dotted, value, f"unknown key; {hint}{allowed}")


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


_DATA_FILE_KEYS = ("data.train_file", "data.validation_file")


def _path_keys() -> tuple[str, ...]:
    """The dotted keys that hold file paths: relative to the recipe file in a file, to the working directory on
    the command line (the data files, and each technique's ``path_fields``)."""
    return _DATA_FILE_KEYS + tuple(f"{t.name}.{key}" for t in registered_techniques() for key in t.path_fields)


def _absolute(
    value: Any, base_dir: str | os.PathLike | None = None, fallback_dir: str | os.PathLike | None = None
) -> Any:
    """A path (or each path of a list) made absolute against ``base_dir`` (default: the working directory), or
    against ``fallback_dir`` when it is given and the path names nothing under ``base_dir``."""
    if isinstance(value, list):
        return [_absolute(v, base_dir, fallback_dir) for v in value]
    if not isinstance(value, str) or not value or os.path.isabs(value):
        return value
    if base_dir is None:
        return os.path.abspath(value)
    path = os.path.normpath(os.path.join(base_dir, value))
    if fallback_dir is not None and not os.path.exists(path):
        return os.path.normpath(os.path.join(fallback_dir, value))
    return path


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys (``training.learning_rate``) in a copy of ``data``; string values are parsed as YAML."""
    data = copy.deepcopy(data)
    for dotted, value in overrides.items():
        if isinstance(value, str) and value.strip():
            try:
                value = load_yaml(value)
            except yaml.YAMLError as error:
                raise RecipeError(dotted, value, f"not a valid YAML value: {error}") from None
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
@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls: type, data: Any, path: str) -> Any:
    """Build dataclass ``cls`` from ``data``, checking keys and types; errors carry the dotted key."""
    if cls is StudentConfig and isinstance(data, str):
        data = {"name_or_path": data}
    if not isinstance(data, dict):
        raise RecipeError(path or "<top level>", data, f"expected a mapping for {cls.__name__}")
    hints = _type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        dotted = f"{path}.{_key_text(key)}" if path else _key_text(key)
        if key not in names:
            raise _unknown_key(dotted, key, value, names, f"allowed keys: {', '.join(names)}")
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
        return {
            _coerce(args[0], k, f"{key}.{_key_text(k)}"): _coerce(args[1], v, f"{key}.{_key_text(k)}")
            for k, v in value.items()
        }
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
        number = _float_or_none(value) if isinstance(value, str) else value  # YAML 1.1 reads 3e-4 as a string
        if isinstance(number, (int, float)) and not isinstance(number, bool):
            return float(number)
        raise RecipeError(key, value, "allowed: a number")
    if hint is str:
        if isinstance(value, str):
            return value
        raise RecipeError(key, value, "allowed: a string")
    return value


def _float_or_none(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


_SIMPLE_TYPES = {int, float, bool, str, int | None, float | None, bool | None, str | None}


@functools.cache
def _training_argument_types() -> tuple[frozenset[str], dict[str, Any]]:
    """The ``training:`` keys of this stack (and the portable ones) and their types."""
    from transformers import TrainingArguments

    from .compat import PORTABLE_TRAINING_ARGUMENTS, training_argument_fields

    # keys one stack renamed or removed are accepted on both (compat.training_arguments translates them)
    fields = training_argument_fields() | set(PORTABLE_TRAINING_ARGUMENTS)
    return fields, {**typing.get_type_hints(TrainingArguments), **PORTABLE_TRAINING_ARGUMENTS}


def training_range(key: str, hint: Any) -> Any:
    """The declared range of a ``training:`` key (:data:`~hf_compress.checks.TRAINING_RANGES`); any other float
    field is at least finite. None when its values are not checked here."""
    if key in TRAINING_RANGES:
        return TRAINING_RANGES[key]
    return Number() if hint in (float, float | None) else None


def _check_training_arguments(training: dict[str, Any]) -> None:
    """Check ``training:`` keys against :class:`transformers.TrainingArguments`, simple field types and the declared
    ranges of :data:`~hf_compress.checks.TRAINING_RANGES`."""
    fields, hints = _training_argument_types()
    for key, value in training.items():
        dotted = f"training.{_key_text(key)}"
        if key == "output_dir":
            raise RecipeError(dotted, value, "give the output directory on the command line or in Python")
        if key == "save_safetensors" and value is not True:
            raise RecipeError(
                dotted, value, "models and checkpoints are written as safetensors (no pickles): allowed: true"
            )
        if key not in fields:
            raise _unknown_key(dotted, key, value, sorted(fields), "allowed: any transformers.TrainingArguments field")
        hint_type = hints.get(key)
        if hint_type in _SIMPLE_TYPES:
            value = training[key] = _coerce(hint_type, value, dotted)
            spec = training_range(key, hint_type)
            if spec is not None and value is not None:
                check_value(dotted, value, spec, integer=hint_type in (int, int | None))
            if key == "warmup_steps" and value >= 1 and value != int(value):
                raise RecipeError(dotted, value, "allowed: a whole number of steps, or a fraction of the run below 1")
