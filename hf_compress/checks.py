"""Declared ranges: what each numeric, text and path value of a recipe accepts, checked in one place.

A config dataclass declares the range of each of its number, text and path fields in the field's metadata
(``alpha: float = field(default=0.5, metadata=number(0.0, 1.0))``) and is decorated with :func:`checked`, which
refuses a class whose such field declares nothing and runs :func:`check_fields` before the class's own
``__post_init__`` (which keeps the checks that relate fields). The ``training:`` block is checked against
:data:`TRAINING_RANGES`, the ``TrainingArguments`` fields that transformers itself checks late or not at all.

Rules: NaN and infinities are refused unless a range says otherwise; counts are at least 1; epochs and learning
rates are finite and positive; fractions lie in their interval; empty or blank strings, and strings holding a NUL
character, are refused for paths, model ids, names and patterns. A value out of range raises :class:`RecipeError`
naming the key, the value and what is allowed, on one line.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import reprlib
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union

__all__ = [
    "MAX_BATCH",
    "MAX_COUNT",
    "MAX_EPOCHS",
    "Number",
    "RecipeError",
    "Text",
    "TRAINING_RANGES",
    "check_fields",
    "check_range",
    "check_value",
    "checked",
    "count",
    "is_checked",
    "number",
    "short_repr",
    "text",
]

#: The largest count (steps, samples, ranks, layer indices): int32, what indices and step counters hold.
MAX_COUNT = 2**31 - 1
#: The most epochs a run may ask for (more is a run that never ends).
MAX_EPOCHS = 10_000
#: The largest batch (and gradient accumulation) per device: more examples at once than any device holds.
MAX_BATCH = 65_536
#: Where a field keeps its range in ``dataclasses.field(metadata=...)``.
RANGE_KEY = "range"

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict = 3, 60, 60, 6, 6


def short_repr(value: Any) -> str:
    """``repr`` cut to a few dozen characters and three levels of nesting (safe on any nesting depth)."""
    try:
        return _REPR.repr(value)
    except Exception:  # a value whose __repr__ fails
        return f"<{type(value).__name__}>"


class RecipeError(ValueError):
    """A recipe value that cannot be used: names the key, the value and what is allowed, on one line."""

    def __init__(self, key: str, value: Any, allowed: str):
        key = str(key)
        self.key = key if key.isprintable() else key.encode("unicode_escape").decode("ascii")
        self.value, self.allowed = value, " ".join(str(allowed).split())
        super().__init__(f"recipe key '{self.key}': got {short_repr(value)}; {self.allowed}")

    def under(self, prefix: str) -> RecipeError:
        """The same error with its key placed under ``prefix`` (``alpha`` -> ``distillation.alpha``)."""
        key = f"{prefix}.{self.key}" if prefix and not self.key.startswith(prefix + ".") else self.key
        return RecipeError(key, self.value, self.allowed)


def _bound_text(value: float) -> str:
    return "inf" if value == math.inf else "-inf" if value == -math.inf else str(value)


# ---------------------------------------------------------------------------------------------------- ranges
@dataclass(frozen=True)
class Number:
    """The numbers a field accepts: an interval, and ``also`` values outside it. NaN is never accepted.

    Attributes:
        low / high: the bounds (None: unbounded on that side).
        low_open / high_open: exclude the bound itself.
        integer: whole numbers only (None: as the field's type says).
        also: values accepted outside the interval, with what they mean (``{-1: "no limit"}``).
        note: why the range is what it is, said after it when a value is refused.
        finite: refuse infinities (the default); a field that means something by ``.inf`` says False.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool | None = None
    also: dict[Any, str] = dataclasses.field(default_factory=dict)
    note: str = ""
    finite: bool = True

    def allowed(self, integer: bool) -> str:
        left = "(" if self.low_open or (self.low is None and self.finite) else "["
        right = ")" if self.high_open or (self.high is None and self.finite) else "]"
        low = _bound_text(-math.inf if self.low is None else self.low)
        high = _bound_text(math.inf if self.high is None else self.high)
        text = f"allowed: {'an integer' if integer else 'a number'} in {left}{low}, {high}{right}"
        text += "".join(f", or {value} ({meaning})" for value, meaning in self.also.items())
        return f"{text} ({self.note})" if self.note else text

    def check(self, key: str, value: Any, integer: bool = False) -> None:
        integer = self.integer if self.integer is not None else integer
        kind = int if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind):
            raise RecipeError(key, value, "allowed: an integer" if integer else "allowed: a number")
        if value in self.also and not (isinstance(value, float) and math.isnan(value)):
            return
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if too_low or too_high or math.isnan(value) or (self.finite and math.isinf(value)):
            raise RecipeError(key, value, self.allowed(integer))


@dataclass(frozen=True)
class Text:
    """A string that names something: a path, a model id, a column, a pattern. Blank ones and NUL are refused.

    Attributes:
        what: what the string is, for the error message (``a path``, ``a model id or folder``).
    """

    what: str = "a name"

    def check(self, key: str, value: Any, integer: bool = False) -> None:
        if not isinstance(value, str):
            raise RecipeError(key, value, "allowed: a string")
        if not value.strip() or "\x00" in value:
            raise RecipeError(key, value, f"allowed: {self.what} (not blank, no NUL character)")


def number(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    also: dict[Any, str] | None = None,
    note: str = "",
    finite: bool = True,
) -> dict[str, Number]:
    """Field metadata: a number in ``[low, high]`` (open ends with ``low_open`` / ``high_open``), finite unless
    ``finite=False``."""
    return {RANGE_KEY: Number(low, high, low_open, high_open, None, dict(also or {}), note, finite)}


def count(low: int = 1, high: int = MAX_COUNT, *, also: dict[Any, str] | None = None, note: str = "") -> dict:
    """Field metadata: a whole number in ``[low, high]`` (a count: at least 1 by default)."""
    return {RANGE_KEY: Number(low, high, integer=True, also=dict(also or {}), note=note)}


def text(what: str = "a name") -> dict[str, Text]:
    """Field metadata: a string that is not blank (a path, a model id, a name, a pattern)."""
    return {RANGE_KEY: Text(what)}


Shape = Literal["scalar", "list", "dict"]


def check_value(key: str, value: Any, spec: Number | Text, integer: bool = False, shape: Shape = "scalar") -> None:
    """Check ``value`` against ``spec``: a scalar, each item of a list, or each key and value of a mapping."""
    if shape == "list":
        if not isinstance(value, (list, tuple)):
            raise RecipeError(key, value, "allowed: a list")
        for index, item in enumerate(value):
            spec.check(f"{key}[{index}]", item, integer)
    elif shape == "dict":
        if not isinstance(value, dict):
            raise RecipeError(key, value, "allowed: a mapping")
        for item_key, item in value.items():
            spec.check(f"{key}.{item_key}", item_key, integer)
            spec.check(f"{key}.{item_key}", item, integer)
    else:
        spec.check(key, value, integer)


def check_range(
    key: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise :class:`RecipeError` unless ``value`` is a finite number in the interval."""
    Number(low, high, low_open, high_open).check(key, value)


# ---------------------------------------------------------------------------------------------------- configs
def _shape(hint: Any) -> Shape:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        shapes = {_shape(a) for a in typing.get_args(hint) if a is not type(None)}
        return shapes.pop() if len(shapes) == 1 else "scalar"
    return "list" if origin in (list, tuple) else "dict" if origin is dict else "scalar"


def _scalar_types(hint: Any) -> set[Any]:
    """The scalar types inside a hint: ``list[int] | None`` -> ``{int}``; Literal and dataclasses are not scalars."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType, list, tuple, dict):
        return set().union(*(_scalar_types(a) for a in args if a is not type(None)))
    if origin is Literal or dataclasses.is_dataclass(hint):
        return set()
    return {hint}


@functools.cache
def _field_specs(cls: type) -> tuple[tuple[str, Number | Text, bool, str], ...]:
    """``(name, range, integer, shape)`` of each field of ``cls`` that declares a range."""
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        for nested in typing.get_args(hints[f.name]) or (hints[f.name],):
            if dataclasses.is_dataclass(nested) and not is_checked(nested):
                raise TypeError(f"{cls.__name__}.{f.name}: its block {nested.__name__} is not @checked")
        scalars = _scalar_types(hints[f.name])
        spec = f.metadata.get(RANGE_KEY)
        if spec is None and scalars & {int, float, str}:
            raise TypeError(
                f"{cls.__name__}.{f.name} declares no range: give it metadata=number(...), count(...) or text(...)"
            )
        if spec is not None:
            specs.append((f.name, spec, float not in scalars and int in scalars, _shape(hints[f.name])))
    return tuple(specs)


def check_fields(config: Any) -> None:
    """Check every field of a config dataclass against the range its metadata declares (None passes)."""
    for name, spec, integer, shape in _field_specs(type(config)):
        value = getattr(config, name)
        if value is not None:
            check_value(name, value, spec, integer, shape)


def is_checked(cls: type) -> bool:
    """Whether a config dataclass is :func:`checked` (every number, text and path field has a declared range)."""
    return cls.__dict__.get("__range_checked__", False)


def checked(cls: type) -> type:
    """Class decorator for config dataclasses: every number, text and path field declares its range, and
    :func:`check_fields` runs before the class's own ``__post_init__``."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"@checked goes above @dataclass ({cls.__name__})")
    _field_specs(cls)  # a field without a range is a programming error: found at import
    cls.__range_checked__ = True
    own = cls.__dict__.get("__post_init__")
    if own is None:  # the dataclass's __init__ calls no __post_init__: check after it
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self, *args, **kwargs) -> None:
            init(self, *args, **kwargs)
            check_fields(self)

        cls.__init__ = __init__
        return cls

    @functools.wraps(own)
    def __post_init__(self) -> None:
        check_fields(self)
        own(self)

    cls.__post_init__ = __post_init__
    return cls


# ---------------------------------------------------------------------------------------------------- training
_STEPS = "optimizer steps; below 1: a fraction of the run"
#: The ``training:`` keys (``TrainingArguments`` fields, on either stack) whose values transformers checks late or not
#: at all, with their ranges. Any other float field is refused when NaN or infinite.
TRAINING_RANGES: dict[str, Number | Text] = {
    "num_train_epochs": Number(0, MAX_EPOCHS, low_open=True),
    "max_steps": Number(1, MAX_COUNT, integer=True, also={-1: "num_train_epochs decides"}),
    "learning_rate": Number(0, 10, low_open=True),
    "per_device_train_batch_size": Number(1, MAX_BATCH, integer=True),
    "per_device_eval_batch_size": Number(1, MAX_BATCH, integer=True),
    "gradient_accumulation_steps": Number(1, MAX_BATCH, integer=True),
    "eval_accumulation_steps": Number(1, MAX_COUNT, integer=True),
    "weight_decay": Number(0),
    "adam_beta1": Number(0, 1, high_open=True),
    "adam_beta2": Number(0, 1, high_open=True),
    "adam_epsilon": Number(0, 1, low_open=True),
    "max_grad_norm": Number(0, note="0: no clipping"),
    "warmup_ratio": Number(0, 1),
    "warmup_steps": Number(0, MAX_COUNT, note=_STEPS),
    "logging_steps": Number(0, MAX_COUNT, low_open=True, note=_STEPS),
    "eval_steps": Number(0, MAX_COUNT, low_open=True, note=_STEPS),
    "save_steps": Number(0, MAX_COUNT, low_open=True, note=_STEPS),
    "save_total_limit": Number(0, MAX_COUNT, integer=True, note="0: keep every checkpoint, as null"),
    "eval_delay": Number(0, MAX_COUNT),
    "seed": Number(0, 2**32 - 1, integer=True),
    "data_seed": Number(0, 2**32 - 1, integer=True),
    "dataloader_num_workers": Number(0, 1024, integer=True),
    "dataloader_prefetch_factor": Number(1, 1024, integer=True),
    "label_smoothing_factor": Number(0, 1, high_open=True),
    "neftune_noise_alpha": Number(0, low_open=True),
    "torch_empty_cache_steps": Number(1, MAX_COUNT, integer=True),
    "logging_dir": Text("a folder"),
    "run_name": Text("a name"),
    "hub_model_id": Text("a hub repository id"),
    "metric_for_best_model": Text("a metric name"),
    "resume_from_checkpoint": Text("a checkpoint folder"),
}
