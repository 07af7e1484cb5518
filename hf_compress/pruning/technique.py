"""GradualPruningCallback: the training schedule -> :class:`~hf_compress.pruning.masks.MagnitudePruner`."""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers.utils import logging

from ..architectures import weight_layers
from ..configs import RecipeError
from ..tables import markdown_table
from ..technique import ExportFacts, Technique, TechniqueExport, optimizer_steps, register_technique
from .config import PruningConfig
from .hidden import HiddenWidthPruner, remove_dead_channels
from .masks import MagnitudePruner, cubic_sparsity
from .removal import remove_pruned_structures, sparsity_report, sparsity_table

logger = logging.get_logger(__name__)

__all__ = ["GradualPruningCallback"]


class PruningExport(TechniqueExport):
    """The export half of pruning: slice out the zero heads and neurons of the export copy, report the sparsity, and
    the model card's lines."""

    @classmethod
    def prepare_for_export(cls, model: nn.Module, config: PruningConfig | None) -> ExportFacts:
        """Slice out the residual channels a hidden block zeroed, then all-zero FFN neurons and attention heads
        (``removed_structures``); report the sparsity."""
        narrowed = _widths(remove_dead_channels(model))
        removed = remove_pruned_structures(model, loadable=False)  # the export copy: sliced for a smaller graph
        if narrowed:
            removed["width"] = narrowed
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

    Several blocks, each on its own schedule (a list of configs; in a recipe a list under ``pruning:``), prune
    different structures in one run: e.g. attention heads and FFN neurons, both removed physically. Two blocks
    may not prune the same structure (unstructured blocks may, on disjoint ``targets``).
    """

    name = "pruning"
    config_class = PruningConfig
    export_side = PruningExport
    order = 20
    report_name = "sparsity_report"
    repeatable = True

    def __init__(self, config: PruningConfig | list[PruningConfig] | None = None, **settings: Any):
        super().__init__(config, **settings)
        self.blocks: list[PruningConfig] = self.config if isinstance(self.config, list) else [self.config]
        check_blocks(self.blocks)
        self.pruners: list[MagnitudePruner | HiddenWidthPruner] = []
        self.ramps: list[tuple[int, int]] = [(0, 0)] * len(self.blocks)  # (start, end) optimizer steps per block
        self.steps_per_epoch = 0.0
        self.step = 0  # the last optimizer step seen

    @property
    def pruner(self) -> MagnitudePruner | None:
        """The masks of the first (or only) block."""
        return self.pruners[0] if self.pruners else None

    @classmethod
    def example_config(cls) -> PruningConfig:
        return PruningConfig(final_sparsity=0.5, start_step=0, end_step=4, update_every=1)

    @classmethod
    def capabilities(cls, config: PruningConfig | list[PruningConfig]) -> dict[str, str]:
        needs = {}
        for i, block in enumerate(config if isinstance(config, list) else [config]):
            if block.structure != "unstructured":
                key = f"pruning.{i}.structure" if isinstance(config, list) else "pruning.structure"
                needs[CAPABILITY[block.structure]] = key
        return needs

    @classmethod
    def check_recipe(cls, recipe: Any) -> None:
        if isinstance(recipe.pruning, list):
            check_blocks(recipe.pruning)

    def describe(self) -> str:
        return ", ".join(f"{b.structure} sparsity {b.final_sparsity:g}" for b in self.blocks)

    # --------------------------------------------------------------------------------------------- schedule
    def target_sparsity(self, step: int, block: int = 0) -> float:
        """The schedule's sparsity of block ``block`` after ``step`` optimizer steps."""
        c, (start, end) = self.blocks[block], self.ramps[block]
        return cubic_sparsity(step, c.initial_sparsity, c.final_sparsity, start, end)

    @property
    def start_step(self) -> int:
        return min(start for start, _ in self.ramps)

    @property
    def end_step(self) -> int:
        return max(end for _, end in self.ramps)

    def schedule(self, steps_per_epoch: float) -> None:
        self.ramps = [
            (
                optimizer_steps(c.start_epoch, c.start_step, steps_per_epoch),
                optimizer_steps(c.end_epoch, c.end_step, steps_per_epoch),
            )
            for c in self.blocks
        ]
        self.steps_per_epoch = steps_per_epoch

    def schedule_problems(self, total_steps: int) -> list[str]:
        problems = []
        for block, (c, (_, end)) in enumerate(zip(self.blocks, self.ramps, strict=True)):
            if end <= total_steps:
                continue
            prefix = f"pruning.{block}" if len(self.blocks) > 1 else "pruning"
            key = f"{prefix}.end_epoch" if c.end_epoch is not None else f"{prefix}.end_step"
            given = (
                f" (epoch {c.end_epoch:g} at {self.steps_per_epoch:g} steps per epoch)"
                if c.end_epoch is not None
                else ""
            )
            problems.append(
                f"{key}: the pruning ramp ends at optimizer step {end}{given}, after this run's last step "
                f"{total_steps}: the sparsity reaches at most {self.target_sparsity(total_steps, block):.3g}, not "
                f"final_sparsity {c.final_sparsity:g}"
            )
        return problems

    def _should_update(self, step: int, block: int) -> bool:
        start, end = self.ramps[block]
        if step < start or step > end:
            return False
        return (step - start) % self.blocks[block].update_every == 0 or step == end

    def _update(self, step: int) -> None:
        for block, pruner in enumerate(self.pruners):
            if self._should_update(step, block):
                pruner.update(self.target_sparsity(step, block))
                pruner.broadcast()

    # --------------------------------------------------------------------------------------------- hooks
    def prepare(self, model: nn.Module) -> None:
        # bad targets fail here, before training
        self.pruners = [
            (HiddenWidthPruner if c.structure == "hidden" else MagnitudePruner)(model, c) for c in self.blocks
        ]
        owners: dict[int, int] = {}
        for i, pruner in enumerate(self.pruners):
            if isinstance(pruner, HiddenWidthPruner):  # its masks have names of their own
                continue
            for module, _ in pruner.masked_parameters():
                if owners.setdefault(id(module), i) != i:
                    raise RecipeError(
                        f"pruning.{i}.targets", self.blocks[i].targets, f"disjoint from block {owners[id(module)]}'s"
                    )

    def begin(self, step: int) -> None:
        self.step = step
        if step == 0:
            self._update(0)

    def has_state(self) -> bool:
        return bool(self.pruners)

    def state_dict(self) -> dict[str, Any]:
        if len(self.pruners) == 1:
            return self.pruners[0].state_dict()
        return {"blocks": [p.state_dict() for p in self.pruners]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        states = state["blocks"] if "blocks" in state else [state]
        if len(states) != len(self.pruners):
            raise ValueError(f"the pruning state holds {len(states)} block(s), the recipe {len(self.pruners)}")
        for pruner, block_state in zip(self.pruners, states, strict=True):
            pruner.load_state_dict(block_state)

    def state_missing(self, path: str, step: int) -> None:
        if step >= self.start_step:
            logger.warning(f"{path} not found: pruning masks rebuilt from the zeros of the loaded weights")
            for pruner in self.pruners:
                pruner.masks_from_zeros()

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        for pruner in self.pruners:
            pruner.mask_gradients()

    def on_optimizer_step(self, args, state, control, **kwargs):
        for pruner in self.pruners:
            pruner.apply()

    def on_step_end(self, args, state, control, **kwargs):
        self.step = state.global_step
        self._update(state.global_step)

    def log_values(self, step: int) -> dict[str, float]:
        values = {}
        for block, pruner in enumerate(self.pruners):
            suffix = "" if len(self.pruners) == 1 else f"_{self.blocks[block].structure}"
            per_layer = pruner.layer_sparsity()
            values[f"sparsity_target{suffix}"] = round(self.target_sparsity(step, block), 4)
            values[f"sparsity{suffix}"] = round(sum(per_layer.values()) / max(len(per_layer), 1), 4)
            values.update({f"sparsity{suffix}_layer_{layer}": round(v, 4) for layer, v in per_layer.items()})
        return values

    def report(self) -> dict[str, Any]:
        report = sparsity_report(self.pruners[0].model)
        if len(self.blocks) == 1:
            report["target_sparsity"] = self.target_sparsity(self.step)
            report["structure"] = self.blocks[0].structure
            report["importance"] = self.blocks[0].importance
        else:
            report["target_sparsity"] = {
                b.structure: self.target_sparsity(self.step, i) for i, b in enumerate(self.blocks)
            }
            report["structure"] = [b.structure for b in self.blocks]
            report["importance"] = [b.importance for b in self.blocks]
        return report

    def report_markdown(self, report: dict[str, Any]) -> str:
        return sparsity_table(report)

    def compact(self, model: nn.Module) -> None:
        for pruner in self.pruners:
            if isinstance(pruner, HiddenWidthPruner):
                pruner.remove_hooks()
                logger.info(f"removed pruned channels: {_widths(remove_dead_channels(model))}")
        if any(b.structure != "unstructured" for b in self.blocks):
            logger.info(f"removed pruned structures: {remove_pruned_structures(model, loadable=True)}")


#: The architecture capability each structure needs.
CAPABILITY = {"neurons": "neuron_pruning", "heads": "head_pruning", "hidden": "width_pruning"}


def _widths(report: dict | None) -> dict | None:
    return None if report is None else {k: report[k] for k in ("hidden_size", "heads_per_layer")}


def check_blocks(blocks: list[PruningConfig]) -> None:
    """Several pruning blocks must prune different structures (unstructured ones: explicit, disjoint targets)."""
    seen: dict[str, int] = {}
    for i, block in enumerate(blocks):
        if block.structure in seen and (block.structure != "unstructured" or not block.targets):
            raise RecipeError(
                f"pruning.{i}.structure",
                block.structure,
                f"block {seen[block.structure]} prunes {block.structure} already: one block per structure "
                "(several unstructured blocks need disjoint targets)",
            )
        seen.setdefault(block.structure, i)
    if "hidden" in seen and "heads" in seen:
        raise RecipeError(
            f"pruning.{seen['heads']}.structure",
            "heads",
            f"block {seen['hidden']} prunes the hidden width, which keeps the heads that fit it (width / head size "
            "per layer): drop the heads block",
        )


def _sparse(report: dict[str, Any]) -> bool:
    return bool(report.get("sparsity")) and report["sparsity"]["total"].get("sparsity", 0) > 0
