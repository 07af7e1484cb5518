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
import inspect
import keyword
import types
from collections.abc import Callable, Iterable
from typing import Any

from .checks import RecipeError

__all__ = [
    "ENTRY_POINT_GROUP",
    "RESERVED_NAMES",
    "TechniqueRegistrationError",
    "check_hook_signatures",
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


def _hook_parameters(owner: type, name: str) -> tuple[str, list[inspect.Parameter]]:
    """How ``owner`` defines the hook ``name`` (``classmethod``, ``staticmethod`` or ``method``) and its parameters
    after ``cls`` / ``self``."""
    raw = next(klass.__dict__[name] for klass in owner.__mro__ if name in klass.__dict__)
    if isinstance(raw, classmethod):
        return "classmethod", list(inspect.signature(raw.__func__).parameters.values())[1:]
    if isinstance(raw, staticmethod):
        return "staticmethod", list(inspect.signature(raw.__func__).parameters.values())
    return "method", list(inspect.signature(raw).parameters.values())[1:]


def _shown(parameters: list[inspect.Parameter]) -> str:
    """``(model, config)``: the parameters as a call would name them, without annotations."""
    return str(inspect.Signature([p.replace(annotation=inspect.Parameter.empty) for p in parameters]))


def _accepts(expected: list[inspect.Parameter], found: list[inspect.Parameter]) -> bool:
    """Whether a hook with the ``found`` parameters can be called as the base calls one with ``expected``: the same
    positional names in order, the same keyword names (or ``**kwargs``), anything more optional."""
    kinds = inspect.Parameter
    var_keyword = any(p.kind is kinds.VAR_KEYWORD for p in found)
    var_positional = any(p.kind is kinds.VAR_POSITIONAL for p in found)
    positional = [p for p in found if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)]
    by_name = {p.name: p for p in found}
    used: set[str] = set()
    index = 0
    for parameter in expected:
        if parameter.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD):
            if index < len(positional) and positional[index].name == parameter.name:
                used.add(positional[index].name)
            elif not ((var_positional or parameter.default is not kinds.empty) and var_keyword):
                return False  # (an optional argument, which the caller passes by name, may land in **kwargs)
            index += 1
        elif parameter.kind is kinds.KEYWORD_ONLY:
            match = by_name.get(parameter.name)
            if match is not None and match.kind in (kinds.KEYWORD_ONLY, kinds.POSITIONAL_OR_KEYWORD):
                used.add(match.name)
            elif not var_keyword:
                return False
        elif parameter.kind is kinds.VAR_POSITIONAL and not var_positional:
            return False
        elif parameter.kind is kinds.VAR_KEYWORD and not var_keyword:
            return False
    extra = [p for p in found if p.name not in used and p.kind not in (kinds.VAR_POSITIONAL, kinds.VAR_KEYWORD)]
    return all(p.default is not kinds.empty for p in extra)


def check_hook_signatures(cls: type, base: type, api: str) -> None:
    """Raise :class:`TechniqueRegistrationError`, in one line naming the hook, the expected and the found signature,
    when a hook of ``base`` that ``cls`` overrides cannot be called as ``base`` calls it (``api``: the plugin API
    version the message names)."""
    owner = f"{cls.__module__}.{cls.__qualname__}"
    for name in sorted(dir(base)):
        defined = next((k.__dict__[name] for k in base.__mro__ if name in k.__dict__), None)
        if name.startswith("_") or not isinstance(defined, (types.FunctionType, classmethod, staticmethod)):
            continue
        defined_below = any(name in klass.__dict__ for klass in cls.__mro__[: cls.__mro__.index(base)])
        if not defined_below:
            continue
        expected_kind, expected = _hook_parameters(base, name)
        found_kind, found = _hook_parameters(cls, name)
        if found_kind != expected_kind or not _accepts(expected, found):
            raise TechniqueRegistrationError(
                f"{owner}.{name}: expected {expected_kind} {name}{_shown(expected)} (hf-compress plugin API {api}), "
                f"found {found_kind} {name}{_shown(found)}"
            )


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
