"""Decoding tag sequences from per-token logits: argmax, or Viterbi over legal IOB2 transitions only.

A softmax tagger scores each token alone, so it can emit ``I-X`` after ``O`` or after ``B-Y``: a span that starts
nowhere. Lester et al. (Findings of EMNLP 2020, "Constrained Decoding for Computationally Efficient Named Entity
Recognition Taggers") show that masking the illegal transitions at decoding makes a plain softmax tagger as good
as a CRF. With ``constrained`` decoding the tags are the legal sequence with the highest total log-probability:

    argmax_y  sum_t log softmax(z_t)[y_t]   subject to  y_1 != I-*  and  y_t = I-X  =>  y_{t-1} in {B-X, I-X}

computed by Viterbi over the positions that carry a prediction (the first sub-token of each word).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

__all__ = ["DECODINGS", "Decoding", "constrained_viterbi", "decode_tags", "iob2_transitions"]

Decoding = Literal["argmax", "constrained"]
DECODINGS: tuple[str, ...] = ("argmax", "constrained")


def iob2_transitions(labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The legal IOB2 transitions between ``labels`` (names in id order): ``allowed[i, j]`` is true when label j
    may follow label i, ``start[j]`` when a sentence may begin with label j. Labels are ``O``, ``B-X`` or ``I-X``;
    anything else (IOBES ``E-``/``S-``, an ``I-X`` without its ``B-X``) raises ``ValueError``."""
    kinds = []
    for label in labels:
        if label == "O":
            kinds.append(("O", None))
        elif label[:2] in ("B-", "I-") and label[2:]:
            kinds.append((label[0], label[2:]))
        else:
            raise ValueError(f"constrained decoding reads IOB2 labels (O, B-X, I-X); {label!r} is not one")
    begins = {kind for prefix, kind in kinds if prefix == "B"}
    for prefix, kind in kinds:
        if prefix == "I" and kind not in begins:
            raise ValueError(f"constrained decoding: I-{kind} has no B-{kind} among the labels {list(labels)}")
    n = len(labels)
    allowed = np.ones((n, n), dtype=bool)
    start = np.ones(n, dtype=bool)
    for j, (prefix, kind) in enumerate(kinds):
        if prefix == "I":
            start[j] = False
            allowed[:, j] = [k == kind and p in ("B", "I") for p, k in kinds]
    return allowed, start


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def constrained_viterbi(logits: np.ndarray, allowed: np.ndarray, start: np.ndarray) -> np.ndarray:
    """The legal label sequence (ids) with the highest total log-softmax score, for ``logits`` of shape
    ``(positions, labels)``; ties go to the lower label id. An empty sequence gives an empty array."""
    if len(logits) == 0:
        return np.zeros(0, dtype=np.int64)
    scores = _log_softmax(np.asarray(logits, dtype=np.float64))
    forbidden = np.where(allowed, 0.0, -np.inf)
    best = np.where(start, scores[0], -np.inf)
    back = np.zeros(scores.shape, dtype=np.int64)
    for t in range(1, len(scores)):
        candidates = best[:, None] + forbidden  # (previous, next)
        back[t] = candidates.argmax(axis=0)
        best = candidates.max(axis=0) + scores[t]
    path = np.zeros(len(scores), dtype=np.int64)
    path[-1] = int(best.argmax())
    for t in range(len(scores) - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def decode_tags(
    logits: np.ndarray, mask: np.ndarray, id2label: dict[int, str], decoding: str = "argmax"
) -> np.ndarray:
    """Predicted label ids for ``logits`` ``(batch, length, labels)``: ``argmax`` per position, or
    ``constrained`` (Viterbi over the positions where ``mask`` is true, row by row; argmax elsewhere)."""
    predictions = np.asarray(logits).argmax(axis=-1)
    if decoding == "argmax":
        return predictions
    if decoding != "constrained":
        raise ValueError(f"decoding: {decoding!r}; allowed: {', '.join(DECODINGS)}")
    allowed, start = iob2_transitions([id2label[i] for i in range(len(id2label))])
    for row in range(len(predictions)):
        positions = np.flatnonzero(mask[row])
        predictions[row, positions] = constrained_viterbi(logits[row, positions], allowed, start)
    return predictions
