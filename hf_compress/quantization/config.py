"""The ``quantization`` recipe block (quantization-aware training)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..checks import MAX_EPOCHS, checked, count, number, text
from ..configs import RecipeError, check_schedule

__all__ = ["QuantizationConfig"]


@checked
@dataclass
class QuantizationConfig:
    """Quantization-aware training: fake-quant linears whose learned ranges become the exported int8 model's.

    Weights are quantized symmetric int8 per output channel, layer inputs affine uint8 per tensor with
    moving-average min/max observers (Jacob et al., 2018). The wrappers are inserted before the optimizer is
    built and stay inert until ``start``; the observers stop at ``freeze_observers`` and the scales are fixed from
    then on (fake quantization continues).

    Attributes:
        start_epoch / start_step: when fake quantization and the observers switch on (epochs or optimizer steps).
        freeze_observers_epoch / freeze_observers_step: when the observers freeze (same unit; after start).
        targets: ``fnmatch`` patterns of the linears to quantize; default: every ``nn.Linear`` inside the
            transformer layers (embeddings, pooler and task head stay fp32, as in the int8 export).
        averaging_constant: c of the observers' moving average ``m <- m + c (batch - m)``.
        reduce_range: 7-bit weights (levels ``[-64, 64]``, ONNX Runtime's ``reduce_range``) for CPUs whose u8 x s8
            kernel adds pairs of products with int16 saturation (AVX2 or AVX-512 without VNNI); ``auto``: exactly
            when this machine's kernel does (:func:`~hf_compress.quantization.int8_kernel`). The ``qat`` export
            uses the weights training saw.
        embeddings: also fake-quantize the word embeddings: ``int8`` (per row; ``true`` means this), ``int4``
            (blocks of 64 values of a row), ``none`` (``false``: fp32 in training and in the ``qat`` export). The
            ``qat`` export stores the table in the format training saw.
    """

    start_epoch: float | None = field(default=None, metadata=number(0.0, MAX_EPOCHS))
    freeze_observers_epoch: float | None = field(default=None, metadata=number(0.0, MAX_EPOCHS))
    start_step: int | None = field(default=None, metadata=count(0))
    freeze_observers_step: int | None = field(default=None, metadata=count(0))
    targets: list[str] | None = field(default=None, metadata=text("a module-name pattern"))
    averaging_constant: float = field(default=0.01, metadata=number(0.0, 1.0, low_open=True))
    reduce_range: bool | Literal["auto"] = "auto"
    embeddings: Literal["int8", "int4", "none"] | bool = "int8"

    def __post_init__(self) -> None:
        if not (isinstance(self.reduce_range, bool) or self.reduce_range == "auto"):
            raise RecipeError("reduce_range", self.reduce_range, "allowed: auto, true, false")
        if check_schedule(self, ("start", "freeze_observers"), required=False) is None:
            self.start_step = 0
        if isinstance(self.embeddings, bool):
            self.embeddings = "int8" if self.embeddings else "none"
        if self.embeddings not in ("int8", "int4", "none"):
            raise RecipeError("embeddings", self.embeddings, "allowed: int8, int4, none (true: int8, false: none)")
