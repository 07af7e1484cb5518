"""What :class:`~hf_compress.trainer.CompressionTrainer` does with the blocks of a recipe that are not techniques.

A recipe written for ``hf-compress train`` also says which models to load, which data to read and how to train.
Given to ``CompressionTrainer`` in a script that builds its own model, datasets and ``TrainingArguments``:

- ``training``: applied onto the ``TrainingArguments`` fields the script left at their defaults (logged at info,
  naming the keys); a field the script set to another value keeps the script's value, with a warning naming both.
- ``model.teacher``: loaded (as ``hf-compress train`` loads it) when no ``teacher=`` is given and a technique block
  uses a teacher.
- ``data``, ``model.student`` and ``model.train_teacher`` cannot apply to a model and datasets built elsewhere: they
  are refused with one error naming them (:meth:`Recipe.techniques_only` keeps the technique and export blocks).

It also refuses a teacher that is the trained model or shares a parameter with it, and warns at the start of
training about each schedule the run's optimizer steps do not complete (:meth:`Technique.schedule_problems`).
"""

from __future__ import annotations

import dataclasses
import enum
import weakref
from typing import Any

from torch import nn
from transformers import AutoTokenizer, TrainerCallback, TrainingArguments
from transformers.utils import logging

from .compat import training_arguments
from .model_sources import check_model_source, resolve_model_path
from .recipe import Recipe
from .tasks import task_of_model_class
from .technique import get_technique, load_pretrained

logger = logging.get_logger(__name__)

__all__ = ["apply_run_blocks", "apply_training_block", "load_recipe_teacher", "refuse_run_blocks"]

#: Where ``Trainer`` puts its output without ``TrainingArguments`` (its own default).
DEFAULT_OUTPUT_DIR = "tmp_trainer"


def apply_run_blocks(
    recipe: Recipe, model: nn.Module | None, args: TrainingArguments | None, resources: dict[str, Any]
) -> TrainingArguments | None:
    """Refuse the blocks that cannot apply, return ``args`` with the ``training`` block applied, and put the
    ``model.teacher`` in ``resources`` when none is given and a technique uses one."""
    refuse_run_blocks(recipe)
    args = apply_training_block(args, recipe.training)
    if resources.get("teacher") is None:
        teacher, processing_class = load_recipe_teacher(recipe, model)
        if teacher is not None:
            resources["teacher"] = teacher
            resources["teacher_processing_class"] = resources.get("teacher_processing_class") or processing_class
    elif recipe.model is not None and recipe.model.teacher is not None:
        logger.info(f"teacher= given: the recipe's model.teacher ({recipe.model.teacher}) is not loaded")
    return args


def refuse_run_blocks(recipe: Recipe) -> None:
    """Raise ``ValueError`` naming every block of ``recipe`` that only ``hf-compress train`` can apply."""
    keys = ["data"] if recipe.data is not None else []
    if recipe.model is not None:
        student = recipe.model.student
        keys += [f"model.student.{f.name}" for f in dataclasses.fields(student) if getattr(student, f.name)]
        keys += ["model.train_teacher"] if recipe.model.train_teacher else []
    if keys:
        raise ValueError(
            f"CompressionTrainer cannot apply the recipe's {', '.join(keys)}: these are for `hf-compress train`, "
            "which reads the data and builds the student (CompressionTrainer trains the model and data it is given): "
            "drop them from the recipe, or keep its technique and export blocks alone with "
            "Recipe.from_yaml(path).techniques_only() (model.teacher and training apply here)"
        )


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _as_set(name: str, value: Any, output_dir: str) -> Any:
    """``value`` as ``TrainingArguments`` holds it once set (``"none"`` -> ``[]``, strings -> enums)."""
    try:
        return _plain(getattr(TrainingArguments(output_dir=output_dir, **{name: value}), name))
    except Exception:  # a value only valid with others (checked when the arguments are rebuilt)
        return _plain(value)


def apply_training_block(args: TrainingArguments | None, training: dict[str, Any]) -> TrainingArguments | None:
    """``args`` with the recipe's ``training`` values on the fields left at their defaults (``args=None``: the
    Trainer's default arguments); a field set to another value keeps it, with a warning naming both."""
    if not training:
        return args
    if args is None:
        args = TrainingArguments(output_dir=DEFAULT_OUTPUT_DIR)
    defaults = TrainingArguments(output_dir=args.output_dir)
    applied: dict[str, Any] = {}
    kept: list[str] = []
    for key, value in training.items():
        for name, wanted in training_arguments({key: value}).items():
            current = _plain(getattr(args, name, None))
            if current == _plain(getattr(defaults, name, None)):
                if current != _as_set(name, wanted, args.output_dir):
                    applied[name] = wanted
            elif current != _as_set(name, wanted, args.output_dir):
                kept.append(f"training.{key}: {wanted!r} (the script's: {current!r})")
    if kept:
        logger.warning(
            "the recipe's training block differs from the TrainingArguments given, whose values are kept: "
            + "; ".join(kept)
        )
    if not applied:
        return args
    logger.info(f"recipe training block applied to the TrainingArguments left at their defaults: {applied}")
    return dataclasses.replace(args, **applied)


def load_recipe_teacher(recipe: Recipe, model: nn.Module | None) -> tuple[nn.Module | None, Any]:
    """The teacher named by ``model.teacher`` and its tokenizer, loaded as ``hf-compress train`` loads it, when a
    technique block uses a teacher; ``(None, None)`` otherwise."""
    if recipe.model is None or recipe.model.teacher is None:
        return None, None
    if not any("teacher" in get_technique(name).resources for name in recipe.techniques):
        logger.warning(f"model.teacher ({recipe.model.teacher}) is not loaded: no technique block uses a teacher")
        return None, None
    path = resolve_model_path(recipe.model.teacher)
    check_model_source(path, "model.teacher")
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    task = task_of_model_class(type(base).__name__) if base is not None else None
    if task is None:
        what = "without a model (model_init)" if base is None else f"for a {type(base).__name__}"
        raise ValueError(
            f"model.teacher: cannot tell which task head to load the teacher with {what}; load it yourself and "
            "pass teacher=..."
        )
    teacher = load_pretrained(path, task.auto_model_class)
    recipe.check_architecture(teacher.config)
    logger.info(f"teacher loaded from the recipe's model.teacher: {path}")
    return teacher, AutoTokenizer.from_pretrained(path)


class ScheduleCheck(TrainerCallback):
    """At the start of training, once every technique has turned its schedule into optimizer steps: a warning for
    each schedule the run does not complete (collected in ``trainer.schedule_problems``)."""

    def __init__(self, trainer):
        self.trainer = weakref.ref(trainer)

    def on_train_begin(self, args, state, control, **kwargs):
        trainer = self.trainer()
        if trainer is None:
            return
        problems = [p for t in trainer.techniques for p in t.schedule_problems(state.max_steps)]
        trainer.schedule_problems = problems
        if state.is_world_process_zero:
            for problem in problems:
                logger.warning(f"{problem} (the schedule does not complete within this run)")
