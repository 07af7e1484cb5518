"""QATCallback: the training schedule -> fake-quant layers of :mod:`hf_compress.quantization.fake_quant`."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn
from transformers.utils import logging

from ..tables import markdown_table
from ..technique import ExportFacts, Technique, TechniqueExport, optimizer_steps, register_technique
from .config import QuantizationConfig
from .embeddings import convert_embeddings_to_qat, remove_embedding_qat
from .fake_quant import (
    convert_to_qat,
    load_qat_state_dict,
    qat_modules,
    qat_phase,
    qat_state_dict,
    remove_qat,
    resolve_reduce_range,
    set_qat_phase,
    synchronize_observers,
)

logger = logging.get_logger(__name__)

__all__ = ["QATCallback"]


class QATExport(TechniqueExport):
    """The export half of quantization-aware training: the observers put back on a loaded model, the fake-quant
    layers folded on the export copy with their ranges handed to the ``qat`` int8 route, the parity reference."""

    @classmethod
    def restore_saved(cls, model: nn.Module, folder: str | os.PathLike, config: QuantizationConfig | None) -> None:
        """With ``quantization_state.pt`` in ``folder``: the fake-quant layers again, observers loaded and frozen."""
        path = os.path.join(folder, QATCallback.state_file)
        if not os.path.isfile(path):
            return
        convert_to_qat(model, config.targets if config is not None else None)
        embeddings = "int8" if config is None else config.embeddings
        if embeddings != "none":
            convert_embeddings_to_qat(model, embeddings)
        load_qat_state_dict(model, torch.load(path, map_location="cpu", weights_only=True))
        set_qat_phase(model, "frozen")

    @classmethod
    def prepare_for_export(cls, model: nn.Module, config: QuantizationConfig | None) -> ExportFacts:
        """Fold fake-quant layers and embeddings back into plain ones; their observed ranges and the embedding tables
        trained int8 go to the int8 route."""
        quantized = list(qat_modules(model))
        ranges = remove_qat(model)
        tables = {f"{name}.weight": fmt for name, fmt in remove_embedding_qat(model).items()}
        artifacts = {"qat_layers": quantized, "qat_ranges": ranges, "qat_embedding_tables": tables}
        return ExportFacts(artifacts=artifacts if quantized else {})

    @classmethod
    def reference_note(cls, model: nn.Module, config: QuantizationConfig | None) -> str | None:
        if any(m.fake_quant_enabled for m in qat_modules(model).values()):
            return "PyTorch with fake quantization (QAT)"
        return None


@register_technique
class QATCallback(Technique):
    """Quantization-aware training on a schedule counted in optimizer steps.

    ``QATCallback(start_epoch=2.5, freeze_observers_epoch=2.8)`` or ``QATCallback(QuantizationConfig(...))``.
    The targeted linears become (inert) fake-quant layers when the Trainer is built, before the optimizer; from
    ``start`` they fake-quantize weights and inputs and observe input ranges, from ``freeze_observers`` the ranges
    (hence the scales) are fixed. Observer state is saved in every checkpoint (``quantization_state.pt``), restored
    on resume and kept beside the final model (``hf-compress export --int8 qat`` reads it); ``qat_active``,
    ``qat_observers_frozen`` and the mean input scale are logged; ``quantization_report.{json,md}`` lists each
    layer's range, scale and zero point. ``reduce_range="auto"`` is decided once, on this machine, when the layers
    are converted (7-bit weights exactly when its int8 kernel saturates) and kept in the QAT state, which the
    ``qat`` export follows.
    """

    name = "quantization"
    config_class = QuantizationConfig
    export_side = QATExport
    order = 30
    report_name = "quantization_report"
    keeps_state_with_model = True

    def __init__(self, config: QuantizationConfig | None = None, **settings: Any):
        super().__init__(config, **settings)
        self.start_step, self.freeze_step = 0, None
        self.steps_per_epoch = 0.0
        self.phase = "off"

    @classmethod
    def example_config(cls) -> QuantizationConfig:
        return QuantizationConfig(start_step=1, freeze_observers_step=4)

    @classmethod
    def capabilities(cls, config: QuantizationConfig) -> dict[str, str]:
        return {"qat": "quantization"}

    def prepare(self, model: nn.Module) -> None:
        reduce_range = resolve_reduce_range(self.config.reduce_range)
        c = self.config
        convert_to_qat(model, c.targets, c.averaging_constant, reduce_range)  # bad targets fail here
        if c.embeddings != "none":
            convert_embeddings_to_qat(model, c.embeddings)
        if reduce_range:
            logger.info("QAT: 7-bit weights (reduce_range), levels [-64, 64]")

    def schedule(self, steps_per_epoch: float) -> None:
        c = self.config
        self.start_step = optimizer_steps(c.start_epoch, c.start_step, steps_per_epoch)
        self.freeze_step = optimizer_steps(c.freeze_observers_epoch, c.freeze_observers_step, steps_per_epoch)
        self.steps_per_epoch = steps_per_epoch

    def schedule_problems(self, total_steps: int) -> list[str]:
        """The optimizer step after ``start_step`` steps is the first fake-quantized one (the first frozen one after
        ``freeze_step``): a point at or after the run's ``total_steps`` is never reached."""
        never = {
            "start": "QAT never starts: the model trains without fake quantization ('qat' exports have no ranges)",
            "freeze_observers": "the observers never freeze: no step trains with the scales the int8 model uses",
        }
        for point, step in (("start", self.start_step), ("freeze_observers", self.freeze_step)):
            if step is not None and step >= total_steps:
                epoch = getattr(self.config, f"{point}_epoch")
                key = f"quantization.{point}_{'epoch' if epoch is not None else 'step'}"
                given = f" (epoch {epoch:g} at {self.steps_per_epoch:g} steps per epoch)" if epoch is not None else ""
                return [
                    f"{key}: needs optimizer step {step + 1}{given}, after this run's last step {total_steps}: "
                    + never[point]
                ]
        return []

    def _enter_phase(self, step: int) -> None:
        phase = qat_phase(step, self.start_step, self.freeze_step)
        if phase != self.phase:
            if phase == "frozen":
                synchronize_observers(self.model)
            set_qat_phase(self.model, phase)
            logger.info(f"QAT: {phase} from optimizer step {step}")
            self.phase = phase

    def begin(self, step: int) -> None:
        self.phase = "off"
        set_qat_phase(self.model, "off")
        self._enter_phase(step)

    def has_state(self) -> bool:
        return self.model is not None

    def state_dict(self) -> dict[str, Any]:
        return qat_state_dict(self.model)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_qat_state_dict(self.model, state)

    def state_missing(self, path: str, step: int) -> None:
        if step >= self.start_step:
            logger.warning(f"{path} not found: QAT observers restart from the next batch")

    def on_step_begin(self, args, state, control, **kwargs):
        self._enter_phase(state.global_step)  # the phase of the optimizer step about to run

    def on_step_end(self, args, state, control, **kwargs):
        if self.phase == "observing":
            synchronize_observers(self.model)

    def log_values(self, step: int) -> dict[str, float]:
        values = {"qat_active": float(self.phase != "off"), "qat_observers_frozen": float(self.phase == "frozen")}
        scales = [m.activation_qparams()[0] for m in qat_modules(self.model).values() if bool(m.observed)]
        if scales:
            values["qat_mean_input_scale"] = round(float(torch.stack(scales).mean()), 6)
        return values

    def report(self) -> dict[str, Any] | None:
        layers = []
        for name, m in qat_modules(self.model).items():
            scale, zero_point = m.activation_qparams()
            observed = bool(m.observed)
            layers.append(
                {
                    "layer": name,
                    "observed": observed,
                    "input_min": float(m.activation_min) if observed else None,
                    "input_max": float(m.activation_max) if observed else None,
                    "input_scale": float(scale) if observed else None,
                    "input_zero_point": int(zero_point) if observed else None,
                    "weight_levels": 64 if m.reduce_range else 127,
                }
            )
        return {"phase": self.phase, "start_step": self.start_step, "freeze_step": self.freeze_step, "layers": layers}

    def report_markdown(self, report: dict[str, Any]) -> str:
        def number(value: float | None) -> str:
            return "-" if value is None else f"{value:.4g}"

        rows = [
            (
                r["layer"],
                f"[{number(r['input_min'])}, {number(r['input_max'])}]",
                number(r["input_scale"]),
                "-" if r["input_zero_point"] is None else r["input_zero_point"],
                f"[-{r['weight_levels']}, {r['weight_levels']}]",
            )
            for r in report["layers"]
        ]
        return markdown_table(("layer", "input range", "input scale", "zero point", "weight levels"), rows)
