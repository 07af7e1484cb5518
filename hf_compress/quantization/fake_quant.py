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

Why 7-bit weights, and the probe of this machine's int8 kernel: :mod:`hf_compress.int8_formats`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..int8_formats import (
    ACTIVATION_QMAX,
    WEIGHT_QMAX,
    Int8Kernel,
    int8_kernel,
    resolve_reduce_range,
    saturating_matmul,
    weight_qmax,
)
from ..targets import match_linears

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
