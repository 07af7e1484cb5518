"""Export: a trained model (or a saved model folder) to ONNX fp32 or int8, evaluated through ONNX Runtime.

One door, :func:`export` (:mod:`~hf_compress.export.entry`); the modules read in the order the data flows::

    options.py     the export block with the caller's overrides, the int8 route it names (resolved once), the
                   default folder name                                        -> ExportPlan
    prepare.py     a CPU copy of the model, each technique's prepare_for_export (reverse surgery order)
    to_onnx.py     ONNX fp32: Optimum's exporter where it is installed, torch.onnx otherwise
    graph.py       graph passes on the ONNX model (the MatMuls of each linear, Q/DQ placement)
    fusion.py      ONNX Runtime's transformer fusions, for routes that quantize fused graphs
    int8.py        the int8 step and the post-training routes (dynamic, static); the route interface and
                   registry are :mod:`hf_compress.int8_routes` (``qat`` is the quantization technique's)
    evaluation.py  the exported model through ONNX Runtime: parity with PyTorch, the task metric
    hub.py         the model card, push to the Hub
    pipeline.py    the steps in that order, the report, the quality gate  -> export_model, run_export
    entry.py       export(model_or_folder, ...): what the CLI, CompressionTrainer and run_recipe call
"""

from __future__ import annotations

from .entry import export
from .graph import matmul_nodes
from .options import ExportPlan, default_export_dir, export_plan
from .pipeline import MetricDropError, export_model, report_markdown, run_export
from .prepare import ExportData, prepare_for_export
from .to_onnx import ONNX_FILE

__all__ = [
    "ONNX_FILE",
    "ExportData",
    "ExportPlan",
    "MetricDropError",
    "default_export_dir",
    "export",
    "export_model",
    "export_plan",
    "matmul_nodes",
    "prepare_for_export",
    "report_markdown",
    "run_export",
]
