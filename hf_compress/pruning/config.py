"""The ``pruning`` recipe block."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..checks import MAX_EPOCHS, checked, count, number, text
from ..configs import RecipeError, check_range, check_schedule

__all__ = ["PruningConfig"]


@checked
@dataclass
class PruningConfig:
    """Gradual magnitude pruning (Zhu & Gupta, 2017, "To prune, or not to prune").

    Sparsity follows the cubic schedule ``s_t = s_f + (s_i - s_f) * (1 - (t - t_0) / (t_end - t_0))^3`` between
    ``start`` and ``end`` (flat before and after), counted in optimizer steps; masks are recomputed every
    ``update_every`` optimizer steps and applied after every one.

    Attributes:
        structure: ``unstructured`` (single weights), ``neurons`` (FFN neurons: a row of the FFN input, two of a
            gated one, with the matching column of the FFN output) or ``heads`` (attention heads: their q/k/v rows,
            fused or not, and output columns), found in every layer from the architecture description
            (:mod:`hf_compress.architectures`), or ``hidden`` (residual channels: the hidden width, with the heads
            that fit it, :mod:`hf_compress.pruning.hidden`; ``final_sparsity`` must leave a multiple of the head
            size, and no ``heads`` block may run beside it).
        final_sparsity: s_f, the fraction of weights (unstructured) or units (neurons, heads, channels) pruned at
            the end.
        initial_sparsity: s_i, the fraction pruned at ``start``.
        start_epoch / end_epoch / start_step / end_step: the ramp, in (fractional) epochs or in optimizer steps
            (one unit, not both).
        update_every: recompute masks every this many optimizer steps during the ramp.
        scope: ``per_layer`` (every layer pruned to the same sparsity) or ``global`` (one ranking across layers).
            Neurons are always per layer: a config has a single ``intermediate_size``, so every FFN block must keep
            the same number of neurons to load with plain ``from_pretrained`` after physical removal.
        targets: ``fnmatch`` patterns of module names to prune (unstructured); default: every ``nn.Linear`` inside
            the transformer layers (embeddings, LayerNorm, pooler and task head excluded).
        norm: the norm that scores a structure by its weights: ``l1`` or ``l2``.
        importance: how heads and neurons are ranked: ``magnitude`` (the ``norm`` of their weights) or
            ``activation`` (Muralidharan et al., 2024: each unit's mean activation magnitude over a batch's real
            tokens, L2 over the training examples seen since the last mask update; heads by the L2 norm of their
            output). Unstructured pruning ranks single weights by magnitude.
    """

    final_sparsity: float = field(default=0.5, metadata=number(0.0, 1.0, high_open=True))
    structure: Literal["unstructured", "neurons", "heads", "hidden"] = "unstructured"
    initial_sparsity: float = field(default=0.0, metadata=number(0.0, 1.0, high_open=True))
    start_epoch: float | None = field(default=None, metadata=number(0.0, MAX_EPOCHS))
    end_epoch: float | None = field(default=None, metadata=number(0.0, MAX_EPOCHS))
    start_step: int | None = field(default=None, metadata=count(0))
    end_step: int | None = field(default=None, metadata=count(0))
    update_every: int = field(default=100, metadata=count())
    scope: Literal["per_layer", "global"] = "per_layer"
    targets: list[str] | None = field(default=None, metadata=text("a module-name pattern"))
    norm: Literal["l1", "l2"] = "l2"
    importance: Literal["magnitude", "activation"] = "magnitude"

    def __post_init__(self) -> None:
        check_range("initial_sparsity", self.initial_sparsity, 0.0, self.final_sparsity)
        check_schedule(self, ("start", "end"), required=True)
        if self.structure == "neurons" and self.scope == "global":
            raise RecipeError("scope", "global", "neurons are pruned per layer (one intermediate_size per config)")
        if self.importance == "activation" and self.structure == "unstructured":
            raise RecipeError(
                "importance", self.importance, "activation importance ranks heads and neurons; unstructured: magnitude"
            )
        if self.targets is not None and self.structure != "unstructured":
            raise RecipeError(
                "targets",
                self.targets,
                "targets apply to unstructured pruning; structures are found in every transformer layer",
            )
