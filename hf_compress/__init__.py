"""hf-compress: distillation, pruning, quantization-aware training and Optimum export for the HF Trainer.

Each technique is a package (``config.py``, its torch mechanics, ``technique.py``); importing it registers it
(:func:`~hf_compress.technique.register_technique`), which makes it a recipe block, a step of training and a
step of export.
"""

from .configs import CalibrationConfig, DataConfig, ExportConfig, ModelConfig, RecipeError, StudentConfig
from .distillation import (
    DistillationCallback,
    DistillationConfig,
    DistillationLoss,
    LayerLossConfig,
    attention_loss,
    distillation_loss,
    hidden_state_loss,
    soft_target_loss,
)
from .export import ExportData, export_model
from .lowrank import LowRankCallback, LowRankConfig, factorize_linear, load_lowrank, merge_lowrank
from .pipeline import run_recipe
from .pruning import (
    GradualPruningCallback,
    MagnitudePruner,
    PruningConfig,
    cubic_sparsity,
    remove_pruned_structures,
    sparsity_report,
)
from .quantization import QATCallback, QuantizationConfig, convert_to_qat, remove_qat
from .recipe import Recipe
from .stopping import StopOnSignal, TrainingStopped
from .students import student_from_teacher
from .technique import (
    API_VERSION,
    ExportFacts,
    Technique,
    TechniqueExport,
    TechniqueRegistrationError,
    register_technique,
    registered_techniques,
)
from .trainer import CompressionTrainer
from .vocabulary import VocabularyConfig, trim_vocabulary

__version__ = "0.1.0"

__all__ = [
    "CalibrationConfig",
    "CompressionTrainer",
    "DataConfig",
    "DistillationCallback",
    "DistillationConfig",
    "DistillationLoss",
    "ExportConfig",
    "ExportData",
    "API_VERSION",
    "ExportFacts",
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
    "StopOnSignal",
    "StudentConfig",
    "Technique",
    "TechniqueExport",
    "TechniqueRegistrationError",
    "TrainingStopped",
    "VocabularyConfig",
    "attention_loss",
    "convert_to_qat",
    "cubic_sparsity",
    "distillation_loss",
    "export_model",
    "factorize_linear",
    "hidden_state_loss",
    "load_lowrank",
    "merge_lowrank",
    "register_technique",
    "registered_techniques",
    "remove_pruned_structures",
    "remove_qat",
    "run_recipe",
    "soft_target_loss",
    "sparsity_report",
    "student_from_teacher",
    "trim_vocabulary",
]
