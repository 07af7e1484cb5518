"""LayerDropCallback: skip whole transformer layers at random in training, on a ramped schedule."""

from __future__ import annotations

import os
import types
from typing import Any

import torch
from torch import nn
from transformers.utils import logging

from hf_compress import ExportFacts, Technique, TechniqueExport, register_technique
from hf_compress.architectures import describe as describe_architecture
from hf_compress.architectures import weight_layers
from hf_compress.configs import RecipeError
from hf_compress.modules import SettingError
from hf_compress.tables import markdown_table
from hf_compress.technique import optimizer_steps

from .config import LayerDropConfig

logger = logging.get_logger(__name__)

__all__ = ["LayerDropCallback", "layerdrop_rate"]


def layerdrop_rate(step: int, drop_rate: float, start: int, end: int | None) -> float:
    """The probability a layer is skipped at optimizer ``step``: 0 before ``start``, ``drop_rate`` from ``end`` on
    (from ``start`` on without an ``end``), linear in between."""
    if step < start:
        return 0.0
    if end is None or step >= end:
        return drop_rate
    return drop_rate * (step - start) / (end - start)


def _forward(layer: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """The forward pass of a layer under LayerDrop: its input, unchanged, when it is skipped in training."""
    if not (layer.training and layer._layerdrop_skip):
        return type(layer).forward(layer, *args, **kwargs)
    hidden_states = args[0] if args else kwargs["hidden_states"]
    if layer._layerdrop_returns_tuple is None:  # learn the form of its output, without gradients, dropout or state
        with torch.no_grad():
            layer.train(False)
            try:
                output = type(layer).forward(layer, *args, **kwargs)
            finally:
                layer.train(True)
        layer._layerdrop_returns_tuple = isinstance(output, tuple)
    if not layer._layerdrop_returns_tuple:  # transformers 5: the hidden states
        return hidden_states
    return (hidden_states, None) if kwargs.get("output_attentions") else (hidden_states,)  # transformers 4


def _wrap(layer: nn.Module) -> None:
    if "_layerdrop_skip" not in layer.__dict__:
        layer._layerdrop_skip = False
        layer._layerdrop_returns_tuple = None
        layer.forward = types.MethodType(_forward, layer)


def _unwrap(layer: nn.Module) -> bool:
    if "_layerdrop_skip" not in layer.__dict__:
        return False
    for attribute in ("_layerdrop_skip", "_layerdrop_returns_tuple", "forward"):
        layer.__dict__.pop(attribute, None)
    return True


class LayerDropExport(TechniqueExport):
    """The export half of LayerDrop: the export copy runs every layer; the report and card say how it was trained."""

    @classmethod
    def prepare_for_export(cls, model: nn.Module, config: LayerDropConfig | None) -> ExportFacts:
        """Every layer runs in the export: the LayerDrop wrappers of a model trained here are removed (a model loaded
        from a folder has none). The report says how many layers LayerDrop trained, from ``config`` (else from the
        wrappers found)."""
        try:
            layers = weight_layers(model)
        except ValueError:  # no transformer layers: nothing of LayerDrop's here
            return ExportFacts()
        unwrapped = sum(_unwrap(layer) for _, layer in layers)
        if config is None and not unwrapped:
            return ExportFacts()
        trained = unwrapped if config is None else len(config.layers or layers)
        rate = None if config is None else config.drop_rate
        return ExportFacts(report={"drop_rate": rate, "layers": len(layers), "layers_trained_with_layerdrop": trained})

    @classmethod
    def restore_saved(cls, model: nn.Module, folder: str | os.PathLike, config: LayerDropConfig | None) -> None:
        """Nothing: the saved weights are the whole model."""

    @classmethod
    def card_tags(cls, report: dict[str, Any]) -> list[str]:
        return ["layerdrop"] if report else []

    @classmethod
    def card_section(cls, report: dict[str, Any]) -> list[str]:
        if not report:
            return []
        rate = "" if report["drop_rate"] is None else f" with probability up to {report['drop_rate']:g}"
        return [
            "## LayerDrop",
            "",
            f"Trained with LayerDrop (Fan et al., 2019): {report['layers_trained_with_layerdrop']} of its "
            f"{report['layers']} transformer layers were skipped at random{rate}; all of them run in this model.",
        ]


@register_technique
class LayerDropCallback(Technique):
    """LayerDrop on a schedule counted in optimizer steps: ``LayerDropCallback(drop_rate=0.2, start_epoch=0,
    end_epoch=1)`` or ``LayerDropCallback(LayerDropConfig(...))``.

    The layers are found from the architecture description (:func:`hf_compress.architectures.weight_layers`); an
    architecture whose depths share one layer's weights (ALBERT) is refused. At the start of every optimizer step
    each candidate layer is skipped with the step's probability (a ``torch.Generator`` seeded with ``seed`` and the
    step); a skipped layer returns its input. ``layerdrop_rate`` and ``layerdrop_skipped`` are logged; the state
    (how often each layer was skipped) is saved in checkpoints; ``layerdrop_report.{json,md}`` lists it. Evaluation,
    the saved model and the export run every layer. With gradient checkpointing under DDP, set
    ``ddp_find_unused_parameters: true`` (a skipped layer's parameters get no gradient that step).
    """

    name = "layerdrop"
    config_class = LayerDropConfig
    export_side = LayerDropExport
    order = 5  # wraps whole layers: before the techniques that change the linears inside them
    report_name = "layerdrop_report"

    def __init__(self, config: LayerDropConfig | None = None, **settings: Any):
        super().__init__(config, **settings)
        self.layers: list[tuple[int, str, nn.Module]] = []
        self.start_step, self.end_step = 0, None
        self.skipped = torch.zeros(0, dtype=torch.long)
        self.steps = 0

    @classmethod
    def example_config(cls) -> LayerDropConfig:
        return LayerDropConfig(drop_rate=0.5, start_step=0, end_step=2)

    @classmethod
    def check_recipe(cls, recipe: Any) -> None:
        distillation = getattr(recipe, "distillation", None)
        if distillation is not None and distillation.attentions is not None:
            raise RecipeError(
                "layerdrop",
                "set",
                "does not compose with distillation.attentions: a skipped layer has no attention map to match; "
                "remove one of the two",
            )

    def describe(self) -> str:
        return f"LayerDrop {self.config.drop_rate:g}"

    # --------------------------------------------------------------------------------------------- training
    def prepare(self, model: nn.Module) -> None:
        architecture = describe_architecture(model)
        if architecture.shared_layers:
            raise SettingError(
                "layers", architecture.name, f"{architecture.name} shares one layer's weights across its depths"
            )
        found = weight_layers(model)
        chosen = self.config.layers if self.config.layers is not None else range(len(found))
        for index in chosen:
            if index >= len(found):
                raise SettingError("layers", index, f"the model has {len(found)} layers: allowed 0..{len(found) - 1}")
        self.layers = [(index, found[index][0], found[index][1]) for index in sorted(chosen)]
        for _, _, layer in self.layers:
            _wrap(layer)
        self.skipped = torch.zeros(len(self.layers), dtype=torch.long)
        self.steps = 0

    def schedule(self, steps_per_epoch: float) -> None:
        c = self.config
        self.start_step = optimizer_steps(c.start_epoch, c.start_step, steps_per_epoch) or 0
        self.end_step = optimizer_steps(c.end_epoch, c.end_step, steps_per_epoch)

    def rate(self, step: int) -> float:
        return layerdrop_rate(step, self.config.drop_rate, self.start_step, self.end_step)

    def draw(self, step: int) -> torch.Tensor:
        """Which candidate layers are skipped at optimizer ``step`` (a function of ``seed`` and ``step`` alone)."""
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + step)
        return torch.rand(len(self.layers), generator=generator) < self.rate(step)

    def on_step_begin(self, args, state, control, **kwargs):
        skip = self.draw(state.global_step)
        for (_, _, layer), skipped in zip(self.layers, skip.tolist(), strict=True):
            layer._layerdrop_skip = skipped
        self.skipped += skip.long()
        self.steps += 1

    def has_state(self) -> bool:
        return self.model is not None

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped.clone(), "steps": torch.tensor(self.steps)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["skipped"].shape != self.skipped.shape:
            raise ValueError(f"LayerDrop state for {len(state['skipped'])} layers, this model has {len(self.layers)}")
        self.skipped = state["skipped"].clone()
        self.steps = int(state["steps"])

    def log_values(self, step: int) -> dict[str, float]:
        skipped = sum(bool(layer._layerdrop_skip) for _, _, layer in self.layers)
        return {"layerdrop_rate": round(self.rate(max(step - 1, 0)), 4), "layerdrop_skipped": float(skipped)}

    def report(self) -> dict[str, Any]:
        steps = max(self.steps, 1)
        return {
            "drop_rate": self.config.drop_rate,
            "start_step": self.start_step,
            "end_step": self.end_step,
            "steps": self.steps,
            "layers": [
                {"layer": name, "index": index, "skipped_steps": int(n), "skipped_fraction": int(n) / steps}
                for (index, name, _), n in zip(self.layers, self.skipped.tolist(), strict=True)
            ],
        }

    def report_markdown(self, report: dict[str, Any]) -> str:
        rows = [(r["layer"], r["skipped_steps"], f"{100 * r['skipped_fraction']:.1f}%") for r in report["layers"]]
        return markdown_table(("layer", f"skipped steps (of {report['steps']})", "skipped"), rows)

    def finish(self, model: nn.Module) -> None:
        for _, _, layer in self.layers:  # the trained model runs every layer from here on
            layer._layerdrop_skip = False
