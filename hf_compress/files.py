"""Safe writes: every file and folder hf-compress produces appears whole, or not at all.

A file is written to a temporary name in its own folder and renamed over the target (``os.replace`` is atomic on
POSIX and Windows), so a process killed mid-write leaves the previous version or nothing, never half a file. A
folder (an export) is built under a hidden temporary name beside the target and renamed into place at the end; a
failed or interrupted build leaves no folder that loads as if complete. A write that fails for lack of space
raises :class:`DiskFullError`, one line naming what was being written and what is intact.

A training output folder is held by one run at a time (:func:`output_dir_lock`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from transformers.utils import logging

try:
    import fcntl
except ImportError:  # Windows: the lock falls back to checking whether the holder's process is alive
    fcntl = None

logger = logging.get_logger(__name__)

__all__ = [
    "LOCK_FILE",
    "TOKENIZER_FILES",
    "WEIGHT_FILES",
    "DiskFullError",
    "OutputDirInUseError",
    "atomic_write_json",
    "atomic_write_text",
    "check_output_dir",
    "is_disk_full",
    "output_dir_lock",
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


_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded", "StorageFull")


class DiskFullError(OSError):
    """A write that failed for lack of space (ENOSPC or EDQUOT); the message names what is intact, on one line."""

    def __init__(self, message: str):
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return self.strerror


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or an error it was raised from) is a lack of space: ENOSPC or EDQUOT, also as wrapped by
    libraries that report it as text (safetensors' ``StorageFull``)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _DISK_FULL_ERRNOS:
            return True
        if any(text in str(error) for text in _DISK_FULL_TEXTS):
            return True
        error = error.__cause__ or error.__context__
    return False


def _cause(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"


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
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(error, Exception) and is_disk_full(error) and not isinstance(error, DiskFullError):
            kept = "its previous version is intact" if path.exists() else "nothing was written"
            raise DiskFullError(f"no space left on device while writing {path} ({_cause(error)}); {kept}") from error
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


def _make_hidden_dir(target: Path, kind: str) -> Path:
    """A new folder ``.<name>.<kind>-<random>`` beside ``target``, created as ``mkdir`` creates folders (0777 less
    the umask: the folder renamed into place has the usual permissions, not ``mkdtemp``'s owner-only 0700)."""
    while True:
        path = target.parent / f".{target.name}.{kind}-{secrets.token_hex(8)}"
        try:
            path.mkdir(mode=0o777)
            return path
        except FileExistsError:
            continue


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
    staging = _make_hidden_dir(target, "partial")
    try:
        yield staging
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, Exception) and is_disk_full(error):
            kept = f"the previous {target} is intact" if target.exists() else f"{target} was not created"
            raise DiskFullError(
                f"no space left on device while writing {target} ({_cause(error)}); the partial folder was removed "
                f"and {kept}: free space and run again"
            ) from error
        raise
    replaced = None
    if target.exists():
        replaced = _make_hidden_dir(target, "replaced")
        os.replace(target, replaced / target.name)
    os.replace(staging, target)
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)


def check_output_dir(output_dir: str | os.PathLike, *, overwrite: bool = False, resume: bool = False) -> None:
    """Refuse a training output folder that holds a previous run, as ``transformers`` examples do.

    A folder that does not exist or is empty (but for the run's own lock file) is fine; so is one being resumed
    (``resume``) or explicitly overwritten (``overwrite``: new files are written over old ones, nothing is deleted).
    """
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"--output_dir {path} is a file, not a folder")
    if resume or overwrite or not path.is_dir():
        return
    names = sorted(p.name for p in path.iterdir() if p.name != LOCK_FILE)
    if not names:
        return
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    raise FileExistsError(
        f"--output_dir {path} already exists and is not empty ({shown}); use --resume_from_checkpoint to continue "
        "that run, --overwrite_output_dir to train over it (nothing is deleted), or another folder"
    )


# ---------------------------------------------------------------------------------------------------- the lock
#: The lock file of a training output folder (removed when the run ends; left by a run that was killed).
LOCK_FILE = ".hf-compress.lock"


class OutputDirInUseError(FileExistsError):
    """Another live process holds the output folder's lock: names it."""


def _holder(path: Path) -> dict[str, Any]:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # being written, or not ours: what can be said is said
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "a process that left no details"
    command = holder.get("command", "")
    return f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}" + (
        f" ({command})" if command else ""
    )


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the holder's process runs (without ``fcntl``: this host only, by its pid)."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return bool(holder)
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _acquire(path: Path) -> int:
    """Lock ``path`` for this process and write who holds it; refuse at once when a live process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise OutputDirInUseError(
                        f"--output_dir {path.parent} is in use by another run: {_describe(_holder(path))}; wait for "
                        "it to end, or choose another folder"
                    ) from None
                try:  # the holder may have released (removed) the file between our open and our lock: lock anew
                    if os.stat(path).st_ino != os.fstat(fd).st_ino:
                        os.close(fd)
                        continue
                except FileNotFoundError:
                    os.close(fd)
                    continue
            previous = _holder(path)
            if previous and fcntl is None and _alive(previous):
                raise OutputDirInUseError(
                    f"--output_dir {path.parent} is in use by another run: {_describe(previous)}; wait for it to "
                    "end, or choose another folder"
                )
            if previous:
                logger.warning(
                    f"taking over the lock of {path.parent}: its holder ({_describe(previous)}) is no longer running"
                )
            holder = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": " ".join(sys.argv)[:300],
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
            return fd
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise


@contextlib.contextmanager
def output_dir_lock(output_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock of a training output folder (``LOCK_FILE`` in it) for the block.

    A second run into the folder while a first one holds it is refused at once (:class:`OutputDirInUseError`,
    naming the other process); a lock left by a process that died is taken over with a warning. The lock is an
    ``flock`` on the file (released by the system when its process dies, whatever kills it); without ``fcntl``
    the holder's pid is checked instead. The file is removed at the end, and the folder too when this lock
    created it and nothing else was written into it.
    """
    folder = Path(output_dir)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    try:
        fd = _acquire(path)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # before unlocking: a process waiting on this file sees it is gone and locks anew
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
