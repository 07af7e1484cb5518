"""What the technique callbacks share: epochs -> optimizer steps, and the checkpoint folder of a step."""

from __future__ import annotations

import math
import os

from transformers import TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR


def optimizer_steps_per_epoch(args: TrainingArguments, state: TrainerState, train_dataloader=None) -> float:
    """Optimizer steps in one epoch: micro-batches / gradient accumulation (``max_steps / epochs`` if unsized)."""
    if train_dataloader is not None and hasattr(train_dataloader, "__len__"):
        return max(math.ceil(len(train_dataloader) / args.gradient_accumulation_steps), 1)
    return state.max_steps / max(state.num_train_epochs, 1)


def checkpoint_file(args: TrainingArguments, step: int, name: str) -> str:
    """``output_dir/checkpoint-<step>/<name>``: where a callback keeps its state beside the Trainer's."""
    return os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{step}", name)


def resume_file(callback, args: TrainingArguments, state: TrainerState, name: str) -> str:
    """The state file ``name`` to resume ``callback`` from: in the checkpoint folder the Trainer loaded (which
    :class:`~hf_compress.trainer.CompressionTrainer` puts in ``callback.resumed_checkpoint``; it may be outside
    ``output_dir``), else ``output_dir/checkpoint-<global_step>``."""
    folder = getattr(callback, "resumed_checkpoint", None)
    return os.path.join(folder, name) if folder else checkpoint_file(args, state.global_step, name)


def add_to_logs(state: TrainerState, logs: dict, extra: dict) -> None:
    """Add a callback's figures to the Trainer's logs and to the ``log_history`` entry of this step."""
    logs.update(extra)
    if state.log_history and state.log_history[-1].get("step") == state.global_step:
        state.log_history[-1].update(extra)


def save_in_checkpoint(args: TrainingArguments, state: TrainerState, name: str, payload: dict) -> None:
    """Save ``payload`` in this step's checkpoint folder (main process only, if the Trainer saved one)."""
    path = checkpoint_file(args, state.global_step, name)
    if state.is_world_process_zero and os.path.isdir(os.path.dirname(path)):
        from ..files import save_torch_state

        save_torch_state(payload, path)
