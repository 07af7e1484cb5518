"""Students and teachers: a student made of some of the teacher's layers, the steps that prepare a student before
training (:func:`register_student_step`, keyed by a field of the recipe's ``model.student``), and the check that a
teacher can teach a student (same labels, same vocabulary). These belong to the recipe's ``model`` block, whatever
the techniques."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from .architectures import describe, layer_list, require
from .configs import StudentConfig
from .modules import SettingError

__all__ = [
    "StudentDraft",
    "check_teacher_student",
    "prepare_student",
    "register_student_step",
    "student_from_teacher",
    "student_steps",
    "vocabulary_map",
]


def student_from_teacher(teacher: PreTrainedModel, layers: Sequence[int]) -> PreTrainedModel:
    """A smaller model of the teacher's architecture made of copies of the chosen teacher layers (0-based).

    Embeddings, pooler and task head are copied too, so the student starts as the teacher with layers dropped.
    It is an ordinary model: ``save_pretrained`` / ``from_pretrained`` rebuild exactly it. Where a layer derives
    part of itself from its index (:attr:`~hf_compress.architectures.Architecture.layers_from_index`: ModernBERT's
    attention window, RoPE base and first-layer norm), a copied layer is rebuilt as the architecture builds the
    layer at its new index, with the teacher layer's weights (a part the new index does not have is dropped, one it
    adds starts as the architecture initializes it). An architecture whose depths share weights (ALBERT) is refused.
    """
    t_layers = int(teacher.config.num_hidden_layers)
    layers = list(layers)
    if not layers:
        raise ValueError("student_from_teacher needs at least one layer")
    for index in layers:
        if not 0 <= index < t_layers:
            raise SettingError(
                "from_teacher_layers",
                index,
                f"the teacher has {t_layers} layers: allowed 0..{t_layers - 1}",
            )
    require(teacher, "student_layers", "from_teacher_layers")
    name, teacher_layers = layer_list(teacher, "student_layers")
    original = teacher.get_submodule(name)
    # Deep-copy the teacher without its layers, then put the chosen ones in.
    parent_name, _, attr = name.rpartition(".")
    parent = teacher.get_submodule(parent_name) if parent_name else teacher
    setattr(parent, attr, nn.ModuleList())
    try:
        student = copy.deepcopy(teacher)
    finally:
        setattr(parent, attr, original)
    config = student.config
    config.num_hidden_layers = len(layers)
    rebuild = describe(teacher).layers_from_index
    per_layer = getattr(config, "layer_types", None)  # (transformers 5: one entry per layer)
    if isinstance(per_layer, list) and len(per_layer) == t_layers:  # rebuilt layers take their new index's
        config.layer_types = per_layer[: len(layers)] if rebuild else [per_layer[i] for i in layers]
    if rebuild:
        kept = nn.ModuleList(_rebuilt(teacher_layers[old], config, new) for new, old in enumerate(layers))
    else:
        kept = nn.ModuleList(copy.deepcopy(teacher_layers[i]) for i in layers)
    student_parent = student.get_submodule(parent_name) if parent_name else student
    setattr(student_parent, attr, kept)
    for module in kept.modules():  # the copied layers hold copies of the teacher's config: make them read the
        if isinstance(getattr(module, "config", None), PretrainedConfig):  # student's (attention implementation)
            module.config = config
    for new_index, layer in enumerate(kept):  # some layers know their own index (e.g. for caches)
        for index_name in ("layer_idx", "layer_id"):
            if isinstance(getattr(layer, index_name, None), int):
                setattr(layer, index_name, new_index)
    pruned = getattr(teacher.config, "pruned_heads", None) or {}
    if pruned:
        config.pruned_heads = {new: list(pruned[old]) for new, old in enumerate(layers) if old in pruned}
    student.train(teacher.training)
    for parameter in student.parameters():
        parameter.requires_grad_(True)
    return student


@torch.no_grad()
def _rebuilt(layer: nn.Module, config: PretrainedConfig, index: int) -> nn.Module:
    """``layer``'s class built for ``config`` at ``index``, with ``layer``'s weights where the two agree."""
    new = type(layer)(config, index)
    weights = layer.state_dict()
    own = new.state_dict()
    new.load_state_dict({k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}, strict=False)
    first = next(layer.parameters())
    return new.to(device=first.device, dtype=first.dtype)


def check_teacher_student(
    student: PreTrainedModel, teacher: PreTrainedModel, student_tokenizer=None, teacher_tokenizer=None
) -> list[int] | None:
    """Raise a clear error when a teacher cannot teach this student: different labels or vocabularies.

    Returns None when both read the same ids; with a student tokenizer whose pieces are a subset of the teacher's
    (a trimmed vocabulary), the teacher id of every student id, to translate the student's inputs for the teacher.
    """
    s_cfg, t_cfg = student.config, teacher.config
    s_labels = [s_cfg.id2label[i] for i in sorted(s_cfg.id2label)]
    t_labels = [t_cfg.id2label[i] for i in sorted(t_cfg.id2label)]
    if s_labels != t_labels:
        if sorted(s_labels) == sorted(t_labels):
            raise ValueError(
                f"teacher and student have the same labels in a different order (student {s_labels}, "
                f"teacher {t_labels}): build the student with the teacher's label2id"
            )
        raise ValueError(f"teacher and student label sets differ: student {s_labels}, teacher {t_labels}")
    both = student_tokenizer is not None and teacher_tokenizer is not None
    if both and student_tokenizer.get_vocab() != teacher_tokenizer.get_vocab():
        return vocabulary_map(student, student_tokenizer, teacher_tokenizer)
    if getattr(s_cfg, "vocab_size", None) != getattr(t_cfg, "vocab_size", None):
        raise ValueError(
            f"teacher and student vocabularies differ: vocab_size {t_cfg.vocab_size} (teacher) vs "
            f"{s_cfg.vocab_size} (student); distillation needs the same tokenizer (or a trimmed copy of it)"
        )
    return None


def vocabulary_map(student: PreTrainedModel, student_tokenizer, teacher_tokenizer) -> list[int]:
    """The teacher id of every student piece, when the student's vocabulary is a subset of the teacher's (trimmed);
    else ``ValueError``."""
    teacher_vocab = teacher_tokenizer.get_vocab()
    student_vocab = student_tokenizer.get_vocab()
    unknown = [piece for piece in student_vocab if piece not in teacher_vocab]
    if unknown:
        raise ValueError(
            f"teacher and student tokenizers differ (the student has pieces the teacher does not know, e.g. "
            f"{unknown[:3]}): distillation needs both models to read the same words, with the same tokenizer or "
            "the student's trimmed from the teacher's"
        )
    if student.config.vocab_size < len(student_vocab):
        raise ValueError(
            f"the student tokenizer has {len(student_vocab)} pieces but the student only {student.config.vocab_size} "
            "embedding rows"
        )
    mapping = [teacher_tokenizer.unk_token_id or 0] * student.config.vocab_size
    for piece, index in student_vocab.items():
        mapping[index] = teacher_vocab[piece]
    return mapping


# ---------------------------------------------------------------------------------------------- preparation steps
@dataclass
class StudentDraft:
    """The student ``hf-compress train`` has built, before training: what a student-preparation step may change.

    Attributes:
        model / tokenizer: the student and its tokenizer; a step may replace either (the data is tokenized again
            with the tokenizer it leaves).
        texts: the texts of a split of the data (``"train"``, ``"validation"``) as the tokenizer reads them:
            strings, or word lists for NER.
        output_dir: the run's output folder, where a step may write its report when ``should_save``.
        should_save: this process writes files (the main process of a distributed run).
    """

    model: PreTrainedModel
    tokenizer: Any
    texts: Callable[[str], list]
    output_dir: str
    should_save: bool = True


StudentStep = Callable[[StudentDraft, Any], None]
_STUDENT_STEPS: dict[str, StudentStep] = {}


def register_student_step(key: str, step: StudentStep) -> StudentStep:
    """Run ``step(draft, config)`` on the student whenever the recipe's ``model.student.<key>`` is set (``config``
    is its value), after the student is built and before training, in registration order (e.g. ``vocabulary``:
    :func:`~hf_compress.vocabulary.trim_vocabulary`)."""
    fields = [f.name for f in dataclasses.fields(StudentConfig)]
    if key not in fields:
        raise ValueError(f"register_student_step: '{key}' is not a key of model.student ({', '.join(fields)})")
    if key in _STUDENT_STEPS and _STUDENT_STEPS[key] is not step:
        raise ValueError(f"register_student_step: model.student.{key} already has the step {_STUDENT_STEPS[key]}")
    _STUDENT_STEPS[key] = step
    return step


def student_steps() -> dict[str, StudentStep]:
    """The registered student-preparation steps by ``model.student`` key, in the order they run."""
    return dict(_STUDENT_STEPS)


def prepare_student(draft: StudentDraft, config: StudentConfig) -> list[str]:
    """Run the step of every ``model.student`` key that ``config`` sets, on ``draft``; return the keys run."""
    done = []
    for key, step in _STUDENT_STEPS.items():
        value = getattr(config, key)
        if value is not None:
            step(draft, value)
            done.append(key)
    return done
