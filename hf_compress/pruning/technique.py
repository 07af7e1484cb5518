"""GradualPruningCallback: the training schedule -> :class:`~hf_compress.pruning.masks.MagnitudePruner`."""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers.utils import logging

from ..architectures import weight_layers
from ..tables import markdown_table
from ..technique import ExportFacts, Technique, optimizer_steps, register_technique
from .config import PruningConfig
from .masks import MagnitudePruner, cubic_sparsity
from .removal import remove_pruned_structures, sparsity_report, sparsity_table

logger = logging.get_logger(__name__)

__all__ = ["GradualPruningCallback"]


@register_technique
class GradualPruningCallback(Technique):
    """Gradual magnitude pruning on the cubic schedule, counted in optimizer steps.

    ``GradualPruningCallback(final_sparsity=0.8, start_epoch=0.5, end_epoch=2.5)`` or
    ``GradualPruningCallback(PruningConfig(...))``; see :class:`~hf_compress.pruning.PruningConfig` for the fields.
    Masks are recomputed every ``update_every`` optimizer steps during the ramp, gradients of pruned weights are
    zeroed before each optimizer step and the masks re-applied after it. Masks are saved in every checkpoint
    (``pruning_state.pt``) and restored on resume. Target and achieved sparsity (per layer) go to the logs; the
    final sparsity report is printed and saved as ``sparsity_report.{json,md}`` in ``output_dir``. At export, FFN
    neurons and attention heads whose weights are all zero are sliced out.
    """

    name = "pruning"
    config_class = PruningConfig
    order = 20
    report_name = "sparsity_report"

    def __init__(self, config: PruningConfig | None = None, **settings: Any):
        super().__init__(config, **settings)
        self.pruner: MagnitudePruner | None = None
        self.start_step = self.end_step = 0
        self.steps_per_epoch = 0.0
        self.step = 0  # the last optimizer step seen

    @classmethod
    def example_config(cls) -> PruningConfig:
        return PruningConfig(final_sparsity=0.5, start_step=0, end_step=4, update_every=1)

    @classmethod
    def capabilities(cls, config: PruningConfig) -> dict[str, str]:
        if config.structure == "unstructured":
            return {}
        return {f"{config.structure[:-1]}_pruning": "pruning.structure"}

    def describe(self) -> str:
        return f"{self.config.structure} sparsity {self.config.final_sparsity:g}"

    # --------------------------------------------------------------------------------------------- schedule
    def target_sparsity(self, step: int) -> float:
        """The schedule's sparsity after ``step`` optimizer steps."""
        c = self.config
        return cubic_sparsity(step, c.initial_sparsity, c.final_sparsity, self.start_step, self.end_step)

    def schedule(self, steps_per_epoch: float) -> None:
        c = self.config
        self.start_step = optimizer_steps(c.start_epoch, c.start_step, steps_per_epoch)
        self.end_step = optimizer_steps(c.end_epoch, c.end_step, steps_per_epoch)
        self.steps_per_epoch = steps_per_epoch

    def schedule_problems(self, total_steps: int) -> list[str]:
        c = self.config
        if self.end_step <= total_steps:
            return []
        key = "pruning.end_epoch" if c.end_epoch is not None else "pruning.end_step"
        given = (
            f" (epoch {c.end_epoch:g} at {self.steps_per_epoch:g} steps per epoch)" if c.end_epoch is not None else ""
        )
        return [
            f"{key}: the pruning ramp ends at optimizer step {self.end_step}{given}, after this run's last step "
            f"{total_steps}: the sparsity reaches at most {self.target_sparsity(total_steps):.3g}, not "
            f"final_sparsity {c.final_sparsity:g}"
        ]

    def _should_update(self, step: int) -> bool:
        if step < self.start_step or step > self.end_step:
            return False
        return (step - self.start_step) % self.config.update_every == 0 or step == self.end_step

    def _update(self, step: int) -> None:
        self.pruner.update(self.target_sparsity(step))
        self.pruner.broadcast()

    # --------------------------------------------------------------------------------------------- hooks
    def prepare(self, model: nn.Module) -> None:
        self.pruner = MagnitudePruner(model, self.config)  # bad targets fail here, before training

    def begin(self, step: int) -> None:
        self.step = step
        if step == 0 and self._should_update(0):
            self._update(0)

    def has_state(self) -> bool:
        return self.pruner is not None

    def state_dict(self) -> dict[str, Any]:
        return self.pruner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pruner.load_state_dict(state)

    def state_missing(self, path: str, step: int) -> None:
        if step >= self.start_step:
            logger.warning(f"{path} not found: pruning masks rebuilt from the zeros of the loaded weights")
            self.pruner.masks_from_zeros()

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.pruner.mask_gradients()

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.pruner.apply()

    def on_step_end(self, args, state, control, **kwargs):
        self.step = state.global_step
        if self._should_update(state.global_step):
            self._update(state.global_step)

    def log_values(self, step: int) -> dict[str, float]:
        values = {"sparsity_target": round(self.target_sparsity(step), 4)}
        per_layer = self.pruner.layer_sparsity()
        values["sparsity"] = round(sum(per_layer.values()) / max(len(per_layer), 1), 4)
        values.update({f"sparsity_layer_{layer}": round(value, 4) for layer, value in per_layer.items()})
        return values

    def report(self) -> dict[str, Any]:
        report = sparsity_report(self.pruner.model)
        report["target_sparsity"] = self.target_sparsity(self.step)
        report["structure"] = self.config.structure
        return report

    def report_markdown(self, report: dict[str, Any]) -> str:
        return sparsity_table(report)

    def compact(self, model: nn.Module) -> None:
        if self.config.structure != "unstructured":
            logger.info(f"removed pruned structures: {remove_pruned_structures(model, loadable=True)}")

    # --------------------------------------------------------------------------------------------- export
    @classmethod
    def prepare_for_export(cls, model: nn.Module) -> ExportFacts:
        """Slice out all-zero FFN neurons and attention heads (``removed_structures``); report the sparsity."""
        removed = remove_pruned_structures(model)
        try:
            weight_layers(model)
        except ValueError:  # a model without transformer layers: nothing to report
            return ExportFacts(report={"removed_structures": removed or None, "sparsity": None})
        return ExportFacts(report={"removed_structures": removed or None, "sparsity": sparsity_report(model)})

    @classmethod
    def card_tags(cls, report: dict[str, Any]) -> list[str]:
        return ["pruned"] if _sparse(report) else []

    @classmethod
    def card_section(cls, report: dict[str, Any]) -> list[str]:
        if not _sparse(report):
            return []
        sparsity = report["sparsity"]
        rows = [
            (r["layer"], f"{100 * r['sparsity']:.2f}%", r.get("heads", "-"), r.get("ffn_neurons", "-"))
            for r in sparsity["layers"]
        ]
        rows.append(("total (encoder linears)", f"{100 * sparsity['total']['sparsity']:.2f}%", "", ""))
        return ["## Sparsity", "", markdown_table(("layer", "sparsity", "heads", "FFN neurons"), rows)]


def _sparse(report: dict[str, Any]) -> bool:
    return bool(report.get("sparsity")) and report["sparsity"]["total"].get("sparsity", 0) > 0
