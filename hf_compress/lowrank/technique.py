"""LowRankCallback: factorize the targeted linears once, before the optimizer is built; report; merge on request."""

from __future__ import annotations

import os
from typing import Any

from torch import nn
from transformers.utils import logging

from ..configs import RecipeError
from ..tables import markdown_table
from ..technique import Technique, TechniqueExport, register_technique
from .config import LowRankConfig
from .embeddings import EMBEDDING_CONFIG_KEY, FactorizedEmbedding, factorize_embeddings, merge_embeddings
from .layers import (
    CONFIG_KEY,
    default_targets,
    factorize_model,
    is_factorized,
    lowrank_report,
    lowrank_table,
    merge_lowrank,
)
from .loading import load_lowrank

logger = logging.get_logger(__name__)

__all__ = ["LowRankCallback"]


class LowRankExport(TechniqueExport):
    """The loading half of low-rank factorization: a saved factorized model is rebuilt before its weights are read
    (the layers are merged back at the end of training, so the export copy has nothing to undo)."""

    @classmethod
    def load_pretrained(cls, path: str | os.PathLike, model_class: type, config: Any) -> nn.Module | None:
        """A model saved with factorized layers (its config names the ranks), else None."""
        saved = getattr(config, CONFIG_KEY, None) or getattr(config, EMBEDDING_CONFIG_KEY, None)
        return load_lowrank(path, model_class) if saved else None


@register_technique
class LowRankCallback(Technique):
    """SVD-factorize linears when the Trainer is built (before its optimizer), then train the factors.

    ``LowRankCallback(rank_ratio=0.5)`` or ``LowRankCallback(LowRankConfig(...))``. The per-layer report (rank,
    parameters and multiply-adds before and after) is logged and saved as ``lowrank_report.{json,md}`` in
    ``output_dir`` at the end of training; with ``merge=True`` the factors are folded back into dense layers then.
    It comes first in the surgery order, so that pruning and QAT see the factorized layers. The ranks are kept in
    the model config: such a model loads with :func:`~hf_compress.lowrank.load_lowrank` (or ``hf-compress``'s own
    loading), and exports as two MatMuls per factorized layer.
    """

    name = "lowrank"
    config_class = LowRankConfig
    export_side = LowRankExport
    order = 10
    report_name = "lowrank_report"

    def __init__(self, config: LowRankConfig | None = None, **settings: Any):
        super().__init__(config, **settings)
        self.factorization: dict | None = None

    @classmethod
    def example_config(cls) -> LowRankConfig:
        return LowRankConfig(rank=4)

    @classmethod
    def check_recipe(cls, recipe: Any) -> None:
        pruning = getattr(recipe, "pruning", None)
        linears = recipe.lowrank.factorizes_linears and recipe.lowrank.targets is None
        if linears and pruning is not None and pruning.structure == "neurons":
            raise RecipeError(
                "pruning.structure",
                "neurons",
                "cannot compose with the 'lowrank' block: FFN neurons are rows and columns of the FFN linears, "
                "which lowrank (by default) replaces by two factors; use structure: unstructured or heads, "
                "set lowrank.targets to other layers, or drop one of the two blocks",
            )

    @classmethod
    def capabilities(cls, config: LowRankConfig) -> dict[str, str]:
        return {"lowrank": "lowrank"}

    def describe(self) -> str:
        c = self.config
        rule = (
            f"rank {c.rank}" if c.rank else f"rank ratio {c.rank_ratio:g}" if c.rank_ratio else f"energy {c.energy:g}"
        )
        return f"low-rank ({rule})"

    def prepare(self, model: nn.Module) -> None:
        if self.model is not None:
            raise RuntimeError("LowRankCallback factorizes when the Trainer is built; the model was replaced since")
        c = self.config
        if c.factorizes_linears and not is_factorized(model):  # (a loaded factorized model trains as it is)
            rows = factorize_model(model, c.targets or default_targets(model), c.rank, c.rank_ratio, c.energy)
            self.factorization = lowrank_report(rows)
            logger.warning(f"Low-rank factorization:\n{lowrank_table(self.factorization)}")
        if c.embeddings is not None and not isinstance(model.get_input_embeddings(), FactorizedEmbedding):
            e = c.embeddings
            report = factorize_embeddings(model, e.rank, e.rank_ratio, e.energy)
            self.factorization = {**(self.factorization or lowrank_report([])), "embeddings": report}
            logger.warning(f"Factorized word embeddings: {report}")

    def report(self) -> dict | None:
        return self.factorization

    def report_markdown(self, report: dict[str, Any]) -> str:
        table = lowrank_table(report)
        embeddings = report.get("embeddings")
        if embeddings:
            table += "\n\n" + markdown_table(
                ("word embeddings", "shape", "rank", "params before", "params after", "relative error"),
                [
                    (
                        "factorized",
                        "x".join(map(str, embeddings["shape"])),
                        embeddings["rank"],
                        f"{embeddings['parameters_before']:,}",
                        f"{embeddings['parameters_after']:,}",
                        f"{embeddings['relative_error']:.4f}",
                    )
                ],
            )
        return table

    def finish(self, model: nn.Module) -> None:
        if self.config.merge:
            logger.info(f"merged {merge_lowrank(model)} factorized layers back into dense ones")
            merge_embeddings(model)
