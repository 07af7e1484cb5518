"""The ``nn.Linear`` modules a technique acts on: those its ``targets`` patterns name, or by default those inside
the transformer layers the architecture description locates (:mod:`~hf_compress.architectures`)."""

from __future__ import annotations

import fnmatch

from torch import nn

from .architectures import weight_layers
from .modules import SettingError

__all__ = ["match_linears"]


def match_linears(model: nn.Module, patterns: list[str] | None, setting: str = "targets") -> dict[str, nn.Linear]:
    """The ``nn.Linear`` modules whose names match any ``fnmatch`` pattern; by default those inside the transformer
    layers (:func:`~hf_compress.architectures.weight_layers`: ALBERT's shared ones).

    Embeddings, LayerNorm, pooler and task head are outside the transformer layers, so the default leaves them
    alone, and so it does PEFT adapter weights (``lora_A``, ``lora_B``): a pattern must name them. A pattern that
    matches nothing raises :class:`SettingError` naming ``setting``.
    """
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    if patterns is None:
        prefixes = tuple(name + "." for name, _ in weight_layers(model))
        return {
            name: m
            for name, m in linears.items()
            if name.startswith(prefixes) and not any(part.startswith("lora_") for part in name.split("."))
        }
    targets = {}
    for pattern in patterns:
        matched = {name: m for name, m in linears.items() if fnmatch.fnmatchcase(name, pattern)}
        if not matched:
            examples = ", ".join(list(linears)[:4])
            raise SettingError(
                setting, pattern, f"matches no nn.Linear in {type(model).__name__} (names look like: {examples}, ...)"
            )
        targets.update(matched)
    return targets
