"""The ``distillation`` recipe block."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..checks import RecipeError, checked, count, number, text
from .augment import SEQUENCE_AUGMENTATIONS, TOKEN_AUGMENTATIONS

__all__ = ["DistillationConfig", "LayerLossConfig", "TransferConfig"]


@checked
@dataclass
class LayerLossConfig:
    """An intermediate-layer distillation term (hidden states or attention maps).

    Attributes:
        weight: multiplier of the term in the total loss, in [0, 10000].
        layer_map: student layer -> teacher layer, both 0-based transformer layers (the output of layer i).
            Default: student layer i -> teacher layer ``round((i + 1) * T / S) - 1`` (for S=3, T=6: 0->1, 1->3, 2->5).
        across_widths: hidden states of a student narrower than its teacher: ``projection`` (a learned linear map
            from the student's width to the teacher's per mapped layer, TinyBERT's ``W_h``) or ``kept_channels``
            (the teacher's hidden states at the channels the narrowed student kept, a fixed selection: a student
            narrowed by ``model.student.width``). Attention maps ignore it.
    """

    weight: float = field(default=1.0, metadata=number(0.0, 10_000.0))
    layer_map: dict[int, int] | None = field(default=None, metadata=count(0))
    across_widths: Literal["projection", "kept_channels"] = "projection"


@checked
@dataclass
class TransferConfig:
    """A transfer set: examples the student learns from the teacher alone, beside the labelled training set.

    The teacher labels every transfer example (soft targets and the intermediate terms; no task loss, no gold
    label is read), and with ``cache_teacher`` it does so once: later epochs read its outputs from the cache. A
    student sees more of what the teacher knows than the labelled set shows (TextBrewer, Yang et al. 2020: a
    3-layer CoNLL-2003 student gained 2.5 F1 from teacher-labelled Wikipedia sentences).

    Attributes:
        augmented_copies: how many augmented copies of the training set to add (0: none); made once, from
            ``seed``; a sentence no operation changed is left out.
        augmentations: the operations applied in turn to each sentence of a copy. Token classification:
            ``mention_replacement``, ``label_wise_token_replacement``, ``shuffle_within_segments`` (Dai & Adel,
            2020); sequence classification: ``token_replacement``, ``token_deletion``, ``token_swap``. Default: all
            three of the task's.
        rate: the probability with which an operation changes each unit (mention, token, segment, word), in (0, 1].
        files: unlabelled text files: one sentence per line (whitespace-separated tokens), CoNLL columns (first
            column the token, blank lines between sentences, no tag needed), or JSON lines with ``tokens`` (a list
            of words) or ``text``. Relative paths in a YAML recipe are relative to the recipe file.
        file_format: ``auto`` (JSON lines when the first line is a JSON object; CoNLL when sentences are separated
            by blank lines and every line has the same number of columns; else one sentence per line), or one of
            ``text``, ``conll``, ``jsonl``.
        max_file_sentences: keep at most this many sentences from the files (the first ones), for shorter epochs.
        seed: the seed of the augmented copies.
    """

    augmented_copies: int = field(default=0, metadata=count(0, 100))
    augmentations: list[str] | None = field(default=None, metadata=text("an augmentation name"))
    rate: float = field(default=0.3, metadata=number(0.0, 1.0, low_open=True))
    files: list[str] | None = field(default=None, metadata=text("a text file"))
    file_format: Literal["auto", "text", "conll", "jsonl"] = "auto"
    max_file_sentences: int | None = field(default=None, metadata=count())
    seed: int = field(default=42, metadata=count(0))

    def __post_init__(self) -> None:
        known = [*TOKEN_AUGMENTATIONS, *SEQUENCE_AUGMENTATIONS]
        for name in self.augmentations or ():
            if name not in known:
                raise RecipeError("augmentations", name, f"one of {', '.join(known)}")
        if not self.augmented_copies and not self.files:
            raise RecipeError("augmented_copies", 0, "a transfer block adds augmented copies (>= 1) or files")


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
            (:class:`~hf_compress.distillation.cache.TeacherCache`: logits, mapped hidden states and attention
            maps in float16, read from disk without holding them in memory, keyed by the example's content and
            the teacher's fingerprint; the report states its bytes per token).
        cache_dir: where the cache lives (default: ``<output_dir>/teacher_cache``); runs with the same teacher
            may share it.
        transfer: a transfer set the teacher labels (:class:`TransferConfig`): augmented copies of the training
            set and unlabelled text files; used by ``hf-compress train`` (in Python:
            :func:`~hf_compress.distillation.transfer_dataset`).
    """

    temperature: float = field(default=2.0, metadata=number(0.0, 100.0, low_open=True))
    alpha: float = field(default=0.5, metadata=number(0.0, 1.0))
    hidden_states: LayerLossConfig | None = None
    attentions: LayerLossConfig | None = None
    cache_teacher: bool = False
    cache_dir: str | None = field(default=None, metadata=text("a folder"))
    transfer: TransferConfig | None = None
