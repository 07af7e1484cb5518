"""Gradual magnitude pruning (Zhu & Gupta, 2017): unstructured, FFN neurons or attention heads.

``config.py`` is the recipe block, ``masks.py`` the schedule and masks, ``removal.py`` the physical removal of
pruned heads and neurons (found by :mod:`hf_compress.structures`) and the sparsity report, ``technique.py`` the
callback that maps training onto them.
"""

from .config import PruningConfig
from .masks import MagnitudePruner, cubic_sparsity
from .removal import remove_pruned_structures, sparsity_report, sparsity_table
from .technique import GradualPruningCallback

__all__ = [
    "GradualPruningCallback",
    "MagnitudePruner",
    "PruningConfig",
    "cubic_sparsity",
    "remove_pruned_structures",
    "sparsity_report",
    "sparsity_table",
]
