"""Techniques from outside the package: installed plugins (entry points) and modules imported by name.

A plugin distribution declares its technique in the entry-point group ``hf_compress.techniques``, named by its
recipe key::

    [project.entry-points."hf_compress.techniques"]
    layerdrop = "hf_compress_layerdrop:LayerDropCallback"

Every entry point of the group is loaded the first time the technique registry is read
(:func:`~hf_compress.technique.registered_techniques`, a recipe naming a block, an export), so that any process
(``hf-compress train``, ``hf-compress export`` re-reading a saved recipe, the processes ``accelerate launch``
starts) knows the installed techniques. A module that is not installed as a plugin is imported by name: the
command line's ``--import MODULE`` or the recipe's top-level ``imports: [MODULE, ...]``
(:func:`import_modules`); importing it registers its techniques (``@register_technique``).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import keyword
from collections.abc import Callable, Iterable
from typing import Any

from .checks import RecipeError

__all__ = [
    "ENTRY_POINT_GROUP",
    "RESERVED_NAMES",
    "TechniqueRegistrationError",
    "check_technique_name",
    "import_modules",
    "load_entry_points",
]

#: The entry-point group of technique plugins.
ENTRY_POINT_GROUP = "hf_compress.techniques"
#: Recipe keys that are not technique blocks (and ``techniques``, the attribute of a Recipe holding them).
RESERVED_NAMES = frozenset({"model", "data", "training", "export", "imports", "techniques"})


class TechniqueRegistrationError(ValueError):
    """A technique that cannot be registered (its recipe key is taken, reserved or not a name), or a plugin that
    fails to load."""


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def check_technique_name(name: Any, owner: str) -> None:
    """Raise :class:`TechniqueRegistrationError` unless ``name`` can be a recipe key of a technique."""
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise TechniqueRegistrationError(
            f"{owner}: the technique name {name!r} is not a valid recipe key (a Python identifier, e.g. 'layerdrop')"
        )
    if name in RESERVED_NAMES:
        raise TechniqueRegistrationError(
            f"{owner}: the technique name '{name}' is reserved (recipe keys {', '.join(sorted(RESERVED_NAMES))} "
            "are not technique blocks); choose another name"
        )


def load_entry_points(register: Callable[[str, Any], None]) -> None:
    """Load every entry point of :data:`ENTRY_POINT_GROUP` and hand ``register`` its name and what it names (a
    class or a module).

    An entry point that fails to import or register raises :class:`TechniqueRegistrationError` naming it and its
    distribution, on one line, once every other entry point is loaded.
    """
    failures = []
    for entry_point in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            register(entry_point.name, entry_point.load())
        except Exception as error:  # any error of a plugin's import: said once, naming the entry point
            dist = getattr(entry_point, "dist", None)
            where = f" of the distribution {dist.name} {dist.version}" if dist is not None else ""
            failed = "could not be registered" if isinstance(error, TechniqueRegistrationError) else "failed to import"
            failures.append(
                f"the technique plugin '{entry_point.name} = {entry_point.value}'{where} (entry-point group "
                f"{ENTRY_POINT_GROUP}) {failed}: {_one_line(error)}"
            )
    if failures:
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise TechniqueRegistrationError(f"{failures[0]}{more}; fix or uninstall the plugin")


def import_modules(modules: Iterable[str], key: str = "imports") -> list[str]:
    """Import each module by name (registering the techniques it defines); return the names imported.

    A name that is not a string, or a module that fails to import, raises :class:`RecipeError` naming ``key`` (the
    recipe's ``imports[i]``, or the command line's ``--import``) and the error, on one line.
    """
    names = []
    for index, name in enumerate(modules):
        dotted = f"{key}[{index}]"
        if not isinstance(name, str) or not all(part.isidentifier() for part in name.split(".")):
            raise RecipeError(dotted, name, "allowed: a Python module name (e.g. hf_compress_layerdrop)")
        try:
            importlib.import_module(name)
        except Exception as error:  # the module's own error, named
            raise RecipeError(dotted, name, f"the module failed to import: {_one_line(error)}") from None
        names.append(name)
    return names
