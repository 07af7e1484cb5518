"""Gradual magnitude pruning (Zhu & Gupta, 2017): unstructured, FFN neurons or attention heads.

``config.py`` is the recipe block, ``masks.py`` the torch mechanics (schedule, masks, removal, report),
``technique.py`` the callback that maps training onto them.
"""

from .config import PruningConfig
from .masks import (
    MagnitudePruner,
    cubic_sparsity,
    remove_pruned_structures,
    sparsity_report,
    sparsity_table,
    structured_layers,
)
from .technique import GradualPruningCallback

__all__ = [
    "GradualPruningCallback",
    "MagnitudePruner",
    "PruningConfig",
    "cubic_sparsity",
    "remove_pruned_structures",
    "sparsity_report",
    "sparsity_table",
    "structured_layers",
]
