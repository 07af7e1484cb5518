"""The int8 routes of an export: ONNX Runtime's quantizers on the MatMuls of the transformer layers.

* ``dynamic``: int8 weights per channel, activation ranges computed at run time;
* ``static``: ranges calibrated on a dataset, a QDQ graph where only the targeted MatMuls read dequantized
  activations (:func:`~hf_compress.export.graph.dequantize_only_for`);
* ``qat``: the ranges learned in quantization-aware training; the quantization technique registers it
  (:mod:`hf_compress.quantization.route`).

Each route is an :class:`~hf_compress.int8_routes.Int8Route` registered in
:data:`~hf_compress.int8_routes.INT8_ROUTES`, and resolved from ``export.int8`` once
(:func:`~hf_compress.int8_routes.resolve_int8_route`); :func:`quantize_onnx` is the step
:func:`hf_compress.export.export_model` runs, handed the route. The weight levels, the kernel probe and the
embedding-table formats are :mod:`hf_compress.int8_formats`, shared with training.
"""

from __future__ import annotations

import contextlib
import logging as std_logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers.utils import logging

from ..int8_formats import int8_kernel, quantize_embedding_gathers, weight_qmax
from ..int8_routes import INT8_ROUTES, Int8Route, register_int8_route, resolve_int8_route
from .graph import dequantize_only_for, fold_weight_identities, matmul_calls, matmul_nodes
from .to_onnx import ONNX_FILE

if TYPE_CHECKING:
    from ..configs import CalibrationConfig

logger = logging.get_logger(__name__)

__all__ = [
    "INT8_ROUTES",
    "Int8Route",
    "ONNX_FILE",
    "matmul_calls",
    "matmul_nodes",
    "quantize_onnx",
    "register_int8_route",
]


class _NoPreprocessingAdvice(std_logging.Filter):
    def filter(self, record: std_logging.LogRecord) -> bool:
        return "consider to run pre-processing" not in record.getMessage()


@contextlib.contextmanager
def quiet_quantization_advice() -> Iterator[None]:
    """Hide the line ONNX Runtime's ``quantize_dynamic`` logs on every call (on the root logger) advising its
    pre-processing script, which targets models with symbolic shapes and changes nothing here."""
    root, advice = std_logging.getLogger(), _NoPreprocessingAdvice()
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)


def _quantize_with_onnxruntime(
    source: str | os.PathLike,
    target: str | os.PathLike,
    nodes: list[str],
    reduce_range: bool,
    ranges: dict | None = None,
) -> None:
    """ONNX Runtime's quantizer on the MatMuls ``nodes``, with the settings of Optimum's
    ``AutoQuantizationConfig.avx512`` as ``ORTQuantizer.quantize`` passes them: uint8 activations, int8 symmetric
    per-channel weights (7-bit, levels ``[-64, 64]``, with ``reduce_range``). Without ``ranges``: dynamic
    (``IntegerOps``: ``MatMulInteger``); with calibrated ``ranges``: static, a QDQ graph. The same calls on both
    stacks, so the int8 graph does not depend on whether Optimum is installed."""
    import onnx
    from onnxruntime.quantization import QuantizationMode, QuantType
    from onnxruntime.quantization.onnx_quantizer import ONNXQuantizer
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    model = onnx.load(str(source))
    # subgraphs (DeBERTa's If nodes on transformers 4.x) compute positions, not linears: static leaves them as they
    # are; the dynamic quantizer needs to walk them to type the graph
    subgraphs = ranges is None and any(node.op_type in ("If", "Loop", "Scan") for node in model.graph.node)
    kwargs: dict[str, Any] = {
        "model": model,
        "per_channel": True,
        "reduce_range": reduce_range,
        "weight_qType": QuantType.QInt8,
        "activation_qType": QuantType.QUInt8,
        "tensors_range": ranges,
        "nodes_to_quantize": nodes,
        "nodes_to_exclude": [],
        "op_types_to_quantize": ["MatMul"],
        "extra_options": {
            "WeightSymmetric": True,
            "ActivationSymmetric": False,
            "EnableSubgraph": subgraphs,
            "ForceSymmetric": False,
            "AddQDQPairToWeight": False,
            "DedicatedQDQPair": False,
            "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
        },
    }
    if ranges is None:
        quantizer = ONNXQuantizer(static=False, mode=QuantizationMode.IntegerOps, **kwargs)
    else:
        quantizer = QDQQuantizer(**kwargs)
    quantizer.quantize_model()
    quantizer.model.save_model_to_file(str(target))


class _OneRowAtATime:
    """ONNX Runtime's calibration data reader over a tokenized dataset: one example per call, the graph's inputs."""

    def __init__(self, dataset, input_names: set[str]):
        self.rows, self.input_names = iter(dataset), input_names

    def get_next(self) -> dict | None:
        from .evaluation import onnx_feeds

        row = next(self.rows, None)
        return None if row is None else onnx_feeds(self.input_names, {k: [v] for k, v in row.items()})


def _calibration_ranges(onnx_path: str | os.PathLike, dataset, calibration: CalibrationConfig) -> dict:
    """Activation ranges of the MatMul inputs over ``calibration.num_samples`` examples, one at a time, by ONNX
    Runtime's calibrator (what ``ORTQuantizer.fit`` runs, with Optimum's defaults for each method). The graph's
    inputs are fed (:func:`~hf_compress.export.evaluation.onnx_feeds`: a DeBERTa-v3 graph has no
    ``token_type_ids``)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, create_calibrator

    graph_inputs = {i.name for i in onnx.load(str(onnx_path), load_external_data=False).graph.input}
    rows = _OneRowAtATime(dataset.select(range(min(calibration.num_samples, len(dataset)))), graph_inputs)
    method, extra = {
        "minmax": (CalibrationMethod.MinMax, {"moving_average": False, "averaging_constant": 0.01}),
        "percentile": (CalibrationMethod.Percentile, {"num_bins": 2048, "percentile": calibration.percentile}),
        "entropy": (CalibrationMethod.Entropy, {"num_bins": 128, "num_quantized_bins": 128}),
    }[calibration.method]
    with tempfile.TemporaryDirectory() as tmp:
        calibrator = create_calibrator(
            str(onnx_path),
            op_types_to_calibrate=["MatMul"],
            augmented_model_path=os.path.join(tmp, "augmented.onnx"),
            calibrate_method=method,
            extra_options={"symmetric": False, **extra},
        )
        calibrator.collect_data(rows)
        return calibrator.compute_data()


def _restrict_static_graph(path: Path, node_names: list[str]) -> int:
    """Apply :func:`~hf_compress.export.graph.dequantize_only_for` to the static QDQ graph in place; return the
    inputs moved."""
    import onnx

    model, moved = dequantize_only_for(onnx.load(str(path)), set(node_names))
    onnx.save(model, str(path))
    return moved


def _quantize_embeddings(path: Path, tables: dict[str, str]) -> dict[str, str] | str:
    """Store the embedding ``tables`` (initializer -> format) of the ONNX model at ``path`` quantized, in place;
    return each table's format (``"fp32"`` when none is quantized)."""
    import onnx

    if not tables:
        return "fp32"
    model = onnx.load(str(path))
    done = quantize_embedding_gathers(model, tables)
    if not done:
        logger.warning(f"no Gather reads {list(tables)} alone in {path}: the embeddings stay fp32")
        return "fp32"
    onnx.save(model, str(path))
    return done


class DynamicRoute(Int8Route):
    name = "dynamic"
    description = "int8 by dynamic post-training quantization"
    fuses_graph = True

    def quantize(self, fp32_dir, out_dir, fused, nodes, reduce_range, artifacts, calibration_dataset, calibration):
        node_names = [node for calls in nodes.values() for node, _ in calls]
        target = Path(out_dir) / "model_quantized.onnx"
        if not fused:
            _quantize_with_onnxruntime(Path(fp32_dir) / ONNX_FILE, target, node_names, reduce_range)
            return target, {}
        # a fused graph: the quantizer cannot infer the fused operators' types by itself; it can with a default
        # type. The same settings: uint8 activations, int8 symmetric per-channel weights.
        from onnx import TensorProto
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with quiet_quantization_advice():
            quantize_dynamic(
                Path(fp32_dir) / ONNX_FILE,
                target,
                op_types_to_quantize=["MatMul", "Attention"],
                per_channel=True,
                reduce_range=reduce_range,
                weight_type=QuantType.QInt8,
                nodes_to_quantize=node_names,
                extra_options={"DefaultTensorType": TensorProto.FLOAT, "WeightSymmetric": True},
            )
        return target, {}


class StaticRoute(Int8Route):
    name = "static"
    description = "int8 by static post-training quantization"

    def check_inputs(self, artifacts, calibration_dataset) -> None:
        if calibration_dataset is None:
            raise ValueError(
                "int8='static' needs calibration data (calibration_dataset=...; the training set will do)"
            )

    def quantize(self, fp32_dir, out_dir, fused, nodes, reduce_range, artifacts, calibration_dataset, calibration):
        node_names = [node for calls in nodes.values() for node, _ in calls]
        source, path = Path(fp32_dir) / ONNX_FILE, Path(out_dir) / "model_quantized.onnx"
        ranges = _calibration_ranges(source, calibration_dataset, calibration)
        _quantize_with_onnxruntime(source, path, node_names, reduce_range, ranges)
        details = {
            "calibration": {"method": calibration.method, "num_samples": calibration.num_samples},
            "float_readers_restored": _restrict_static_graph(Path(out_dir) / "model_quantized.onnx", node_names),
        }
        return path, details


for _route in (DynamicRoute(), StaticRoute()):
    register_int8_route(_route)


def _weight_range(
    route: Int8Route | str, requested: bool | str, trained: bool | None, kernel_saturates: bool
) -> tuple[bool, str | None]:
    """:meth:`Int8Route.weight_range` of ``route`` (or its name)."""
    route = resolve_int8_route(route) if isinstance(route, str) else route
    return route.weight_range(requested, trained, kernel_saturates)


def quantize_onnx(
    fp32_dir: str,
    out_dir: str,
    route: Int8Route | str,
    linear_names: list[str],
    artifacts: dict[str, Any],
    calibration_dataset,
    calibration: CalibrationConfig,
    reduce_range: bool | str = "auto",
    embedding_tables: dict[str, str] | None = None,
    fuse_model_type: str | None = None,
    attention: tuple[int, int] = (0, 0),
) -> dict[str, Any]:
    """Quantize the fp32 ONNX model of ``fp32_dir`` into ``out_dir`` by ``route`` (or its name); return the report's
    details. ``artifacts`` are what the techniques handed on (the ``qat`` route reads the observed ranges).

    ``reduce_range`` (``auto``, True, False): 7-bit weights; see :meth:`Int8Route.weight_range`. The details name the
    int8 kernel found on this machine (:func:`~hf_compress.int8_formats.int8_kernel`), the weight levels used and, for
    the QDQ routes, how many readers of quantized tensors were pointed back at the float ones.
    ``embedding_tables``: initializers whose ``Gather`` reads a quantized table, with its format
    (:func:`~hf_compress.int8_formats.quantize_embedding_gathers`). ``fuse_model_type``: fuse the graph
    first (:func:`~hf_compress.export.fusion.fuse_transformer_graph`, for a model of that type, ``attention`` heads and
    width from :func:`~hf_compress.export.fusion.attention_shape`) when the route quantizes fused graphs.
    """
    if isinstance(route, str):
        route = resolve_int8_route(route)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    kernel = int8_kernel()
    trained = route.trained_reduce_range(artifacts)
    use_reduced, warning = route.weight_range(reduce_range, trained, kernel.saturates)
    if warning:
        logger.warning(warning)
    fold_weight_identities(os.path.join(fp32_dir, ONNX_FILE))
    fused: dict[str, int] = {}
    if fuse_model_type is not None and route.fuses_graph:
        from .fusion import fuse_transformer_graph

        fused_dir = Path(out_dir) / ".fused"
        fused_dir.mkdir(exist_ok=True)
        fused = fuse_transformer_graph(Path(fp32_dir) / ONNX_FILE, fused_dir / ONNX_FILE, fuse_model_type, *attention)
        fp32_dir = str(fused_dir) if fused else fp32_dir
    nodes = matmul_calls(os.path.join(fp32_dir, ONNX_FILE), linear_names, fused=bool(fused))
    qmax = weight_qmax(use_reduced)
    details: dict[str, Any] = {
        "quantized_matmuls": sum(len(calls) for calls in nodes.values()),
        "int8_kernel": kernel.description,
        "reduce_range": use_reduced,
        "weight_levels": f"[-{qmax}, {qmax}]",
    }
    if warning:
        details["int8_warning"] = warning
    path, extra = route.quantize(
        fp32_dir, out_dir, bool(fused), nodes, use_reduced, artifacts, calibration_dataset, calibration
    )
    details.update(extra)
    details["fused_operators"] = fused
    if fused:
        import shutil

        shutil.rmtree(Path(out_dir) / ".fused", ignore_errors=True)
    quantized = Path(out_dir) / "model_quantized.onnx"
    if quantized.exists():  # one ONNX file per folder, named so that from_pretrained(folder) needs no file_name
        quantized.replace(Path(out_dir) / ONNX_FILE)
    details["embeddings"] = _quantize_embeddings(Path(out_dir) / ONNX_FILE, dict(embedding_tables or {}))
    logger.info(f"int8 ({route.name}) model written from {path}")
    return details
