"""The export pipeline: ONNX fp32, and int8 by the route the export's settings name.

:func:`export_model` (and :func:`hf_compress.export.export`, the door for a folder or a model) runs, with the
route resolved once by :func:`~hf_compress.export.options.export_plan`::

    copy        a CPU copy of the trained model (PEFT adapters merged: the model as plain transformers)
    techniques  ``prepare_for_export`` of each technique the model was trained with, with its config, undoing
                the surgery in reverse order (each makes its layers plain for ONNX), collecting its report entries
                (``report["techniques"][<name>]``) and artifacts for the int8 route
    onnx        Optimum's ONNX exporter where it is installed, else torch.onnx (:mod:`~hf_compress.export.to_onnx`)
    int8        the plan's route (:mod:`~hf_compress.export.int8`; a technique may register its own)
    evaluate    the exported model through ONNX Runtime: parity with PyTorch and the task metric
    write       model, config, tokenizer, ``export_report.{json,md}``, model card; the quality gate

Only the linears inside the transformer layers are quantized (the same ``MatMul`` nodes for every route), so
the routes differ only in how the ranges are found. The folder loads with ``ORTModelFor...from_pretrained`` (Optimum)
or with :class:`~hf_compress.inference.OnnxTokenClassifier` / a plain ONNX Runtime session.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from torch import nn
from transformers.utils import logging

from ..checkpoints import RECIPE_FILE
from ..configs import ExportConfig
from ..files import atomic_write_json, atomic_write_text, staged_directory
from ..int8_routes import Int8Route
from ..recipe import Recipe
from ..tables import markdown_table
from ..tasks import Task, get_task
from ..technique import Technique, techniques_used
from . import hub
from .evaluation import compare_with_pytorch
from .fusion import attention_shape, fusion_of
from .int8 import quantize_onnx
from .options import ExportPlan, export_plan
from .prepare import ExportData, PreparedModel, prepare_for_export, task_of
from .to_onnx import ONNX_FILE, REPORT_FILE, export_onnx, resolve_exporter

logger = logging.get_logger(__name__)

__all__ = ["MetricDropError", "export_model", "report_markdown", "run_export"]


class MetricDropError(RuntimeError):
    """The exported model's metric fell further below its PyTorch source's than ``max_metric_drop`` allows.

    The export folder is complete and kept (its report says the same); ``report`` is the export report.
    """

    def __init__(self, report: dict[str, Any]):
        gate = report["quality_gate"]
        self.report = report
        super().__init__(
            f"{gate['metric']} fell by {gate['drop']:.4f} from PyTorch ({gate['pytorch']:.4f}) to ONNX Runtime "
            f"({gate['onnx']:.4f}), more than max_metric_drop={gate['max_metric_drop']:g}; the export is kept in "
            f"{report['output_dir']} for inspection"
        )


def _max_positions(model: nn.Module) -> int | None:
    limit = getattr(model.config, "max_position_embeddings", None)
    return int(limit) if limit else None


def _check_inputs(model: nn.Module, tokenizer, eval_dataset, max_metric_drop) -> None:
    """Refuse what would fail deep inside ONNX Runtime, or compute on wrong ids, with the reason (the config checked
    itself)."""
    rows = getattr(model.config, "vocab_size", None)
    if tokenizer is not None and rows is not None and len(tokenizer) > rows:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} pieces but the model's embeddings only {rows} rows "
            "(vocab_size): the ids would be wrong; export with the tokenizer the model was trimmed or trained with"
        )
    limit = _max_positions(model)
    if eval_dataset is not None and limit is not None and "input_ids" in eval_dataset.column_names:
        longest = max((len(ids) for ids in eval_dataset["input_ids"]), default=0)
        if longest > limit:
            raise ValueError(
                f"the evaluation data has sequences of {longest} tokens but the model has {limit} positions "
                f"(max_position_embeddings): tokenize with max_length <= {limit} (data.max_length)"
            )
    if max_metric_drop is not None and eval_dataset is None:
        raise ValueError("max_metric_drop needs evaluation data (eval_dataset=..., or a recipe with data)")


def _tokenizer_for(model: nn.Module, tokenizer):
    """The tokenizer to ship, truncating at the model's positions: longer inputs are cut, not a runtime error."""
    limit = _max_positions(model)
    if tokenizer is None or limit is None or tokenizer.model_max_length <= limit:
        return tokenizer
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.model_max_length = limit
    return tokenizer


def _quality_gate(report: dict[str, Any], task: str, max_metric_drop: float) -> dict[str, Any]:
    """Compare the exported model's task metric with its PyTorch source's (both on the same evaluation data)."""
    metric = get_task(task).metric_name
    onnx_value, torch_value = report["metrics"][metric], report["pytorch_metrics"][metric]
    drop = torch_value - onnx_value
    return {
        "metric": metric,
        "onnx": onnx_value,
        "pytorch": torch_value,
        "drop": drop,
        "max_metric_drop": max_metric_drop,
        "passed": drop <= max_metric_drop,
    }


def export_model(
    model: nn.Module,
    tokenizer,
    output_dir: str | os.PathLike,
    config: ExportConfig | None = None,
    data: ExportData | None = None,
    *,
    recipe: dict | None = None,
    base_model: str | None = None,
    overwrite: bool = False,
    techniques: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Export ``model`` to ``output_dir`` as ``config`` says (ONNX fp32, or int8 by ``config.int8``); return the
    report.

    With ``data.eval_dataset`` and ``data.data_collator``, the exported model is run through ONNX Runtime: max
    |logit diff| and argmax agreement against ``model`` as given (as it computes in training, if it differs), and
    ``compute_metrics`` on ONNX Runtime's own logits. ``static`` needs ``data.calibration_dataset``.

    The folder is built under a temporary name and renamed into place at the end: an interrupted or failed export
    leaves no ``output_dir`` that loads as if complete, and ``model`` is never modified. An existing non-empty
    ``output_dir`` is replaced only with ``overwrite=True`` and only if it is an earlier export. ``techniques``: the
    techniques ``model`` was trained with, recipe key -> config (default: the technique blocks of ``recipe``; with
    none, every registered technique, without config); their export hooks run, and each one's report entries are
    ``report["techniques"][<name>]``. With
    ``config.max_metric_drop`` (in the metric's own units: 0.005 is half an F1 point), :class:`MetricDropError` is
    raised, after the folder is written, when the exported model's metric is lower than its PyTorch source's by more.
    The folder keeps ``recipe`` (the training run's blocks) with ``config`` as its ``export`` block: ``recipe.yaml``.
    """
    return run_export(
        model,
        tokenizer,
        output_dir,
        export_plan(config),
        data,
        recipe=recipe,
        base_model=base_model,
        overwrite=overwrite,
        techniques=techniques,
    )


def run_export(
    model: nn.Module,
    tokenizer,
    output_dir: str | os.PathLike,
    plan: ExportPlan,
    data: ExportData | None = None,
    *,
    recipe: dict | None = None,
    base_model: str | None = None,
    overwrite: bool = False,
    techniques: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The steps of :func:`export_model`, for a settled :class:`~hf_compress.export.options.ExportPlan` (its route
    already resolved)."""
    config, route = plan.config, plan.route
    data = data or ExportData()
    task = task_of(model)
    resolve_exporter(config.exporter)  # Optimum asked for and not installed: refused before anything is written
    if techniques is None and recipe:
        techniques = _recipe_techniques(recipe)
    used = techniques_used(techniques)
    prepared = prepare_for_export(model, techniques)
    if route is not None:
        route.check_inputs(prepared.artifacts, data.calibration_dataset)
    _check_inputs(prepared.model, tokenizer, data.eval_dataset if data.evaluates else None, config.max_metric_drop)
    output_dir = Path(output_dir)
    with staged_directory(output_dir, overwrite=overwrite, marker=REPORT_FILE) as staging:
        details = _write_onnx(prepared, task, staging, route, config, data)
        shipped_tokenizer = _tokenizer_for(prepared.model, tokenizer)
        if shipped_tokenizer is not None:
            shipped_tokenizer.save_pretrained(staging)
        else:
            logger.warning(f"no tokenizer given: {output_dir} will hold no tokenizer (pass the model's tokenizer)")
        report: dict[str, Any] = {
            "task": task.pipeline_tag,
            "model_type": prepared.model.config.model_type,
            "base_model": base_model,
            "int8": None if route is None else route.name,
            "onnx_file": ONNX_FILE,
            "size_mb": os.path.getsize(staging / ONNX_FILE) / 1e6,
            "parameters": prepared.model.num_parameters(),
            **details,
            "techniques": prepared.report,
        }
        if data.evaluates:
            report.update(_evaluate(model, prepared.model, route, staging / ONNX_FILE, task, data, used))
        if config.max_metric_drop is not None and "metrics" in report:
            report["quality_gate"] = _quality_gate(report, task.pipeline_tag, config.max_metric_drop)
        report["recipe"] = {**(recipe or {}), "export": dataclasses.asdict(config)}  # as exported
        atomic_write_text(staging / RECIPE_FILE, yaml.safe_dump(report["recipe"], sort_keys=False))
        _write_reports(staging, report, route)
    report["output_dir"] = str(output_dir)
    if not report.get("quality_gate", {}).get("passed", True):
        raise MetricDropError(report)
    return report


def _write_onnx(
    prepared: PreparedModel, task: Task, folder: Path, route: Int8Route | None, config: ExportConfig, data: ExportData
) -> dict[str, Any]:
    """The ``onnx`` and ``int8`` steps: ``model.onnx`` and ``config.json`` in ``folder``; the int8 details."""
    work = tempfile.mkdtemp(prefix="hf-compress-export-")
    try:
        fp32_dir = folder if route is None else Path(work)
        exported = export_onnx(prepared.model, fp32_dir, task.pipeline_tag, config.opset, config.exporter)
        if route is None:
            return exported
        fuse = config.fuse and route.fuses_graph
        not_fused = fusion_of(prepared.model) if fuse else None
        details = quantize_onnx(
            str(fp32_dir),
            str(folder),
            route,
            route.targets(prepared.model, prepared.artifacts),
            prepared.artifacts,
            data.calibration_dataset,
            config.calibration,
            config.reduce_range,
            route.embedding_tables(prepared.model, prepared.artifacts, config.embeddings),
            prepared.model.config.model_type if fuse and not_fused is None else None,
            attention_shape(prepared.model),
        )
        if not_fused is not None:
            details["fusion"] = f"not fused: {not_fused}"
            logger.info(f"the int8 graph is quantized unfused: {not_fused}")
        shutil.copy(fp32_dir / "config.json", folder / "config.json")
        return {**exported, **details}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _recipe_techniques(recipe: dict) -> dict[str, Any] | None:
    """The technique blocks of a recipe dict (by recipe key; their configs are built only for the keys' sake), or
    None when it has none."""
    techniques = Recipe.from_dict({k: v for k, v in recipe.items() if k not in ("model", "data", "export")}).techniques
    return techniques or None


def _evaluate(
    model: nn.Module,
    prepared: nn.Module,
    route: Int8Route | None,
    onnx_path: Path,
    task: Task,
    data: ExportData,
    used: list[tuple[type[Technique], Any]],
) -> dict[str, Any]:
    """The ``evaluate`` step. The reference is the trained model as is for int8 (what training simulated, the
    techniques' ``reference_note`` says how), the prepared copy for fp32."""
    reference = model if route is not None else prepared
    notes = [note for t, config in used if (note := t.export_side.reference_note(reference, config))]
    report = compare_with_pytorch(
        reference,
        onnx_path,
        data.eval_dataset,
        data.data_collator,
        data.compute_metrics,
        task.pipeline_tag,
        batch_size=data.batch_size,
        reference="; ".join(notes) or "PyTorch",
    )
    if data.compute_metrics is not None and task.name == "ner":  # how the metrics read tags; inference's default
        report["decoding"] = getattr(data.compute_metrics, "decoding", "argmax")
    return report


def _write_reports(folder: Path, report: dict[str, Any], route: Int8Route | None) -> None:
    atomic_write_json(folder / REPORT_FILE, report)
    atomic_write_text(folder / "export_report.md", report_markdown(report))
    hub.write_model_card(folder, report, route=route)


def report_markdown(report: dict[str, Any]) -> str:
    """The export report as a short Markdown table."""
    route = report["int8"]
    rows = [
        ("format", f"ONNX int8 ({route})" if route else "ONNX fp32"),
        ("file", f"{report['onnx_file']} ({report['size_mb']:.1f} MB)"),
    ]
    parity = report.get("parity")
    if parity:
        rows += [
            ("reference", parity["reference"]),
            ("max abs logit diff", f"{parity['max_abs_logit_diff']:.3g}"),
            ("argmax agreement", f"{100 * parity['argmax_agreement']:.2f}% of {parity['num_positions']}"),
        ]
    for key, value in (report.get("metrics") or {}).items():
        torch_value = (report.get("pytorch_metrics") or {}).get(key)
        both = f"{value:.4f}" + (f" (PyTorch {torch_value:.4f})" if torch_value is not None else "")
        rows.append((f"{key} (ONNX Runtime)", both))
    return markdown_table(("", ""), rows) + "\n"
