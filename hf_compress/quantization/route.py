"""The ``qat`` int8 route: the export half of quantization-aware training.

A QDQ graph with the ranges the fake-quant observers learned and the weights training saw (symmetric int8 per
output channel, 7-bit with ``reduce_range``); only the targeted MatMuls read dequantized activations
(:func:`~hf_compress.export.graph.dequantize_only_for`), so ONNX Runtime computes what training simulated. Registered
with :func:`~hf_compress.int8_routes.register_int8_route` when the quantization package is imported.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..checks import RecipeError
from ..export.graph import dequantize_only_for
from ..export.to_onnx import ONNX_FILE
from ..int8_formats import resolve_reduce_range
from ..int8_routes import Int8Route, register_int8_route
from .technique import QATCallback

__all__ = ["QATRoute"]


def _qat_tensor_ranges(model, nodes: dict[str, list[tuple[str, str]]], qat_ranges: dict) -> tuple[dict, list[str]]:
    """ONNX Runtime ``TensorData`` ranges of the MatMul inputs, from the observers of the layers reading them.

    A fake-quant layer quantizes each of its calls with its own observed range. Readers of one tensor whose layers
    observed the same range (BERT's q, k and v) share its QuantizeLinear. A reader whose layer observed another range
    (DeBERTa-v2 projects the relative-position embeddings with q and k, not v, so v's range differs) reads the tensor
    through an ``Identity`` added to ``model`` (in place, before that reader), whose output gets the range: every call
    is quantized as in training. Returns the ranges and the names of the added ``Identity`` nodes.
    """
    import numpy as np
    from onnx import helper
    from onnxruntime.quantization.calibrate import TensorData

    readers: dict[str, dict[tuple[float, float], list[str]]] = {}  # tensor -> range -> MatMul nodes, in call order
    for name, calls in nodes.items():
        low, high = qat_ranges[name]
        for node, tensor in calls:
            readers.setdefault(tensor, {}).setdefault((float(low), float(high)), []).append(node)
    bounds, identities = {}, {}  # identities: output -> Identity node
    matmuls = {node.name: node for node in model.graph.node if node.op_type == "MatMul"}
    for tensor, by_range in readers.items():
        for i, (bound, node_names) in enumerate(by_range.items()):
            source = tensor if i == 0 else f"{tensor}_range_{i}"
            bounds[source] = bound
            if i:
                identities[source] = helper.make_node("Identity", [tensor], [source], name=f"{source}_Identity")
                for node in node_names:
                    matmuls[node].input[0] = source
    names = [node.name for node in identities.values()]
    if identities:  # each Identity just before its first reader
        ordered = []
        for node in model.graph.node:
            ordered += [identities.pop(x) for x in node.input if x in identities]
            ordered.append(type(node)())
            ordered[-1].CopyFrom(node)
        del model.graph.node[:]
        model.graph.node.extend(ordered)
    ranges = {
        tensor: TensorData(lowest=np.float32(low), highest=np.float32(high)) for tensor, (low, high) in bounds.items()
    }
    return ranges, names


def _bypass(model, identities: list[str]) -> None:
    """Point the readers of the named ``Identity`` nodes at their input and remove the nodes, in place."""
    names = set(identities)
    alias = {node.output[0]: node.input[0] for node in model.graph.node if node.name in names}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = alias.get(name, name)
    kept = [node for node in model.graph.node if node.name not in names]
    del model.graph.node[:]
    model.graph.node.extend(kept)


def _quantize_qat(
    fp32_dir: str, out_dir: str, nodes: dict[str, list[tuple[str, str]]], qat_ranges: dict, reduce_range: bool
) -> tuple[Path, int]:
    """QDQ graph with the QAT ranges: inputs uint8 per tensor, weights int8 symmetric per channel (axis 1 of the
    exported ``W^T``; 7-bit with ``reduce_range``), MatMul outputs left in float as in training
    (``OpTypesToExcludeOutputQuantization``), and only the MatMuls reading the dequantized inputs
    (:func:`~hf_compress.export.graph.dequantize_only_for`): what the fake-quant layers computed.

    Optimum's ``ORTQuantizer.quantize`` does not expose the output option, so ONNX Runtime's ``QDQQuantizer`` is
    called with the arguments Optimum would give it plus that one. Returns the path and the readers moved back to
    float tensors. ``nodes``: the calls of each layer (:func:`~hf_compress.export.graph.matmul_calls`); ``qat_ranges``:
    each layer's observed range (:func:`_qat_tensor_ranges`).
    """
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    fp32 = onnx.load(os.path.join(fp32_dir, ONNX_FILE))
    ranges, identities = _qat_tensor_ranges(fp32, nodes, qat_ranges)
    node_names = [node for calls in nodes.values() for node, _ in calls]
    quantizer = QDQQuantizer(
        fp32,
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
    model, moved = dequantize_only_for(quantizer.model.model, set(node_names))
    # the added Identity nodes now read the float tensor: their QuantizeLinear reads it directly
    _bypass(model, identities)
    moved -= len(identities)
    path = Path(out_dir) / ONNX_FILE
    onnx.save(model, str(path))
    return path, moved


class QATRoute(Int8Route):
    """``export.int8: qat``: the ranges and weights quantization-aware training learned."""

    name = "qat"
    description = "int8 with the ranges learned in quantization-aware training"

    def check_recipe(self, recipe: Any) -> None:
        if recipe.quantization is None:
            raise RecipeError("export.int8", "qat", "needs a 'quantization' block (QAT); or use dynamic or static")

    def check_inputs(self, artifacts, calibration_dataset) -> None:
        layers = artifacts.get("qat_layers")
        if not layers:
            raise ValueError(
                "int8='qat' needs a model trained with quantization-aware training (QATCallback or a "
                "'quantization' recipe block); this one has no fake-quant layers: use dynamic or static"
            )
        if set(artifacts["qat_ranges"]) != set(layers):
            raise ValueError(
                "int8='qat': some fake-quant layers never observed data (QAT never started); "
                "train past quantization.start first, or use dynamic or static"
            )

    def check_saved(self, folder: str | os.PathLike) -> None:
        path = Path(folder) / QATCallback.state_file
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: int8 'qat' needs the observers saved by quantization-aware training "
                "(a 'quantization' recipe block); use --int8 dynamic or static for a model trained without it"
            )

    def targets(self, model, artifacts) -> list[str]:
        return list(artifacts["qat_layers"])

    def trained_reduce_range(self, artifacts) -> bool | None:
        return getattr(artifacts["qat_ranges"], "reduce_range", None)

    def weight_range(
        self, requested: bool | str, trained: bool | None, kernel_saturates: bool
    ) -> tuple[bool, str | None]:
        """What training used (``trained``); a different explicit request is refused, and a warning is given when
        this machine's kernel saturates with the 8-bit weights training used."""
        if trained is None:
            raise ValueError("int8='qat': the QAT ranges do not say which weight range training used (reduce_range)")
        if requested != "auto" and resolve_reduce_range(requested) != trained:
            raise ValueError(
                f"int8='qat' with reduce_range={requested}: the model was trained with "
                f"{'7-bit' if trained else '8-bit'} weights (quantization.reduce_range={str(trained).lower()}) and "
                "the export must use the weights training saw; set export reduce_range to auto or "
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

    def embedding_tables(self, model, artifacts, embeddings: str) -> dict[str, str]:
        """What training saw: the tables fake-quantized in QAT, in its format (``quantization.embeddings``),
        whatever ``export.embeddings`` says."""
        return dict(artifacts.get("qat_embedding_tables", {}))

    def quantize(self, fp32_dir, out_dir, fused, nodes, reduce_range, artifacts, calibration_dataset, calibration):
        path, moved = _quantize_qat(fp32_dir, out_dir, nodes, artifacts["qat_ranges"], reduce_range)
        return path, {"float_readers_restored": moved}


register_int8_route(QATRoute())
