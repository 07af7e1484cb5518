"""hf-compress: distillation, pruning, quantization-aware training and Optimum export for the HF Trainer."""

from .callbacks import GradualPruningCallback, LowRankCallback, QATCallback
from .distillation import (
    DistillationLoss,
    attention_loss,
    distillation_loss,
    hidden_state_loss,
    soft_target_loss,
    student_from_teacher,
)
from .export import export_model
from .lowrank import factorize_linear, load_lowrank, merge_lowrank
from .pipeline import run_recipe
from .pruning import MagnitudePruner, cubic_sparsity, remove_pruned_structures, sparsity_report
from .quantization import convert_to_qat, remove_qat
from .recipe import (
    CalibrationConfig,
    DataConfig,
    DistillationConfig,
    ExportConfig,
    LayerLossConfig,
    LowRankConfig,
    ModelConfig,
    PruningConfig,
    QuantizationConfig,
    Recipe,
    RecipeError,
    StudentConfig,
)
from .trainer import CompressionTrainer

__version__ = "0.1.0"

__all__ = [
    "CalibrationConfig",
    "CompressionTrainer",
    "DataConfig",
    "DistillationConfig",
    "DistillationLoss",
    "ExportConfig",
    "GradualPruningCallback",
    "LayerLossConfig",
    "LowRankCallback",
    "LowRankConfig",
    "MagnitudePruner",
    "ModelConfig",
    "PruningConfig",
    "QATCallback",
    "QuantizationConfig",
    "Recipe",
    "RecipeError",
    "StudentConfig",
    "attention_loss",
    "convert_to_qat",
    "cubic_sparsity",
    "export_model",
    "factorize_linear",
    "load_lowrank",
    "merge_lowrank",
    "distillation_loss",
    "hidden_state_loss",
    "remove_pruned_structures",
    "remove_qat",
    "run_recipe",
    "soft_target_loss",
    "sparsity_report",
    "student_from_teacher",
]
