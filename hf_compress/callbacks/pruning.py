"""GradualPruningCallback: the training schedule -> :class:`~hf_compress.pruning.MagnitudePruner`."""

from __future__ import annotations

import os

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.utils import logging

from ..configs import PruningConfig
from ..files import atomic_write_json
from ..pruning import MagnitudePruner, cubic_sparsity, sparsity_report, sparsity_table
from ._steps import add_to_logs, optimizer_steps_per_epoch, resume_file, save_in_checkpoint

logger = logging.get_logger(__name__)

__all__ = ["PRUNING_STATE_NAME", "GradualPruningCallback"]

#: The file, in each checkpoint folder, with the masks needed to resume exactly.
PRUNING_STATE_NAME = "pruning_state.pt"


class GradualPruningCallback(TrainerCallback):
    """Gradual magnitude pruning on the cubic schedule, counted in optimizer steps.

    ``GradualPruningCallback(final_sparsity=0.8, start_epoch=0.5, end_epoch=2.5)`` or
    ``GradualPruningCallback(PruningConfig(...))``; see :class:`~hf_compress.recipe.PruningConfig` for the fields.
    Masks are recomputed every ``update_every`` optimizer steps during the ramp, gradients of pruned weights are
    zeroed before each optimizer step and the masks re-applied after it. Masks are saved in every checkpoint
    (``pruning_state.pt``) and restored on resume. Target and achieved sparsity (per layer) go to the logs; the
    final sparsity report is printed and saved as ``sparsity_report.json`` in ``output_dir``.
    """

    #: The state file this callback keeps in every checkpoint (resuming needs it).
    checkpoint_file = PRUNING_STATE_NAME

    def __init__(self, config: PruningConfig | None = None, **kwargs):
        if config is not None and kwargs:
            raise ValueError("give a PruningConfig or keyword arguments, not both")
        self.config = config if config is not None else PruningConfig(**kwargs)
        self.pruner: MagnitudePruner | None = None
        self.start_step = self.end_step = 0

    # --------------------------------------------------------------------------------------------- schedule
    def target_sparsity(self, step: int) -> float:
        """The schedule's sparsity after ``step`` optimizer steps."""
        c = self.config
        return cubic_sparsity(step, c.initial_sparsity, c.final_sparsity, self.start_step, self.end_step)

    def _ramp_in_steps(self, args: TrainingArguments, state: TrainerState, train_dataloader) -> None:
        c = self.config
        if c.start_step is not None:
            self.start_step, self.end_step = c.start_step, c.end_step
            return
        per_epoch = optimizer_steps_per_epoch(args, state, train_dataloader)
        self.start_step = round(c.start_epoch * per_epoch)
        self.end_step = round(c.end_epoch * per_epoch)

    def _should_update(self, step: int) -> bool:
        if step < self.start_step or step > self.end_step:
            return False
        return (step - self.start_step) % self.config.update_every == 0 or step == self.end_step

    # --------------------------------------------------------------------------------------------- events
    def on_init_end(self, args, state, control, model=None, **kwargs):
        if model is not None and self.pruner is None:
            self.pruner = MagnitudePruner(model, self.config)  # bad targets fail here, before training

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model=None,
        train_dataloader=None,
        **kwargs,
    ):
        if self.pruner is None or self.pruner.model is not model:
            self.pruner = MagnitudePruner(model, self.config)
        self._ramp_in_steps(args, state, train_dataloader)
        if state.global_step > 0:  # resuming
            path = resume_file(self, args, state, PRUNING_STATE_NAME)
            if os.path.isfile(path):
                self.pruner.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            elif state.global_step >= self.start_step:
                logger.warning(f"{path} not found: pruning masks rebuilt from the zeros of the loaded weights")
                self.pruner.masks_from_zeros()
        elif self._should_update(0):
            self._update(0)

    def _update(self, step: int) -> None:
        self.pruner.update(self.target_sparsity(step))
        self.pruner.broadcast()

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.pruner.mask_gradients()

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.pruner.apply()

    def on_step_end(self, args, state, control, **kwargs):
        if self._should_update(state.global_step):
            self._update(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "loss" not in logs or self.pruner is None:
            return
        extra = {"sparsity_target": round(self.target_sparsity(state.global_step), 4)}
        per_layer = self.pruner.layer_sparsity()
        extra["sparsity"] = round(sum(per_layer.values()) / max(len(per_layer), 1), 4)
        extra.update({f"sparsity_layer_{layer}": round(value, 4) for layer, value in per_layer.items()})
        add_to_logs(state, logs, extra)

    def on_save(self, args, state, control, **kwargs):
        if self.pruner is not None:
            save_in_checkpoint(args, state, PRUNING_STATE_NAME, self.pruner.state_dict())

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.pruner is None or not state.is_world_process_zero:
            return
        report = sparsity_report(self.pruner.model)
        report["target_sparsity"] = self.target_sparsity(state.global_step)
        report["structure"] = self.config.structure
        logger.warning(f"Sparsity at the end of training ({self.config.structure}):\n{sparsity_table(report)}")
        atomic_write_json(os.path.join(args.output_dir, "sparsity_report.json"), report)
