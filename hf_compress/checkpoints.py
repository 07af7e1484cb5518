"""Checkpoints to resume from: find the latest complete one, and refuse one that is truncated, corrupted or foreign.

A Trainer checkpoint (``checkpoint-<step>``) is written file by file; a process killed while saving leaves a folder
that ``transformers`` would still pick as the latest. Here a checkpoint is complete when it holds the model
weights, ``trainer_state.json`` and the state file of every technique callback in use; each state file must load
with ``torch.load(weights_only=True)``. A checkpoint also records the recipe that wrote it (``recipe.yaml``), so
that resuming with a different recipe, or into a model of another shape, fails with what differs.

CompressionTrainer also marks a checkpoint being written (``SAVING_MARKER`` in it, removed once the Trainer and
every callback have written their files), so that a save cut short by anything (a kill, a full disk, an error) is
never taken for complete, even when its files are all there but truncated; a save that fails is removed
(:class:`CheckpointSaveError` says which complete checkpoint is left).
"""

from __future__ import annotations

import errno
import os
import re
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from .files import WEIGHT_FILES, atomic_write_text, is_disk_full

logger = logging.get_logger(__name__)

__all__ = [
    "CheckpointComplete",
    "CheckpointError",
    "CheckpointSaveError",
    "RECIPE_FILE",
    "RecipeInCheckpoints",
    "SAVING_MARKER",
    "allow_loading_onto_indexed_cpu",
    "check_checkpoint",
    "latest_complete_checkpoint",
]

#: The recipe that wrote a checkpoint, saved in the checkpoint folder.
RECIPE_FILE = "recipe.yaml"
#: Present in a checkpoint folder while it is being written.
SAVING_MARKER = ".saving"
_WEIGHTS = (*WEIGHT_FILES, "adapter_model.safetensors")  # a PEFT model's checkpoint holds its adapters
_SHAPE_KEYS = ("model_type", "num_hidden_layers", "hidden_size", "intermediate_size", "vocab_size", "labels")
_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from: names the folder, the file and why."""


class CheckpointSaveError(OSError):
    """Writing a checkpoint failed (``disk_full``: for lack of space); the partial folder was removed. One line
    names the cause and the last complete checkpoint, which is intact."""

    def __init__(self, folder: str | os.PathLike, cause: BaseException, latest: str | None):
        self.folder, self.latest, self.disk_full = str(folder), latest, is_disk_full(cause)
        what = ": no space left on device" if self.disk_full else ""
        kept = f"the last complete checkpoint, {latest}, is intact" if latest else "no complete checkpoint is left"
        text = " ".join(str(cause).split())[:200]
        super().__init__(
            errno.ENOSPC if self.disk_full else errno.EIO,
            f"saving checkpoint {folder} failed{what} ({type(cause).__name__}: {text}); the partial folder was "
            f"removed and {kept}; {'free space, then ' if self.disk_full else ''}resume with --resume_from_checkpoint",
        )

    def __str__(self) -> str:
        return self.strerror


def _problems(folder: Path, state_files: Iterable[str], required: Iterable[str] = ()) -> list[str]:
    """What makes ``folder`` unusable as a checkpoint (empty when it is complete and its state files load).

    ``state_files`` must exist and load; ``required`` (the optimizer's and scheduler's files) must exist.
    """
    import json

    import torch

    problems = []
    if (folder / SAVING_MARKER).exists():
        problems.append(f"it was still being written ({SAVING_MARKER} is there)")
    if not any((folder / name).is_file() for name in _WEIGHTS):
        problems.append(f"no model weights ({' or '.join(_WEIGHTS[::2])})")
    try:
        json.loads((folder / "trainer_state.json").read_text())
    except FileNotFoundError:
        problems.append("no trainer_state.json")
    except ValueError as error:
        problems.append(f"trainer_state.json is corrupted ({error})")
    problems += [f"no {name}" for name in required if not (folder / name).is_file()]
    for name in state_files:
        path = folder / name
        if not path.is_file():
            problems.append(f"no {name}")
            continue
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # pickle, zip and torch errors alike mean the same: the file is unreadable
            problems.append(f"{name} is corrupted ({type(error).__name__}: {str(error)[:120]})")
    return problems


def latest_complete_checkpoint(
    output_dir: str | os.PathLike, state_files: Iterable[str] = (), required: Iterable[str] = ()
) -> str | None:
    """The highest-step checkpoint in ``output_dir`` that is complete; incomplete newer ones are skipped (logged)."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    steps = sorted(
        ((int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))),
        reverse=True,
    )
    state_files, required = list(state_files), list(required)
    for _, path in steps:
        problems = _problems(path, state_files, required)
        if not problems:
            return str(path)
        logger.warning(f"skipping incomplete checkpoint {path}: {'; '.join(problems)}")
    return None


def _recipe_blocks(recipe: dict[str, Any]) -> dict[str, Any]:
    """What must not change between a checkpoint and its resumption (training arguments and export may)."""
    return {k: v for k, v in recipe.items() if k not in ("training", "export")}


def _differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(current, dict):
        found = []
        for key in sorted(set(saved) | set(current), key=str):
            found += _differences(saved.get(key), current.get(key), f"{prefix}.{key}" if prefix else str(key))
        return found
    return [] if saved == current else [f"{prefix or 'recipe'}: {saved!r} in the checkpoint, {current!r} now"]


def check_checkpoint(
    path: str | os.PathLike,
    state_files: Iterable[str] = (),
    recipe: dict[str, Any] | None = None,
    config=None,
    required: Iterable[str] = (),
) -> None:
    """Raise :class:`CheckpointError` unless ``path`` is a complete checkpoint written by ``recipe`` for a model
    shaped like ``config`` (``state_files`` load, ``required`` files exist)."""
    import json

    from .recipe import load_yaml

    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"resume_from_checkpoint: {folder} is not a checkpoint folder (no such folder)")
    problems = _problems(folder, state_files, required)
    if problems:
        raise CheckpointError(
            f"checkpoint {folder} is incomplete or damaged: {'; '.join(problems)} (was the run killed while "
            "saving?); resume from an earlier checkpoint, or with --resume_from_checkpoint alone to take the "
            "latest complete one"
        )
    saved_recipe = folder / RECIPE_FILE
    if recipe is not None and saved_recipe.is_file():
        differences = _differences(_recipe_blocks(load_yaml(saved_recipe.read_text()) or {}), _recipe_blocks(recipe))
        if differences:
            raise CheckpointError(
                f"checkpoint {folder} was written by another recipe: {'; '.join(differences[:5])}; resume with the "
                "recipe that wrote it (its copy is in the checkpoint), or start a new run"
            )
    saved_config = folder / "config.json"
    if config is not None and saved_config.is_file():
        saved, current = json.loads(saved_config.read_text()), config.to_dict()
        for values in (saved, current):
            labels = values.get("id2label") or {}
            values["labels"] = [labels[k] for k in sorted(labels, key=int)]
        differences = [
            f"{key} {saved.get(key)!r} in the checkpoint, {current.get(key)!r} now"
            for key in _SHAPE_KEYS
            if key in saved and saved.get(key) != current.get(key)
        ]
        if differences:
            raise CheckpointError(f"checkpoint {folder} holds a model of another shape: {'; '.join(differences)}")


_CPU_INDEX_PRIORITY = 12  # after torch's own "cpu" (10), before its accelerators (20 and up)


def _restore_on_indexed_cpu(storage, location: str):
    return storage if location.startswith("cpu:") else None


def allow_loading_onto_indexed_cpu() -> None:
    """Let ``torch.load(..., map_location=torch.device("cpu", i))`` load, as it loads with ``"cpu"``.

    Every process of a DDP run on the CPU gets the device ``cpu:0`` from Accelerate, and the Trainer resumes its
    optimizer with ``map_location=args.device``; torch has no deserializer for ``cpu:0`` ("don't know how to restore
    data location ... (tagged with cpu:0)"), so resuming such a run failed. This registers one (once) through
    ``torch.serialization.register_package``: a storage is already on the CPU, so it is returned as it is.
    """
    import torch

    registry = torch.serialization._package_registry
    if any(entry[2] is _restore_on_indexed_cpu for entry in registry):
        return
    if any(entry[0] == _CPU_INDEX_PRIORITY for entry in registry):  # taken: equal priorities cannot be sorted
        logger.warning("cannot teach torch.load the device cpu:N (priority taken); resuming DDP on the CPU may fail")
        return
    torch.serialization.register_package(_CPU_INDEX_PRIORITY, lambda storage: None, _restore_on_indexed_cpu)


class RecipeInCheckpoints(TrainerCallback):
    """Write the recipe into every checkpoint folder, so that resuming can check it is the same."""

    def __init__(self, recipe):
        self.recipe = recipe

    def on_save(self, args, state, control, **kwargs):
        folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        if state.is_world_process_zero and os.path.isdir(folder):
            atomic_write_text(os.path.join(folder, RECIPE_FILE), self.recipe.to_yaml())


class CheckpointComplete(TrainerCallback):
    """The last callback of a CompressionTrainer: once the Trainer and every other callback have written a checkpoint,
    it is complete (``trainer._checkpoint_complete()``)."""

    def __init__(self, trainer):
        self.trainer = weakref.ref(trainer)

    def on_save(self, args, state, control, **kwargs):
        trainer = self.trainer()
        if trainer is not None:
            trainer._checkpoint_complete()
