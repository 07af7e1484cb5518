"""Quantized embedding tables in training: :class:`FakeQuantEmbedding` returns exactly the values the exported graph
computes (the formats, and their ONNX form, are in :mod:`hf_compress.int8_formats`), with a straight-through
gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..int8_formats import TABLE_FORMATS, TableFormat, quantize_embedding_gathers, quantize_rows

__all__ = [
    "TABLE_FORMATS",
    "FakeQuantEmbedding",
    "TableFormat",
    "convert_embeddings_to_qat",
    "qat_embeddings",
    "quantize_embedding_gathers",
    "quantize_rows",
    "remove_embedding_qat",
]


class FakeQuantEmbedding(nn.Embedding):
    """An ``nn.Embedding`` whose looked-up rows are fake-quantized in ``table_format`` when ``fake_quant_enabled``.

    Made by :func:`convert_embeddings_to_qat` from an existing ``nn.Embedding`` (class swap: parameters, hooks and
    state-dict keys unchanged). Only the gathered rows are quantized: a row's scales depend on that row alone, so
    this equals quantizing the whole table first.
    """

    fake_quant_enabled: bool
    table_format: str

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(
            input_ids,
            self.weight,
            self.padding_idx,
            self.max_norm,
            self.norm_type,
            self.scale_grad_by_freq,
            self.sparse,
        )
        if not self.fake_quant_enabled:
            return rows
        quantized = TABLE_FORMATS[self.table_format].fake_quantize(rows.reshape(-1, rows.shape[-1]))
        return quantized.view_as(rows)

    def extra_repr(self) -> str:
        fmt = TABLE_FORMATS[self.table_format].describe(self.embedding_dim)
        return f"{super().extra_repr()}, fake_quant={'on' if self.fake_quant_enabled else 'off'} ({fmt})"


def convert_embeddings_to_qat(model: nn.Module, table_format: str = "int8") -> dict[str, FakeQuantEmbedding]:
    """Turn the model's word embeddings (``get_input_embeddings()``) into an inert :class:`FakeQuantEmbedding` that
    quantizes in ``table_format`` (a key of :data:`TABLE_FORMATS`)."""
    embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if not isinstance(embedding, nn.Embedding):
        return {}
    TABLE_FORMATS[table_format].block_size(embedding.embedding_dim)  # a width the format cannot block fails here
    if not isinstance(embedding, FakeQuantEmbedding):
        embedding.__class__ = FakeQuantEmbedding
        embedding.fake_quant_enabled = False
    embedding.table_format = table_format
    return qat_embeddings(model)


def qat_embeddings(model: nn.Module) -> dict[str, FakeQuantEmbedding]:
    """The :class:`FakeQuantEmbedding` modules of ``model`` by name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, FakeQuantEmbedding)}


def remove_embedding_qat(model: nn.Module) -> dict[str, str]:
    """Turn fake-quant embeddings back into ``nn.Embedding`` in place; return the names of those trained with fake
    quantization on, with their format (their tables must be stored so in the export to compute what training
    did)."""
    trained = {}
    for name, module in qat_embeddings(model).items():
        if module.fake_quant_enabled:
            trained[name] = module.table_format
        module.__dict__.pop("fake_quant_enabled", None)
        module.__dict__.pop("table_format", None)
        module.__class__ = nn.Embedding
    return trained
