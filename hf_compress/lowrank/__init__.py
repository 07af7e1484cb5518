"""Low-rank reparameterization: linears replaced by the two factors of their truncated SVD.

``config.py`` is the recipe block, ``layers.py`` the torch mechanics (``LowRankLinear``, rank choice, save/load,
merge), ``technique.py`` the callback.
"""

from .config import LowRankConfig
from .layers import (
    LowRankLinear,
    apply_lowrank_structure,
    break_even_rank,
    choose_rank,
    default_targets,
    factorize_linear,
    factorize_model,
    is_factorized,
    lowrank_report,
    lowrank_table,
    merge_lowrank,
)
from .loading import load_lowrank
from .technique import LowRankCallback

__all__ = [
    "LowRankCallback",
    "LowRankConfig",
    "LowRankLinear",
    "apply_lowrank_structure",
    "break_even_rank",
    "choose_rank",
    "default_targets",
    "factorize_linear",
    "factorize_model",
    "is_factorized",
    "load_lowrank",
    "lowrank_report",
    "lowrank_table",
    "merge_lowrank",
]
