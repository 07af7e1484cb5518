"""CompressionTrainer: a ``transformers.Trainer`` that adds a teacher and a recipe, and nothing else.

With no teacher and no recipe it is the plain ``Trainer``. With a teacher, every training step also runs the
teacher (eval mode, no grad, on the student's device) and the loss becomes the distillation loss of
:class:`~hf_compress.distillation.DistillationLoss`; its terms are logged next to the task loss.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedModel, Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from .callbacks import GradualPruningCallback, LowRankCallback, QATCallback
from .checkpoints import (
    RECIPE_FILE,
    CheckpointError,
    allow_loading_onto_indexed_cpu,
    check_checkpoint,
    latest_complete_checkpoint,
)
from .distillation import DistillationLoss, check_teacher_student
from .files import atomic_write_text, save_torch_state
from .recipe import DistillationConfig, ExportConfig, Recipe, RecipeError

logger = logging.get_logger(__name__)

__all__ = ["COMPRESSION_STATE_NAME", "CompressionTrainer"]

#: The file, beside each checkpoint, that holds training-only compression state needed to resume.
COMPRESSION_STATE_NAME = "compression_state.pt"


class CompressionTrainer(Trainer):
    """``Trainer`` + knowledge distillation from a ``teacher``, configured by a ``recipe``.

    Args:
        teacher: the teacher model. It is put in eval mode, frozen, moved to the student's device, and kept out of
            the optimizer, the distributed wrapper and the checkpoints.
        recipe: a :class:`Recipe`, a dict or a YAML path. Its ``distillation`` block configures the loss (defaults
            of :class:`DistillationConfig` when a teacher is given without one).
        teacher_processing_class: the teacher's tokenizer, checked against the student's when both are given.
        All other arguments are those of :class:`transformers.Trainer`.
    """

    def __init__(
        self,
        model: PreTrainedModel | nn.Module | None = None,
        args=None,
        *,
        teacher: PreTrainedModel | None = None,
        recipe: Recipe | dict | str | None = None,
        teacher_processing_class=None,
        **kwargs,
    ):
        self.recipe = Recipe.coerce(recipe)
        if teacher is None and self.recipe.distillation is not None:
            raise RecipeError("distillation", "set", "a 'distillation' block needs a teacher (teacher=...)")
        technique_callbacks = self._callbacks_from_recipe()
        kwargs["callbacks"] = [*technique_callbacks, *(kwargs.get("callbacks") or [])]
        super().__init__(model=model, args=args, **kwargs)
        if self.args.device.type == "cpu" and self.args.device.index is not None:  # DDP on the CPU: cpu:0
            allow_loading_onto_indexed_cpu()
        for callback in reversed(technique_callbacks):  # first, so that reporting integrations see their logs
            self.callback_handler.callbacks.remove(callback)
            self.callback_handler.callbacks.insert(0, callback)
        self.teacher = teacher
        self.distillation: DistillationLoss | None = None
        self._loss_terms: dict[str, torch.Tensor] = {}
        self._loss_term_steps = 0
        if teacher is not None:
            check_teacher_student(self.model, teacher, self.processing_class, teacher_processing_class)
            teacher.eval()
            teacher.requires_grad_(False)
            teacher.to(self.args.device)
            config = self.recipe.distillation or DistillationConfig()
            self.distillation = DistillationLoss(config, self.model.config, teacher.config).to(self.args.device)
            if self.distillation.needs_attentions:
                for m in (self.model, teacher):  # attention maps come from the eager path; models that cannot
                    if m._can_set_attn_implementation():  # switch (BERT) fall back to it by themselves
                        m.set_attn_implementation("eager")
            # Every term is a mean over its micro-batch; the Trainer then divides by the accumulation steps.
            self.model_accepts_loss_kwargs = False

    def _callbacks_from_recipe(self) -> list[TrainerCallback]:
        """One callback per technique block of the recipe."""
        callbacks: list[TrainerCallback] = []
        if self.recipe.lowrank is not None:  # first: pruning and QAT then see the factorized layers
            callbacks.append(LowRankCallback(self.recipe.lowrank))
        if self.recipe.pruning is not None:
            callbacks.append(GradualPruningCallback(self.recipe.pruning))
        if self.recipe.quantization is not None:
            callbacks.append(QATCallback(self.recipe.quantization))
        return callbacks

    # ------------------------------------------------------------------------------------------ loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.distillation is None or not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        need = {
            "output_hidden_states": self.distillation.needs_hidden_states,
            "output_attentions": self.distillation.needs_attentions,
        }
        outputs = model(**inputs, **need)
        teacher_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        self.teacher.eval()
        with torch.no_grad():
            teacher_outputs = self.teacher(**teacher_inputs, **need)
        loss, terms = self.distillation(outputs, teacher_outputs, inputs.get("labels"), inputs.get("attention_mask"))
        for name, value in terms.items():
            self._loss_terms[name] = self._loss_terms.get(name, 0.0) + value
        self._loss_term_steps += 1
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the mean of each distillation term since the last log (``loss_task``, ``loss_kd``, ...)."""
        if "loss" in logs and self._loss_term_steps:
            for name, total in self._loss_terms.items():
                mean = self.accelerator.gather(total.reshape(1) / self._loss_term_steps).mean()
                logs[f"loss_{name}"] = round(mean.item(), 4)
            self._loss_terms, self._loss_term_steps = {}, 0
        super().log(logs, start_time)

    # ------------------------------------------------------------------------------------------ optimizer
    def create_optimizer(self):
        """The Trainer's optimizer plus a group for the distillation projections (trained, not saved in the model)."""
        optimizer = super().create_optimizer()
        extra = [p for p in self._training_only_parameters() if p.requires_grad]
        if extra and not any(p is extra[0] for group in optimizer.param_groups for p in group["params"]):
            optimizer.add_param_group({"params": extra, "weight_decay": 0.0})

            def clear_gradients(*_) -> None:  # the Trainer zeroes only the model's gradients
                for parameter in extra:
                    parameter.grad = None

            optimizer.register_step_post_hook(clear_gradients)
        return optimizer

    def _training_only_parameters(self) -> list[nn.Parameter]:
        return list(self.distillation.parameters()) if self.distillation is not None else []

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        # Parameters outside the DDP-wrapped model get no gradient all-reduce: average them by hand.
        if self.accelerator.num_processes > 1:
            for parameter in self._training_only_parameters():
                if parameter.grad is not None:
                    torch.distributed.all_reduce(parameter.grad, op=torch.distributed.ReduceOp.SUM)
                    parameter.grad.div_(self.accelerator.num_processes)
        return loss

    # ------------------------------------------------------------------------------------------ checkpoints
    def compression_state_dict(self) -> dict:
        """Training-only state needed to resume exactly (the distillation projections, ...)."""
        state = {}
        if self.distillation is not None and len(self.distillation.state_dict()):
            state["distillation"] = self.distillation.state_dict()
        return state

    def load_compression_state_dict(self, state: dict) -> None:
        if "distillation" in state and self.distillation is not None:
            self.distillation.load_state_dict(state["distillation"])

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if not self.args.should_save:
            return
        folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        state = self.compression_state_dict()
        if state:
            save_torch_state(state, os.path.join(folder, COMPRESSION_STATE_NAME))
        if self.recipe != Recipe():
            atomic_write_text(os.path.join(folder, RECIPE_FILE), self.recipe.to_yaml())

    def _checkpoint_state_files(self) -> list[str]:
        """The state files a checkpoint of this run must hold to resume exactly (each technique's, and ours)."""
        files = [name for cb in self.callback_handler.callbacks if (name := getattr(cb, "checkpoint_file", None))]
        return files + ([COMPRESSION_STATE_NAME] if self.compression_state_dict() else [])

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """``Trainer.train``; a checkpoint to resume from is checked first (complete, readable, same recipe and model
        shape), and ``resume_from_checkpoint=True`` takes the latest *complete* checkpoint of ``output_dir``."""
        if resume_from_checkpoint is not None and resume_from_checkpoint is not False:
            files = self._checkpoint_state_files()
            # the optimizer and scheduler, when the Trainer itself saves them as files (not DeepSpeed or FSDP)
            sharded = self.is_deepspeed_enabled or self.is_fsdp_enabled
            required = [] if self.args.save_only_model or sharded else ["optimizer.pt", "scheduler.pt"]
            if resume_from_checkpoint is True:
                resume_from_checkpoint = latest_complete_checkpoint(self.args.output_dir, files, required)
                if resume_from_checkpoint is None:
                    raise CheckpointError(f"resume_from_checkpoint: no complete checkpoint in {self.args.output_dir}")
            recipe = self.recipe.to_dict() if self.recipe != Recipe() else None
            model = self.accelerator.unwrap_model(self.model)
            check_checkpoint(resume_from_checkpoint, files, recipe, getattr(model, "config", None), required)
        return super().train(
            resume_from_checkpoint=resume_from_checkpoint,
            trial=trial,
            ignore_keys_for_eval=ignore_keys_for_eval,
            **kwargs,
        )

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        for callback in self.callback_handler.callbacks:  # their state is read from this folder too, wherever it is
            if getattr(callback, "checkpoint_file", None):
                callback.resumed_checkpoint = str(resume_from_checkpoint)
        path = os.path.join(resume_from_checkpoint, COMPRESSION_STATE_NAME)
        if os.path.isfile(path):
            self.load_compression_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        elif self.compression_state_dict():
            logger.warning(f"{path} not found: the distillation projections restart from their initial values")

    # ------------------------------------------------------------------------------------------ export
    def export(
        self,
        output_dir: str | os.PathLike | None = None,
        int8: str | None = None,
        *,
        eval_dataset=None,
        calibration_dataset=None,
        base_model: str | None = None,
        overwrite: bool = False,
    ) -> dict:
        """Export the trained model through Optimum (see :func:`hf_compress.export.export_model`); return the report.

        Defaults come from the recipe's ``export`` block: ``int8`` (``none``, ``qat``, ``dynamic``, ``static``),
        calibration and opset. The exported model is evaluated on ``eval_dataset`` (default: the Trainer's) with the
        Trainer's collator and ``compute_metrics``; ``static`` calibrates on ``calibration_dataset`` (default: the
        training set). The folder (default ``output_dir/onnx`` or ``output_dir/onnx-int8-<route>``) is what
        :meth:`push_to_hub` uploads afterwards; an earlier export there is replaced only with ``overwrite=True``.
        With the recipe's ``export.max_metric_drop``, :class:`~hf_compress.export.MetricDropError` is raised (the
        folder kept) when the exported model's metric drops by more.
        """
        from .export import MetricDropError, export_model

        config = self.recipe.export or ExportConfig()
        int8 = int8 or config.int8
        if output_dir is None:
            output_dir = os.path.join(self.args.output_dir, "onnx" if int8 == "none" else f"onnx-int8-{int8}")
        if not self.is_world_process_zero():
            self.accelerator.wait_for_everyone()
            return {}
        try:
            report = export_model(
                self.accelerator.unwrap_model(self.model),
                self.processing_class,
                output_dir,
                int8=int8,
                eval_dataset=eval_dataset if eval_dataset is not None else self.eval_dataset,
                data_collator=self.data_collator,
                compute_metrics=self.compute_metrics,
                calibration_dataset=calibration_dataset if calibration_dataset is not None else self.train_dataset,
                calibration=config.calibration,
                opset=config.opset,
                recipe=self.recipe.to_dict() if self.recipe != Recipe() else None,
                base_model=base_model,
                batch_size=self.args.per_device_eval_batch_size,
                overwrite=overwrite,
                max_metric_drop=config.max_metric_drop,
                reduce_range=config.reduce_range,
            )
        except MetricDropError:  # the folder is complete and kept: it is still what push_to_hub would upload
            self.export_dir = str(output_dir)
            raise
        finally:  # the other processes wait here whatever happened
            self.accelerator.wait_for_everyone()
        self.export_dir = str(output_dir)
        return report

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token=None,
        revision: str | None = None,
        **kwargs,
    ):
        """After :meth:`export`, upload the export folder (ONNX, tokenizer, config, report, model card) to
        ``args.hub_model_id``; before any export, the usual ``Trainer.push_to_hub``."""
        export_dir = getattr(self, "export_dir", None)
        if export_dir is None:
            return super().push_to_hub(
                commit_message=commit_message, blocking=blocking, token=token, revision=revision, **kwargs
            )
        from .hub import push_to_hub

        if not self.is_world_process_zero():
            return None
        repo_id = self.args.hub_model_id or Path(self.args.output_dir).absolute().name
        return push_to_hub(
            export_dir,
            repo_id,
            token=token or self.args.hub_token,
            private=bool(self.args.hub_private_repo),
            commit_message=commit_message,
            revision=revision,
        )
