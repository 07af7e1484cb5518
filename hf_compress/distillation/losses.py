"""Knowledge distillation: the losses (pure functions) and the combined loss module with its projections.

References: Hinton et al. (2015), "Distilling the Knowledge in a Neural Network" (soft targets, T^2 scaling);
Jiao et al. (2020), "TinyBERT" (hidden-state and attention-map MSE with a layer map and a learned projection).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig

from ..modules import SettingError
from .config import DistillationConfig, LayerLossConfig

__all__ = [
    "DistillationLoss",
    "attention_loss",
    "default_layer_map",
    "distillation_loss",
    "hidden_state_loss",
    "soft_target_loss",
]


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` over the positions where ``mask`` is true (all positions when ``mask`` is None)."""
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    while mask.dim() < values.dim():
        mask = mask.unsqueeze(-1)
    mask = mask.expand_as(values)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def soft_target_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``T^2 * KL(softmax(z_t / T) || softmax(z_s / T))``, averaged over the positions where ``mask`` is true.

    Args:
        student_logits: ``(..., num_labels)``; the KL is taken over the last axis.
        teacher_logits: the same shape.
        temperature: T > 0. The T^2 factor keeps gradient magnitudes comparable across temperatures.
        mask: boolean ``(...)``: the positions that count (e.g. ``labels != -100``); None counts every position.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in shape"
        )
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1)
    return temperature**2 * _masked_mean(kl, mask)


def distillation_loss(
    task_loss: torch.Tensor,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    alpha: float,
    temperature: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``alpha * task_loss + (1 - alpha) * soft_target_loss(student, teacher, T, mask)``."""
    return alpha * task_loss + (1.0 - alpha) * soft_target_loss(student_logits, teacher_logits, temperature, mask)


def hidden_state_loss(
    student_hidden: Sequence[torch.Tensor],
    teacher_hidden: Sequence[torch.Tensor],
    layer_map: Mapping[int, int],
    projections: nn.ModuleDict | None = None,
    attention_mask: torch.Tensor | None = None,
    teacher_channels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over mapped layers of ``MSE(W_s h_s[i], h_t[layer_map[i]])`` at real tokens.

    ``student_hidden`` / ``teacher_hidden`` are a model's ``hidden_states`` output (index 0 is the embedding
    output, so 0-based layer ``i`` is ``hidden_states[i + 1]``). ``projections[str(i)]`` maps student width to
    teacher width when they differ; or ``teacher_channels`` selects the teacher's channels the student's stand for.
    """
    terms = []
    for student_layer, teacher_layer in layer_map.items():
        hs = student_hidden[student_layer + 1]
        if projections is not None and str(student_layer) in projections:
            hs = projections[str(student_layer)](hs)
        ht = teacher_hidden[teacher_layer + 1]
        if teacher_channels is not None:
            ht = ht.index_select(-1, teacher_channels.to(ht.device))
        terms.append(_masked_mean((hs - ht).pow(2), attention_mask))
    return torch.stack(terms).mean()


def attention_loss(
    student_attentions: Sequence[torch.Tensor],
    teacher_attentions: Sequence[torch.Tensor],
    layer_map: Mapping[int, int],
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over mapped layers of the MSE between attention maps ``(batch, heads, query, key)`` at real tokens."""
    pair_mask = None
    if attention_mask is not None:
        real = attention_mask.bool()
        pair_mask = (real[:, :, None] & real[:, None, :])[:, None, :, :]  # (batch, 1, query, key)
    terms = []
    for student_layer, teacher_layer in layer_map.items():
        sa, ta = student_attentions[student_layer], teacher_attentions[teacher_layer]
        diff = (sa - ta).pow(2)
        terms.append(_masked_mean(diff, None if pair_mask is None else pair_mask.expand_as(diff)))
    return torch.stack(terms).mean()


def default_layer_map(num_student_layers: int, num_teacher_layers: int) -> dict[int, int]:
    """Uniform map: student layer i -> teacher layer ``round((i + 1) * T / S) - 1`` (the last maps to the last)."""
    ratio = num_teacher_layers / num_student_layers
    return {i: round((i + 1) * ratio) - 1 for i in range(num_student_layers)}


def _num_layers(config: PretrainedConfig) -> int:
    return int(config.num_hidden_layers)


class DistillationLoss(nn.Module):
    """The total loss of a distillation step, with the learned projections of the hidden-state term.

    The projections are trained with the student but are not part of it: they are never saved into the
    student's checkpoint (the trainer saves them beside it to resume).
    """

    def __init__(
        self,
        config: DistillationConfig,
        student_config: PretrainedConfig,
        teacher_config: PretrainedConfig,
        kept_channels: torch.Tensor | None = None,
    ):
        super().__init__()
        self.config = config
        s_layers, t_layers = _num_layers(student_config), _num_layers(teacher_config)
        self.hidden_layer_map = self._layer_map(config.hidden_states, "hidden_states", s_layers, t_layers)
        self.attention_layer_map = self._layer_map(config.attentions, "attentions", s_layers, t_layers)
        if self.attention_layer_map and student_config.num_attention_heads != teacher_config.num_attention_heads:
            raise SettingError(
                "attentions",
                "enabled",
                f"attention maps need the same number of heads (student "
                f"{student_config.num_attention_heads}, teacher {teacher_config.num_attention_heads})",
            )
        self.projections = nn.ModuleDict()
        self.teacher_channels = None
        narrower = student_config.hidden_size != teacher_config.hidden_size
        if self.hidden_layer_map and narrower and config.hidden_states.across_widths == "kept_channels":
            if kept_channels is None or len(kept_channels) != student_config.hidden_size:
                raise SettingError(
                    "hidden_states.across_widths",
                    "kept_channels",
                    "the student does not say which teacher channels it kept (a student narrowed by "
                    "model.student.width or hf_compress.pruning.narrow_student does): use 'projection'",
                )
            self.teacher_channels = torch.as_tensor(kept_channels, dtype=torch.long)
        elif self.hidden_layer_map and narrower:
            for student_layer in self.hidden_layer_map:
                self.projections[str(student_layer)] = nn.Linear(
                    student_config.hidden_size, teacher_config.hidden_size
                )

    @staticmethod
    def _layer_map(block: LayerLossConfig | None, name: str, s_layers: int, t_layers: int) -> dict[int, int]:
        if block is None or block.weight == 0:
            return {}
        layer_map = block.layer_map or default_layer_map(s_layers, t_layers)
        for s, t in layer_map.items():
            if s >= s_layers:
                raise SettingError(
                    f"{name}.layer_map.{s}",
                    s,
                    f"the student has {s_layers} layers: allowed student layers 0..{s_layers - 1}",
                )
            if t >= t_layers:
                raise SettingError(
                    f"{name}.layer_map.{s}",
                    t,
                    f"the teacher has {t_layers} layers: allowed teacher layers 0..{t_layers - 1}",
                )
        return dict(layer_map)

    @property
    def needs_hidden_states(self) -> bool:
        return bool(self.hidden_layer_map)

    @property
    def needs_attentions(self) -> bool:
        return bool(self.attention_layer_map)

    def forward(
        self,
        student_outputs,
        teacher_outputs,
        labels: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        task_loss: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the total loss and its detached terms (``task``, ``kd``, ``hidden``, ``attention``).

        ``task_loss`` defaults to ``student_outputs.loss``; a batch with no gold label (transfer examples only:
        every label -100 or :data:`~hf_compress.tasks.base.NO_GOLD_LABEL`) has no task term. Soft targets count
        only real positions: ``labels != -100`` for token classification (transfer examples' label positions too),
        every example for sequence classification; the intermediate terms count tokens where ``attention_mask``
        is 1.
        """
        cfg = self.config
        s_logits, t_logits = student_outputs.logits, teacher_outputs.logits
        mask = None
        if s_logits.dim() == 3:  # token level: count only labelled (or, without labels, real) tokens
            mask = labels.ne(-100) if labels is not None else attention_mask
        kd = soft_target_loss(s_logits, t_logits, cfg.temperature, mask)
        task = student_outputs.loss if task_loss is None else task_loss
        if labels is not None and not labels.dtype.is_floating_point and not bool((labels >= 0).any()):
            task = None  # transfer examples only (no gold label): the model's mean over no position is NaN
        total = (1.0 - cfg.alpha) * kd if task is None else cfg.alpha * task + (1.0 - cfg.alpha) * kd
        terms = {"kd": kd.detach()}
        if task is not None:
            terms["task"] = task.detach()
        if self.hidden_layer_map:
            hidden = hidden_state_loss(
                student_outputs.hidden_states,
                teacher_outputs.hidden_states,
                self.hidden_layer_map,
                self.projections,
                attention_mask,
                self.teacher_channels,
            )
            total = total + cfg.hidden_states.weight * hidden
            terms["hidden"] = hidden.detach()
        if self.attention_layer_map:
            for who, outputs in (("student", student_outputs), ("teacher", teacher_outputs)):
                if not outputs.attentions:
                    raise ValueError(
                        f"the {who} returned no attention maps for the attention-map distillation term: run it with "
                        "eager attention (hf_compress.compat.use_eager_attention) or drop distillation.attentions"
                    )
            attn = attention_loss(
                student_outputs.attentions, teacher_outputs.attentions, self.attention_layer_map, attention_mask
            )
            total = total + cfg.attentions.weight * attn
            terms["attention"] = attn.detach()
        return total, terms
