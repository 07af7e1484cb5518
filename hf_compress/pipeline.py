"""Run a recipe end to end: data -> (teacher fine-tuning) -> student -> CompressionTrainer -> results table.

This is what ``hf-compress train`` and ``examples/ner/run_ner.py`` call; it only composes the public pieces
(:class:`Recipe`, tasks, :func:`student_from_teacher`, :class:`CompressionTrainer`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import concatenate_datasets
from transformers import AutoConfig, AutoTokenizer, PreTrainedModel, TrainerCallback, TrainingArguments
from transformers.trainer_utils import set_seed
from transformers.utils import logging

from .checkpoints import RECIPE_FILE
from .compat import training_arguments
from .export import MetricDropError
from .files import atomic_write_json, atomic_write_text, check_output_dir, output_dir_lock
from .model_sources import check_model_source, resolve_model_path
from .modules import SettingError
from .pruning.width_step import teacher_layers_by_influence
from .recipe import DataConfig, Recipe, RecipeError
from .students import StudentDraft, check_teacher_student, prepare_student, student_from_teacher
from .tables import markdown_table
from .tasks import Task, get_task, load_task_data
from .technique import get_technique, load_pretrained
from .trainer import CompressionTrainer

logger = logging.get_logger(__name__)

__all__ = ["ModelResult", "check_recipe_models", "default_training_arguments", "has_student", "run_recipe"]


def has_student(recipe: Recipe) -> bool:
    """Whether the recipe names a student (a model, or teacher layers); without one, a run fine-tunes or evaluates
    the teacher alone."""
    student = recipe.model.student if recipe.model is not None else None
    return student is not None and bool(student.sources())


def check_recipe_models(recipe: Recipe) -> None:
    """Check the recipe against the architecture of its local teacher and student folders (their config alone),
    before any data or weights are read: :meth:`Recipe.check_architecture`. Hub ids are checked once loaded.

    A recipe without a student (the teacher alone is fine-tuned or evaluated) has no technique or export block.
    """
    if recipe.model is None:
        return
    if not has_student(recipe):
        blocks = [*recipe.techniques, *(["export"] if recipe.export is not None else [])]
        if blocks:
            raise RecipeError(
                "model.student",
                None,
                f"the {', '.join(blocks)} {'blocks need' if len(blocks) > 1 else 'block needs'} a student: give "
                "model.student.name_or_path or model.student.from_teacher_layers (or "
                "from_teacher_layers_by_influence; without a student, a recipe fine-tunes or evaluates the teacher "
                "alone; export it with `hf-compress export`)",
            )
    for name_or_path in (recipe.model.teacher, recipe.model.student.name_or_path):
        if name_or_path is None:
            continue
        path = Path(resolve_model_path(name_or_path))
        if (path / "config.json").is_file():
            recipe.check_architecture(AutoConfig.from_pretrained(path))


def _check_max_length(data: DataConfig, model: PreTrainedModel, key: str) -> None:
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit and data.max_length > limit:
        raise RecipeError(
            "data.max_length",
            data.max_length,
            f"{key} has {limit} positions (max_position_embeddings): allowed up to {limit}",
        )


def _has_real_labels(config) -> bool:
    """False for the placeholder labels (``LABEL_0``, ``LABEL_1``) of a model without a task head."""
    return any(name != f"LABEL_{i}" for i, name in config.id2label.items())


@dataclass
class ModelResult:
    """One row of the results table."""

    name: str
    layers: int
    parameters: int
    size_mb: float
    metrics: dict[str, float] = field(default_factory=dict)
    train_seconds: float | None = None
    path: str | None = None


def _has_accelerator() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return (
        torch.cuda.is_available()
        or bool(mps and mps.is_available())
        or bool(hasattr(torch, "xpu") and torch.xpu.is_available())
    )


def default_training_arguments(output_dir: str, training: dict[str, Any]) -> TrainingArguments:
    """TrainingArguments with the recipe's ``training`` block over defaults suited to a compression run."""
    defaults = {
        # several processes and no GPU (`accelerate launch --multi_gpu` on a CPU machine): DDP on the CPU with gloo
        "use_cpu": int(os.environ.get("WORLD_SIZE", "1")) > 1 and not _has_accelerator(),
        "eval_strategy": "epoch",
        "save_strategy": "epoch",
        "save_total_limit": 2,
        "logging_steps": 50,
        "report_to": "none",
    }
    return TrainingArguments(output_dir=output_dir, **training_arguments({**defaults, **training}))


class _Run:
    """The state of one recipe run; each method is one stage."""

    def __init__(
        self,
        recipe: Recipe,
        args: TrainingArguments,
        callbacks: list[TrainerCallback] | None = None,
        stop_on_signal: bool = False,
    ):
        if recipe.model is None or recipe.data is None:
            missing = "model" if recipe.model is None else "data"
            raise RecipeError(missing, None, f"a recipe to run needs a '{missing}' block")
        self.recipe, self.args = recipe, args
        self.data: DataConfig = recipe.data
        self.task: Task = get_task(self.data.task)
        self.tokenized = None
        self.export_report: dict | None = None
        self.export_error: Exception | None = None
        self.trainer_export_dir: str | None = None
        self.callbacks = list(callbacks or [])
        self.stop_on_signal = stop_on_signal

    def load_data(self) -> None:
        self.task, self.raw, self.labels = load_task_data(self.data)

    def _load_model(self, path: str, label_order: list[str] | None, allow_new_head: bool) -> PreTrainedModel:
        config = AutoConfig.from_pretrained(path)
        if _has_real_labels(config):
            model_labels = [config.id2label[i] for i in sorted(config.id2label)]
            if sorted(model_labels) == sorted(self.labels):  # (a factorized model rebuilds its factors)
                return load_pretrained(path, self.task.auto_model_class)
            if not allow_new_head:
                raise ValueError(
                    f"{path}: the model's labels {model_labels} differ from the data's labels "
                    f"{self.labels}; set model.train_teacher: true to fine-tune a new head"
                )
        order = label_order or self.labels
        return self.task.auto_model_class.from_pretrained(
            path,
            num_labels=len(order),
            id2label=dict(enumerate(order)),
            label2id={name: i for i, name in enumerate(order)},
            ignore_mismatched_sizes=True,
        )

    def load_models(self) -> None:
        model_cfg = self.recipe.model
        set_seed(self.args.seed)  # a new task head is initialised from the run's seed, as the training is
        self.teacher = self.teacher_tokenizer = None
        if model_cfg.teacher is not None:
            path = resolve_model_path(model_cfg.teacher)
            check_model_source(path, "model.teacher")
            self.teacher = self._load_model(path, None, allow_new_head=model_cfg.train_teacher)
            self.recipe.check_architecture(self.teacher.config)
            self.teacher_tokenizer = AutoTokenizer.from_pretrained(path)
            _check_max_length(self.data, self.teacher, "the teacher")
        self.tokenizer = self.teacher_tokenizer
        self.student_path = None
        if model_cfg.student.name_or_path is not None:
            self.student_path = resolve_model_path(model_cfg.student.name_or_path)
            check_model_source(self.student_path, "model.student.name_or_path")
            order = (
                [self.teacher.config.id2label[i] for i in sorted(self.teacher.config.id2label)]
                if self.teacher is not None
                else None
            )
            self.student = self._load_model(self.student_path, order, allow_new_head=True)
            self.recipe.check_architecture(self.student.config)
            self.tokenizer = AutoTokenizer.from_pretrained(self.student_path)
            _check_max_length(self.data, self.student, "the student")
            if self.teacher is not None:
                check_teacher_student(self.student, self.teacher, self.tokenizer, self.teacher_tokenizer)

    def _trainer(self, model, output_dir: str, teacher=None, recipe=None) -> CompressionTrainer:
        if self.tokenized is None:  # teacher and student share labels and tokenizer (checked on loading)
            self.tokenized = self.task.preprocess(self.raw, self.tokenizer, model.config.label2id, self.data)
        args = dataclasses.replace(self.args, output_dir=output_dir)
        train = self.tokenized["train"]
        for name, config in (recipe.techniques if recipe is not None else {}).items():
            extra = get_technique(name).extra_training_data(
                config,
                task=self.task,
                raw_train=self.raw["train"],
                data=self.data,
                tokenizer=self.tokenizer,
                label2id=model.config.label2id,
            )
            if extra is not None:
                logger.warning(f"{name}: {len(extra)} examples added to the {len(train)} of the training set")
                train = concatenate_datasets([train, extra.cast(train.features)])
        return CompressionTrainer(
            model=model,
            args=args,
            teacher=teacher,
            recipe=recipe,
            train_dataset=train,
            eval_dataset=self.tokenized["validation"],
            data_collator=self.task.data_collator(self.tokenizer),
            processing_class=self.tokenizer,
            teacher_processing_class=self.teacher_tokenizer if teacher is not None else None,
            compute_metrics=self.task.compute_metrics(model.config.id2label, self.data.decoding),
            callbacks=self.callbacks or None,
            stop_on_signal=self.stop_on_signal,
            recipe_blocks_applied=True,
        )

    def _finish(
        self,
        trainer: CompressionTrainer,
        name: str,
        output_dir: str,
        train_seconds: float | None,
        metrics: dict[str, float] | None = None,
    ) -> ModelResult:
        metrics = metrics or trainer.evaluate()
        trainer.save_model(output_dir)
        trainer.save_metrics("eval", metrics)
        model = trainer.model
        weights = Path(output_dir) / "model.safetensors"
        size = (
            weights.stat().st_size
            if weights.is_file()
            else sum(p.numel() * p.element_size() for p in model.parameters())
        )
        return ModelResult(
            name=name,
            layers=int(model.config.num_hidden_layers),
            parameters=sum(p.numel() for p in model.parameters()),
            size_mb=size / 1e6,
            metrics={
                k.removeprefix("eval_"): v
                for k, v in metrics.items()
                if k.removeprefix("eval_") in ("f1", "accuracy", "precision", "recall", "loss")
            },
            train_seconds=train_seconds,
            path=output_dir,
        )

    def teacher_stage(self, resume_from_checkpoint) -> ModelResult | None:
        if self.teacher is None:
            return None
        output_dir = os.path.join(self.args.output_dir, "teacher")
        trainer = self._trainer(self.teacher, output_dir)
        seconds = metrics = None
        if self.recipe.model.train_teacher:
            resume = _checkpoint_for(resume_from_checkpoint, output_dir)
            seconds = trainer.train(resume_from_checkpoint=resume).metrics["train_runtime"]
            metrics = _evaluation_after_last_step(trainer)  # the teacher is unchanged since: not run twice
        return self._finish(trainer, "teacher", output_dir, seconds, metrics)

    def student_stage(self, resume_from_checkpoint) -> ModelResult:
        layers = self.recipe.model.student.from_teacher_layers
        count = self.recipe.model.student.from_teacher_layers_by_influence
        if count is not None:
            layers, influence = teacher_layers_by_influence(
                self.teacher, self.tokenizer, self.task.texts(self.raw["train"], self.data), count
            )
            logger.warning(f"teacher layers by block influence {[round(v, 4) for v in influence]}: {layers}")
        if layers is not None:
            try:
                self.student = student_from_teacher(self.teacher, layers)
            except SettingError as error:
                raise RecipeError(f"model.student.{error.setting}", error.value, error.allowed) from None
        draft = StudentDraft(
            self.student,
            self.tokenizer,
            lambda split: self.task.texts(self.raw[split], self.data),
            self.args.output_dir,
            self.args.should_save,
        )
        if prepare_student(draft, self.recipe.model.student):  # e.g. model.student.vocabulary: trimmed
            self.student, self.tokenizer, self.tokenized = draft.model, draft.tokenizer, None
        uses_teacher = any("teacher" in get_technique(name).resources for name in self.recipe.techniques)
        if self.teacher is not None and not uses_teacher:
            logger.warning("no technique block uses the teacher: the student is fine-tuned without it")
        trainer = self._trainer(
            self.student, self.args.output_dir, teacher=self.teacher if uses_teacher else None, recipe=self.recipe
        )
        name = _student_name(trainer, layers, self.recipe.model.student.width)
        resume = _checkpoint_for(resume_from_checkpoint, self.args.output_dir)
        seconds = trainer.train(resume_from_checkpoint=resume).metrics["train_runtime"]
        if self.recipe.export is not None and self.recipe.export.onnx:  # before compact(): layers as trained
            try:  # this run's own export folder (the output_dir was checked): a rerun replaces it
                self.export_report = trainer.export(base_model=self.student_path, overwrite=True)
            except Exception as error:  # the trained student is saved all the same; run_recipe re-raises
                self.export_error = error
                self.export_report = error.report if isinstance(error, MetricDropError) else None
            self.trainer_export_dir = getattr(trainer, "export_dir", None)
        for technique in trainer.techniques:  # the saved student is genuinely smaller
            technique.compact(trainer.model)
        return self._finish(trainer, name, self.args.output_dir, seconds)


def _evaluation_after_last_step(trainer: CompressionTrainer) -> dict[str, float] | None:
    """The metrics of the evaluation the Trainer ran after its last optimizer step (``eval_strategy`` epoch, or
    steps ending there), as ``trainer.evaluate()`` returns them; None when it ran none there."""
    state = trainer.state
    for entry in reversed(state.log_history):
        if entry.get("step") != state.global_step:
            break
        if "eval_loss" in entry:
            return {k: v for k, v in entry.items() if k.startswith("eval_") or k == "epoch"}
    return None


def _student_name(trainer: CompressionTrainer, layers: list[int] | None, width: Any = None) -> str:
    """``student (<qualifiers>), teacher layers [0, 2, 4], hidden 256, <descriptions>``: what the student is made of
    and what the techniques did."""
    qualifiers = [t.qualifier for t in trainer.techniques if t.qualifier]
    name = f"student ({', '.join(qualifiers)})" if qualifiers else "student"
    parts = [f"teacher layers {layers}"] if layers else []
    if width is not None:
        sizes = (("hidden", width.hidden_size), ("FFN", width.intermediate_size))
        parts += [f"{key} {value}" for key, value in sizes if value is not None]
    return ", ".join([name, *parts, *(word for t in trainer.techniques if (word := t.describe()))])


def _checkpoint_for(resume_from_checkpoint: str | bool | None, output_dir: str) -> str | bool | None:
    """``True`` resumes a stage from its own latest checkpoint, when it has one."""
    if resume_from_checkpoint is True:
        from transformers.trainer_utils import get_last_checkpoint

        return True if os.path.isdir(output_dir) and get_last_checkpoint(output_dir) else None
    return resume_from_checkpoint


def run_recipe(
    recipe: Recipe,
    args: TrainingArguments,
    resume_from_checkpoint: str | bool | None = None,
    callbacks: list[TrainerCallback] | None = None,
    *,
    overwrite_output_dir: bool = False,
    stop_on_signal: bool = False,
) -> list[ModelResult]:
    """Run a recipe: fine-tune or evaluate the teacher, train the student, write ``results.{json,md}``.

    ``callbacks``: more ``TrainerCallback`` objects for every trainer of the run (teacher fine-tuning, student).
    ``stop_on_signal``: SIGTERM or SIGINT during training stops it after the current optimizer step with a complete
    checkpoint, raising :class:`~hf_compress.stopping.TrainingStopped` (``hf-compress train`` sets it).

    The run holds the lock of ``args.output_dir`` (:func:`~hf_compress.files.output_dir_lock`, taken by the main
    process): a second run into the same folder is refused while this one runs.

    The student is saved in ``args.output_dir`` (loadable with plain ``from_pretrained``); a teacher that was
    fine-tuned or evaluated is saved in ``args.output_dir/teacher`` (a recipe without a student runs that stage
    alone: :func:`has_student`). A new task head starts from ``args.seed``: one seed, one result. An
    ``output_dir`` that holds a previous run is refused unless resuming or ``overwrite_output_dir`` (files are
    written over, none deleted; transformers 4.x's ``args.overwrite_output_dir`` counts too, transformers 5 removed
    it). If the recipe's export fails (or fails its ``max_metric_drop`` gate:
    :class:`~hf_compress.export.MetricDropError`), the error is raised after the student and the results are saved.
    """
    lock = output_dir_lock(args.output_dir) if args.process_index == 0 else contextlib.nullcontext()
    with lock:
        return _run_recipe(recipe, args, resume_from_checkpoint, callbacks, overwrite_output_dir, stop_on_signal)


def _run_recipe(recipe, args, resume_from_checkpoint, callbacks, overwrite_output_dir, stop_on_signal):
    overwrite = overwrite_output_dir or getattr(args, "overwrite_output_dir", False)
    check_output_dir(args.output_dir, overwrite=overwrite, resume=bool(resume_from_checkpoint))
    run = _Run(recipe, args, callbacks, stop_on_signal)
    check_recipe_models(recipe)
    run.load_data()
    run.load_models()
    results = [r for r in [run.teacher_stage(resume_from_checkpoint)] if r]
    if has_student(recipe):
        results.append(run.student_stage(resume_from_checkpoint))
    if run.export_report:  # the exported model, evaluated through ONNX Runtime
        report, student = run.export_report, results[-1]
        results.append(
            ModelResult(
                name=f"exported: ONNX {'int8 (' + report['int8'] + ')' if report['int8'] else 'fp32'}",
                layers=student.layers,
                parameters=report["parameters"],
                size_mb=report["size_mb"],
                metrics=report.get("metrics", {}),
                path=run.trainer_export_dir,
            )
        )
    if args.should_save:
        write_results(results, args.output_dir, recipe)
    if run.export_error is not None:  # raised once the student and the results are saved
        raise run.export_error
    return results


def results_table(results: list[ModelResult]) -> str:
    """A Markdown table of the results."""
    metric_names = [m for m in ("f1", "precision", "recall", "accuracy") if any(m in r.metrics for r in results)]
    header = ["model", "layers", "params (M)", "size (MB)", *[f"dev {m}" for m in metric_names], "train time (s)"]
    rows = []
    for r in results:
        cells = [r.name, str(r.layers), f"{r.parameters / 1e6:.1f}", f"{r.size_mb:.1f}"]
        cells += [f"{100 * r.metrics[m]:.2f}" if m in r.metrics else "-" for m in metric_names]
        given = "- (given)" if r.name == "teacher" else "-"
        cells.append(f"{r.train_seconds:.0f}" if r.train_seconds is not None else given)
        rows.append(cells)
    return markdown_table(header, rows)


def write_results(results: list[ModelResult], output_dir: str, recipe: Recipe) -> None:
    atomic_write_json(os.path.join(output_dir, "results.json"), [dataclasses.asdict(r) for r in results])
    atomic_write_text(os.path.join(output_dir, "results.md"), results_table(results) + "\n")
    atomic_write_text(os.path.join(output_dir, RECIPE_FILE), recipe.to_yaml())
