"""The export and loading half of a technique: :class:`TechniqueExport`, the companion a
:class:`~hf_compress.technique.Technique` names in ``export_side``.

Its hooks are class methods on a model or on a report, with the run's config of the technique (``None`` when the
run is not known): they work on any model, trained in this process or loaded from a folder, and hold no training
state. Each is called for the techniques the run used (:func:`~hf_compress.technique.techniques_used`)::

    load_pretrained(path, model_class, config)   rebuild a saved structure plain from_pretrained cannot (optional)
    restore_saved(model, folder, config)         put back what save_pretrained does not keep (optional)
    prepare_for_export(model, config)            fold, slice or merge on the export copy -> ExportFacts
                                                 (required when the technique's surgery leaves layers ONNX cannot
                                                 export plainly)
    reference_note(model, config)                how the trained model differs from a plain one (optional)
    card_tags(report) / card_section(report)     model-card lines from its entry of the export report (optional)

The default of each is a no-op, so a technique that changes no layer needs no companion.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from torch import nn

__all__ = ["EXPORT_HOOKS", "ExportFacts", "TechniqueExport"]


@dataclass
class ExportFacts:
    """What a technique's :meth:`TechniqueExport.prepare_for_export` found: entries for the export report
    (JSON-ready) and artifacts for the int8 route (e.g. the activation ranges QAT learned)."""

    report: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)


class TechniqueExport:
    """The export and loading hooks of a technique; subclass it, override what the technique needs, and name the
    subclass in the technique's ``export_side``."""

    @classmethod
    def load_pretrained(cls, path: str | os.PathLike, model_class: type, config: Any) -> nn.Module | None:
        """Optional. Load a model whose saved structure is this technique's (``config`` is its
        ``PretrainedConfig``), or None when it is not (then plain ``from_pretrained`` does)."""
        return None

    @classmethod
    def restore_saved(cls, model: nn.Module, folder: str | os.PathLike, config: Any | None) -> None:
        """Optional. Put back, on a model loaded from ``folder``, what ``save_pretrained`` does not keep.
        ``config``: the run's block (None when the run is not known)."""

    @classmethod
    def prepare_for_export(cls, model: nn.Module, config: Any | None) -> ExportFacts:
        """Required when :meth:`Technique.prepare` leaves layers that ONNX cannot export plainly. Make the export
        copy plain for ONNX, in place (a no-op on a model without this technique's layers). Its ``report`` becomes
        ``report["techniques"][name]`` of the export report."""
        return ExportFacts()

    @classmethod
    def reference_note(cls, model: nn.Module, config: Any | None) -> str | None:
        """Optional. How the trained model's outputs differ from a plain model's (the parity reference), if they
        do."""
        return None

    @classmethod
    def card_tags(cls, report: dict[str, Any]) -> list[str]:
        """Optional. Model-card tags for this technique's entry of the export report (what
        :meth:`prepare_for_export` reported; the card is written from the report alone)."""
        return []

    @classmethod
    def card_section(cls, report: dict[str, Any]) -> list[str]:
        """Optional. Model-card lines for this technique's entry of the export report."""
        return []


#: The hooks of the export side, which lived on ``Technique`` itself before API version 2.
EXPORT_HOOKS = (
    "load_pretrained",
    "restore_saved",
    "prepare_for_export",
    "reference_note",
    "card_tags",
    "card_section",
)
