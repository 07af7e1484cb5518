"""hf-compress: distillation, pruning, quantization-aware training and Optimum export for the HF Trainer."""

from .distillation import (
    DistillationLoss,
    attention_loss,
    distillation_loss,
    hidden_state_loss,
    soft_target_loss,
    student_from_teacher,
)
from .pipeline import run_recipe
from .recipe import DataConfig, DistillationConfig, LayerLossConfig, ModelConfig, Recipe, RecipeError, StudentConfig
from .trainer import CompressionTrainer

__version__ = "0.1.0"

__all__ = [
    "CompressionTrainer",
    "DataConfig",
    "DistillationConfig",
    "DistillationLoss",
    "LayerLossConfig",
    "ModelConfig",
    "Recipe",
    "RecipeError",
    "StudentConfig",
    "attention_loss",
    "distillation_loss",
    "hidden_state_loss",
    "run_recipe",
    "soft_target_loss",
    "student_from_teacher",
]
