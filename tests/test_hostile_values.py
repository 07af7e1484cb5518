"""Values that must be refused: every field of every recipe block against hostile values, and fuzzed recipes.

The fields are enumerated from the config dataclasses (every registered technique's, the model, data and export
blocks, their nested blocks) and from the declared ranges of ``training:``, so a field added later is covered
without touching this file. Each hostile value must raise a :class:`RecipeError` naming that field's key; the fuzz
test mutates the shipped recipes and requires that ``Recipe.from_dict`` either accepts the result or refuses it with
one key-named line, never another exception.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_compress import Recipe, RecipeError
from hf_compress.checks import RANGE_KEY, TRAINING_RANGES, Number, Text
from hf_compress.compat import PORTABLE_TRAINING_ARGUMENTS, training_argument_fields
from hf_compress.configs import DataConfig, ExportConfig, ModelConfig
from hf_compress.recipe import _training_argument_types, load_yaml, training_range
from hf_compress.technique import registered_techniques

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
NAN, INF = math.nan, math.inf


# ------------------------------------------------------------------------------------------------ the fields
def _walk(prefix: str, cls: type):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        dotted, hint = f"{prefix}.{f.name}", hints[f.name]
        yield dotted, hint, f.metadata.get(RANGE_KEY)
        nested = [a for a in (typing.get_args(hint) or (hint,)) if dataclasses.is_dataclass(a)]
        if nested:
            yield from _walk(dotted, nested[0])


def block_fields() -> list[tuple[str, Any, Any]]:
    """``(dotted key, type hint, declared range)`` of every field of every recipe block, nested blocks included."""
    roots = {"model": ModelConfig, "data": DataConfig, "export": ExportConfig}
    roots |= {t.name: t.config_class for t in registered_techniques()}
    return [row for name, cls in roots.items() for row in _walk(name, cls)]


def training_fields() -> list[tuple[str, Any, Any]]:
    """The ``training:`` keys with a declared range on this stack, and every other float field (finite)."""
    fields, hints = _training_argument_types()
    rows = []
    for key in sorted(fields):
        spec = training_range(key, hints.get(key))
        if spec is not None and (key in training_argument_fields() or key in PORTABLE_TRAINING_ARGUMENTS):
            rows.append((f"training.{key}", hints.get(key), spec))
    return rows


def _parts(hint: Any) -> tuple[Any, str]:
    """The hint without None, and its shape (scalar, list or dict)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _parts(options[0])
        return hint, "scalar"
    return hint, "list" if origin is list else "dict" if origin is dict else "scalar"


def _outside(spec: Number, integer: bool) -> list[Any]:
    """The nearest values outside the declared interval (and not among its ``also`` values)."""
    step = 1 if integer else 0.5
    values = []
    if spec.low is not None:
        values.append(spec.low if spec.low_open else spec.low - step)
    if spec.high is not None:
        values.append(spec.high if spec.high_open else spec.high + step if integer else spec.high * 2 + 1)
    if integer:
        values = [int(v) for v in values]
    return [v for v in values if v not in spec.also]


def hostile_values(hint: Any, spec: Any) -> list[Any]:
    """Values a field with this type and declared range must refuse."""
    scalar, shape = _parts(hint)
    optional = type(None) in typing.get_args(hint)
    if isinstance(spec, Number):
        integer = spec.integer if spec.integer is not None else scalar is int
        values = [NAN, INF, -INF, "junk", True, *_outside(spec, integer)] + ([1.5] if integer else [])
    elif isinstance(spec, Text):
        values = ["", "   ", "a\x00b", 3, NAN, True]
    elif dataclasses.is_dataclass(scalar):
        return [NAN, 3, True, [1]]  # (a string is the student's shorthand for its name)
    else:  # bool, Literal: refused by type
        values = [NAN, "no-such-choice", 3, [1]] if typing.get_origin(scalar) is Literal else [NAN, "yes", 3, [1]]
        return values + ([] if optional else [None])
    if shape == "list":
        return [[v] for v in values] + [{"k": values[0]}]
    if shape == "dict":
        return [{0: v} for v in values] + [{v: 0} for v in values if not isinstance(v, str)] + [[1]]
    return values + [[values[-1]], {"k": 1}]


def recipe_with(dotted: str, value: Any) -> dict:
    """A recipe dict holding only the blocks that lead to ``dotted``, set to ``value``."""
    recipe: dict = {}
    node = recipe
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return recipe


def _named(error: RecipeError, dotted: str) -> bool:
    return error.key == dotted or error.key.startswith((f"{dotted}.", f"{dotted}["))


BLOCK_FIELDS, TRAINING_FIELDS = block_fields(), training_fields()


@pytest.mark.parametrize(
    "dotted, hint, spec", BLOCK_FIELDS + TRAINING_FIELDS, ids=[r[0] for r in BLOCK_FIELDS + TRAINING_FIELDS]
)
def test_every_field_refuses_every_hostile_value_naming_its_key(dotted, hint, spec):
    values = hostile_values(hint, spec)
    assert len(values) >= 4
    accepted, unnamed = [], []
    for value in values:
        try:
            Recipe.from_dict(recipe_with(dotted, value))
        except RecipeError as error:
            if not _named(error, dotted) or "\n" in str(error):
                unnamed.append((value, str(error)))
        else:
            accepted.append(value)
    assert accepted == [] and unnamed == []


def test_the_table_covers_every_field_with_a_declared_range():
    """Every number, text and path field declares a range (``@checked`` refuses a class that does not), and the
    hostile table enumerates them: the figures the issue asks for."""
    numeric_or_text = [row for row in BLOCK_FIELDS if row[2] is not None]
    others = [row for row in BLOCK_FIELDS if row[2] is None]
    assert all(isinstance(spec, (Number, Text)) for _, _, spec in numeric_or_text)
    assert {"pruning.final_sparsity", "distillation.alpha", "distillation.temperature", "model.teacher"} <= {
        row[0] for row in numeric_or_text
    }
    assert {"training.num_train_epochs", "training.learning_rate", "training.per_device_train_batch_size"} <= {
        row[0] for row in TRAINING_FIELDS
    }
    on_this_stack = {k for k in TRAINING_RANGES if k in training_argument_fields() or k in PORTABLE_TRAINING_ARGUMENTS}
    assert {f"training.{k}" for k in on_this_stack} <= {row[0] for row in TRAINING_FIELDS}
    rows = BLOCK_FIELDS + TRAINING_FIELDS
    cases = sum(len(hostile_values(hint, spec)) for _, hint, spec in rows)
    print(
        f"\nhostile table: {len(rows)} fields ({len(numeric_or_text)} numeric/text block fields, {len(others)} "
        f"bool/choice/block fields, {len(TRAINING_FIELDS)} training fields), {cases} field x value cases"
    )
    assert len(others) >= 10 and cases >= 10 * len(rows) // 2


@pytest.mark.parametrize(
    "dotted, value",
    [
        ("pruning.0.final_sparsity", NAN),  # a block of the recipe's pruning list: the key names its index
        ("distillation.alpha", NAN),
        ("distillation.temperature", INF),
        ("training.num_train_epochs", NAN),
        ("training.num_train_epochs", 0),
        ("training.num_train_epochs", 1e30),
        ("training.learning_rate", INF),
        ("training.per_device_train_batch_size", 0),
        ("training.per_device_train_batch_size", -4),
        ("training.per_device_train_batch_size", 1_000_000_000_000),
        ("model.teacher", ""),
    ],
)
def test_the_values_of_the_issue_are_refused_in_the_shipped_recipe(dotted, value):
    recipe = load_yaml((RECIPES[0].parent / "conll2003-small-fast.yaml").read_text())
    Recipe.from_dict(copy.deepcopy(recipe))  # the recipe itself is fine
    node = recipe
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[leaf] = value
    with pytest.raises(RecipeError) as error:
        Recipe.from_dict(recipe)
    assert error.value.key == dotted


def test_configs_built_in_python_are_checked_too():
    from hf_compress import DistillationConfig, PruningConfig

    with pytest.raises(RecipeError, match=r"'alpha': got nan; allowed: a number in \[0\.0, 1\.0\]"):
        DistillationConfig(alpha=NAN)
    with pytest.raises(RecipeError, match=r"'update_every': got \[1\]; allowed: an integer"):
        PruningConfig(update_every=[1], start_step=0, end_step=2)
    with pytest.raises(RecipeError, match=r"'targets\[0\]': got ''; allowed: a module-name pattern"):
        PruningConfig(targets=[""], start_step=0, end_step=2)
    with pytest.raises(TypeError, match=r"Bad\.size declares no range"):

        @__import__("hf_compress.checks").checks.checked
        @dataclasses.dataclass
        class Bad:
            size: int = 1


# ------------------------------------------------------------------------------------------------ the error path
@pytest.mark.parametrize(
    "recipe, key",
    [
        ({3: {"a": 1}}, "3"),
        ({None: 1}, "None"),
        ({"training": {3: 1}}, "training.3"),
        ({"training": {None: 1}}, "training.None"),
        ({"model": {None: "x"}}, "model.None"),
        ({"pruning": {(1, 2): 1}}, "pruning.(1, 2)"),
        ({"distillation": {"hidden_states": {"layer_map": {None: [1]}}}}, "distillation.hidden_states.layer_map.None"),
        ({"training": {"learning_rate": [[[[[[[[[[1]]]]]]]]]]}}, "training.learning_rate"),
    ],
    ids=["int-block", "null-block", "int-training", "null-training", "null-model", "tuple", "null-layer", "deep"],
)
def test_keys_of_any_type_and_deep_junk_are_one_named_line(recipe, key):
    with pytest.raises(RecipeError) as error:
        Recipe.from_dict(recipe)
    assert error.value.key == key and "\n" not in str(error.value) and len(str(error.value)) < 400


def test_very_deep_nesting_is_one_line(tmp_path):
    deep: Any = 1
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(RecipeError, match=r"'training.learning_rate': got \[\[\[\[\.\.\.\]\]\]\]; allowed: a number"):
        Recipe.from_dict({"training": {"learning_rate": deep}})
    path = tmp_path / "deep.yaml"
    path.write_text("training: {learning_rate: " + "[" * 2000 + "]" * 2000 + "}\n")
    with pytest.raises(RecipeError) as error:
        Recipe.from_yaml(path)
    assert error.value.key == "<file>" and "\n" not in str(error.value)


# ------------------------------------------------------------------------------------------------ fuzz
SHIPPED = {path.name: load_yaml(path.read_text()) for path in RECIPES}
FUZZ_EXAMPLES = 2000

_names = ["model", "teacher", "student", "data", "training", "pruning", "alpha", "temperature", "learning_rate"]
KEYS = st.one_of(
    st.text(max_size=8), st.sampled_from(_names), st.integers(-3, 3), st.none(), st.booleans(), st.floats(0, 2)
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**13), 10**13),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.sampled_from(["", " ", "no", "auto", "nan", "-inf", "1e400", "3e-4", "a\x00b", "none", "int4"]),
)
JUNK = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3), max_leaves=8
)


def _mappings(node: dict, path: tuple = ()):
    yield path, node
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _mappings(value, (*path, key))


@st.composite
def mutated_recipes(draw) -> dict:
    """A shipped recipe with one to three mutations: a value replaced by junk, a key added (of any type), removed,
    renamed, or its value nested deeper."""
    recipe = copy.deepcopy(SHIPPED[draw(st.sampled_from(sorted(SHIPPED)))])
    for _ in range(draw(st.integers(1, 3))):
        _, node = draw(st.sampled_from(list(_mappings(recipe))))
        keys = list(node)
        operation = draw(st.sampled_from(["set", "set", "add", "delete", "rename", "nest"]))
        if operation == "add" or not keys:
            node[draw(KEYS)] = draw(JUNK)
            continue
        key = draw(st.sampled_from(keys))
        if operation == "set":
            node[key] = draw(JUNK)
        elif operation == "delete":
            del node[key]
        elif operation == "rename":
            node[draw(KEYS)] = node.pop(key)
        else:
            value, wrap = node[key], draw(st.sampled_from([lambda v: [v], lambda v: {"x": v}, lambda v: {None: v}]))
            for _ in range(draw(st.integers(1, 40))):
                value = wrap(value)
            node[key] = value
    return recipe


def _numbers(value: Any):
    if isinstance(value, dict):
        for item in value.values():
            yield from _numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _numbers(item)
    elif isinstance(value, float):
        yield value


@settings(
    max_examples=FUZZ_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(mutated_recipes())
def test_fuzzed_recipes_are_accepted_or_refused_in_one_named_line(recipe):
    try:
        accepted = Recipe.from_dict(recipe, base_dir="/recipes")
    except RecipeError as error:
        message = str(error)
        assert message.startswith(f"recipe key '{error.key}': got ") and error.key
        assert "\n" not in message and len(message) < 1000
        return
    blocks = {k: v for k, v in accepted.to_dict().items() if k != "training"}
    assert all(math.isfinite(number) for number in _numbers(blocks))
