"""Quantized embedding tables: stored in fewer bits per value, in training (fake quantization) and in the exported
graph.

A table ``E`` (``V x H``) is quantized symmetrically in blocks of ``B`` consecutive values of a row, each block
``b`` with its own scale ``s = max|E[r, b]| / q`` (1.0 for an all-zero block) and levels
``round(E[r, b] / s)`` in ``[-q, q]``. Two formats (:data:`TABLE_FORMATS`):

- ``int8``: ``q = 127``, one block per row (``B = H``). In ONNX ``Gather(levels, ids) -> Cast -> Mul(scale)``,
  standard operators; the table is 4x smaller than fp32.
- ``int4``: ``q = 7``, blocks of 64 (the largest of 64, 32, 16 dividing ``H``; per-row 4-bit costs accuracy),
  two levels per byte. In ONNX ONNX Runtime's ``GatherBlockQuantized`` (``com.microsoft``), which dequantizes only
  the looked-up rows; the table is about 7x smaller than fp32.

A row is what a token looks up, so scales per row (or block) cost no more than the gather and keep rare tokens'
small rows as precise as frequent ones'. In quantization-aware training, :class:`FakeQuantEmbedding` returns
exactly the values the exported graph computes, with a straight-through gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

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


@dataclass(frozen=True)
class TableFormat:
    """How a quantized embedding table is stored: ``bits`` per value, one scale per ``block`` values of a row
    (``None``: per row)."""

    name: str
    bits: int
    block: int | None = None

    @property
    def qmax(self) -> int:
        """The largest level: ``2^(bits-1) - 1`` (symmetric levels ``[-qmax, qmax]``)."""
        return 2 ** (self.bits - 1) - 1

    def block_size(self, width: int) -> int:
        """The block size for rows of ``width`` values: the row, or the largest of ``block``, 32, 16 dividing it."""
        if self.block is None:
            return width
        for size in (self.block, 32, 16):
            if size <= self.block and width % size == 0:
                return size
        raise ValueError(f"{self.name} embeddings need rows whose width is a multiple of 16; got {width}")

    def describe(self, width: int) -> str:
        return f"{self.name} per row" if self.block is None else f"{self.name}, blocks of {self.block_size(width)}"

    def _blocks(self, rows: torch.Tensor) -> torch.Tensor:
        return rows.reshape(-1, self.block_size(rows.shape[-1]))

    def scales(self, rows: torch.Tensor) -> torch.Tensor:
        """One float32 scale per block of the 2-D ``rows``, shape ``(rows, blocks per row)``."""
        blocks = self._blocks(rows.detach().float())
        absmax = blocks.abs().amax(dim=1)
        scale = torch.where(absmax > 0, absmax / self.qmax, torch.ones_like(absmax))
        return scale.view(rows.shape[0], -1)

    def fake_quantize(self, rows: torch.Tensor) -> torch.Tensor:
        """Quantize-dequantize the 2-D ``rows`` (straight-through gradient)."""
        scale = self.scales(rows).reshape(-1)
        zero = torch.zeros_like(scale, dtype=torch.int32)
        blocks = torch.fake_quantize_per_channel_affine(self._blocks(rows), scale, zero, 0, -self.qmax, self.qmax)
        return blocks.view_as(rows)

    @torch.no_grad()
    def quantize(self, table: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """The levels (int8 array ``(V, H)``) and float32 scales (``(V,)`` per row, else ``(V, blocks)``) of a
        table, exactly as :meth:`fake_quantize` computes them."""
        table = table.detach().float().cpu()
        scale = self.scales(table)
        blocks = self._blocks(self.fake_quantize(table)) / scale.reshape(-1, 1)
        levels = torch.round(blocks).clamp(-self.qmax, self.qmax).view_as(table)
        scale = scale.squeeze(1) if self.block is None else scale
        return levels.to(torch.int8).numpy(), scale.numpy().astype(np.float32)


#: The formats of ``export.embeddings`` and ``quantization.embeddings``.
TABLE_FORMATS: dict[str, TableFormat] = {f.name: f for f in (TableFormat("int8", 8), TableFormat("int4", 4, 64))}


def quantize_rows(table: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The int8 per-row levels ``(V, H)`` and scales ``(V,)`` of a table (:data:`TABLE_FORMATS` ``["int8"]``)."""
    return TABLE_FORMATS["int8"].quantize(table)


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


def _int8_gather(table: str, fmt: TableFormat, levels, scale, ids: str, out: str, base: str):
    """``Gather(levels) -> Cast -> Mul(Gather(scale))`` (standard operators; per-row scales)."""
    from onnx import TensorProto, helper, numpy_helper

    initializers = [
        numpy_helper.from_array(levels, f"{table}_int8"),
        numpy_helper.from_array(scale, f"{table}_scale"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), f"{table}_unsqueeze_axes"),
    ]
    nodes = [
        helper.make_node("Gather", [f"{table}_int8", ids], [f"{base}_int8"], name=f"{base}_int8"),
        helper.make_node("Cast", [f"{base}_int8"], [f"{base}_float"], name=f"{base}_cast", to=TensorProto.FLOAT),
        helper.make_node("Gather", [f"{table}_scale", ids], [f"{base}_scale"], name=f"{base}_scale"),
        helper.make_node(
            "Unsqueeze", [f"{base}_scale", f"{table}_unsqueeze_axes"], [f"{base}_rows"], name=f"{base}_unsqueeze"
        ),
        helper.make_node("Mul", [f"{base}_float", f"{base}_rows"], [out], name=f"{base}_dequantize"),
    ]
    return initializers, nodes


def _int4_gather(table: str, fmt: TableFormat, levels, scale, ids: str, out: str, base: str):
    """``GatherBlockQuantized`` (``com.microsoft``): two levels per byte, low nibble first, stored ``level + 8``
    (the operator's default zero point)."""
    from onnx import helper, numpy_helper

    stored = (levels.astype(np.int16) + 8).astype(np.uint8)
    packed = stored[:, 0::2] | (stored[:, 1::2] << 4)
    initializers = [
        numpy_helper.from_array(packed.astype(np.uint8), f"{table}_int4"),
        numpy_helper.from_array(scale.reshape(levels.shape[0], -1), f"{table}_scale"),
    ]
    node = helper.make_node(
        "GatherBlockQuantized",
        [f"{table}_int4", ids, f"{table}_scale"],
        [out],
        name=f"{base}_int4",
        domain="com.microsoft",
        bits=4,
        block_size=fmt.block_size(levels.shape[1]),
        gather_axis=0,
        quantize_axis=1,
    )
    return initializers, [node]


_GATHERS = {"int8": _int8_gather, "int4": _int4_gather}


def quantize_embedding_gathers(model, tables: dict[str, str]) -> dict[str, str]:
    """Replace, in an ONNX ``model`` (in place), every ``Gather`` that reads one of the initializers ``tables``
    (name -> a key of :data:`TABLE_FORMATS`) by its quantized form (module docstring); return what was quantized,
    described (``{"...word_embeddings.weight": "int4, blocks of 64"}``)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    done = {}
    for table, format_name in tables.items():
        gathers = [n for n in readers.get(table, []) if n.op_type == "Gather" and n.input[0] == table]
        if table not in initializers or not gathers or len(gathers) != len(readers[table]):
            continue  # not there, or also read by something else (a tied output layer): left in float
        fmt = TABLE_FORMATS[format_name]
        weights = torch.from_numpy(numpy_helper.to_array(initializers[table]).copy())
        axes = {helper.get_attribute_value(a) for n in gathers for a in n.attribute if a.name == "axis"}
        if weights.ndim != 2 or axes - {0}:
            continue  # only row lookups
        levels, scale = fmt.quantize(weights)
        graph.initializer.remove(initializers[table])
        for number, node in enumerate(gathers):
            added, nodes = _GATHERS[format_name](
                table, fmt, levels, scale, node.input[1], node.output[0], node.name or node.output[0]
            )
            if number == 0:
                graph.initializer.extend(added)
            position = list(graph.node).index(node)
            graph.node.remove(node)
            for offset, new in enumerate(nodes):
                graph.node.insert(position + offset, new)
        done[table] = fmt.describe(weights.shape[1])
    uses_int4 = any(tables[t] == "int4" for t in done)
    if uses_int4 and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return done
