"""Model mechanics every technique shares: the transformer layer list, submodule replacement, frozen models.

These are plain torch functions. A setting that does not fit the model raises :class:`SettingError`, a
``ValueError`` naming the setting (``targets``), not its recipe key: the technique that owns the setting adds the
key path (``pruning.targets``) when it reports the error from a recipe.
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = [
    "SettingError",
    "check_frozen_models",
    "find_layer_list",
    "locate_layer_list",
    "check_loadable",
    "mark_unloadable",
    "replace_module",
]

#: Names that the list of transformer layers goes by (BERT ``layer``, Llama ``layers``, GPT-2 ``h``, T5 ``block``).
LAYER_LIST_NAMES = ("layer", "layers", "h", "block")


class SettingError(ValueError):
    """A technique setting that does not fit the model: names the setting, the value and what is allowed."""

    def __init__(self, setting: str, value: Any, allowed: str):
        self.setting, self.value, self.allowed = setting, value, allowed
        super().__init__(f"'{setting}': got {value!r}; {allowed}")


def locate_layer_list(model: nn.Module, num_layers: int | None = None) -> tuple[str, nn.ModuleList] | None:
    """The ``nn.ModuleList`` of transformer layers (``bert.encoder.layer``, ``distilbert.transformer.layer`` ...)
    and its name, or None; ``num_layers`` defaults to ``model.config.num_hidden_layers``."""
    if num_layers is None:
        num_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for name, module in model.named_modules():
        if (
            isinstance(module, nn.ModuleList)
            and (num_layers is None or len(module) == int(num_layers))
            and name.rsplit(".", 1)[-1] in LAYER_LIST_NAMES
        ):
            return name, module
    return None


def find_layer_list(model: nn.Module, num_layers: int | None = None) -> tuple[str, nn.ModuleList]:
    """:func:`locate_layer_list`, with a ``ValueError`` when the model has no such list."""
    found = locate_layer_list(model, num_layers)
    if found is None:
        count = num_layers if num_layers is not None else getattr(model.config, "num_hidden_layers", "?")
        raise ValueError(f"could not find the list of {count} transformer layers in {type(model).__name__}")
    return found


#: The attribute a model carries once it holds a structure its config cannot describe (:func:`mark_unloadable`).
UNLOADABLE = "hf_compress_unloadable"


def mark_unloadable(model: nn.Module, reason: str) -> None:
    """Record that ``model`` now holds a structure plain ``from_pretrained`` cannot rebuild from its config
    (``reason`` says which): saving it through hf-compress is refused (:func:`check_loadable`)."""
    setattr(model, UNLOADABLE, reason)


def check_loadable(model: nn.Module) -> None:
    """Raise ``ValueError`` in one line when ``model`` was marked by :func:`mark_unloadable`: a checkpoint of it would
    not load with plain ``from_pretrained``."""
    reason = getattr(model, UNLOADABLE, None)
    if reason is not None:
        raise ValueError(
            f"refusing to save {type(model).__name__}: {reason}, which its config cannot describe, so plain "
            "from_pretrained could not load the checkpoint; save the model before that call, or make it loadable "
            "(e.g. remove_pruned_structures(model), whose default keeps the model loadable)"
        )


def replace_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` at the dotted path ``name`` of ``model`` (``bert.encoder.layer.0.output.dense``)."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def check_frozen_models(model: nn.Module | None, resources: dict[str, Any]) -> None:
    """Refuse a model that runs beside the trained one (a teacher, kept frozen) but is it or shares parameters."""
    if model is None:
        return
    names = {id(p): n for n, p in model.named_parameters()}
    storage = {(p.device, p.data_ptr()): n for n, p in model.named_parameters() if p.data_ptr()}
    for key, other in resources.items():
        if not isinstance(other, nn.Module):
            continue
        if other is model:
            raise ValueError(
                f"{key}= is the model being trained: a {key} is frozen, which would freeze the model; pass a "
                f"separate {key} (loaded again with from_pretrained, or copy.deepcopy(model) before training)"
            )
        shared = [names.get(id(p)) or storage.get((p.device, p.data_ptr())) for p in other.parameters()]
        shared = [n for n in shared if n]
        if shared:
            raise ValueError(
                f"{key}= shares {len(shared)} parameter(s) with the model being trained (e.g. {shared[0]}): a "
                f"{key} is frozen, which would freeze them; pass a separate copy (copy.deepcopy or from_pretrained)"
            )
