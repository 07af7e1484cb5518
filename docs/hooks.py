"""MkDocs hook: the generated parts of the documentation, made from the code at build time.

A page asks for a generated part with a marker on a line of its own:

    <!-- hf-compress: recipe-reference -->       every recipe block: model, data, each registered technique, export,
                                                 training (a technique installed as a plugin appears too)
    <!-- hf-compress: recipe-block NAME -->      one block's table (a technique's recipe key, or model, data, export)
    <!-- hf-compress: cli -->                    the help of every ``hf-compress`` command (``build_parser()``)
    <!-- hf-compress: cli-usage -->              the usage line of every command, in one block

Each table row is one field of a config dataclass: its recipe key, type, default, the range it declares
(``hf_compress.checks`` field metadata) and the description from the class docstring's ``Attributes:``. An unknown
marker or block name stops the build.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import os
import posixpath
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

MARKER = re.compile(r"^<!-- hf-compress: ([a-z-]+)(?: (\S+))? -->$", re.M)
DOCS = Path(__file__).resolve().parent
#: The pages of the techniques documented here, by recipe key (a plugin's technique has none).
TECHNIQUE_PAGES = "techniques/{name}.md"


# ------------------------------------------------------------------------------------------------ text
def _markdown(text: str) -> str:
    """A docstring fragment as Markdown: ``code`` -> `code`, :role:`~a.b.c` -> `c`, one line, pipes escaped."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", text)
    text = text.replace("``", "`")
    text = " ".join(text.split())
    parts = text.split("`")  # escape pipes outside code spans (inside them the table keeps them)
    return "`".join(part.replace("|", "\\|") if i % 2 == 0 else part for i, part in enumerate(parts))


def docstring_parts(cls: type) -> tuple[str, dict[str, str]]:
    """The text of a class docstring before ``Attributes:`` (its paragraphs) and the description of each attribute.

    ``start_epoch / end_epoch: ...`` describes both names.
    """
    doc = inspect.cleandoc(cls.__doc__ or "")
    summary, _, attributes = doc.partition("\nAttributes:\n")
    descriptions: dict[str, str] = {}
    current: list[str] = []
    lines: list[str] = []
    for line in attributes.splitlines():
        entry = re.match(r"^ {4}([A-Za-z_][\w ./]*?):(?: (.*))?$", line)
        if entry and not line.startswith(" " * 5):
            if current:
                descriptions.update(dict.fromkeys(current, _markdown(" ".join(lines))))
            current = [name.strip() for name in entry.group(1).split("/")]
            lines = [entry.group(2) or ""]
        elif not line.strip():
            continue
        elif current and line.startswith(" " * 5):  # a continuation line
            lines.append(line.strip())
        else:
            break  # the end of the section
    if current:
        descriptions.update(dict.fromkeys(current, _markdown(" ".join(lines))))
    return "\n\n".join(_markdown(paragraph) for paragraph in summary.strip().split("\n\n")), descriptions


def _value(value: Any) -> str:
    """A default as YAML would write it."""
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def type_text(hint: Any) -> str:
    """A type hint in words: ``float | None`` -> float; ``Literal["a", "b"]`` -> `a` or `b`; ``list[str]`` -> list of
    str; a config dataclass -> its name."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        parts = [type_text(a) for a in args if a is not type(None)]
        return " or ".join(dict.fromkeys(parts))
    if origin is Literal:
        return " or ".join(f"`{str(a).lower() if isinstance(a, bool) else a}`" for a in args)
    if origin in (list, tuple):
        return f"list of {type_text(args[0])}"
    if origin is dict:
        return f"mapping of {type_text(args[0])} to {type_text(args[1])}"
    if dataclasses.is_dataclass(hint):
        return f"block (`{hint.__name__}`)"
    return getattr(hint, "__name__", str(hint))


def _nested(hint: Any) -> type | None:
    """The config dataclass a field holds (``X | None`` -> X), or None."""
    for candidate in typing.get_args(hint) or (hint,):
        if dataclasses.is_dataclass(candidate):
            return candidate
    return None


# ------------------------------------------------------------------------------------------------ recipe blocks
def field_rows(cls: type, prefix: str) -> list[tuple[str, str, str, str, str]]:
    """``(key, type, default, range, description)`` of every field of a config dataclass, nested blocks expanded."""
    from hf_compress.checks import Number, Text, _field_specs

    hints = typing.get_type_hints(cls)
    _, descriptions = docstring_parts(cls)
    ranges = {name: (spec, integer) for name, spec, integer, _ in _field_specs(cls)}
    rows = []
    for f in dataclasses.fields(cls):
        hint, key = hints[f.name], f"{prefix}.{f.name}"
        nested = _nested(hint)
        if f.default is not dataclasses.MISSING:
            default = _value(f.default)
        elif nested is None:
            default = _value(f.default_factory())
        else:
            default = "its defaults"
        spec, integer = ranges.get(f.name, (None, False))
        if isinstance(spec, Number):
            allowed = spec.allowed(integer).removeprefix("allowed: ")
        elif isinstance(spec, Text):
            allowed = f"{spec.what}, not blank"
        elif hint is bool:
            allowed = "`true` or `false`"
        elif "Literal" in str(hint):
            allowed = "as the type says"
        else:
            allowed = "-"
        rows.append((f"`{key}`", type_text(hint), default, _markdown(allowed), descriptions.get(f.name, "")))
        if nested is not None:
            rows.extend(field_rows(nested, key))
    return rows


def block_table(cls: type, prefix: str) -> str:
    lines = ["| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in field_rows(cls, prefix)]
    return "\n".join(lines)


def _blocks() -> dict[str, type]:
    """Every config block by recipe key: model, data, each registered technique (surgery order), export."""
    from hf_compress.configs import DataConfig, ExportConfig, ModelConfig
    from hf_compress.technique import registered_techniques

    techniques = {technique.name: technique.config_class for technique in registered_techniques()}
    return {"model": ModelConfig, "data": DataConfig, **techniques, "export": ExportConfig}


def _block_class(name: str) -> type:
    """The config class of a block (``pruning``) or of a block inside one (``model.student.vocabulary``)."""
    blocks = _blocks()
    top, *path = name.split(".")
    if top not in blocks:
        raise ValueError(f"no recipe block {top!r}; the blocks are: {', '.join(blocks)}")
    cls = blocks[top]
    for part in path:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        nested = _nested(typing.get_type_hints(cls)[part]) if part in fields else None
        if nested is None:
            raise ValueError(f"{name!r}: {cls.__name__} has no block {part!r}")
        cls = nested
    return cls


def recipe_block(name: str, page: str) -> str:
    """One block's table, under the class summary; a technique's line also names its class and page."""
    from hf_compress.technique import get_technique

    cls = _block_class(name)
    summary, _ = docstring_parts(cls)
    technique = get_technique(name)
    about = []
    if technique is not None:
        loss = "adds a loss term: needs `CompressionTrainer`" if technique.contributes_loss else "a plain callback"
        about.append(
            f"Technique `{technique.__module__}.{technique.__name__}` ({loss}; surgery order {technique.order}; "
            f"checkpoint state `{technique.state_file}`)."
        )
        target = TECHNIQUE_PAGES.format(name=name)
        if (DOCS / target).is_file() and target != page:
            about.append(f"See [{name}]({posixpath.relpath(target, posixpath.dirname(page) or '.')}).")
    return "\n\n".join(
        [summary, " ".join(about), block_table(cls, name)] if about else [summary, block_table(cls, name)]
    )


def training_table() -> str:
    from hf_compress.checks import TRAINING_RANGES, Number

    lines = ["| key | allowed |", "|---|---|"]
    for key, spec in TRAINING_RANGES.items():
        if isinstance(spec, Number):
            integer = spec.integer if spec.integer is not None else False
            allowed = spec.allowed(integer).removeprefix("allowed: ")
        else:
            allowed = f"{spec.what}, not blank"
        lines.append(f"| `training.{key}` | {_markdown(allowed)} |")
    return "\n".join(lines)


def recipe_reference(page: str) -> str:
    parts = []
    for name in _blocks():
        parts += [f"## `{name}`", recipe_block(name, page)]
    parts += [
        "## `training`",
        "Any `transformers.TrainingArguments` field, checked by name and simple type; `output_dir` comes from the "
        "command line. These fields, which transformers checks late or not at all, have declared ranges "
        "(`hf_compress.checks.TRAINING_RANGES`); every other float field must be finite.",
        training_table(),
    ]
    return "\n\n".join(parts)


# ------------------------------------------------------------------------------------------------ command line
@contextlib.contextmanager
def _columns(columns: int = 100):
    """Format argparse help at ``columns``, whatever the terminal (argparse reads ``COLUMNS``)."""
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(columns)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous


def _commands() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """``build_parser()`` and its commands by name."""
    from hf_compress.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, dict(commands.choices)


def cli_usage() -> str:
    """The usage of every ``hf-compress`` command, in one block."""
    with _columns():
        _, commands = _commands()
        usages = [command.format_usage().strip() for command in commands.values()]
    prefix = "usage: "  # dropped, with the indentation it adds to the continuation lines
    lines = [
        line.removeprefix(prefix if i == 0 else " " * len(prefix))
        for u in usages
        for i, line in enumerate(u.splitlines())
    ]
    return "```text\n" + "\n".join(lines) + "\n```"


def cli_reference() -> str:
    """``hf-compress --help`` and each command's help, as ``build_parser()`` prints them (100 columns)."""
    with _columns():
        parser, commands = _commands()
        parts = ["```text\n$ hf-compress --help\n" + parser.format_help().strip() + "\n```"]
        for name, command in commands.items():
            help_text = command.format_help().strip()
            parts += [f"## `hf-compress {name}`", f"```text\n$ hf-compress {name} --help\n{help_text}\n```"]
    return "\n\n".join(parts)


# ------------------------------------------------------------------------------------------------ the hook
def render(markdown: str, page: str) -> str:
    """``markdown`` with every marker replaced by what it asks for (``page``: the page's path under docs/)."""

    def replace(match: re.Match) -> str:
        kind, argument = match.group(1), match.group(2)
        if kind == "recipe-reference" and argument is None:
            return recipe_reference(page)
        if kind == "recipe-block" and argument is not None:
            return recipe_block(argument, page)
        if kind == "cli" and argument is None:
            return cli_reference()
        if kind == "cli-usage" and argument is None:
            return cli_usage()
        raise ValueError(f"{page}: unknown marker {match.group(0)!r}")

    return MARKER.sub(replace, markdown)


def on_page_markdown(markdown: str, page, config, files) -> str:
    return render(markdown, page.file.src_uri)
