"""What differs between the two stacks hf-compress runs on, in one place.

* **current**: the newest transformers 5, no Optimum (the default install);
* **optimum**: transformers 4.57 with ``optimum`` / ``optimum-onnx`` (``pip install hf-compress[optimum]``), whose
  ONNX exporter requires ``transformers<4.58``.

Everything else in the package is written once against what both stacks offer; the differences are named here:
whether Optimum can be imported, and the ``TrainingArguments`` fields transformers 5 renamed or removed.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from typing import Any

import transformers

__all__ = [
    "OPTIMUM_EXTRA",
    "PORTABLE_TRAINING_ARGUMENTS",
    "TRANSFORMERS_MAJOR",
    "OptimumNotInstalledError",
    "optimum_available",
    "require_optimum",
    "rotate_checkpoints",
    "training_arguments",
    "training_argument_fields",
    "use_eager_attention",
]

TRANSFORMERS_MAJOR = int(transformers.__version__.split(".")[0])

#: How a user gets the Optimum stack.
OPTIMUM_EXTRA = "pip install 'hf-compress[optimum]'"


class OptimumNotInstalledError(ImportError):
    """Something that only Optimum does was asked for, and Optimum is not installed."""

    def __init__(self, what: str):
        super().__init__(
            f"{what} needs Optimum, which is not installed: {OPTIMUM_EXTRA} (it brings transformers 4.57, which "
            "Optimum's ONNX exporter requires); without it hf-compress exports with torch.onnx"
        )


@functools.cache
def optimum_available() -> bool:
    """Whether Optimum's ONNX exporter and ONNX Runtime classes can be imported (``optimum-onnx`` installed)."""
    try:
        return all(
            importlib.util.find_spec(name) is not None for name in ("optimum.exporters.onnx", "optimum.onnxruntime")
        )
    except ImportError:  # ``optimum`` itself missing: find_spec of a submodule imports the parent
        return False


def use_eager_attention(model) -> bool:
    """Switch ``model`` to eager attention where its class can switch after construction (transformers 5's
    attention interface; in 4.57 many encoders choose their attention class once, at construction, and log an
    error when asked to switch). Return whether it switched. Eager attention returns attention maps and exports
    to the graph ONNX Runtime's attention fusion matches."""
    can_switch = getattr(model, "_can_set_attn_implementation", None)
    if can_switch is None or not can_switch():
        return False
    model.set_attn_implementation("eager")
    return True


def require_optimum(what: str) -> None:
    """Raise :class:`OptimumNotInstalledError` naming ``what`` when Optimum is not installed."""
    if not optimum_available():
        raise OptimumNotInstalledError(what)


def rotate_checkpoints(trainer: transformers.Trainer, run_dir: str) -> None:
    """Delete a Trainer's older checkpoints beyond ``save_total_limit`` as its own ``_save_checkpoint`` does: a
    method in transformers 4, a function of ``trainer_utils`` in 5."""
    if hasattr(trainer, "_rotate_checkpoints"):
        trainer._rotate_checkpoints(use_mtime=True, output_dir=run_dir)
        return
    from transformers.trainer_utils import rotate_checkpoints as rotate

    rotate(
        output_dir=run_dir,
        save_total_limit=trainer.args.save_total_limit,
        best_model_checkpoint=trainer.state.best_model_checkpoint,
        use_mtime=True,
    )


@functools.cache
def training_argument_fields() -> frozenset[str]:
    """The ``TrainingArguments`` fields of the installed transformers (what ``training:`` may set)."""
    return frozenset(f.name for f in dataclasses.fields(transformers.TrainingArguments) if f.init)


#: ``training:`` keys a recipe may use on either stack, with their types: ``warmup_ratio`` (removed in transformers 5,
#: where ``warmup_steps`` below 1 is a ratio), ``warmup_steps`` as a ratio (an integer count in 4.x) and
#: ``save_safetensors`` (removed in 5, which always writes safetensors).
#: ``group_by_length`` (5 spells it ``train_sampling_strategy: group_by_length``).
PORTABLE_TRAINING_ARGUMENTS: dict[str, Any] = {
    "warmup_ratio": float,
    "warmup_steps": float,
    "save_safetensors": bool,
    "group_by_length": bool,
}


def training_arguments(training: dict[str, Any]) -> dict[str, Any]:
    """``training`` as keyword arguments of the installed ``TrainingArguments``.

    Recipes are written once for both stacks: ``warmup_ratio: 0.06`` becomes ``warmup_steps: 0.06`` on transformers
    5 (which removed ``warmup_ratio`` and reads a ``warmup_steps`` below 1 as a ratio), and a fractional
    ``warmup_steps`` becomes ``warmup_ratio`` on 4.x (where ``warmup_steps`` is a count); ``group_by_length: true``
    becomes ``train_sampling_strategy: group_by_length`` on 5 and back on 4.x; ``save_safetensors`` (always true
    here) is dropped on 5, which has no other format.
    """
    fields = training_argument_fields()
    out = dict(training)
    if "save_safetensors" not in fields:
        out.pop("save_safetensors", None)
    steps = out.get("warmup_steps")
    if isinstance(steps, float) and steps >= 1 and steps == int(steps):
        out["warmup_steps"] = int(steps)
    if "group_by_length" not in fields and out.pop("group_by_length", False):
        out["train_sampling_strategy"] = "group_by_length"
    elif "group_by_length" in fields and out.get("train_sampling_strategy") == "group_by_length":
        out.pop("train_sampling_strategy")
        out["group_by_length"] = True
    ratio = out.pop("warmup_ratio", None)
    if "warmup_ratio" not in fields:  # transformers 5
        if ratio is not None:
            if out.get("warmup_steps"):
                raise ValueError("training: give warmup_ratio or warmup_steps, not both")
            out["warmup_steps"] = ratio
    else:
        steps = out.get("warmup_steps")
        if isinstance(steps, float) and 0 < steps < 1:
            if ratio:
                raise ValueError("training: give warmup_ratio or warmup_steps, not both")
            ratio = out.pop("warmup_steps")
        if ratio is not None:
            out["warmup_ratio"] = ratio
    return out
