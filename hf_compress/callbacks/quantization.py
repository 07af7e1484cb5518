"""QATCallback: the training schedule -> fake-quant layers of :mod:`hf_compress.quantization`."""

from __future__ import annotations

import os

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.utils import logging

from ..configs import QuantizationConfig
from ..quantization import (
    activation_ranges,
    convert_to_qat,
    load_qat_state_dict,
    qat_modules,
    qat_phase,
    qat_state_dict,
    resolve_reduce_range,
    set_qat_phase,
    synchronize_observers,
)
from ._steps import add_to_logs, optimizer_steps_per_epoch, resume_file, save_in_checkpoint

logger = logging.get_logger(__name__)

__all__ = ["QAT_STATE_NAME", "QATCallback"]

#: The file, in each checkpoint folder, with the observers' state needed to resume exactly.
QAT_STATE_NAME = "quantization_state.pt"


class QATCallback(TrainerCallback):
    """Quantization-aware training on a schedule counted in optimizer steps.

    ``QATCallback(start_epoch=2.5, freeze_observers_epoch=2.8)`` or ``QATCallback(QuantizationConfig(...))``.
    The targeted linears become (inert) fake-quant layers when the Trainer is built, before the optimizer; from
    ``start`` they fake-quantize weights and inputs and observe input ranges, from ``freeze_observers`` the ranges
    (hence the scales) are fixed. Observer state is saved in every checkpoint (``quantization_state.pt``) and
    restored on resume; ``qat_active``, ``qat_observers_frozen`` and the mean input scale are logged.
    ``reduce_range="auto"`` is decided once, on this machine, when the layers are converted (7-bit weights exactly
    when its int8 kernel saturates) and kept in the QAT state, which the ``qat`` export follows.
    """

    #: The state file this callback keeps in every checkpoint (resuming needs it).
    checkpoint_file = QAT_STATE_NAME

    def __init__(self, config: QuantizationConfig | None = None, **kwargs):
        if config is not None and kwargs:
            raise ValueError("give a QuantizationConfig or keyword arguments, not both")
        self.config = config if config is not None else QuantizationConfig(**kwargs)
        self.model: torch.nn.Module | None = None
        self.start_step, self.freeze_step = 0, None
        self.phase = "off"

    def _convert(self, model: torch.nn.Module) -> None:
        if self.model is not model:
            reduce_range = resolve_reduce_range(self.config.reduce_range)
            c = self.config
            convert_to_qat(model, c.targets, c.averaging_constant, reduce_range)  # bad targets fail here
            if reduce_range:
                logger.info("QAT: 7-bit weights (reduce_range), levels [-64, 64]")
            self.model = model

    def _schedule_in_steps(self, args: TrainingArguments, state: TrainerState, train_dataloader) -> None:
        c = self.config
        if c.start_step is not None:
            self.start_step, self.freeze_step = c.start_step, c.freeze_observers_step
            return
        per_epoch = optimizer_steps_per_epoch(args, state, train_dataloader)
        self.start_step = round(c.start_epoch * per_epoch)
        self.freeze_step = None if c.freeze_observers_epoch is None else round(c.freeze_observers_epoch * per_epoch)

    def _enter_phase(self, step: int) -> None:
        phase = qat_phase(step, self.start_step, self.freeze_step)
        if phase != self.phase:
            if phase == "frozen":
                synchronize_observers(self.model)
            set_qat_phase(self.model, phase)
            logger.info(f"QAT: {phase} from optimizer step {step}")
            self.phase = phase

    def on_init_end(self, args, state, control, model=None, **kwargs):
        if model is not None:
            self._convert(model)

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model=None,
        train_dataloader=None,
        **kwargs,
    ):
        self._convert(model)
        self._schedule_in_steps(args, state, train_dataloader)
        if state.global_step > 0:  # resuming
            path = resume_file(self, args, state, QAT_STATE_NAME)
            if os.path.isfile(path):
                load_qat_state_dict(model, torch.load(path, map_location="cpu", weights_only=True))
            elif state.global_step >= self.start_step:
                logger.warning(f"{path} not found: QAT observers restart from the next batch")
        self.phase = "off"
        set_qat_phase(model, "off")
        self._enter_phase(state.global_step)

    def on_step_begin(self, args, state, control, **kwargs):
        self._enter_phase(state.global_step)  # the phase of the optimizer step about to run

    def on_step_end(self, args, state, control, **kwargs):
        if self.phase == "observing":
            synchronize_observers(self.model)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "loss" not in logs or self.model is None:
            return
        extra: dict[str, float] = {
            "qat_active": float(self.phase != "off"),
            "qat_observers_frozen": float(self.phase == "frozen"),
        }
        ranges = activation_ranges(self.model)
        if ranges:
            scales = [m.activation_qparams()[0] for m in qat_modules(self.model).values() if bool(m.observed)]
            extra["qat_mean_input_scale"] = round(float(torch.stack(scales).mean()), 6)
        add_to_logs(state, logs, extra)

    def on_save(self, args, state, control, **kwargs):
        if self.model is not None:
            save_in_checkpoint(args, state, QAT_STATE_NAME, qat_state_dict(self.model))

    def on_train_end(self, args, state, control, **kwargs):
        """Keep the observers' state beside the final model: ``hf-compress export --int8 qat`` reads it."""
        if self.model is not None and state.is_world_process_zero and activation_ranges(self.model):
            os.makedirs(args.output_dir, exist_ok=True)
            torch.save(qat_state_dict(self.model), os.path.join(args.output_dir, QAT_STATE_NAME))
