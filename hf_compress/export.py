"""Export through Optimum: ONNX fp32, and int8 by QAT (learned ranges), dynamic or static post-training quantization.

:func:`export_model` prepares a copy of the trained model (fake-quant layers folded back into plain linears,
pruned neurons and heads sliced out, LoRA adapters merged), exports it with Optimum's ONNX exporter and, for
int8, quantizes it with Optimum's ``ORTQuantizer``:

* ``qat``: a QDQ graph whose activation ranges are those the fake-quant observers learned in training and whose
  weight scales are computed as in training (symmetric int8 per output channel), so ONNX Runtime runs the
  model training saw;
* ``dynamic``: weights int8 per channel, activation ranges computed at run time;
* ``static``: ranges calibrated on a dataset (``minmax``, ``percentile`` or ``entropy``), QDQ graph.

Only the linears inside the transformer layers are quantized (the same ``MatMul`` nodes for every route), so
the routes differ only in how the ranges are found. The folder then holds ``model.onnx``, ``config.json``, the
tokenizer, ``export_report.{json,md}`` (parity with PyTorch and the task metric computed from ONNX Runtime's own
outputs, see :mod:`hf_compress.evaluation`) and a model card; it loads with ``ORTModelFor...from_pretrained``.
"""

from __future__ import annotations

import copy
import os
import re
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
from .pruning import remove_pruned_structures, select_linears, sparsity_report
from .quantization import qat_modules, remove_qat

logger = logging.get_logger(__name__)

__all__ = ["ONNX_FILE", "INT8_ROUTES", "MetricDropError", "export_model", "prepare_for_export", "matmul_nodes"]

ONNX_FILE = "model.onnx"
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


def matmul_nodes(onnx_path: str | os.PathLike, module_names: list[str]) -> dict[str, tuple[str, str]]:
    """Map module names to ``(MatMul node name, input tensor name)`` in a graph exported by torch.onnx.

    The exporter names a linear's MatMul after its module scope: ``bert.encoder.layer.0.output.dense`` becomes
    ``/bert/encoder/layer.0/output/dense/MatMul``.
    """
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    by_name = {node.name: node for node in graph.node if node.op_type == "MatMul"}
    found, missing = {}, []
    for name in module_names:
        slashed = "/" + name.replace(".", "/")
        candidates = (slashed + "/MatMul", re.sub(r"/(\d+)(?=/|$)", r".\1", slashed) + "/MatMul")
        node = next((by_name[c] for c in candidates if c in by_name), None)
        if node is None:
            missing.append(name)
        else:
            found[name] = (node.name, node.input[0])
    if missing:
        raise ValueError(f"no MatMul node found in {onnx_path} for the linear layers {missing[:4]}")
    return found


def _quantization_config(is_static: bool, nodes: list[str], reduce_range: bool = False):
    """Optimum's config for ``dynamic``/``static``: uint8 activations, int8 symmetric per-channel weights (7-bit,
    levels ``[-64, 64]``, with ``reduce_range``), only the MatMuls ``nodes``."""
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    return AutoQuantizationConfig.avx512(
        is_static=is_static,
        use_symmetric_activations=False,
        use_symmetric_weights=True,
        per_channel=True,
        reduce_range=reduce_range,
        nodes_to_quantize=nodes,
        operators_to_quantize=["MatMul"],
    )


def _calibration_ranges(quantizer, dataset, calibration: CalibrationConfig) -> dict[str, tuple[float, float]]:
    from optimum.onnxruntime.configuration import AutoCalibrationConfig

    inputs = {"input_ids", "attention_mask", "token_type_ids"}
    dataset = dataset.remove_columns([c for c in dataset.column_names if c not in inputs])
    dataset = dataset.select(range(min(calibration.num_samples, len(dataset))))
    if calibration.method == "minmax":
        config = AutoCalibrationConfig.minmax(dataset)
    elif calibration.method == "percentile":
        config = AutoCalibrationConfig.percentiles(dataset, percentile=calibration.percentile)
    else:
        config = AutoCalibrationConfig.entropy(dataset)
    with tempfile.TemporaryDirectory() as tmp:
        return quantizer.fit(
            dataset,
            config,
            onnx_augmented_model_name=os.path.join(tmp, "augmented.onnx"),
            operators_to_quantize=["MatMul"],
        )


def _qat_tensor_ranges(nodes: dict[str, tuple[str, str]], qat_ranges: dict[str, tuple[float, float]]) -> dict:
    """ONNX Runtime ``TensorData`` ranges of the MatMul inputs, from the observers of the layers reading them.

    q, k and v read one tensor and observed the same batches, so their ranges agree; the union is taken.
    """
    import numpy as np
    from onnxruntime.quantization.calibrate import TensorData

    bounds: dict[str, tuple[float, float]] = {}
    for name, (_, tensor) in nodes.items():
        low, high = qat_ranges[name]
        old = bounds.get(tensor, (low, high))
        bounds[tensor] = (min(old[0], low), max(old[1], high))
    return {
        tensor: TensorData(lowest=np.float32(low), highest=np.float32(high)) for tensor, (low, high) in bounds.items()
    }


def _dequantize_only_for(model, targets: set[str]):
    """Make only the ``targets`` nodes read dequantized activations; return the new model and how many inputs moved.

    ONNX Runtime's QDQ quantizer inserts ``x -> QuantizeLinear -> DequantizeLinear -> x'`` and points *every*
    reader of ``x`` at ``x'``: in a BERT layer the LayerNorm output feeding q/k/v (or ``intermediate.dense``) is
    also the residual input of the next ``Add`` (and the input of ``Shape``), which would then be rounded to uint8
    and clipped to the observed range, although training fake-quantized only what the linears read. Here each
    reader of ``x'`` that is not in ``targets`` is pointed back at ``x``; a QuantizeLinear/DequantizeLinear pair
    left without readers (e.g. one on a MatMul output) is removed with its scale and zero point. Weight
    DequantizeLinear nodes (fed by an initializer) are not touched. ``model`` is not modified.
    """
    import onnx

    model = copy.deepcopy(model)
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    graph_outputs = {o.name for o in graph.output}
    float_of = {}  # x' -> x for every activation QuantizeLinear -> DequantizeLinear pair
    for node in graph.node:
        source = producer.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if source is not None and source.op_type == "QuantizeLinear" and node.output[0] not in graph_outputs:
            float_of[node.output[0]] = source.input[0]
    moved = 0
    for node in graph.node:
        if node.name in targets or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for i, name in enumerate(node.input):
            if name in float_of:
                node.input[i] = float_of[name]
                moved += 1
    # drop pairs nobody reads any more (the QuantizeLinear first needs its DequantizeLinear gone)
    for op_type in ("DequantizeLinear", "QuantizeLinear"):
        read = {name for node in graph.node for name in node.input} | graph_outputs
        dead = [n for n in graph.node if n.op_type == op_type and not any(out in read for out in n.output)]
        for node in dead:
            graph.node.remove(node)
    read = {name for node in graph.node for name in node.input} | graph_outputs
    for tensor in [t for t in graph.initializer if t.name not in read]:
        if tensor.name.endswith(("_scale", "_zero_point")):
            graph.initializer.remove(tensor)
    _sort_topologically(graph)
    onnx.checker.check_model(model)
    return model, moved


def _sort_topologically(graph) -> None:
    """Order ``graph.node`` so that every node comes after the producers of its inputs (stable otherwise)."""
    known = {"", *(t.name for t in graph.initializer), *(i.name for i in graph.input)}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(name in known for name in n.input)]
        if not ready:
            raise ValueError(f"the graph has a cycle or a missing input at {pending[0].name}")
        for node in ready:
            known.update(node.output)
        ordered += ready
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
    copies = [type(n)() for n in ordered]
    for copy_, node in zip(copies, ordered, strict=True):
        copy_.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


def _quantize_qat(
    fp32_dir: str, out_dir: str, node_names: list[str], ranges: dict, reduce_range: bool
) -> tuple[Path, int]:
    """QDQ graph with the QAT ranges: inputs uint8 per tensor, weights int8 symmetric per channel (axis 1 of the
    exported ``W^T``; 7-bit with ``reduce_range``), MatMul outputs left in float as in training
    (``OpTypesToExcludeOutputQuantization``), and only the MatMuls reading the dequantized inputs
    (:func:`_dequantize_only_for`): what the fake-quant layers computed.

    Optimum's ``ORTQuantizer.quantize`` does not expose the output option, so ONNX Runtime's ``QDQQuantizer`` is
    called with the arguments Optimum would give it plus that one. Returns the path and the readers moved back to
    float tensors.
    """
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    quantizer = QDQQuantizer(
        onnx.load(os.path.join(fp32_dir, ONNX_FILE)),
        per_channel=True,
        reduce_range=reduce_range,
        weight_qType=QuantType.QInt8,
        activation_qType=QuantType.QUInt8,
        tensors_range=ranges,
        nodes_to_quantize=node_names,
        nodes_to_exclude=[],
        op_types_to_quantize=["MatMul"],
        extra_options={
            "WeightSymmetric": True,
            "ActivationSymmetric": False,
            "OpTypesToExcludeOutputQuantization": ["MatMul"],
            "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
        },
    )
    quantizer.quantize_model()
    model, moved = _dequantize_only_for(quantizer.model.model, set(node_names))
    path = Path(out_dir) / ONNX_FILE
    onnx.save(model, str(path))
    return path, moved


def _restrict_static_graph(path: Path, node_names: list[str]) -> int:
    """Apply :func:`_dequantize_only_for` to Optimum's static QDQ graph in place; return the inputs moved."""
    import onnx

    model, moved = _dequantize_only_for(onnx.load(str(path)), set(node_names))
    onnx.save(model, str(path))
    return moved


def _weight_range(
    route: str, requested: bool | str, trained: bool | None, kernel_saturates: bool
) -> tuple[bool, str | None]:
    """The ``reduce_range`` to quantize with and a warning, if any.

    ``dynamic``/``static``: ``requested`` (``auto``: 7-bit exactly when the kernel saturates). ``qat``: what training
    used (``trained``); a different explicit request is refused.
    """
    from .quantization import resolve_reduce_range

    if route != "qat":
        return (kernel_saturates if requested == "auto" else resolve_reduce_range(requested)), None
    if trained is None:
        raise ValueError("int8='qat': the QAT ranges do not say which weight range training used (reduce_range)")
    if requested != "auto" and resolve_reduce_range(requested) != trained:
        raise ValueError(
            f"int8='qat' with reduce_range={requested}: the model was trained with "
            f"{'7-bit' if trained else '8-bit'} weights (quantization.reduce_range={str(trained).lower()}) and the "
            "export must use the weights training saw; set export reduce_range to auto or "
            f"{str(trained).lower()}, retrain with quantization.reduce_range={str(requested).lower()}, "
            "or use dynamic or static"
        )
    if kernel_saturates and not trained:
        return trained, (
            "this CPU's int8 kernel saturates pairs of products at int16 and the model was trained with 8-bit "
            "weights: ONNX Runtime may compute something else than training did here; train with "
            "quantization.reduce_range: true (or auto on this machine) for this CPU"
        )
    return trained, None


def _quantize(
    fp32_dir: str,
    out_dir: str,
    route: str,
    linear_names: list[str],
    qat_ranges: dict[str, tuple[float, float]],
    calibration_dataset,
    calibration: CalibrationConfig,
    reduce_range: bool | str = "auto",
) -> dict[str, Any]:
    """Quantize the fp32 ONNX model of ``fp32_dir`` into ``out_dir`` by ``route``; return the report's details.

    ``reduce_range`` (``auto``, True, False): 7-bit weights; see :func:`_weight_range`. The details name the int8
    kernel found on this machine (:func:`~hf_compress.quantization.int8_kernel`), the weight levels used and, for
    the QDQ routes, how many readers of quantized tensors were pointed back at the float ones.
    """
    from optimum.onnxruntime import ORTQuantizer

    from .quantization import int8_kernel, weight_qmax

    kernel = int8_kernel()
    use_reduced, warning = _weight_range(
        route, reduce_range, getattr(qat_ranges, "reduce_range", None), kernel.saturates
    )
    if warning:
        logger.warning(warning)
    nodes = matmul_nodes(os.path.join(fp32_dir, ONNX_FILE), linear_names)
    node_names = [node for node, _ in nodes.values()]
    quantizer = ORTQuantizer.from_pretrained(fp32_dir, file_name=ONNX_FILE)
    qmax = weight_qmax(use_reduced)
    details: dict[str, Any] = {
        "quantized_matmuls": len(node_names),
        "int8_kernel": kernel.description,
        "reduce_range": use_reduced,
        "weight_levels": f"[-{qmax}, {qmax}]",
    }
    if warning:
        details["int8_warning"] = warning
    if route == "dynamic":
        path = quantizer.quantize(_quantization_config(False, node_names, use_reduced), out_dir)
    elif route == "static":
        ranges = _calibration_ranges(quantizer, calibration_dataset, calibration)
        details["calibration"] = {"method": calibration.method, "num_samples": calibration.num_samples}
        config = _quantization_config(True, node_names, use_reduced)
        path = quantizer.quantize(config, out_dir, calibration_tensors_range=ranges)
        details["float_readers_restored"] = _restrict_static_graph(Path(out_dir) / "model_quantized.onnx", node_names)
    else:
        tensor_ranges = _qat_tensor_ranges(nodes, qat_ranges)
        path, details["float_readers_restored"] = _quantize_qat(
            fp32_dir, out_dir, node_names, tensor_ranges, use_reduced
        )
    quantized = Path(out_dir) / "model_quantized.onnx"
    if quantized.exists():  # one ONNX file per folder, named so that from_pretrained(folder) needs no file_name
        quantized.replace(Path(out_dir) / ONNX_FILE)
    logger.info(f"int8 ({route}) model written from {path}")
    return details


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
                details = _quantize(
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
