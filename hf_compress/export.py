"""Export through Optimum: ONNX fp32, and int8 by QAT (learned ranges), dynamic or static post-training quantization.

:func:`export_model` prepares a copy of the trained model (fake-quant layers folded back into plain linears,
pruned neurons and heads sliced out, LoRA adapters merged), exports it with Optimum's ONNX exporter and, for
int8, quantizes it with Optimum's ``ORTQuantizer``:

* ``qat``: a QDQ graph whose activation ranges are those the fake-quant observers learned in training and whose
  weight scales are computed as in training (symmetric int8 per output channel), so ONNX Runtime runs the
  model training saw;
* ``dynamic``: weights int8 per channel, activation ranges computed at run time;
* ``static``: ranges calibrated on a dataset (``minmax``, ``percentile`` or ``entropy``), QDQ graph.

(The routes themselves are in :mod:`hf_compress.int8`.)

Only the linears inside the transformer layers are quantized (the same ``MatMul`` nodes for every route), so
the routes differ only in how the ranges are found. The folder then holds ``model.onnx``, ``config.json``, the
tokenizer, ``export_report.{json,md}`` (parity with PyTorch and the task metric computed from ONNX Runtime's own
outputs, see :mod:`hf_compress.evaluation`) and a model card; it loads with ``ORTModelFor...from_pretrained``.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers.utils import logging

from .configs import MIN_OPSET, CalibrationConfig
from .evaluation import compare_with_pytorch
from .files import atomic_write_json, atomic_write_text, staged_directory
from .int8 import ONNX_FILE, matmul_nodes, quantize_onnx
from .pruning import remove_pruned_structures, select_linears, sparsity_report
from .quantization import qat_modules, remove_qat

logger = logging.get_logger(__name__)

__all__ = ["ONNX_FILE", "INT8_ROUTES", "MetricDropError", "export_model", "prepare_for_export", "matmul_nodes"]

REPORT_FILE = "export_report.json"
INT8_ROUTES = ("qat", "dynamic", "static")
_TASKS = {"ForTokenClassification": "token-classification", "ForSequenceClassification": "text-classification"}


def _task_of(model: nn.Module) -> str:
    name = type(model).__name__
    for suffix, task in _TASKS.items():
        if name.endswith(suffix):
            return task
    raise ValueError(
        f"cannot export {name}: hf-compress exports token classification and sequence classification heads "
        f"(a model class ending in {' or '.join(_TASKS)})"
    )


def prepare_for_export(model: nn.Module) -> tuple[nn.Module, dict[str, tuple[float, float]], dict[str, Any]]:
    """A CPU copy of ``model`` ready for ONNX: LoRA merged, fake-quant removed, pruned structures sliced out.

    Returns the copy, the QAT input ranges by module name (empty if the model never ran QAT) and what was removed.
    The original model is untouched.
    """
    if hasattr(model, "merge_and_unload"):  # a PEFT model: fold the adapters into the base weights
        model = copy.deepcopy(model).cpu().merge_and_unload()
    else:
        model = copy.deepcopy(model).cpu()
    model.eval()
    ranges = remove_qat(model)
    try:
        removed = remove_pruned_structures(model)
    except ValueError:  # no BERT-style layers (or factorized ones): nothing to slice
        return model, ranges, {}
    return model, ranges, removed


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


def _check_inputs(model: nn.Module, task: str, eval_dataset, opset: int | None, max_metric_drop) -> None:
    """Refuse what would fail deep inside the ONNX exporter or ONNX Runtime, with the reason."""
    if opset is not None and opset < MIN_OPSET:
        raise ValueError(
            f"opset {opset} is too low: the exporter writes attention with opset-{MIN_OPSET} operators; "
            f"allowed: opset >= {MIN_OPSET} (default: Optimum's choice)"
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
    from .tasks import get_task

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
    *,
    int8: str = "none",
    eval_dataset=None,
    data_collator: Callable | None = None,
    compute_metrics: Callable | None = None,
    calibration_dataset=None,
    calibration: CalibrationConfig | None = None,
    opset: int | None = None,
    recipe: dict | None = None,
    base_model: str | None = None,
    batch_size: int = 32,
    overwrite: bool = False,
    max_metric_drop: float | None = None,
    reduce_range: bool | str = "auto",
) -> dict[str, Any]:
    """Export ``model`` to ``output_dir`` (ONNX fp32, or int8 by ``qat``/``dynamic``/``static``); return the report.

    With ``eval_dataset`` (tokenized, with labels) and ``data_collator``, the exported model is run through ONNX
    Runtime on it: max |logit diff| and argmax agreement against ``model`` as given (with its fake quantization,
    if any), and ``compute_metrics`` on ONNX Runtime's own logits. ``static`` needs ``calibration_dataset``.
    ``reduce_range`` (``auto``, True, False): 7-bit int8 weights, for CPUs whose u8 x s8 kernel saturates;
    ``qat`` follows what training used.

    The folder is built under a temporary name and renamed into place at the end: an interrupted or failed export
    leaves no ``output_dir`` that loads as if complete, and ``model`` is never modified. An existing non-empty
    ``output_dir`` is replaced only with ``overwrite=True`` and only if it is an earlier export. With
    ``max_metric_drop`` (in the metric's own units: 0.005 is half an F1 point), :class:`MetricDropError` is raised,
    after the folder is written, when the exported model's metric is lower than its PyTorch source's by more.
    """
    from optimum.exporters.onnx import onnx_export_from_model

    from .hub import write_model_card

    if int8 not in ("none", *INT8_ROUTES):
        raise ValueError(f"int8={int8!r}; allowed: none, {', '.join(INT8_ROUTES)}")
    if int8 == "static" and calibration_dataset is None:
        raise ValueError("int8='static' needs calibration data (calibration_dataset=...; the training set will do)")
    task = _task_of(model.get_base_model() if hasattr(model, "get_base_model") else model)
    quantized_names = list(qat_modules(model))
    if int8 == "qat" and not quantized_names:
        raise ValueError(
            "int8='qat' needs a model trained with quantization-aware training (QATCallback or a "
            "'quantization' recipe block); this one has no fake-quant layers: use dynamic or static"
        )
    prepared, qat_ranges, removed = prepare_for_export(model)
    if int8 == "qat" and set(qat_ranges) != set(quantized_names):
        raise ValueError(
            "int8='qat': some fake-quant layers never observed data (QAT never started); "
            "train past quantization.start first, or use dynamic or static"
        )
    _check_inputs(prepared, task, eval_dataset if data_collator is not None else None, opset, max_metric_drop)
    if int8 in ("dynamic", "static") or not quantized_names:
        quantized_names = list(select_linears(prepared, None, "quantization.targets")) if int8 != "none" else []
    output_dir = Path(output_dir)
    with staged_directory(output_dir, overwrite=overwrite, marker=REPORT_FILE) as staging:
        work = tempfile.mkdtemp(prefix="hf-compress-export-")
        try:
            fp32_dir = staging if int8 == "none" else Path(work)
            try:
                onnx_export_from_model(prepared, fp32_dir, task=task, opset=opset, do_validation=False)
            except (ValueError, KeyError, NotImplementedError, torch.onnx.errors.OnnxExporterError) as error:
                raise ValueError(f"Optimum cannot export {type(prepared).__name__} for {task}: {error}") from error
            details: dict[str, Any] = {}
            if int8 != "none":
                details = quantize_onnx(
                    str(fp32_dir),
                    str(staging),
                    int8,
                    quantized_names,
                    qat_ranges,
                    calibration_dataset,
                    calibration or CalibrationConfig(),
                    reduce_range,
                )
                shutil.copy(fp32_dir / "config.json", staging / "config.json")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        shipped_tokenizer = _tokenizer_for(prepared, tokenizer)
        if shipped_tokenizer is not None:
            shipped_tokenizer.save_pretrained(staging)
        else:
            logger.warning(f"no tokenizer given: {output_dir} will hold no tokenizer (pass the model's tokenizer)")
        report: dict[str, Any] = {
            "task": task,
            "model_type": prepared.config.model_type,
            "base_model": base_model,
            "int8": None if int8 == "none" else int8,
            "onnx_file": ONNX_FILE,
            "size_mb": os.path.getsize(staging / ONNX_FILE) / 1e6,
            "parameters": prepared.num_parameters(),
            "removed_structures": removed or None,
            **details,
        }
        try:
            report["sparsity"] = sparsity_report(prepared)
        except ValueError:
            report["sparsity"] = None
        if eval_dataset is not None and data_collator is not None:
            report.update(
                compare_with_pytorch(
                    model if int8 != "none" else prepared,  # int8: the trained model as is (QAT: with fake quant)
                    staging / ONNX_FILE,
                    eval_dataset,
                    data_collator,
                    compute_metrics,
                    task,
                    batch_size=batch_size,
                )
            )
        if max_metric_drop is not None and "metrics" in report:
            report["quality_gate"] = _quality_gate(report, task, max_metric_drop)
        report["recipe"] = recipe
        atomic_write_json(staging / REPORT_FILE, report)
        atomic_write_text(staging / "export_report.md", report_markdown(report))
        write_model_card(staging, report)
    report["output_dir"] = str(output_dir)
    if not report.get("quality_gate", {}).get("passed", True):
        raise MetricDropError(report)
    return report


def report_markdown(report: dict[str, Any]) -> str:
    """The export report as a short Markdown table."""
    route = report["int8"] or "fp32"
    rows = [
        ("format", f"ONNX {route}" if route == "fp32" else f"ONNX int8 ({route})"),
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
    lines = ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    return "\n".join(lines) + "\n"
