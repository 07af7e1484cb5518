"""LowRankCallback: factorize the targeted linears once, before the optimizer is built; report; merge on request."""

from __future__ import annotations

import os

import torch
from transformers import TrainerCallback
from transformers.utils import logging

from ..configs import LowRankConfig
from ..files import atomic_write_json
from ..lowrank import default_targets, factorize_model, is_factorized, lowrank_report, lowrank_table, merge_lowrank

logger = logging.get_logger(__name__)

__all__ = ["LowRankCallback"]


class LowRankCallback(TrainerCallback):
    """SVD-factorize linears when the Trainer is built (before its optimizer), then train the factors.

    ``LowRankCallback(rank_ratio=0.5)`` or ``LowRankCallback(LowRankConfig(...))``. The per-layer report (rank,
    parameters and multiply-adds before and after) is logged and saved as ``lowrank_report.json`` in
    ``output_dir`` at the end of training; with ``merge=True`` the factors are folded back into dense layers then.
    Place it before pruning and QAT callbacks, so that they see the factorized layers (CompressionTrainer does).
    """

    def __init__(self, config: LowRankConfig | None = None, **kwargs):
        if config is not None and kwargs:
            raise ValueError("give a LowRankConfig or keyword arguments, not both")
        self.config = config if config is not None else LowRankConfig(**kwargs)
        self.model: torch.nn.Module | None = None
        self.report: dict | None = None

    def on_init_end(self, args, state, control, model=None, **kwargs):
        if model is None or model is self.model:
            return
        self.model = model
        if is_factorized(model):  # e.g. loaded with load_lowrank: train the factors as they are
            return
        c = self.config
        rows = factorize_model(model, c.targets or default_targets(model), c.rank, c.rank_ratio, c.energy)
        self.report = lowrank_report(rows)
        logger.warning(f"Low-rank factorization:\n{lowrank_table(self.report)}")

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if model is not None and model is not self.model:
            raise RuntimeError("LowRankCallback factorizes when the Trainer is built; the model was replaced since")

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.report is not None and state.is_world_process_zero:
            atomic_write_json(os.path.join(args.output_dir, "lowrank_report.json"), self.report)
        if self.config.merge and model is not None:
            logger.info(f"merged {merge_lowrank(model)} factorized layers back into dense ones")
