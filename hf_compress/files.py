"""Safe writes: every file and folder hf-compress produces appears whole, or not at all.

A file is written to a temporary name in its own folder and renamed over the target (``os.replace`` is atomic on
POSIX and Windows), so a process killed mid-write leaves the previous version or nothing, never half a file. A
folder (an export) is built under a hidden temporary name beside the target and renamed into place at the end; a
failed or interrupted build leaves no folder that loads as if complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "TOKENIZER_FILES",
    "WEIGHT_FILES",
    "atomic_write_json",
    "atomic_write_text",
    "check_output_dir",
    "save_torch_state",
    "staged_directory",
]

#: The files that hold a saved model's weights (one of them is enough).
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
#: The files of a saved tokenizer's vocabulary (one of them is enough; ``tokenizer_config.json`` alone is not).
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)


@contextlib.contextmanager
def _atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    # created as open() creates files (0666 less the umask), not owner-only like mkstemp; the umask is not
    # touched, which is process-wide state other threads may be creating files under
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with _atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(path: str | os.PathLike, payload: Any) -> Path:
    """Write ``payload`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


def save_torch_state(payload: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically (tensors and plain containers only: read back with ``weights_only``)."""
    import torch

    with _atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


@contextlib.contextmanager
def staged_directory(target: str | os.PathLike, *, overwrite: bool = False, marker: str) -> Iterator[Path]:
    """Build a folder under a temporary name beside ``target`` and rename it into place when the block succeeds.

    ``target`` may be absent or empty. A non-empty ``target`` is replaced only with ``overwrite=True`` and only if
    it holds ``marker`` (a file this package writes into every such folder, e.g. ``export_report.json``): a folder
    of someone else's files is never deleted. If the block raises, ``target`` is left as it was.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} is a file, not a folder; choose another output folder")
    if target.is_dir() and not _is_empty_dir(target):
        if not overwrite:
            raise FileExistsError(
                f"{target} already exists and is not empty; choose another folder or ask to overwrite it "
                "(--overwrite, overwrite=True)"
            )
        if not (target / marker).is_file():
            raise FileExistsError(
                f"{target} holds files that hf-compress did not write (no {marker}); refusing to replace it even "
                "with overwrite: choose another folder"
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replaced = None
    if target.exists():
        replaced = Path(tempfile.mkdtemp(prefix=f".{target.name}.replaced-", dir=target.parent))
        os.replace(target, replaced / target.name)
    os.replace(staging, target)
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)


def check_output_dir(output_dir: str | os.PathLike, *, overwrite: bool = False, resume: bool = False) -> None:
    """Refuse a training output folder that holds a previous run, as ``transformers`` examples do.

    A folder that does not exist or is empty is fine; so is one being resumed (``resume``) or explicitly
    overwritten (``overwrite``: new files are written over old ones, nothing is deleted).
    """
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"--output_dir {path} is a file, not a folder")
    if resume or overwrite or not path.is_dir() or _is_empty_dir(path):
        return
    names = sorted(p.name for p in path.iterdir())
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    raise FileExistsError(
        f"--output_dir {path} already exists and is not empty ({shown}); use --resume_from_checkpoint to continue "
        "that run, --overwrite_output_dir to train over it (nothing is deleted), or another folder"
    )
