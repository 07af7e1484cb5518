"""Where a teacher or a student comes from: a local model folder, a folder shipped inside an installed Python
package (``package:MODULE/sub/dir``) or a hub id; and the checks that fail early, naming the recipe key, when a local
folder cannot be loaded. Shared by ``hf-compress train`` (:mod:`~hf_compress.pipeline`),
:class:`~hf_compress.trainer.CompressionTrainer` (a recipe's ``model.teacher``) and ``hf-compress export``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .files import TOKENIZER_FILES, WEIGHT_FILES

__all__ = ["PACKAGE_PREFIX", "check_model_source", "resolve_model_path"]

PACKAGE_PREFIX = "package:"


def resolve_model_path(name_or_path: str) -> str:
    """A local folder, a hub id, or ``package:MODULE/sub/dir`` (a model folder shipped in an installed package)."""
    if not name_or_path.startswith(PACKAGE_PREFIX):
        return name_or_path
    module, _, subdir = name_or_path[len(PACKAGE_PREFIX) :].partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"{name_or_path}: Python package {module!r} is not installed "
            f"(e.g. `pip install {module.replace('_', '-')}`)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / subdir
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{name_or_path}: no model folder (config.json) at {path}")
    return str(path)


def check_model_source(name_or_path: str, key: str, *, tokenizer: bool = True) -> None:
    """Fail early, naming ``key``, when a local model folder is missing, or lacks its config, weights or tokenizer.

    A name that is not a local path (``user/model``) is a hub id and is left to ``from_pretrained``.
    """
    path = Path(name_or_path)
    looks_local = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1 or "\\" in name_or_path
    if not path.exists():
        if looks_local:
            raise FileNotFoundError(f"{key}: no such model folder: {name_or_path}")
        return
    if not path.is_dir():
        raise NotADirectoryError(f"{key}: {name_or_path} is a file; give the model's folder (with config.json)")
    names = {p.name for p in path.iterdir()}
    missing = []
    if "config.json" not in names:
        missing.append("config.json")
    if not names.intersection(WEIGHT_FILES):
        missing.append(f"weights ({' or '.join(WEIGHT_FILES[::2])})")
    if tokenizer and not names.intersection(TOKENIZER_FILES):
        missing.append("tokenizer files (tokenizer.json or vocab.txt: save them with tokenizer.save_pretrained)")
    if missing:
        raise FileNotFoundError(f"{key}: the model folder {name_or_path} lacks {', '.join(missing)}")
