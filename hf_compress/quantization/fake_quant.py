"""Quantization-aware training: fake-quant ``nn.Linear`` layers with the ranges ONNX Runtime's int8 kernels use.

Each targeted linear ``y = x W^T + b`` computes, once enabled,

    y = fq_u8(x; s_x, z_x) fq_s8(W; s_W)^T + b

* weights: symmetric int8 per output channel, ``s_W[c] = max|W[c, :]| / q`` with levels in ``[-q, q]``, ``q = 127``,
  or ``q = 64`` with ``reduce_range`` (7-bit weights, ONNX Runtime's ``reduce_range`` for int8): exactly what ONNX
  Runtime computes for a symmetric per-channel weight, so the exported int8 weights are the ones training saw (and
  a pruned weight, 0, stays exactly 0);
* activations: affine uint8 per tensor from a moving-average min/max observer (Jacob et al., 2018),
  ``m <- m + c (batch_min - m)``, with ``s_x = (max - min) / 255`` and ``z_x = round(-min / s_x)`` after the range
  is widened to contain 0 (what QuantizeLinear needs to represent zero exactly).

``fq`` is quantize-dequantize with a straight-through gradient (``torch.fake_quantize_*``). Layers are converted
in place (their class becomes :class:`FakeQuantLinear`, a subclass of ``nn.Linear``): parameters, buffers, hooks,
state-dict keys and pruning masks are untouched, so checkpoints still load with plain ``from_pretrained``. The
observer state lives in non-persistent buffers, saved beside checkpoints by the callback.

Why 7-bit weights: without VNNI (AVX2, AVX-512 without VNNI), ONNX Runtime's u8 x s8 kernels add pairs of products
``x[k] w[k] + x[k+1] w[k+1]`` in int16 with saturation (``vpmaddubsw``): with ``|x w| <= 255 * 127`` a pair can reach
64770 > 32767, with 7-bit weights at most ``255 * 64 * 2 = 32640``. :func:`int8_kernel` finds out, by running such a
product, which kernel this machine has.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..modules import match_linears

__all__ = [
    "FakeQuantLinear",
    "activation_qparams",
    "Int8Kernel",
    "QATRanges",
    "activation_ranges",
    "convert_to_qat",
    "int8_kernel",
    "qat_modules",
    "load_qat_state_dict",
    "qat_phase",
    "qat_reduce_range",
    "qat_state_dict",
    "resolve_reduce_range",
    "saturating_matmul",
    "weight_qmax",
    "remove_qat",
    "set_qat_phase",
    "synchronize_observers",
    "weight_scale",
]

WEIGHT_QMAX = 127  # symmetric int8: [-127, 127]
REDUCED_WEIGHT_QMAX = 64  # int8 with ONNX Runtime's reduce_range: [-64, 64] (7 bits)
ACTIVATION_QMAX = 255  # uint8: [0, 255]


def weight_qmax(reduce_range: bool) -> int:
    """The largest weight level: 64 with ``reduce_range`` (levels ``[-64, 64]``), else 127."""
    return REDUCED_WEIGHT_QMAX if reduce_range else WEIGHT_QMAX


def weight_scale(weight: torch.Tensor, qmax: int = WEIGHT_QMAX) -> torch.Tensor:
    """Per-output-channel symmetric int8 scale ``max|W[c, :]| / qmax`` (1.0 for an all-zero row, as ORT does)."""
    absmax = weight.detach().abs().amax(dim=1).float()
    scale = absmax / qmax
    return torch.where(absmax > 0, scale, torch.ones_like(scale))


def activation_qparams(min_val: torch.Tensor, max_val: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 ``(scale, zero_point)`` of ``[min(min, 0), max(max, 0)]``, computed as ONNX Runtime does."""
    low = torch.clamp(min_val.double(), max=0.0)
    high = torch.clamp(max_val.double(), min=0.0)
    scale = (high - low) / ACTIVATION_QMAX
    if float(scale) < torch.finfo(torch.float32).tiny:
        return torch.ones((), dtype=torch.float32, device=min_val.device), torch.zeros(
            (), dtype=torch.int32, device=min_val.device
        )
    zero_point = torch.round(-low / scale).clamp(0, ACTIVATION_QMAX)
    return scale.float(), zero_point.to(torch.int32)


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


def qat_phase(step: int, start: int, freeze: int | None) -> str:
    """``"off"`` before ``start``, ``"observing"`` from ``start``, ``"frozen"`` from ``freeze`` on (in steps)."""
    if step < start:
        return "off"
    if freeze is not None and step >= freeze:
        return "frozen"
    return "observing"


class FakeQuantLinear(nn.Linear):
    """An ``nn.Linear`` that fake-quantizes its input (uint8, observed) and weight (int8 per channel) when enabled.

    Made by :func:`convert_to_qat` from an existing ``nn.Linear``; never constructed directly. Inert (exactly
    ``nn.Linear``) while ``fake_quant_enabled`` is False. The observer updates only in training mode and while
    ``observer_enabled``.
    """

    averaging_constant: float
    fake_quant_enabled: bool
    observer_enabled: bool
    reduce_range: bool

    def _init_qat(self, averaging_constant: float, reduce_range: bool = False) -> None:
        device = self.weight.device
        self.register_buffer("activation_min", torch.zeros((), device=device), persistent=False)
        self.register_buffer("activation_max", torch.zeros((), device=device), persistent=False)
        self.register_buffer("observed", torch.zeros((), dtype=torch.bool, device=device), persistent=False)
        self.averaging_constant = averaging_constant
        self.reduce_range = reduce_range
        self.fake_quant_enabled = False
        self.observer_enabled = False

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        low, high = x.detach().aminmax()
        low, high = low.float(), high.float()
        if not bool(self.observed):
            self.activation_min.copy_(low)
            self.activation_max.copy_(high)
            self.observed.fill_(True)
        else:
            c = self.averaging_constant
            self.activation_min.add_(c * (low - self.activation_min))
            self.activation_max.add_(c * (high - self.activation_max))

    def activation_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        return activation_qparams(self.activation_min, self.activation_max)

    def quantized_weight(self) -> torch.Tensor:
        """The weight after int8 quantize-dequantize (straight-through gradient), levels ``[-q, q]``."""
        qmax = weight_qmax(self.reduce_range)
        scale = weight_scale(self.weight, qmax)
        zero = torch.zeros_like(scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(self.weight, scale, zero, 0, -qmax, qmax)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fake_quant_enabled:
            return F.linear(x, self.weight, self.bias)
        if self.training and self.observer_enabled:
            self.observe(x)
        if not bool(self.observed):  # enabled in eval before any training batch: nothing to quantize with yet
            return F.linear(x, self.quantized_weight(), self.bias)
        scale, zero_point = self.activation_qparams()
        x = torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, ACTIVATION_QMAX)
        return F.linear(x, self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        state = "observing" if self.observer_enabled else "frozen"
        bits = ", 7-bit weights" if self.reduce_range else ""
        return f"{super().extra_repr()}, fake_quant={'on, ' + state if self.fake_quant_enabled else 'off'}{bits}"


def convert_to_qat(
    model: nn.Module, targets: list[str] | None = None, averaging_constant: float = 0.01, reduce_range: bool = False
) -> dict[str, FakeQuantLinear]:
    """Turn the targeted ``nn.Linear`` layers into inert :class:`FakeQuantLinear` in place; return them by name.

    ``targets`` are ``fnmatch`` patterns of module names (default: every linear inside the transformer layers);
    a pattern that matches nothing raises :class:`~hf_compress.modules.SettingError`. ``reduce_range``: 7-bit weights
    (levels ``[-64, 64]``). Converting twice is a no-op.
    """
    converted = {}
    for name, module in match_linears(model, targets).items():
        if not isinstance(module, FakeQuantLinear):
            module.__class__ = FakeQuantLinear
            module._init_qat(averaging_constant, reduce_range)
        converted[name] = module
    return converted


def qat_reduce_range(model: nn.Module) -> bool | None:
    """Whether the fake-quant layers use 7-bit weights (``None`` without any); mixed settings raise ``ValueError``."""
    settings = {m.reduce_range for m in qat_modules(model).values()}
    if len(settings) > 1:
        raise ValueError("the fake-quant layers mix 7-bit and 8-bit weights (reduce_range); the export needs one")
    return settings.pop() if settings else None


def qat_modules(model: nn.Module) -> dict[str, FakeQuantLinear]:
    """The :class:`FakeQuantLinear` layers of ``model`` by module name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, FakeQuantLinear)}


def set_qat_phase(model: nn.Module, phase: str) -> None:
    """Apply a :func:`qat_phase` (``off``, ``observing``, ``frozen``) to every fake-quant layer and embedding."""
    if phase not in ("off", "observing", "frozen"):
        raise ValueError(f"unknown QAT phase {phase!r}; allowed: off, observing, frozen")
    from .embeddings import qat_embeddings

    for module in qat_modules(model).values():
        module.fake_quant_enabled = phase != "off"
        module.observer_enabled = phase == "observing"
    for embedding in qat_embeddings(model).values():
        embedding.fake_quant_enabled = phase != "off"


def activation_ranges(model: nn.Module) -> dict[str, tuple[float, float]]:
    """The observed input range ``(min, max)`` of every fake-quant layer that has seen data."""
    return {
        name: (float(m.activation_min), float(m.activation_max))
        for name, m in qat_modules(model).items()
        if bool(m.observed)
    }


class QATRanges(dict):
    """Observed input ranges ``{module name: (min, max)}`` and ``reduce_range``, the weight range they were trained
    with (``None``: no fake-quant layers), which the ``qat`` export must reproduce."""

    def __init__(self, ranges: dict[str, tuple[float, float]], reduce_range: bool | None):
        super().__init__(ranges)
        self.reduce_range = reduce_range


def remove_qat(model: nn.Module) -> QATRanges:
    """Turn fake-quant layers back into plain ``nn.Linear`` in place; return their observed ranges."""
    ranges = QATRanges(activation_ranges(model), qat_reduce_range(model))
    for module in qat_modules(model).values():
        for name in ("activation_min", "activation_max", "observed"):
            delattr(module, name)
        for name in ("averaging_constant", "fake_quant_enabled", "observer_enabled", "reduce_range"):
            module.__dict__.pop(name, None)
        module.__class__ = nn.Linear
    return ranges


def qat_state_dict(model: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """Observer state and weight range (``reduce_range``) of every fake-quant layer, to resume and export exactly."""
    return {
        name: {
            "min": m.activation_min.cpu(),
            "max": m.activation_max.cpu(),
            "observed": m.observed.cpu(),
            "reduce_range": torch.tensor(m.reduce_range),
        }
        for name, m in qat_modules(model).items()
    }


def load_qat_state_dict(model: nn.Module, state: dict[str, dict[str, torch.Tensor]]) -> None:
    """Restore :func:`qat_state_dict` (a state without ``reduce_range``, saved before it existed, means 8-bit)."""
    modules = qat_modules(model)
    missing = set(modules) ^ set(state)
    if missing:
        raise ValueError(f"QAT state does not match the model's fake-quant layers: {sorted(missing)[:4]}")
    for name, m in modules.items():
        m.activation_min.copy_(state[name]["min"])
        m.activation_max.copy_(state[name]["max"])
        m.observed.copy_(state[name]["observed"])
        m.reduce_range = bool(state[name].get("reduce_range", False))


@torch.no_grad()
def synchronize_observers(model: nn.Module) -> None:
    """Average the observer ranges over processes, so every process (and the export) holds the same scales."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    modules = list(qat_modules(model).values())
    if not modules:
        return
    packed = torch.stack([torch.stack([m.activation_min, m.activation_max]) for m in modules])
    torch.distributed.all_reduce(packed)
    packed /= torch.distributed.get_world_size()
    for m, (low, high) in zip(modules, packed, strict=True):
        m.activation_min.copy_(low)
        m.activation_max.copy_(high)
