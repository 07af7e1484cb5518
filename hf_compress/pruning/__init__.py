"""Pruning: gradual magnitude pruning (Zhu & Gupta, 2017) of single weights, FFN neurons or attention heads
during training, and narrower students pruned once before it (hidden width, heads, FFN width; Muralidharan et al.,
2024), ranked by weight magnitudes or by activations.

``config.py`` is the recipe block, ``masks.py`` the schedule and masks, ``removal.py`` the physical removal of
pruned heads and neurons (found by :mod:`hf_compress.structures`) and the sparsity report, ``technique.py`` the
callback that maps training onto them; ``width.py`` finds and removes residual channels, ``importance.py`` measures
activation importance and block influence, ``width_step.py`` is the recipe's ``model.student.width`` step.
"""

from ..configs import WidthConfig
from .config import PruningConfig
from .hidden import HiddenWidthPruner, remove_dead_channels
from .importance import ActivationImportance, block_influence, collect_importance
from .masks import MagnitudePruner, cubic_sparsity
from .removal import remove_pruned_structures, sparsity_report, sparsity_table
from .technique import GradualPruningCallback
from .width import masked_layer_norm, prune_hidden_width, residual_channels
from .width_step import calibration_batches, narrow_student, prune_ffn_width

__all__ = [
    "ActivationImportance",
    "GradualPruningCallback",
    "HiddenWidthPruner",
    "MagnitudePruner",
    "PruningConfig",
    "WidthConfig",
    "block_influence",
    "calibration_batches",
    "collect_importance",
    "cubic_sparsity",
    "masked_layer_norm",
    "narrow_student",
    "prune_ffn_width",
    "prune_hidden_width",
    "remove_dead_channels",
    "remove_pruned_structures",
    "residual_channels",
    "sparsity_report",
    "sparsity_table",
]
