"""Graph fusion: ONNX Runtime's transformer fusions on an exported encoder, before int8 quantization.

``onnxruntime.transformers.optimizer`` (what Optimum's ``ORTOptimizer`` runs) rewrites the exported BERT-style
graph into ONNX Runtime's fused operators: ``Attention`` (Q, K, V projections, scores, softmax and context in one
kernel), ``SkipLayerNormalization`` (residual add + LayerNorm) and ``BiasGelu``. Dynamic quantization then turns
``Attention`` into ``QAttention`` and the remaining MatMuls into ``MatMulInteger``, which the unfused int8 graph
cannot reach: ONNX Runtime's own session-time fusions do not match attention once its MatMuls are quantized.

The word-embedding ``Gather`` is left alone (no ``EmbedLayerNormalization``), so that the embedding tables can still
be stored int8 or int4 afterwards. The fusions are exact up to float rounding; every export is checked against
the PyTorch model through ONNX Runtime anyway.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from transformers import AutoConfig
from transformers.utils import logging

from ..architectures import ARCHITECTURES, architecture_of
from ..structures import find_structures

logger = logging.get_logger(__name__)

__all__ = ["FUSABLE_MODEL_TYPES", "attention_shape", "fuse_transformer_graph", "fusion_of"]

#: Encoder model types whose exported graphs ONNX Runtime's ``bert`` fusions match (from the architecture
#: descriptions: :attr:`~hf_compress.architectures.Architecture.fusion`).
FUSABLE_MODEL_TYPES = tuple(t for t, arch in ARCHITECTURES.items() if arch.fusion is True)


def fusion_of(model_or_config) -> str | None:
    """Why the graph of this model is not fused (``None``: it is fused)."""
    config = getattr(model_or_config, "config", model_or_config)
    arch = architecture_of(config)
    if arch is None:
        return f"model type {config.model_type!r} is not described in hf_compress.architectures"
    return None if arch.fusion is True else arch.fusion


def attention_shape(model) -> tuple[int, int]:
    """``(num_heads, num_heads * head_size)`` shared by the self-attention of every layer of ``model`` (from the
    architecture description), for the fusion; ``(0, 0)`` when the layers differ (heads pruned unevenly) or the
    heads cannot be found.

    transformers 5 reshapes q/k/v to ``(-1, head_size)``, so ONNX Runtime cannot read the number of heads off the
    graph: without these numbers attention does not fuse there. A model whose layers kept different numbers of
    heads gets ``(0, 0)``: on transformers 4.57 the fusion reads each layer's count from the graph, on 5 its
    attention stays unfused (the export report's ``fused_operators`` shows it)."""
    groups, _ = find_structures(model, "heads")
    shapes = {(g.count, g.count * g.head_size) for g in groups or []}
    return shapes.pop() if len(shapes) == 1 else (0, 0)


def fuse_transformer_graph(
    source: str | os.PathLike, target: str | os.PathLike, model_type: str, num_heads: int = 0, hidden_size: int = 0
) -> dict[str, Any]:
    """Write the fused form of the ONNX model ``source`` to ``target``; return the fused operators and their counts.

    ``model_type`` is the model config's; one not in :data:`FUSABLE_MODEL_TYPES` is copied unfused (the counts are
    then empty; :func:`fusion_of` says why). ``num_heads``/``hidden_size``: 0 lets the fusion read them from the
    graph (layers with pruned heads keep their own count).
    """
    import shutil

    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    if model_type not in FUSABLE_MODEL_TYPES:
        logger.info(f"no graph fusion for model type {model_type!r}: {fusion_of(AutoConfig.for_model(model_type))}")
        shutil.copy(source, target)
        return {}
    options = FusionOptions("bert")
    options.enable_embed_layer_norm = False  # keep the embedding Gathers for the quantized tables
    fused = optimize_model(
        str(source), "bert", num_heads=num_heads, hidden_size=hidden_size, optimization_options=options, opt_level=0
    )
    fused.save_model_to_file(str(Path(target)))
    return {op: count for op, count in fused.get_fused_operator_statistics().items() if count}
