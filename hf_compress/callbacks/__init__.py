"""One thin ``TrainerCallback`` per technique: it maps training progress onto that technique's module.

They work with the plain ``transformers.Trainer``; ``CompressionTrainer`` builds them from a recipe.
"""

from .lowrank import LowRankCallback
from .pruning import GradualPruningCallback
from .quantization import QATCallback

__all__ = ["GradualPruningCallback", "LowRankCallback", "QATCallback"]
