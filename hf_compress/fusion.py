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

from transformers.utils import logging

logger = logging.get_logger(__name__)

__all__ = ["FUSABLE_MODEL_TYPES", "attention_shape", "fuse_transformer_graph"]

#: Encoder architectures whose exported graphs ONNX Runtime's ``bert`` fusions match.
FUSABLE_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "distilbert", "electra", "camembert", "mpnet")


def attention_shape(model) -> tuple[int, int]:
    """``(num_heads, num_heads * head_size)`` shared by every self-attention module of ``model``, for the fusion;
    ``(0, 0)`` when the layers differ (heads pruned unevenly) or the model does not say.

    transformers 5 reshapes q/k/v to ``(-1, head_size)``, so ONNX Runtime cannot read the number of heads off the
    graph: without these numbers attention does not fuse there. A model whose layers kept different numbers of
    heads gets ``(0, 0)``: on transformers 4.57 the fusion reads each layer's count from the graph, on 5 its
    attention stays unfused (the export report's ``fused_operators`` shows it)."""
    shapes = {
        (m.num_attention_heads, m.num_attention_heads * m.attention_head_size)
        for m in model.modules()
        if isinstance(getattr(m, "num_attention_heads", None), int) and hasattr(m, "attention_head_size")
    }
    return shapes.pop() if len(shapes) == 1 else (0, 0)


def fuse_transformer_graph(
    source: str | os.PathLike, target: str | os.PathLike, model_type: str, num_heads: int = 0, hidden_size: int = 0
) -> dict[str, Any]:
    """Write the fused form of the ONNX model ``source`` to ``target``; return the fused operators and their counts.

    ``model_type`` is the model config's; one not in :data:`FUSABLE_MODEL_TYPES` is copied unfused (the counts are
    then empty). ``num_heads``/``hidden_size``: 0 lets the fusion read them from the graph (layers with pruned
    heads keep their own count).
    """
    import shutil

    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    if model_type not in FUSABLE_MODEL_TYPES:
        logger.info(f"no graph fusion for model type {model_type!r} (fused: {', '.join(FUSABLE_MODEL_TYPES)})")
        shutil.copy(source, target)
        return {}
    options = FusionOptions("bert")
    options.enable_embed_layer_norm = False  # keep the embedding Gathers for the quantized tables
    fused = optimize_model(
        str(source), "bert", num_heads=num_heads, hidden_size=hidden_size, optimization_options=options, opt_level=0
    )
    fused.save_model_to_file(str(Path(target)))
    return {op: count for op, count in fused.get_fused_operator_statistics().items() if count}
