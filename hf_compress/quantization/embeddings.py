"""int8 word embeddings: the table quantized per row, in training (fake quantization) and in the exported graph.

Each row ``E[r]`` of the word-embedding table gets its own symmetric scale ``s_r = max|E[r]| / 127`` (1.0 for an
all-zero row, as for the linears' per-channel weights) and levels ``q_r = round(E[r] / s_r)`` in ``[-127, 127]``:
a row is what a token looks up, so per-row scales cost no more than the gather and keep rare tokens' small rows
as precise as frequent ones'. In ONNX the ``Gather`` of the fp32 table becomes

    Gather(q, ids) -> Cast(float) -> Mul(Unsqueeze(Gather(s, ids), -1))

(standard operators; the table is 4x smaller and only the looked-up rows are dequantized). In quantization-aware
training, :class:`FakeQuantEmbedding` returns exactly those values, with a straight-through gradient.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "FakeQuantEmbedding",
    "convert_embeddings_to_qat",
    "qat_embeddings",
    "quantize_embedding_gathers",
    "quantize_rows",
    "remove_embedding_qat",
]

EMBEDDING_QMAX = 127  # symmetric int8 levels [-127, 127]


def _fake_quantize_rows(rows: torch.Tensor) -> torch.Tensor:
    """Per-row symmetric int8 quantize-dequantize of a 2-D tensor (straight-through gradient)."""
    from .fake_quant import weight_scale

    scale = weight_scale(rows, EMBEDDING_QMAX)
    zero = torch.zeros_like(scale, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(rows, scale, zero, 0, -EMBEDDING_QMAX, EMBEDDING_QMAX)


@torch.no_grad()
def quantize_rows(table: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The int8 levels ``(V, H)`` and float32 scales ``(V,)`` of a table, exactly as :class:`FakeQuantEmbedding`
    computes them."""
    from .fake_quant import weight_scale

    table = table.detach().float().cpu()
    scale = weight_scale(table, EMBEDDING_QMAX)
    levels = torch.round(_fake_quantize_rows(table) / scale[:, None]).clamp(-EMBEDDING_QMAX, EMBEDDING_QMAX)
    return levels.to(torch.int8).numpy(), scale.numpy().astype(np.float32)


class FakeQuantEmbedding(nn.Embedding):
    """An ``nn.Embedding`` whose looked-up rows are fake-quantized per row (int8) when ``fake_quant_enabled``.

    Made by :func:`convert_embeddings_to_qat` from an existing ``nn.Embedding`` (class swap: parameters, hooks and
    state-dict keys unchanged). Only the gathered rows are quantized: a row's scale depends on that row alone, so
    this equals quantizing the whole table first.
    """

    fake_quant_enabled: bool

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
        return _fake_quantize_rows(rows.reshape(-1, rows.shape[-1])).view_as(rows)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, fake_quant={'on' if self.fake_quant_enabled else 'off'} (int8 per row)"


def convert_embeddings_to_qat(model: nn.Module) -> dict[str, FakeQuantEmbedding]:
    """Turn the model's word embeddings (``get_input_embeddings()``) into an inert :class:`FakeQuantEmbedding`."""
    embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if not isinstance(embedding, nn.Embedding):
        return {}
    if not isinstance(embedding, FakeQuantEmbedding):
        embedding.__class__ = FakeQuantEmbedding
        embedding.fake_quant_enabled = False
    return qat_embeddings(model)


def qat_embeddings(model: nn.Module) -> dict[str, FakeQuantEmbedding]:
    """The :class:`FakeQuantEmbedding` modules of ``model`` by name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, FakeQuantEmbedding)}


def remove_embedding_qat(model: nn.Module) -> list[str]:
    """Turn fake-quant embeddings back into ``nn.Embedding`` in place; return the names of those trained with fake
    quantization on (their tables must be int8 in the export to compute what training did)."""
    trained = []
    for name, module in qat_embeddings(model).items():
        if module.fake_quant_enabled:
            trained.append(name)
        module.__dict__.pop("fake_quant_enabled", None)
        module.__class__ = nn.Embedding
    return trained


def quantize_embedding_gathers(model, tables: list[str]) -> list[str]:
    """Replace, in an ONNX ``model`` (in place), every ``Gather`` that reads one of the initializers ``tables`` by the
    int8 per-row form of the module docstring; return the tables quantized."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    done = []
    for table in tables:
        gathers = [n for n in readers.get(table, []) if n.op_type == "Gather" and n.input[0] == table]
        if table not in initializers or not gathers or len(gathers) != len(readers[table]):
            continue  # not there, or also read by something else (a tied output layer): left in float
        levels, scale = quantize_rows(torch.from_numpy(numpy_helper.to_array(initializers[table]).copy()))
        graph.initializer.remove(initializers[table])
        graph.initializer.extend(
            [numpy_helper.from_array(levels, f"{table}_int8"), numpy_helper.from_array(scale, f"{table}_scale")]
        )
        axes = f"{table}_unsqueeze_axes"
        graph.initializer.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), axes))
        for node in gathers:
            ids, out = node.input[1], node.output[0]
            base = node.name or out
            float_type = TensorProto.FLOAT
            new = [
                helper.make_node("Gather", [f"{table}_int8", ids], [f"{base}_int8"], name=f"{base}_int8"),
                helper.make_node("Cast", [f"{base}_int8"], [f"{base}_float"], name=f"{base}_cast", to=float_type),
                helper.make_node("Gather", [f"{table}_scale", ids], [f"{base}_scale"], name=f"{base}_scale"),
                helper.make_node("Unsqueeze", [f"{base}_scale", axes], [f"{base}_rows"], name=f"{base}_unsqueeze"),
                helper.make_node("Mul", [f"{base}_float", f"{base}_rows"], [out], name=f"{base}_dequantize"),
            ]
            position = list(graph.node).index(node)
            graph.node.remove(node)
            for offset, added in enumerate(new):
                graph.node.insert(position + offset, added)
        done.append(table)
    return done
