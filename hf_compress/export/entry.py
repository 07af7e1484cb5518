"""The one door into export: :func:`export` takes a trained model or a saved model folder.

``hf-compress export`` calls it with a folder, :meth:`CompressionTrainer.export` (and so ``hf-compress train``)
with the trained model. It settles the export once (:func:`~hf_compress.export.options.export_plan`: the recipe's
``export`` block with the caller's overrides, and the int8 route it names), names the folder when none is given
(:func:`~hf_compress.export.options.default_export_dir`), and runs the pipeline
(:func:`~hf_compress.export.pipeline.run_export`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn
from transformers import AutoConfig, AutoTokenizer

from ..checkpoints import RECIPE_FILE
from ..configs import ExportConfig
from ..model_sources import check_model_source
from ..recipe import Recipe
from ..tasks import Task, check_data_files, get_task, task_of_model_class
from ..technique import load_pretrained, restore_saved
from .options import ExportPlan, default_export_dir, export_plan
from .pipeline import run_export
from .prepare import ExportData
from .to_onnx import resolve_exporter

__all__ = ["export"]


def export(
    model_or_folder: nn.Module | str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    config: ExportConfig | None = None,
    data: ExportData | None = None,
    *,
    recipe: Recipe | None = None,
    tokenizer=None,
    techniques: Mapping[str, Any] | None = None,
    int8: str | None = None,
    max_metric_drop: float | None = None,
    exporter: str | None = None,
    parent_dir: str | os.PathLike | None = None,
    base_model: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export a trained model, or a model folder saved by ``hf-compress train`` / ``CompressionTrainer.save_model``
    (or any fine-tuned model folder), to ONNX fp32 or int8; return the export report (``report["output_dir"]``:
    where it went).

    The settings are ``config`` (default: ``recipe``'s ``export`` block) with ``int8``, ``max_metric_drop`` (the
    quality gate of :func:`~hf_compress.export.export_model`) and ``exporter`` over it, when given. The folder
    defaults to ``onnx`` or ``onnx-int8-<route>`` in ``parent_dir`` (default: the model folder exported); an
    earlier export there is replaced only with ``overwrite``. The export folder keeps the effective recipe
    (``recipe.yaml``).

    A model: ``tokenizer``, ``data`` (evaluation and calibration) and ``techniques`` (recipe key -> config of those
    it was trained with; default: ``recipe``'s technique blocks) as :func:`~hf_compress.export.export_model` takes
    them. A folder: the recipe defaults to its ``recipe.yaml``, whose ``data`` block gives the data to evaluate and
    calibrate on and whose technique blocks say what the model was trained with (without any, every registered
    technique is asked); what they kept beside the weights is put back before their export hooks run.
    """
    if exporter is not None:
        resolve_exporter(exporter)  # Optimum asked for and not installed: refused before anything is read
    if isinstance(model_or_folder, nn.Module):
        base = config if config is not None else _export_block(recipe)
        plan = export_plan(base, **_given(int8, max_metric_drop, exporter))
        if output_dir is None:
            if parent_dir is None:
                raise ValueError("export(model): give output_dir (or parent_dir, for the default folder name)")
            output_dir = default_export_dir(parent_dir, plan)
        recipe_blocks = None if recipe is None or recipe.is_empty else recipe.to_dict()
        return run_export(
            model_or_folder,
            tokenizer,
            output_dir,
            plan,
            data,
            recipe=recipe_blocks,
            base_model=base_model,
            overwrite=overwrite,
            techniques=techniques,
        )
    folder = str(model_or_folder)
    check_model_source(folder, "model_dir")
    saved_recipe = Path(folder) / RECIPE_FILE
    if recipe is None:
        recipe = Recipe.from_yaml(saved_recipe) if saved_recipe.is_file() else Recipe()
    plan = export_plan(config if config is not None else recipe.export, **_given(int8, max_metric_drop, exporter))
    if plan.route is not None:
        plan.route.check_saved(folder)
    return _export_folder(
        folder, output_dir or default_export_dir(parent_dir or folder, plan), plan, recipe, overwrite
    )


def _given(int8: str | None, max_metric_drop: float | None, exporter: str | None) -> dict[str, Any]:
    return {"int8": int8, "max_metric_drop": max_metric_drop, "exporter": exporter}


def _export_block(recipe: Recipe | None) -> ExportConfig | None:
    return recipe.export if recipe is not None else None


def _task_of_folder(folder: str, recipe: Recipe) -> Task:
    if recipe.data is not None:
        return get_task(recipe.data.task)
    architecture = (AutoConfig.from_pretrained(folder).architectures or [""])[0]
    return task_of_model_class(architecture) or get_task("ner")


def _export_folder(
    folder: str, output_dir: str | os.PathLike, plan: ExportPlan, recipe: Recipe, overwrite: bool
) -> dict[str, Any]:
    """Load the model saved in ``folder`` as the run left it, with its tokenizer and the recipe's data, and export
    it."""
    task = _task_of_folder(folder, recipe)
    model = load_pretrained(folder, task.auto_model_class)
    techniques = recipe.techniques or None  # a recipe without technique blocks: the run is not known
    restore_saved(model, folder, techniques)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    data = ExportData()
    if recipe.data is not None:
        check_data_files(recipe.data)
        tokenized = task.preprocess(task.load_raw(recipe.data), tokenizer, model.config.label2id, recipe.data)
        data = ExportData(
            eval_dataset=tokenized.get("validation"),
            data_collator=task.data_collator(tokenizer),
            compute_metrics=task.compute_metrics(model.config.id2label, recipe.data.decoding),
            calibration_dataset=tokenized.get("train"),
        )
    return run_export(
        model,
        tokenizer,
        output_dir,
        plan,
        data,
        recipe=None if recipe.is_empty else recipe.to_dict(),
        base_model=folder,
        overwrite=overwrite,
        techniques=techniques,
    )
