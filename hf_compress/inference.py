"""Run an export folder with ONNX Runtime alone: entity spans for token classification, labels for sequence
classification, as ``transformers.pipeline`` gives them, without Optimum (which transformers 5 users cannot install).

An export folder holds ``model.onnx``, ``config.json`` (``id2label``) and the tokenizer: that is all this needs.

>>> ner = OnnxTokenClassifier("out/onnx-int8-dynamic")
>>> ner("George Washington went to Washington.")
[{'entity_group': 'PER', 'score': 0.99, 'word': 'george washington', 'start': 0, 'end': 17}, ...]

With Optimum installed, ``ORTModelForTokenClassification.from_pretrained(folder)`` and ``pipeline`` read the same
folder.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

import numpy as np
from transformers import AutoConfig, AutoTokenizer

from .export.to_onnx import ONNX_FILE, REPORT_FILE
from .tasks.decoding import DECODINGS, constrained_viterbi, iob2_transitions

__all__ = ["OnnxTextClassifier", "OnnxTokenClassifier", "group_entities"]


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _tag(label: str) -> tuple[str, str]:
    """``B-PER`` -> ``("B", "PER")``; ``I-PER`` and a label without prefix (``O``) continue a group."""
    if label.startswith(("B-", "I-")):
        return label[0], label[2:]
    return "I", label


def group_entities(tokens: list[dict[str, Any]], convert_tokens_to_string) -> list[dict[str, Any]]:
    """Group consecutive tokens into entities as ``pipeline(..., aggregation_strategy="simple")`` does: a token
    joins the previous group when it has the same entity type and is not a ``B-`` tag; a group's score is the mean
    of its tokens' scores; groups of ``O`` are dropped.

    ``tokens``: per token ``entity`` (label), ``score``, ``word`` (the token string), ``start``, ``end``.
    """
    groups: list[list[dict[str, Any]]] = []
    for token in tokens:
        bi, tag = _tag(token["entity"])
        if groups and bi != "B" and tag == _tag(groups[-1][-1]["entity"])[1]:
            groups[-1].append(token)
        else:
            groups.append([token])
    entities = []
    for group in groups:
        entity = _tag(group[0]["entity"])[1]
        if entity == "O":
            continue
        entities.append(
            {
                "entity_group": entity,
                "score": float(np.mean([t["score"] for t in group])),
                "word": convert_tokens_to_string([t["word"] for t in group]),
                "start": group[0]["start"],
                "end": group[-1]["end"],
            }
        )
    return entities


class _OnnxClassifier:
    def __init__(self, folder: str | os.PathLike, threads: int | None = None):
        from .export.evaluation import onnx_session

        path = os.path.join(folder, ONNX_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: not an export folder (no {ONNX_FILE})")
        self.session = onnx_session(path, threads)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.id2label = {int(k): v for k, v in AutoConfig.from_pretrained(folder).id2label.items()}
        self.input_names = [i.name for i in self.session.get_inputs()]

    def _logits(self, encoded) -> np.ndarray:
        from .export.evaluation import onnx_feeds

        return self.session.run(None, onnx_feeds(self.input_names, encoded))[0]


class OnnxTokenClassifier(_OnnxClassifier):
    """Entity spans of texts from a token-classification export (word grouping of ``aggregation_strategy="simple"``).

    Calling it with one text returns its list of entities; with a list of texts, one list per text.

    ``decoding``: ``argmax`` tags each sub-token alone, as ``pipeline`` does; ``constrained`` tags the first
    sub-token of each word by Viterbi over legal IOB2 transitions (:mod:`hf_compress.tasks.decoding`) and the
    word's other sub-tokens continue its tag. Default: the decoding the export was evaluated with
    (``export_report.json``), else ``argmax``.
    """

    def __init__(self, folder: str | os.PathLike, threads: int | None = None, decoding: str | None = None):
        super().__init__(folder, threads)
        if decoding is None:
            report = os.path.join(folder, REPORT_FILE)
            with contextlib.suppress(OSError, ValueError):
                with open(report, encoding="utf-8") as handle:
                    decoding = json.load(handle).get("decoding")
        self.decoding = decoding or "argmax"
        if self.decoding not in DECODINGS:
            raise ValueError(f"decoding: {self.decoding!r}; allowed: {', '.join(DECODINGS)}")
        if self.decoding == "constrained":
            self.transitions = iob2_transitions([self.id2label[i] for i in range(len(self.id2label))])

    def __call__(self, texts: str | list[str]) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        single = isinstance(texts, str)
        results = [self._entities(text) for text in ([texts] if single else texts)]
        return results[0] if single else results

    def _entities(self, text: str) -> list[dict[str, Any]]:
        encoded = self.tokenizer(
            text, return_offsets_mapping=True, return_special_tokens_mask=True, truncation=True, return_tensors="np"
        )
        logits = self._logits(encoded)[0]
        scores = _softmax(logits)
        ids = encoded["input_ids"][0]
        words = self.tokenizer.convert_ids_to_tokens(ids.tolist())
        labels = scores.argmax(-1)
        if self.decoding == "constrained":
            labels = self._constrained(logits, encoded.word_ids(0))
        tokens = []
        for index, (special, (start, end)) in enumerate(
            zip(encoded["special_tokens_mask"][0], encoded["offset_mapping"][0], strict=True)
        ):
            if special:
                continue
            best = int(labels[index])
            word = text[start:end] if ids[index] == self.tokenizer.unk_token_id else words[index]
            tokens.append(
                {
                    "entity": self.id2label[best],
                    "score": float(scores[index, best]),
                    "word": word,
                    "start": int(start),
                    "end": int(end),
                }
            )
        return group_entities(tokens, self.tokenizer.convert_tokens_to_string)

    def _constrained(self, logits: np.ndarray, word_ids: list[int | None]) -> np.ndarray:
        """Viterbi over the first sub-token of each word; a word's later sub-tokens continue its tag (``I-X``)."""
        firsts = [i for i, w in enumerate(word_ids) if w is not None and (i == 0 or word_ids[i - 1] != w)]
        labels = logits.argmax(-1)
        labels[firsts] = constrained_viterbi(logits[firsts], *self.transitions)
        label2id = {name: i for i, name in self.id2label.items()}
        for i, word in enumerate(word_ids):
            if word is not None and i not in firsts:
                name = self.id2label[int(labels[i - 1])]
                labels[i] = label2id.get("I-" + name[2:], labels[i - 1]) if name != "O" else labels[i - 1]
        return labels


class OnnxTextClassifier(_OnnxClassifier):
    """The label and score of texts from a sequence-classification export, as ``pipeline("text-classification")``
    gives them (softmax; the best label)."""

    def __call__(self, texts: str | list[str]) -> dict[str, Any] | list[dict[str, Any]]:
        single = isinstance(texts, str)
        batch = [texts] if single else list(texts)
        encoded = self.tokenizer(batch, padding=True, truncation=True, return_tensors="np")
        scores = _softmax(self._logits(encoded))
        results = [{"label": self.id2label[int(row.argmax())], "score": float(row.max())} for row in scores]
        return results[0] if single else results
