"""Cached teacher outputs: the teacher runs once per training example; later epochs read its outputs from disk.

The cache is content-addressed. An example's key is a hash of the teacher's inputs at its real positions (the
token ids, after any vocabulary translation, token types, the positions themselves), so another dataset, tokenizer
or ``max_length`` gives other keys and is never served stale outputs; the folder is named by a fingerprint of
the teacher (its config and every parameter) and of what is stored, so another teacher never reads it either.

What is stored per example, at its real tokens only (padding is rebuilt for each batch), all in ``dtype``
(float16 by default: 11 significant bits, a relative error of at most 2^-11 per value, far below what the
soft-target KL and the intermediate MSEs resolve): the logits, and the hidden states / attention maps of the
mapped teacher layers. A token-level task with ``L`` labels and ``k`` stored hidden layers of width ``H`` takes
``itemsize * (L + k * H)`` bytes per token (:meth:`TeacherCache.bytes_per_token`; attention maps add
``itemsize * heads * n`` per token of an ``n``-token example).

Each process appends to its own shard (``shard-<rank>.bin``, an index beside it written atomically); the indexes
are re-read at the start of each epoch, so with several processes an example computed by one is read by all from
then on. Records are read with plain positioned reads, not a memory map: a map keeps every page it touched in
the process's resident memory for as long as it is open (an epoch over a 250k-sentence cache would make the
whole file resident), while reads leave the pages to the kernel's page cache and resident memory flat.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import nn

from ..files import atomic_write_json

__all__ = ["STORED_DTYPES", "CachedTeacherOutputs", "TeacherCache", "teacher_fingerprint"]

#: The types the cache stores values in.
STORED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@dataclass
class CachedTeacherOutputs:
    """What :class:`~hf_compress.distillation.losses.DistillationLoss` reads from a teacher's output: ``logits``,
    and ``hidden_states`` / ``attentions`` indexed like a model's (``None`` for the layers not stored)."""

    logits: torch.Tensor
    hidden_states: tuple[torch.Tensor | None, ...] | None = None
    attentions: tuple[torch.Tensor | None, ...] | None = None


#: Config entries that say where a model came from or how it was saved, not what it computes (``save_pretrained``
#: sets some of them in the saving process only).
_METADATA_KEYS = ("architectures", "_name_or_path", "transformers_version", "torch_dtype", "dtype", "_commit_hash")


def teacher_fingerprint(teacher: nn.Module, stored: dict[str, Any]) -> str:
    """A hash of the teacher's config (what it computes), every parameter and buffer, and the description ``stored``
    of what is kept."""
    digest = hashlib.sha256()
    config = getattr(teacher, "config", None)
    settings = {k: v for k, v in config.to_dict().items() if k not in _METADATA_KEYS} if config is not None else {}
    digest.update(type(teacher).__name__.encode())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    digest.update(json.dumps(stored, sort_keys=True).encode())
    for name, tensor in sorted(teacher.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:20]


class TeacherCache:
    """Teacher outputs on disk, keyed by example content (module docstring).

    Args:
        folder: the cache folder (made if missing); a fingerprint of ``teacher`` and of what is stored is appended.
        teacher: the teacher (for its fingerprint only).
        hidden_layers / attention_layers: the 0-based teacher layers whose hidden states / attention maps are kept.
        num_hidden_layers: the teacher's layer count (for the ``hidden_states`` tuple's length).
        dtype: how logits, hidden states and attention maps are stored (float16, bfloat16 or float32).
        rank: this process's shard.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        teacher: nn.Module,
        hidden_layers: Sequence[int],
        attention_layers: Sequence[int],
        num_hidden_layers: int,
        dtype: torch.dtype = torch.float16,
        rank: int = 0,
    ):
        if dtype not in STORED_DTYPES:
            allowed = ", ".join(str(d).removeprefix("torch.") for d in STORED_DTYPES)
            raise ValueError(f"TeacherCache dtype={dtype}: not a storage type; one of {allowed}")
        self.hidden_layers = sorted(set(hidden_layers))
        self.attention_layers = sorted(set(attention_layers))
        self.num_hidden_layers = num_hidden_layers
        self.dtype = dtype
        self.itemsize = torch.empty((), dtype=dtype).element_size()
        stored = {"hidden": self.hidden_layers, "attention": self.attention_layers, "dtype": str(dtype), "v": 2}
        self.folder = Path(folder) / teacher_fingerprint(teacher, stored)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rank = rank
        self._bin = self.folder / f"shard-{rank}.bin"
        self._own: dict[str, list[int]] = self._read_index(rank)  # this shard's entries: key -> [offset, tokens]
        self._index: dict[str, tuple[int, int, int]] = {}  # readable entries: key -> (shard, offset, tokens)
        self._files: dict[int, BinaryIO] = {}
        self.hits = self.misses = 0
        self.refresh()

    # ------------------------------------------------------------------------------------------ storage
    def _index_path(self, rank: int) -> Path:
        return self.folder / f"shard-{rank}.index.json"

    def _read_index(self, rank: int) -> dict[str, list[int]]:
        path = self._index_path(rank)
        return json.loads(path.read_text()) if path.is_file() else {}

    def flush(self) -> None:
        """Write this process's index (the data is already on disk)."""
        atomic_write_json(self._index_path(self.rank), self._own)

    def refresh(self) -> None:
        """Flush, then make every shard's entries readable (call at a point all processes reach together)."""
        self.flush()
        self.close()
        self._index = {}
        for path in sorted(self.folder.glob("shard-*.index.json")):
            rank = int(path.name.split("-")[1].split(".")[0])
            entries = self._read_index(rank)
            data = self.folder / f"shard-{rank}.bin"
            if not entries or not data.is_file() or data.stat().st_size == 0:
                continue
            self._files[rank] = open(data, "rb", buffering=0)  # noqa: SIM115 (closed by close())
            for key, (offset, tokens) in entries.items():
                self._index[key] = (rank, offset, tokens)

    def close(self) -> None:
        """Close the shards opened for reading (:meth:`refresh` reopens them)."""
        for handle in self._files.values():
            handle.close()
        self._files = {}

    def __len__(self) -> int:
        return len(self._index)

    def bytes_per_token(self, labels: int, width: int, token_level: bool = True) -> int | None:
        """The bytes a token takes: ``itemsize * (labels + stored hidden layers * width)`` for a token-level
        task without attention maps (``None`` otherwise: the size then depends on each example's length)."""
        if not token_level or self.attention_layers:
            return None
        return self.itemsize * (labels + len(self.hidden_layers) * width)

    def size(self) -> dict[str, Any]:
        """What the readable shards and this process's own shard hold: ``examples``, ``tokens``, ``bytes`` (the
        shard files' sizes) and the measured ``bytes_per_token``."""
        lengths = {key: entry[2] for key, entry in self._index.items()}
        lengths.update({key: entry[1] for key, entry in self._own.items()})
        shards = {self._bin, *(self.folder / f"shard-{rank}.bin" for rank in self._files)}
        data = sum(path.stat().st_size for path in shards if path.is_file())
        tokens = sum(lengths.values())
        return {
            "examples": len(lengths),
            "tokens": tokens,
            "bytes": data,
            "bytes_per_token": round(data / tokens, 2) if tokens else None,
        }

    # ------------------------------------------------------------------------------------------ layout
    @staticmethod
    def keys(inputs: dict[str, torch.Tensor]) -> list[str]:
        """One key per example: a hash of its real positions and the teacher inputs there."""
        mask = inputs.get("attention_mask")
        ids = inputs["input_ids"]
        mask = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
        names = sorted(k for k, v in inputs.items() if torch.is_tensor(v) and v.shape[:2] == ids.shape)
        keys = []
        for row in range(ids.shape[0]):
            digest = hashlib.sha1()
            digest.update(mask[row].nonzero().cpu().numpy().astype(np.int64).tobytes())
            for name in names:
                digest.update(name.encode())
                digest.update(inputs[name][row][mask[row]].cpu().numpy().astype(np.int64).tobytes())
            keys.append(digest.hexdigest())
        return keys

    def _record(self, outputs: Any, row: int, real: torch.Tensor) -> bytes:
        logits = outputs.logits[row]
        parts = [logits[real] if logits.dim() == 2 else logits]
        parts += [outputs.hidden_states[layer + 1][row][real] for layer in self.hidden_layers]
        parts += [outputs.attentions[layer][row][:, real][:, :, real] for layer in self.attention_layers]
        return b"".join(self._bytes(part) for part in parts)

    def _bytes(self, values: torch.Tensor) -> bytes:
        return values.detach().to(self.dtype).cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()

    # ------------------------------------------------------------------------------------------ use
    def store(self, inputs: dict[str, torch.Tensor], outputs: Any) -> None:
        """Append the outputs of the examples not stored yet."""
        mask = inputs.get("attention_mask")
        mask = torch.ones_like(inputs["input_ids"], dtype=torch.bool) if mask is None else mask.bool()
        records, batch = [], set()
        for row, key in enumerate(self.keys(inputs)):
            if key not in self._own and key not in self._index and key not in batch:  # a batch may repeat one
                batch.add(key)
                records.append((key, int(mask[row].sum()), self._record(outputs, row, mask[row])))
        if not records:
            return
        with open(self._bin, "ab") as handle:
            offset = handle.tell()
            for key, tokens, data in records:
                handle.write(data)
                self._own[key] = [offset, tokens]
                offset += len(data)

    def _read(self, key: str, shapes: dict[str, Any]) -> list[torch.Tensor]:
        """One example's stored tensors: logits, then each hidden state, then each attention map."""
        shard, offset, n = self._index[key]
        labels, width, heads = shapes["labels"], shapes["hidden"], shapes["heads"]
        layout = [(n, labels) if shapes["token_level"] else (labels,)]
        layout += [(n, width)] * len(self.hidden_layers)
        layout += [(heads, n, n)] * len(self.attention_layers)
        counts = [math.prod(shape) for shape in layout]
        record = bytearray(sum(counts) * self.itemsize)
        handle = self._files[shard]
        handle.seek(offset)
        if handle.readinto(record) != len(record):
            raise OSError(f"{handle.name}: the record of {key} ends past the file's end (a truncated shard)")
        values = torch.frombuffer(record, dtype=self.dtype)
        return [part.view(shape) for part, shape in zip(values.split(counts), layout, strict=True)]

    def lookup(self, inputs: dict[str, torch.Tensor], shapes: dict[str, Any]) -> CachedTeacherOutputs | None:
        """The teacher outputs of the batch ``inputs`` if every example is readable, else ``None`` (a miss).

        ``shapes``: ``labels`` (the logits' last dimension), ``token_level`` (logits per token), ``hidden``
        (the teacher width), ``heads`` (its attention heads).
        """
        keys = self.keys(inputs)
        if not keys or any(key not in self._index for key in keys):
            self.misses += 1
            return None
        self.hits += 1
        ids = inputs["input_ids"]
        mask = inputs.get("attention_mask")
        mask = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
        batch, length = ids.shape
        labels, width, heads = shapes["labels"], shapes["hidden"], shapes["heads"]
        logits = torch.zeros((batch, length, labels) if shapes["token_level"] else (batch, labels), dtype=self.dtype)
        hidden = {t: torch.zeros(batch, length, width, dtype=self.dtype) for t in self.hidden_layers}
        attention = {t: torch.zeros(batch, heads, length, length, dtype=self.dtype) for t in self.attention_layers}
        for row, key in enumerate(keys):
            real = mask[row].nonzero().squeeze(1)
            record = self._read(key, shapes)
            if shapes["token_level"]:
                logits[row, real] = record[0]
            else:
                logits[row] = record[0]
            maps = record[1 + len(self.hidden_layers) :]
            for t, values in zip(self.hidden_layers, record[1 : 1 + len(self.hidden_layers)], strict=True):
                hidden[t][row, real] = values
            for t, values in zip(self.attention_layers, maps, strict=True):
                attention[t][row][:, real[:, None], real[None, :]] = values
        device = ids.device
        hidden_states = attentions = None
        if self.hidden_layers:
            hidden_states = tuple(
                hidden[i - 1].to(device).float() if i - 1 in hidden else None
                for i in range(self.num_hidden_layers + 1)
            )
        if self.attention_layers:
            attentions = tuple(
                attention[i].to(device).float() if i in attention else None for i in range(self.num_hidden_layers)
            )
        return CachedTeacherOutputs(logits.to(device).float(), hidden_states, attentions)
