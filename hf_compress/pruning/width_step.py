"""A narrower student, pruned once before training (the recipe's ``model.student.width``), then distilled."""

from __future__ import annotations

import os
import random
from typing import Any

import torch
from torch import nn
from transformers.utils import logging

from ..architectures import describe
from ..configs import WidthConfig
from ..files import atomic_write_json
from ..structures import structures
from ..students import StudentDraft, register_student_step
from .importance import collect_importance
from .width import prune_hidden_width, residual_channels

logger = logging.get_logger(__name__)

__all__ = [
    "calibration_batches",
    "layers_by_influence",
    "narrow_student",
    "prune_ffn_width",
    "teacher_layers_by_influence",
]


def calibration_batches(
    tokenizer: Any, texts: list, samples: int, *, batch_size: int = 32, max_length: int = 128, seed: int = 0
) -> list[dict[str, torch.Tensor]]:
    """A seeded sample of ``samples`` texts (strings, or word lists), tokenized in padded batches."""
    chosen = random.Random(seed).sample(range(len(texts)), min(samples, len(texts)))
    words = bool(texts) and isinstance(texts[0], list | tuple)
    batches = []
    for start in range(0, len(chosen), batch_size):
        part = [texts[i] for i in chosen[start : start + batch_size]]
        encoded = tokenizer(
            part,
            is_split_into_words=words,
            truncation=True,
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )
        batches.append(dict(encoded))
    return batches


def layers_by_influence(influence: list[float], count: int) -> list[int]:
    """The ``count`` layers of highest block influence, in their order (ties: the earlier layer)."""
    if not 0 < count <= len(influence):
        raise ValueError(f"{count} layers: allowed 1..{len(influence)} (the teacher's depth)")
    ranked = sorted(range(len(influence)), key=lambda i: (-influence[i], i))
    return sorted(ranked[:count])


def teacher_layers_by_influence(
    teacher: nn.Module, tokenizer: Any, texts: list, count: int
) -> tuple[list[int], list[float]]:
    """The ``count`` teacher layers of highest block influence on 512 of ``texts``, and every layer's influence."""
    batches = calibration_batches(tokenizer, texts, 512)
    device = next(teacher.parameters()).device
    influence = collect_importance(
        teacher, [{k: v.to(device) for k, v in b.items()} for b in batches]
    ).layer_influence()
    return layers_by_influence(influence, count), influence


@torch.no_grad()
def prune_ffn_width(model: nn.Module, intermediate_size: int, scores: list[torch.Tensor] | None = None) -> None:
    """Keep the ``intermediate_size`` best-scoring neurons of every FFN block (default score: the L2 norm of their
    weights); the config's FFN width follows, so the model reloads with ``from_pretrained``."""
    groups = structures(model, "neurons")
    width = groups[0].count
    if not 0 < intermediate_size <= width:
        raise ValueError(f"intermediate_size {intermediate_size}: allowed 1..{width}")
    scores = scores or [g.scores(2) for g in groups]
    for group, score in zip(groups, scores, strict=True):
        keep = set(torch.topk(score.float(), intermediate_size).indices.tolist())
        group.remove([j for j in range(group.count) if j not in keep])
    setattr(model.config, describe(model).intermediate_size, intermediate_size)


def narrow_student(model: nn.Module, config: WidthConfig, batches: list[dict[str, torch.Tensor]] | None) -> dict:
    """Prune ``model`` to the widths of ``config`` in place, ranking by activations on ``batches`` (or by weight
    magnitudes); return the report (widths before and after, kept channels and heads, importance)."""
    activation = config.importance == "activation"
    if activation and not batches:
        raise ValueError("activation importance needs calibration batches")
    report: dict[str, Any] = {"importance": config.importance}
    found = None
    if activation:
        device = next(model.parameters()).device
        batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
        norms = residual_channels(model).norms if config.hidden_size is not None else None
        found = collect_importance(model, batches, norms=norms)
        report["calibration_examples"] = found.examples
        report["block_influence"] = [round(v, 6) for v in found.layer_influence()]
    if config.intermediate_size is not None:
        before = structures(model, "neurons")[0].count
        prune_ffn_width(model, config.intermediate_size, found.neuron_scores() if found else None)
        report["intermediate_size"] = {"before": before, "after": config.intermediate_size}
    if config.hidden_size is not None:
        report.update(
            prune_hidden_width(
                model,
                config.hidden_size,
                found.channel_scores() if found else None,
                found.head_scores() if found else None,
            )
        )
    return report


def narrow_student_step(draft: StudentDraft, config: WidthConfig) -> None:
    """``model.student.width``: calibration batches from the training texts, then :func:`narrow_student`; the
    report goes to ``width_report.json`` in the output folder."""
    batches = None
    if config.importance == "activation":
        batches = calibration_batches(draft.tokenizer, draft.texts("train"), config.calibration_samples)
    report = narrow_student(draft.model, config, batches)
    widths = [f"{k} {v['before']} -> {v['after']}" for k, v in report.items() if isinstance(v, dict) and "after" in v]
    logger.warning(f"student narrowed: {', '.join(widths)} ({config.importance} importance)")
    if draft.should_save:
        os.makedirs(draft.output_dir, exist_ok=True)
        atomic_write_json(os.path.join(draft.output_dir, "width_report.json"), report)


register_student_step("width", narrow_student_step)
