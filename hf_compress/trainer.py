"""CompressionTrainer: a ``transformers.Trainer`` that runs the techniques of a recipe, and nothing else.

With no teacher and no recipe it is the plain ``Trainer``. It builds one :class:`~hf_compress.technique.Technique`
per technique block of the recipe (from the registry, in surgery order), adds the loss terms of those that
contribute one and logs them next to the task loss, trains the parameters they own, prepares the models they run
beside the trained one (a teacher) with Accelerate in evaluation mode, and checks a checkpoint before resuming.
Technique state goes into checkpoints through the techniques' own ``on_save`` events; a checkpoint is marked as
being written until every callback has written its files, and older checkpoints are rotated out only then. With
``stop_on_signal``, SIGTERM and SIGINT stop training after the current step with a complete checkpoint
(:mod:`~hf_compress.stopping`).
"""

from __future__ import annotations

import copy
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from .checkpoints import (
    RECIPE_FILE,
    SAVING_MARKER,
    CheckpointComplete,
    CheckpointError,
    CheckpointSaveError,
    RecipeInCheckpoints,
    allow_loading_onto_indexed_cpu,
    check_checkpoint,
    latest_complete_checkpoint,
)
from .compat import rotate_checkpoints
from .export import ExportData, MetricDropError, export, hub
from .files import atomic_write_text, save_torch_state
from .modules import check_frozen_models, check_loadable
from .recipe import Recipe
from .stopping import StopOnSignal, TrainingStopped
from .technique import Technique, registered_techniques
from .trainer_recipe import ScheduleCheck, apply_run_blocks

logger = logging.get_logger(__name__)

__all__ = ["CompressionTrainer"]


class CompressionTrainer(Trainer):
    """``Trainer`` + the techniques of a ``recipe`` (and the ``teacher`` the techniques that learn from one use).

    All other arguments are those of :class:`transformers.Trainer`; technique callbacks given in ``callbacks`` are
    run like the recipe's.

    Args:
        teacher: the teacher model, for the techniques that take one (configured by their recipe block, or by the
            defaults a technique has for a teacher given without one). Those techniques keep it in eval mode and
            frozen; it is prepared by Accelerate in evaluation mode when training starts, and kept out of the
            optimizer, the distributed wrapper and the checkpoints.
        recipe: a :class:`Recipe`, a dict or a YAML path: one technique per technique block. Its ``training``
            block fills the ``TrainingArguments`` fields left at their defaults (a field set to another value keeps
            it, with a warning), its ``model.teacher`` is loaded when no ``teacher`` is given and a technique uses
            one; ``data`` and ``model.student`` are refused (they are for ``hf-compress train``; see
            :mod:`~hf_compress.trainer_recipe`). Schedules the run does not complete are warned about when
            training starts.
        teacher_processing_class: the teacher's tokenizer, checked against the student's when both are given.
        recipe_blocks_applied: the caller has applied the recipe's ``model``, ``data`` and ``training`` blocks
            itself (:func:`~hf_compress.pipeline.run_recipe` does): they are left alone here.
        stop_on_signal: on SIGTERM or SIGINT during ``train()``, finish the optimizer step, save a complete
            checkpoint and raise :class:`~hf_compress.stopping.TrainingStopped` (adds a
            :class:`~hf_compress.stopping.StopOnSignal` callback; one given in ``callbacks`` does the same).
    """

    def __init__(
        self,
        model: PreTrainedModel | nn.Module | None = None,
        args=None,
        *,
        teacher: PreTrainedModel | None = None,
        recipe: Recipe | dict | str | None = None,
        teacher_processing_class=None,
        stop_on_signal: bool = False,
        recipe_blocks_applied: bool = False,
        **kwargs,
    ):
        self.recipe = Recipe.coerce(recipe)
        self._saving: Path | None = None
        self._in_train = False
        self._final_states: dict[str, dict] = {}  # technique state as training left it, for save_model
        self.schedule_problems: list[str] = []
        resources = {"teacher": teacher, "teacher_processing_class": teacher_processing_class}
        if not recipe_blocks_applied:
            args = apply_run_blocks(self.recipe, model, args, resources)
        check_frozen_models(model, resources)
        from_recipe = self._techniques_from_recipe(resources)
        extra = [RecipeInCheckpoints(self.recipe)] if not self.recipe.is_empty else []
        kwargs["callbacks"] = [*from_recipe, *extra, *(kwargs.get("callbacks") or [])]
        super().__init__(model=model, args=args, **kwargs)
        if stop_on_signal and self.stopper is None:
            self.callback_handler.add_callback(StopOnSignal())
        self.callback_handler.add_callback(ScheduleCheck(self))
        self.callback_handler.add_callback(CheckpointComplete(self))
        if self.args.device.type == "cpu" and self.args.device.index is not None:  # DDP on the CPU: cpu:0
            allow_loading_onto_indexed_cpu()
        for callback in reversed(from_recipe):  # first, so that reporting integrations see their logs
            self.callback_handler.callbacks.remove(callback)
            self.callback_handler.callbacks.insert(0, callback)
        names = [t.name for t in self.techniques]
        if len(names) != len(set(names)):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"techniques given twice (in the recipe and in callbacks?): {twice}; give each once")
        self._frozen_prepared = False
        self._loss_terms: dict[str, torch.Tensor] = {}
        self._loss_term_steps = 0
        for technique in self.techniques:
            technique.loss_routed = technique.contributes_loss
        if any(t.contributes_loss for t in self.techniques):
            # Every term is a mean over its micro-batch; the Trainer then divides by the accumulation steps.
            self.model_accepts_loss_kwargs = False

    def _techniques_from_recipe(self, resources: dict[str, Any]) -> list[Technique]:
        """One technique per technique block of the recipe (or called for by ``resources``), in surgery order."""
        techniques = []
        for technique_class in registered_techniques():
            config = self.recipe.techniques.get(technique_class.name) or technique_class.default_config(**resources)
            if config is not None:
                techniques.append(technique_class.from_recipe(config, **resources))
        return techniques

    def add_callback(self, callback) -> None:
        super().add_callback(callback)
        last = [cb for cb in self.callback_handler.callbacks if isinstance(cb, (ScheduleCheck, CheckpointComplete))]
        for cb in last:  # stay last: schedules are set, and checkpoints written, by every other callback first
            self.callback_handler.callbacks.remove(cb)
            self.callback_handler.callbacks.append(cb)

    @property
    def stopper(self) -> StopOnSignal | None:
        """The :class:`~hf_compress.stopping.StopOnSignal` callback, when training stops on signals."""
        return next((cb for cb in self.callback_handler.callbacks if isinstance(cb, StopOnSignal)), None)

    @property
    def techniques(self) -> list[Technique]:
        """Every technique this Trainer runs (the recipe's and those passed as callbacks), in callback order."""
        return [cb for cb in self.callback_handler.callbacks if isinstance(cb, Technique)]

    # ------------------------------------------------------------------------------------------ loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The task loss, with the terms of the techniques that contribute one (in training)."""
        contributors = [t for t in self.techniques if t.contributes_loss]
        if not contributors or not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        forward: dict[str, Any] = {}
        for technique in contributors:
            forward.update({k: v or forward.get(k, False) for k, v in technique.forward_kwargs().items()})
        model_inputs = inputs
        for technique in contributors:
            model_inputs = technique.model_inputs(model_inputs)
        outputs = model(**model_inputs, **forward)
        loss = outputs.loss
        for technique in contributors:
            loss, terms = technique.loss(inputs, outputs, loss)
            for name, value in terms.items():
                self._loss_terms[name] = self._loss_terms.get(name, 0.0) + value
        self._loss_term_steps += 1
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the mean of each technique loss term since the last log (``loss_task``, ``loss_kd``, ...)."""
        if "loss" in logs and self._loss_term_steps:
            for name, total in self._loss_terms.items():
                mean = self.accelerator.gather(total.reshape(1) / self._loss_term_steps).mean()
                logs[f"loss_{name}"] = round(mean.item(), 4)
            self._loss_terms, self._loss_term_steps = {}, 0
        super().log(logs, start_time)

    # ------------------------------------------------------------------------------------------ optimizer
    def _technique_parameters(self) -> list[nn.Parameter]:
        return [p for t in self.techniques for p in t.trainable_parameters()]

    def create_optimizer(self):
        """The Trainer's optimizer plus a group for the techniques' own parameters (not saved in the model)."""
        optimizer = super().create_optimizer()
        extra = [p for p in self._technique_parameters() if p.requires_grad]
        if extra and not any(p is extra[0] for group in optimizer.param_groups for p in group["params"]):
            optimizer.add_param_group({"params": extra, "weight_decay": 0.0})

            def clear_gradients(*_) -> None:  # the Trainer zeroes only the model's gradients
                for parameter in extra:
                    parameter.grad = None

            optimizer.register_step_post_hook(clear_gradients)
        return optimizer

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        # Parameters outside the DDP-wrapped model get no gradient all-reduce: average them by hand.
        if self.accelerator.num_processes > 1:
            for parameter in self._technique_parameters():
                if parameter.grad is not None:
                    torch.distributed.all_reduce(parameter.grad, op=torch.distributed.ReduceOp.SUM)
                    parameter.grad.div_(self.accelerator.num_processes)
        return loss

    # ------------------------------------------------------------------------------------------ checkpoints
    def _checkpoint_state_files(self) -> list[str]:
        """The state files a checkpoint of this run must hold to resume exactly (one per technique with state)."""
        return [t.state_file for t in self.techniques if t.has_state()]

    def _checkpoint_required_files(self) -> list[str]:
        """The optimizer's and scheduler's files, when the Trainer itself saves them as files (not DeepSpeed/FSDP)."""
        sharded = self.is_deepspeed_enabled or self.is_fsdp_enabled
        return [] if self.args.save_only_model or sharded else ["optimizer.pt", "scheduler.pt"]

    def _save_checkpoint(self, model, trial) -> None:
        """The Trainer's checkpoint, marked as being written until every callback has written its files; older
        checkpoints are rotated out only once it is complete (:meth:`_checkpoint_complete`)."""
        folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        self._saving = folder
        if self.args.should_save:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(folder / SAVING_MARKER, f"{os.getpid()}\n")
        limit = self.args.save_total_limit
        self.args.save_total_limit = None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit

    def _checkpoint_complete(self) -> None:
        folder, self._saving = self._saving, None
        if folder is None or not self.args.should_save:
            return
        (folder / SAVING_MARKER).unlink(missing_ok=True)
        rotate_checkpoints(self, str(folder.parent))

    def _discard_unfinished_checkpoint(self, error: BaseException) -> None:
        """A save cut short: remove its folder and, for an error, raise :class:`CheckpointSaveError` from it."""
        folder, self._saving = self._saving, None
        if folder is None:
            return
        if self.args.should_save and (folder / SAVING_MARKER).is_file():
            shutil.rmtree(folder, ignore_errors=True)
        if isinstance(error, Exception):
            files, required = self._checkpoint_state_files(), self._checkpoint_required_files()
            latest = latest_complete_checkpoint(folder.parent, files, required)
            raise CheckpointSaveError(folder, error, latest) from error

    # ------------------------------------------------------------------------------------------ training

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """``Trainer.train``; a checkpoint to resume from is checked first (complete, readable, same recipe and model
        shape), and ``resume_from_checkpoint=True`` takes the latest *complete* checkpoint of ``output_dir``. Models
        that run beside the trained one (a teacher) are prepared by Accelerate in evaluation mode first.

        A checkpoint whose save fails (a full disk) is removed, and
        :class:`~hf_compress.checkpoints.CheckpointSaveError` names the last complete one; with ``stop_on_signal``, a
        signal ends training with :class:`~hf_compress.stopping.TrainingStopped` once the checkpoint of the current
        step is complete."""
        if resume_from_checkpoint is not None and resume_from_checkpoint is not False:
            files, required = self._checkpoint_state_files(), self._checkpoint_required_files()
            if resume_from_checkpoint is True:
                resume_from_checkpoint = latest_complete_checkpoint(self.args.output_dir, files, required)
                if resume_from_checkpoint is None:
                    raise CheckpointError(f"resume_from_checkpoint: no complete checkpoint in {self.args.output_dir}")
            recipe = None if self.recipe.is_empty else self.recipe.to_dict()
            model = self.accelerator.unwrap_model(self.model)
            check_checkpoint(resume_from_checkpoint, files, recipe, getattr(model, "config", None), required)
        for technique in self.techniques:  # their state is read from this folder, wherever it is
            technique.resume_from = str(resume_from_checkpoint) if resume_from_checkpoint else None
        if not self._frozen_prepared:
            for technique in self.techniques:
                technique.prepare_frozen_models(lambda m: self.accelerator.prepare_model(m, evaluation_mode=True))
            self._frozen_prepared = True
        stopper = self.stopper
        self._in_train = True
        try:
            output = super().train(
                resume_from_checkpoint=resume_from_checkpoint,
                trial=trial,
                ignore_keys_for_eval=ignore_keys_for_eval,
                **kwargs,
            )
        except BaseException as error:
            self._discard_unfinished_checkpoint(error)
            raise
        finally:
            self._in_train = False
            if stopper is not None:
                stopper.restore()
        kept = [t for t in self.techniques if t.keeps_state_with_model and t.has_state()]
        # as training left it (before anything, e.g. run_recipe's compaction, changes the model)
        self._final_states = {t.state_file: copy.deepcopy(t.state_dict()) for t in kept}
        if stopper is not None and stopper.received is not None:  # a signal after the last step's end
            folder = os.path.join(self.args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            complete = os.path.isdir(folder) and not os.path.exists(os.path.join(folder, SAVING_MARKER))
            name = signal.Signals(stopper.received).name
            raise TrainingStopped(name, self.state.global_step, folder if complete else None)
        return output

    # ------------------------------------------------------------------------------------------ saving
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """``Trainer.save_model``, compressed: outside training, a copy of the model is saved with what the techniques
        remove (:meth:`~hf_compress.technique.Technique.compact`: pruned FFN neurons and heads) removed; it loads
        with plain ``from_pretrained``, same outputs (a model holding a structure its config cannot describe, e.g.
        heads sliced by ``remove_pruned_structures(model, loadable=False)``, is refused). The recipe
        (``recipe.yaml``) and the technique state an export needs are written beside it, for ``hf-compress
        export``. Checkpoints, and models sharded by DeepSpeed or FSDP, are saved as trained."""
        if self._in_train or self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return super().save_model(output_dir, _internal_call)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        trained = self.model
        check_loadable(self.accelerator.unwrap_model(trained))
        shrinking = [t for t in self.techniques if type(t).compact is not Technique.compact]
        if shrinking and self.args.should_save:  # (the other processes of a DDP run write nothing)
            self.model = copy.deepcopy(self.accelerator.unwrap_model(trained))
            for technique in shrinking:
                technique.compact(self.model)
        try:
            super().save_model(output_dir, _internal_call)
        finally:
            self.model = trained
        if self.args.should_save:
            if not self.recipe.is_empty:
                atomic_write_text(os.path.join(output_dir, RECIPE_FILE), self.recipe.to_yaml())
            for technique in self.techniques:
                if technique.keeps_state_with_model and technique.has_state():
                    state = self._final_states.get(technique.state_file) or technique.state_dict()
                    save_torch_state(state, os.path.join(output_dir, technique.state_file))

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
        exporter: str | None = None,
    ) -> dict:
        """Export the trained model to ONNX through :func:`hf_compress.export.export`; return the report.

        Defaults come from the recipe's ``export`` block (an :class:`ExportConfig`): ``int8`` (``none`` or a
        registered route, :data:`~hf_compress.int8_routes.INT8_ROUTES`), calibration, opset and ``exporter``
        (``auto``: Optimum where it is installed, else torch.onnx). The exported model is evaluated on
        ``eval_dataset`` (default: the Trainer's) with the Trainer's collator and ``compute_metrics``; ``static``
        calibrates on ``calibration_dataset`` (default: the training set). The folder (default ``output_dir/onnx``
        or ``output_dir/onnx-int8-<route>``) is what :meth:`push_to_hub` uploads afterwards; an earlier export
        there is replaced only with ``overwrite=True``. With the recipe's ``export.max_metric_drop``,
        :class:`~hf_compress.export.MetricDropError` is raised (the folder kept) when the metric drops by more.
        """
        if not self.is_world_process_zero():
            self.accelerator.wait_for_everyone()
            return {}
        try:
            data = ExportData(
                eval_dataset=eval_dataset if eval_dataset is not None else self.eval_dataset,
                data_collator=self.data_collator,
                compute_metrics=self.compute_metrics,
                calibration_dataset=calibration_dataset if calibration_dataset is not None else self.train_dataset,
                batch_size=self.args.per_device_eval_batch_size,
            )
            report = export(
                self.accelerator.unwrap_model(self.model),
                output_dir,
                data=data,
                recipe=self.recipe,
                tokenizer=self.processing_class,
                techniques={t.name: t.config for t in self.techniques},  # their export hooks, with their configs
                int8=int8,
                exporter=exporter,
                parent_dir=self.args.output_dir,
                base_model=base_model,
                overwrite=overwrite,
            )
        except MetricDropError as error:  # the folder is complete and kept: it is still what push_to_hub uploads
            self.export_dir = error.report["output_dir"]
            raise
        finally:  # the other processes wait here whatever happened
            self.accelerator.wait_for_everyone()
        self.export_dir = report["output_dir"]
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
        if not self.is_world_process_zero():
            return None
        repo_id = self.args.hub_model_id or Path(self.args.output_dir).absolute().name
        return hub.push_to_hub(
            export_dir,
            repo_id,
            token=token or self.args.hub_token,
            private=bool(self.args.hub_private_repo),
            commit_message=commit_message,
            revision=revision,
        )
