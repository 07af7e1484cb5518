"""The first step of an export: a CPU copy of the trained model made plain for ONNX by the techniques it was trained
with, and the data the later steps evaluate and calibrate on."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..tasks import Task, supported_model_classes, task_of_model_class
from ..technique import techniques_used

__all__ = ["ExportData", "PreparedModel", "prepare_for_export", "task_of"]


@dataclass
class ExportData:
    """The data an export is evaluated and calibrated on (all optional).

    Attributes:
        eval_dataset: tokenized, labelled examples; with ``data_collator``, the exported model is run through ONNX
            Runtime on them (parity with PyTorch, and ``compute_metrics`` on ONNX Runtime's own logits).
        data_collator / compute_metrics: as given to the Trainer.
        calibration_dataset: tokenized examples for ``static`` calibration (the training set will do).
        batch_size: evaluation batch size.
    """

    eval_dataset: Any = None
    data_collator: Callable | None = None
    compute_metrics: Callable | None = None
    calibration_dataset: Any = None
    batch_size: int = 32

    @property
    def evaluates(self) -> bool:
        return self.eval_dataset is not None and self.data_collator is not None


def task_of(model: nn.Module) -> Task:
    name = type(model.get_base_model() if hasattr(model, "get_base_model") else model).__name__
    task = task_of_model_class(name)
    if task is None:
        raise ValueError(
            f"cannot export {name}: hf-compress exports token classification and sequence classification heads "
            f"(a model class ending in {supported_model_classes()})"
        )
    return task


@dataclass
class PreparedModel:
    """The export copy, each technique's report entries (by name) and the artifacts handed to the int8 route."""

    model: nn.Module
    report: dict[str, dict[str, Any]] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)


def prepare_for_export(model: nn.Module, techniques: Mapping[str, Any] | None = None) -> PreparedModel:
    """The ``copy`` and ``techniques`` steps: a CPU copy of ``model`` ready for ONNX, with what each technique
    reported (by name) and handed on. ``techniques``: recipe key -> config of those the model was trained with
    (None: not known, :func:`~hf_compress.technique.techniques_used`). The original model is untouched."""
    prepared = copy.deepcopy(model).cpu()
    if hasattr(prepared, "merge_and_unload"):  # a PEFT model: fold the adapters into the base weights
        prepared = prepared.merge_and_unload()
    prepared.eval()
    report: dict[str, dict[str, Any]] = {}
    artifacts: dict[str, Any] = {}
    for technique, config in reversed(techniques_used(techniques)):  # undo the last surgery first
        facts = technique.export_side.prepare_for_export(prepared, config)
        report[technique.name] = dict(facts.report)
        artifacts.update(facts.artifacts)
    return PreparedModel(prepared, dict(reversed(report.items())), artifacts)
