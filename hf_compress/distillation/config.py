"""The ``distillation`` recipe block."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..checks import checked, count, number, text

__all__ = ["DistillationConfig", "LayerLossConfig"]


@checked
@dataclass
class LayerLossConfig:
    """An intermediate-layer distillation term (hidden states or attention maps).

    Attributes:
        weight: multiplier of the term in the total loss, in [0, 10000].
        layer_map: student layer -> teacher layer, both 0-based transformer layers (the output of layer i).
            Default: student layer i -> teacher layer ``round((i + 1) * T / S) - 1`` (for S=3, T=6: 0->1, 1->3, 2->5).
    """

    weight: float = field(default=1.0, metadata=number(0.0, 10_000.0))
    layer_map: dict[int, int] | None = field(default=None, metadata=count(0))


@checked
@dataclass
class DistillationConfig:
    """Knowledge distillation (Hinton et al., 2015) with optional intermediate-layer terms (TinyBERT-style).

    ``loss = alpha * task_loss + (1 - alpha) * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))
    + hidden_states.weight * MSE(hidden) + attentions.weight * MSE(attention)``

    Attributes:
        temperature: softmax temperature T, in (0, 100] (the soft-target term is scaled by T^2).
        alpha: weight of the task loss, in [0, 1]; ``1 - alpha`` weighs the soft-target term.
        hidden_states: hidden-state MSE term (a learned projection is added when widths differ).
        attentions: attention-map MSE term (student and teacher need the same number of heads).
        cache_teacher: run the teacher once per training example and read its outputs from disk on later epochs
            (:class:`~hf_compress.distillation.cache.TeacherCache`: logits float32, mapped hidden states and
            attention maps float16, keyed by the example's content and the teacher's fingerprint).
        cache_dir: where the cache lives (default: ``<output_dir>/teacher_cache``); runs with the same teacher
            may share it.
    """

    temperature: float = field(default=2.0, metadata=number(0.0, 100.0, low_open=True))
    alpha: float = field(default=0.5, metadata=number(0.0, 1.0))
    hidden_states: LayerLossConfig | None = None
    attentions: LayerLossConfig | None = None
    cache_teacher: bool = False
    cache_dir: str | None = field(default=None, metadata=text("a folder"))
