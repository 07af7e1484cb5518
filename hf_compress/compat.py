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
    "native_head_pruning",
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


def native_head_pruning(model) -> bool:
    """Whether transformers can prune heads of this model and record them in ``config.pruned_heads`` (4.x's
    ``prune_heads``; transformers 5 removed it, and with it any way for a saved model to have fewer heads)."""
    return callable(getattr(model, "prune_heads", None))


def use_eager_attention(model) -> None:
    """Make ``model`` compute attention the eager way (attention maps, and the ONNX graph ONNX Runtime fuses).

    ``set_attn_implementation`` where the class allows it (transformers 5 everywhere). On 4.x, classes that refuse
    it either built one attention class per implementation (``...SdpaAttention``: RoBERTa-likes, DistilBERT, ALBERT),
    which falls back to eager by itself when attention maps are asked for and must keep the config it was built
    for, or read ``config._attn_implementation`` at each call (ModernBERT), which is then set."""
    if model._can_set_attn_implementation():
        model.set_attn_implementation("eager")
    elif not any("Sdpa" in type(m).__name__ or "Flash" in type(m).__name__ for m in model.modules()):
        model.config._attn_implementation = "eager"
