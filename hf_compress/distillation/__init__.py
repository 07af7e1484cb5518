"""Knowledge distillation (Hinton et al., 2015) with TinyBERT-style intermediate-layer terms.

``config.py`` is the recipe block, ``losses.py`` the losses (pure functions) and the loss module,
``technique.py`` the callback that adds them to training.
"""

from .config import DistillationConfig, LayerLossConfig
from .losses import (
    DistillationLoss,
    attention_loss,
    default_layer_map,
    distillation_loss,
    hidden_state_loss,
    soft_target_loss,
)
from .technique import DistillationCallback

__all__ = [
    "DistillationCallback",
    "DistillationConfig",
    "DistillationLoss",
    "LayerLossConfig",
    "attention_loss",
    "default_layer_map",
    "distillation_loss",
    "hidden_state_loss",
    "soft_target_loss",
]
