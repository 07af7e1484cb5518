"""The recipes shipped with hf-compress, by name: ``hf-compress recipes``, ``hf-compress recipes copy NAME``,
``hf-compress train NAME``.

The repository's ``recipes/`` folder is their only source. A built package (wheel or sdist) carries a copy made at
build time (``setup.py``) in ``hf_compress/_shipped/``, together with the quickstart's sample data, laid out as in the
repository (``recipes/*.yaml``, ``examples/data/conll-sample/``), so a recipe's relative paths
(``../examples/data/conll-sample/train.txt``) name the same files in both. A clone, and an editable install of it,
read ``recipes/`` in place.

A recipe's description is the first line of its header comment.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .recipe import Recipe, _path_keys, load_yaml

#: Where a built package keeps the shipped recipes and the files they name.
SHIPPED_DIR = Path(__file__).resolve().parent / "_shipped"
#: The repository's recipe folder, seen from a clone's ``hf_compress/``.
_CLONE_ROOT = Path(__file__).resolve().parent.parent
RECIPE_SUFFIX = ".yaml"


class UnknownRecipeError(FileNotFoundError):
    """Neither a recipe file nor the name of a shipped recipe."""


@dataclass(frozen=True)
class ShippedRecipe:
    """A recipe shipped with hf-compress.

    Attributes:
        name: what ``hf-compress train NAME`` and :func:`load_recipe` take (the file name without ``.yaml``).
        path: the YAML file.
        description: the first line of its header comment.
    """

    name: str
    path: Path
    description: str


def recipes_dir() -> Path:
    """The folder of the shipped recipes: inside the installed package, or the clone's ``recipes/``."""
    if (SHIPPED_DIR / "recipes").is_dir():
        return SHIPPED_DIR / "recipes"
    if (_CLONE_ROOT / "pyproject.toml").is_file() and (_CLONE_ROOT / "recipes").is_dir():
        return _CLONE_ROOT / "recipes"
    raise FileNotFoundError(f"no shipped recipes: neither {SHIPPED_DIR / 'recipes'} nor a clone's recipes/ exists")


def _description(path: Path) -> str:
    with open(path, encoding="utf-8") as handle:
        first = handle.readline().strip()
    return first.lstrip("#").strip() if first.startswith("#") else ""


def list_recipes() -> list[ShippedRecipe]:
    """The shipped recipes, by name."""
    return [
        ShippedRecipe(path.stem, path, _description(path))
        for path in sorted(recipes_dir().glob(f"*{RECIPE_SUFFIX}"), key=lambda path: path.stem)
        if path.is_file()
    ]


def recipe_names() -> list[str]:
    return [recipe.name for recipe in list_recipes()]


def recipe_path(name: str) -> Path:
    """The YAML file of the shipped recipe ``name`` (``quickstart-ner``; ``quickstart-ner.yaml`` too).

    Raises:
        UnknownRecipeError: no shipped recipe has that name; the message lists those that do.
    """
    stem = name.removesuffix(RECIPE_SUFFIX)
    path = recipes_dir() / f"{stem}{RECIPE_SUFFIX}"
    if stem and os.sep not in stem and "/" not in stem and path.is_file():
        return path
    names = recipe_names()
    close = difflib.get_close_matches(Path(stem).name, names, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    what = (
        f"recipe file not found: {name}"
        if "/" in stem or os.sep in stem
        else f"unknown recipe {name!r}: no such file, and no shipped recipe of that name"
    )
    raise UnknownRecipeError(f"{what}; {hint}shipped: {', '.join(names)} ('hf-compress recipes' describes them)")


def is_recipe_file(name_or_path: str | os.PathLike) -> bool:
    """A path to an existing file: it wins over a shipped recipe of the same name."""
    return Path(name_or_path).is_file()


def load_recipe(name_or_path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> Recipe:
    """A recipe file, or else the recipe shipped with hf-compress under that name (``quickstart-ner``;
    ``hf-compress recipes`` lists them). The files a shipped recipe names are read from the package when it ships
    them (the quickstart's sample), from the working directory otherwise."""
    if is_recipe_file(name_or_path):
        return Recipe.from_yaml(name_or_path, overrides)
    return Recipe.from_yaml(recipe_path(str(name_or_path)), overrides, fallback_dir=os.getcwd())


def _shipped_paths(path: Path) -> list[str]:
    """The relative paths in the recipe at ``path`` that name files beside it (the sample data it ships with)."""
    data = load_yaml(path.read_text(encoding="utf-8")) or {}
    found = []
    for dotted in _path_keys():
        node: Any = data
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        for value in node if isinstance(node, list) else [node]:
            if isinstance(value, str) and value and not os.path.isabs(value) and (path.parent / value).exists():
                found.append(value)
    return found


def copy_recipe(name: str, destination: str | os.PathLike = ".", overwrite: bool = False) -> Path:
    """Write the shipped recipe ``name`` to ``destination`` (a folder, or a file name) to edit it.

    Its comments stay; a relative path naming a file shipped beside it (the quickstart's sample data) is written as
    that file's absolute path, so the copy reads the same data wherever it is. Returns the file written.

    Raises:
        UnknownRecipeError: no shipped recipe has that name.
        FileExistsError: the file exists and ``overwrite`` is false.
    """
    source = recipe_path(name)
    target = Path(destination)
    if target.is_dir():
        target = target / source.name
    if target.exists() and target.resolve() == source.resolve():
        raise FileExistsError(f"{target} is the shipped recipe itself")
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists: remove it, name another destination, or pass --overwrite")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"no such folder: {target.parent}")
    text = source.read_text(encoding="utf-8")
    for relative in _shipped_paths(source):
        absolute = str((source.parent / relative).resolve())
        lines = []
        for line in text.splitlines(keepends=True):
            content, hash_, comment = line.partition(" #")
            if not line.lstrip().startswith("#"):
                content = content.replace(relative, absolute)
            lines.append(content + hash_ + comment)
        text = "".join(lines)
    target.write_text(text, encoding="utf-8")
    return target
