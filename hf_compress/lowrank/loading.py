"""Loading a model saved with factorized layers or embeddings: its config names the ranks, the structure is rebuilt
before the weights are read."""

from __future__ import annotations

import os

import transformers
from safetensors.torch import load_file
from transformers import AutoConfig

from .embeddings import EMBEDDING_CONFIG_KEY, apply_embedding_structure
from .layers import CONFIG_KEY, apply_lowrank_structure

__all__ = ["load_lowrank"]


def load_lowrank(path: str | os.PathLike, model_class=None, **kwargs):
    """Load a model saved with factorized layers or embeddings (``save_pretrained``): its config names the ranks.

    ``model_class`` is an ``AutoModelFor...`` or model class (default: from the config's ``architectures``). A model
    without factorized layers loads as with plain ``from_pretrained``.
    """
    config = AutoConfig.from_pretrained(path)
    if model_class is None:
        model_class = getattr(transformers, (config.architectures or ["AutoModel"])[0])
    ranks = getattr(config, CONFIG_KEY, None)
    embedding_rank = getattr(config, EMBEDDING_CONFIG_KEY, None)
    if not ranks and not embedding_rank:
        return model_class.from_pretrained(path, **kwargs)
    model = model_class.from_config(config) if hasattr(model_class, "from_config") else model_class(config)
    if ranks:
        apply_lowrank_structure(model, ranks)
    if embedding_rank:
        apply_embedding_structure(model, embedding_rank)
    weights = os.path.join(path, "model.safetensors")
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"{weights}: load_lowrank reads single-file safetensors checkpoints")
    missing, unexpected = model.load_state_dict(load_file(weights), strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(
            f"{path}: weights do not fit the low-rank structure (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    model.tie_weights()
    return model.eval()
