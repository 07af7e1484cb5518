"""The int8 formats training and export share: weight levels, the int8 kernel of this machine, quantized embedding
tables.

Quantization-aware training (:mod:`hf_compress.quantization`) simulates these formats and the int8 export
(:mod:`hf_compress.export.int8`) writes them, so both import them from here (neither imports the other).

**Weights** are symmetric int8 per output channel, levels ``[-127, 127]``, or ``[-64, 64]`` with ``reduce_range``
(7 bits). Why 7 bits: without VNNI (AVX2, AVX-512 without VNNI), ONNX Runtime's u8 x s8 kernels add pairs of
products ``x[k] w[k] + x[k+1] w[k+1]`` in int16 with saturation (``vpmaddubsw``): with ``|x w| <= 255 * 127`` a pair
can reach 64770 > 32767, with 7-bit weights at most ``255 * 64 * 2 = 32640``. :func:`int8_kernel` finds out, by
running such a product, which kernel this machine has.

**Embedding tables** ``E`` (``V x H``) are quantized symmetrically in blocks of ``B`` consecutive values of a row,
each block ``b`` with its own scale ``s = max|E[r, b]| / q`` (1.0 for an all-zero block) and levels
``round(E[r, b] / s)`` in ``[-q, q]``. Two formats (:data:`TABLE_FORMATS`):

- ``int8``: ``q = 127``, one block per row (``B = H``). In ONNX ``Gather(levels, ids) -> Cast -> Mul(scale)``,
  standard operators; the table is 4x smaller than fp32.
- ``int4``: ``q = 7``, blocks of 64 (the largest of 64, 32, 16 dividing ``H``; per-row 4-bit costs accuracy),
  two levels per byte. In ONNX ONNX Runtime's ``GatherBlockQuantized`` (``com.microsoft``), which dequantizes only
  the looked-up rows; the table is about 7x smaller than fp32.

A row is what a token looks up, so scales per row (or block) cost no more than the gather and keep rare tokens'
small rows as precise as frequent ones'.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "ACTIVATION_QMAX",
    "REDUCED_WEIGHT_QMAX",
    "TABLE_FORMATS",
    "WEIGHT_QMAX",
    "Int8Kernel",
    "TableFormat",
    "int8_kernel",
    "quantize_embedding_gathers",
    "quantize_rows",
    "resolve_reduce_range",
    "saturating_matmul",
    "weight_qmax",
]

WEIGHT_QMAX = 127  # symmetric int8: [-127, 127]
REDUCED_WEIGHT_QMAX = 64  # int8 with ONNX Runtime's reduce_range: [-64, 64] (7 bits)
ACTIVATION_QMAX = 255  # uint8: [0, 255]


def weight_qmax(reduce_range: bool) -> int:
    """The largest weight level: 64 with ``reduce_range`` (levels ``[-64, 64]``), else 127."""
    return REDUCED_WEIGHT_QMAX if reduce_range else WEIGHT_QMAX


@dataclass(frozen=True)
class Int8Kernel:
    """What ONNX Runtime's u8 x s8 MatMul computes on this machine: ``saturates`` (pairs of products clipped to
    int16, so weights need ``reduce_range``) and a ``description`` for reports."""

    saturates: bool
    description: str


def _int8_probe_model():
    """A QDQ graph ``DequantizeLinear(QuantizeLinear(x)) @ DequantizeLinear(W)`` (scales 1, zero points 0), the
    pattern ONNX Runtime fuses into its u8 x s8 kernel, with its input ``x`` and int8 weight ``W``.

    ``x`` rows are constant (uint8 levels 255, 200, 128, 1), ``W`` columns constant (127, -127, 100, 64, -64, 1, 0,
    -1): a pair of products ``2 x w`` exceeds int16 in some columns and not in others, whatever pairs the kernel forms.
    """
    from onnx import TensorProto, helper, numpy_helper

    k = 64
    x = np.repeat(np.array([[255.0], [200.0], [128.0], [1.0]], dtype=np.float32), k, axis=1)
    w = np.repeat(np.array([[127, -127, 100, 64, -64, 1, 0, -1]], dtype=np.int8), k, axis=0)
    initializers = [
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
        numpy_helper.from_array(np.array(0, dtype=np.uint8), "zero_u8"),
        numpy_helper.from_array(np.array(0, dtype=np.int8), "zero_s8"),
        numpy_helper.from_array(w, "w_q"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "one", "zero_u8"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "one", "zero_u8"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["w_q", "one", "zero_s8"], ["w_dq"]),
        helper.make_node("MatMul", ["x_dq", "w_dq"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "int8_probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [x.shape[0], w.shape[1]])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), x, w


def saturating_matmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``x @ w`` of uint8 ``x`` and int8 ``w`` as an int16-saturating kernel computes it (``vpmaddubsw``):
    ``sum_i clip(x[2i] w[2i] + x[2i+1] w[2i+1], -32768, 32767)`` accumulated in int32."""
    products = x.astype(np.int64)[:, :, None] * w.astype(np.int64)[None, :, :]  # (M, K, N)
    pairs = products.reshape(x.shape[0], -1, 2, w.shape[1]).sum(axis=2)
    return np.clip(pairs, -32768, 32767).sum(axis=1)


def _instruction_set() -> str:
    """A name for the CPU's int8 instructions, from ``/proc/cpuinfo`` (for reports only)."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        flags = []
    if {"avx512_vnni", "avx_vnni"} & set(flags):
        return "VNNI"
    if "avx512bw" in flags:
        return "AVX-512, no VNNI"
    if "avx2" in flags:
        return "AVX2, no VNNI"
    return platform.machine() or "unknown CPU"


@functools.cache
def int8_kernel() -> Int8Kernel:
    """Probe ONNX Runtime's u8 x s8 MatMul (default session options) once: exact, or int16-saturating pairs.

    Runs :func:`_int8_probe_model` and compares with the exact product and :func:`saturating_matmul`.
    """
    import onnxruntime as ort

    model, x, w = _int8_probe_model()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    result = session.run(["y"], {"x": x})[0].astype(np.int64)
    exact = x.astype(np.int64) @ w.astype(np.int64)
    isa = _instruction_set()
    if np.array_equal(result, exact):
        return Int8Kernel(False, f"u8s8 exact ({isa})")
    if np.array_equal(result, saturating_matmul(x.astype(np.uint8), w)):
        return Int8Kernel(True, f"u8s8 saturating ({isa})")
    return Int8Kernel(True, f"u8s8 inexact ({isa}): off by up to {int(np.abs(result - exact).max())}")


def resolve_reduce_range(reduce_range: bool | str) -> bool:
    """``true``/``false`` as given; ``"auto"``: 7-bit weights exactly when :func:`int8_kernel` saturates."""
    if reduce_range == "auto":
        return int8_kernel().saturates
    if isinstance(reduce_range, bool):
        return reduce_range
    raise ValueError(f"reduce_range={reduce_range!r}; allowed: auto, true, false")


# ------------------------------------------------------------------------------------------ embedding tables
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
