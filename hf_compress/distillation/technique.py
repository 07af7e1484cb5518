"""DistillationCallback: knowledge distillation from a teacher, as a technique that contributes the loss."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import logging

from ..architectures import require
from ..compat import use_eager_attention
from ..configs import RecipeError
from ..modules import check_frozen_models
from ..students import check_teacher_student
from ..tables import markdown_table
from ..tasks.base import NO_GOLD_LABEL
from ..technique import Technique, register_technique
from .cache import TeacherCache
from .config import DistillationConfig, LayerLossConfig
from .losses import DistillationLoss
from .transfer import transfer_dataset

logger = logging.get_logger(__name__)

__all__ = ["DistillationCallback"]


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


@register_technique
class DistillationCallback(Technique):
    """Distil ``teacher`` into the trained model: soft targets, hidden states and attention maps (see
    :class:`~hf_compress.distillation.DistillationConfig` for the loss).

    ``DistillationCallback(DistillationConfig(...), teacher=teacher)``; it adds to the loss, so it trains under
    :class:`~hf_compress.trainer.CompressionTrainer` (which builds it from ``teacher=`` and the recipe's
    ``distillation`` block). The teacher runs in eval mode under ``no_grad``; it is prepared by Accelerate in
    evaluation mode when training starts (placed on the device, never wrapped for distributed training), never
    in the optimizer and never in a checkpoint. The projections of the hidden-state term (when the widths differ)
    are this technique's parameters: trained with the model, kept in ``distillation_state.pt`` in each checkpoint.
    """

    name = "distillation"
    config_class = DistillationConfig
    order = 0  # no surgery
    report_name = "distillation_report"
    contributes_loss = True
    resources = ("teacher", "teacher_processing_class")
    path_fields = ("transfer.files",)
    qualifier = "distilled"

    def __init__(
        self,
        config: DistillationConfig | None = None,
        *,
        teacher: PreTrainedModel,
        teacher_processing_class: Any = None,
        **settings: Any,
    ):
        super().__init__(config, **settings)
        if teacher is None:
            raise ValueError("DistillationCallback needs a teacher model (teacher=...)")
        self.teacher = teacher
        self.teacher_processing_class = teacher_processing_class
        self.loss_module: DistillationLoss | None = None
        self.last_logged: dict[str, float] = {}
        self.student_processing_class: Any = None  # the trained model's tokenizer, from the Trainer
        self.teacher_ids: torch.Tensor | None = None
        self.cache: TeacherCache | None = None
        teacher.eval()
        teacher.requires_grad_(False)

    @classmethod
    def from_recipe(cls, config: DistillationConfig, **resources: Any) -> DistillationCallback:
        if resources.get("teacher") is None:
            raise RecipeError(
                "distillation",
                "teacher=None",
                "a 'distillation' block needs a teacher: pass CompressionTrainer(teacher=...) or set model.teacher",
            )
        return cls(
            config, teacher=resources["teacher"], teacher_processing_class=resources.get("teacher_processing_class")
        )

    @classmethod
    def example_config(cls) -> DistillationConfig:
        return DistillationConfig(alpha=0.5, hidden_states=LayerLossConfig(weight=1.0))

    @classmethod
    def default_config(cls, **resources: Any) -> DistillationConfig | None:
        return DistillationConfig() if resources.get("teacher") is not None else None

    @classmethod
    def capabilities(cls, config: DistillationConfig) -> dict[str, str]:
        needs = {"distillation": "distillation"}
        for name, capability in (("hidden_states", "hidden_distillation"), ("attentions", "attention_distillation")):
            block = getattr(config, name)
            if block is not None and block.weight > 0:
                needs[capability] = f"distillation.{name}"
        return needs

    @classmethod
    def check_recipe(cls, recipe: Any) -> None:
        if recipe.model is not None and recipe.model.teacher is None:
            raise RecipeError(
                "distillation", "set", "the 'distillation' block needs a teacher: set model.teacher, or drop the block"
            )

    @classmethod
    def extra_training_data(cls, config: DistillationConfig, *, task, raw_train, data, tokenizer, label2id):
        """The transfer set (``transfer``): augmented copies and text files, labelled by the teacher only."""
        if config.transfer is None:
            return None
        return transfer_dataset(config.transfer, task, raw_train, data, tokenizer, label2id)

    # --------------------------------------------------------------------------------------------- hooks
    def prepare(self, model: nn.Module) -> None:
        check_frozen_models(model, {"teacher": self.teacher})  # (given as a callback: CompressionTrainer checks first)
        mapping = check_teacher_student(
            model, self.teacher, self.student_processing_class, self.teacher_processing_class
        )
        device = next(model.parameters()).device
        # a student with a trimmed vocabulary: its ids are translated to the teacher's (the same words, same pieces)
        self.teacher_ids = None if mapping is None else torch.tensor(mapping, dtype=torch.long, device=device)
        self.teacher.to(device)
        kept = getattr(model, "kept_hidden_channels", None)  # a narrowed student's channels among the teacher's
        self.loss_module = DistillationLoss(self.config, model.config, self.teacher.config, kept).to(device)
        if self.loss_module.needs_attentions:
            for m in (model, self.teacher):  # attention maps come from the eager path
                require(m, "attention_distillation", "attentions")
                use_eager_attention(m)

    def on_init_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        self.student_processing_class = processing_class  # checked against the teacher's in prepare()
        super().on_init_end(args, state, control, model=model, **kwargs)

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        if self.config.cache_teacher and self.cache is None:
            teacher = getattr(self.teacher, "module", self.teacher)
            self.cache = TeacherCache(
                self.config.cache_dir or os.path.join(args.output_dir, "teacher_cache"),
                teacher,
                list(self.loss_module.hidden_layer_map.values()),
                list(self.loss_module.attention_layer_map.values()),
                teacher.config.num_hidden_layers,
                rank=args.process_index,
            )
            logger.info(f"teacher outputs cached in {self.cache.folder} ({len(self.cache)} examples there)")

    def on_epoch_begin(self, args, state, control, **kwargs):
        if self.cache is not None:  # every process has flushed: read each other's shards from now on
            self.cache.flush()
            _barrier()
            self.cache.refresh()
            size = self.cache.size()
            if size["examples"]:
                logger.info(
                    f"teacher cache: {size['examples']} examples, {size['tokens']} tokens, {size['bytes']} bytes "
                    f"({size['bytes_per_token']} bytes per token)"
                )

    def on_save(self, args, state, control, **kwargs):
        super().on_save(args, state, control, **kwargs)
        if self.cache is not None:
            self.cache.flush()

    def on_train_end(self, args, state, control, **kwargs):
        if self.cache is not None:
            self.cache.flush()
        super().on_train_end(args, state, control, **kwargs)

    def prepare_frozen_models(self, prepare: Callable[[nn.Module], nn.Module]) -> None:
        self.teacher = prepare(self.teacher)
        self.teacher.eval()

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.loss_module.parameters()) if self.loss_module is not None else []

    def has_state(self) -> bool:
        return self.loss_module is not None and len(self.loss_module.state_dict()) > 0

    def state_dict(self) -> dict[str, Any]:
        return self.loss_module.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loss_module.load_state_dict(state)

    def state_missing(self, path: str, step: int) -> None:
        logger.warning(f"{path} not found: the distillation projections restart from their initial values")

    def forward_kwargs(self) -> dict[str, Any]:
        return {
            "output_hidden_states": self.loss_module.needs_hidden_states,
            "output_attentions": self.loss_module.needs_attentions,
        }

    def model_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Transfer examples' label positions (:data:`~hf_compress.tasks.base.NO_GOLD_LABEL`) are hidden from the
        model's own (task) loss as -100; the soft targets still count them."""
        labels = inputs.get("labels")
        if labels is None or labels.dtype.is_floating_point:
            return inputs
        return {**inputs, "labels": labels.masked_fill(labels == NO_GOLD_LABEL, -100)}

    def loss(
        self, inputs: dict[str, Any], outputs: Any, loss: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The distillation loss of the student's ``outputs`` on ``inputs`` (``loss`` is the task loss)."""
        teacher_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        if self.teacher_ids is not None:
            ids = teacher_inputs["input_ids"]
            teacher_inputs["input_ids"] = self.teacher_ids.to(ids.device)[ids]
        teacher_outputs = self._cached(teacher_inputs, outputs) if self.cache is not None else None
        if teacher_outputs is None:
            self.teacher.eval()
            with torch.no_grad():
                teacher_outputs = self.teacher(**teacher_inputs, **self.forward_kwargs())
            if self.cache is not None:
                self.cache.store(teacher_inputs, teacher_outputs)
        return self.loss_module(
            outputs, teacher_outputs, inputs.get("labels"), inputs.get("attention_mask"), task_loss=loss
        )

    def _cached(self, teacher_inputs: dict[str, Any], outputs: Any):
        config = getattr(self.teacher, "module", self.teacher).config
        shapes = {
            "labels": outputs.logits.shape[-1],
            "token_level": outputs.logits.dim() == 3,
            "hidden": config.hidden_size,
            "heads": config.num_attention_heads,
        }
        return self.cache.lookup(teacher_inputs, shapes)

    def log_values(self, step: int) -> dict[str, float]:
        if self.cache is None or not self.cache.hits + self.cache.misses:
            return {}
        return {"teacher_cache_hit_rate": round(self.cache.hits / (self.cache.hits + self.cache.misses), 4)}

    def on_log(self, args, state, control, logs=None, **kwargs):
        super().on_log(args, state, control, logs=logs, **kwargs)
        if logs:
            self.last_logged.update({k: v for k, v in logs.items() if k.startswith("loss_")})

    def report(self) -> dict[str, Any]:
        m = self.loss_module
        return {
            "temperature": self.config.temperature,
            "alpha": self.config.alpha,
            "hidden_states_layer_map": m.hidden_layer_map or None,
            "attentions_layer_map": m.attention_layer_map or None,
            "projections": len(m.projections),
            "teacher_cache": None
            if self.cache is None
            else {
                "folder": str(self.cache.folder),
                "dtype": str(self.cache.dtype).removeprefix("torch."),
                "hits": self.cache.hits,
                "misses": self.cache.misses,
                **self.cache.size(),
            },
            "last_logged_terms": dict(self.last_logged),
        }

    def report_markdown(self, report: dict[str, Any]) -> str:
        rows = [(key, "-" if value is None else value) for key, value in report.items() if key != "last_logged_terms"]
        rows += [(f"last logged {key}", value) for key, value in report["last_logged_terms"].items()]
        return markdown_table(("setting", "value"), rows)
