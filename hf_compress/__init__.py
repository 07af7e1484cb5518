"""hf-compress: distillation, pruning, quantization-aware training and Optimum export for the HF Trainer."""

from .callbacks import GradualPruningCallback
from .distillation import (
    DistillationLoss,
    attention_loss,
    distillation_loss,
    hidden_state_loss,
    soft_target_loss,
    student_from_teacher,
)
from .pipeline import run_recipe
from .pruning import MagnitudePruner, cubic_sparsity, remove_pruned_structures, sparsity_report
from .recipe import (
    DataConfig,
    DistillationConfig,
    LayerLossConfig,
    ModelConfig,
    PruningConfig,
    Recipe,
    RecipeError,
    StudentConfig,
)
from .trainer import CompressionTrainer

__version__ = "0.1.0"

__all__ = [
    "CompressionTrainer",
    "DataConfig",
    "DistillationConfig",
    "DistillationLoss",
    "GradualPruningCallback",
    "LayerLossConfig",
    "MagnitudePruner",
    "ModelConfig",
    "PruningConfig",
    "Recipe",
    "RecipeError",
    "StudentConfig",
    "attention_loss",
    "cubic_sparsity",
    "distillation_loss",
    "hidden_state_loss",
    "remove_pruned_structures",
    "run_recipe",
    "soft_target_loss",
    "sparsity_report",
    "student_from_teacher",
]
