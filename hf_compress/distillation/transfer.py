"""The transfer set: unlabelled examples the teacher labels for its student (augmented copies, text files).

Transfer examples are tokenized like the training set and marked as having no gold label: their label positions
hold :data:`~hf_compress.tasks.base.NO_GOLD_LABEL` (token classification: the first sub-token of each word, the
positions the soft targets count; -100 elsewhere) or -100 (sequence classification). The distillation loss counts
them in its teacher terms and never in the task loss (:meth:`DistillationCallback.model_inputs`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from datasets import Dataset, DatasetDict
from transformers.utils import logging

from ..checks import RecipeError
from ..configs import DataConfig
from ..tasks.base import Task
from ..tasks.files import read_bytes, utf8_lines
from .augment import SEQUENCE_AUGMENTATIONS, TOKEN_AUGMENTATIONS, augment_sentences, augment_texts
from .config import TransferConfig

logger = logging.get_logger(__name__)

__all__ = ["read_transfer_file", "transfer_dataset", "transfer_texts"]


def _lines(path: str) -> list[str]:
    """The file's lines, decoded as UTF-8; errors name the file and the line."""
    lines = []
    for number, line in utf8_lines(read_bytes(path, "text file", "transfer file"), path):
        if "\x00" in line:
            raise ValueError(f"{path}, line {number}: a NUL character: not a text file")
        lines.append(line.rstrip("\r\n"))
    if not any(line.strip() for line in lines):
        raise ValueError(f"{path}: empty: expected sentences (one per line), CoNLL columns or JSON lines")
    return lines


def _detect_format(lines: list[str]) -> str:
    first = next(line for line in lines if line.strip())
    if first.lstrip().startswith("{"):
        return "jsonl"
    blocks = "" in [line.strip() for line in lines[lines.index(first) :]]
    widths = {len(line.split()) for line in lines if line.strip() and not line.startswith("-DOCSTART-")}
    return "conll" if blocks and len(widths) == 1 else "text"


def _read_jsonl(path: str, lines: list[str]) -> list[list[str]]:
    sentences = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {number}: not a JSON object ({error.msg})") from None
        tokens = row.get("tokens") if isinstance(row, dict) else None
        if tokens is None and isinstance(row, dict) and isinstance(row.get("text"), str):
            tokens = row["text"].split()
        if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) and t.strip() for t in tokens):
            raise ValueError(
                f"{path}, line {number}: expected a JSON object with 'tokens' (a non-empty list of words) or "
                f"'text' (a string), got {line[:80]!r}"
            )
        sentences.append(tokens)
    return sentences


def _read_conll(path: str, lines: list[str]) -> list[list[str]]:
    sentences, tokens, width = [], [], None
    for number, line in enumerate(lines, start=1):
        columns = line.split()
        if not columns or columns[0] == "-DOCSTART-":
            if tokens:
                sentences.append(tokens)
                tokens = []
            continue
        width = width or len(columns)
        if len(columns) != width:
            raise ValueError(
                f"{path}, line {number}: {len(columns)} columns where the file's lines have {width} "
                f"(CoNLL: the token first, the same columns on every line): {line!r}"
            )
        tokens.append(columns[0])
    if tokens:
        sentences.append(tokens)
    return sentences


def read_transfer_file(path: str | os.PathLike, file_format: str = "auto") -> list[list[str]]:
    """The sentences (word lists) of an unlabelled text file: one sentence per line, CoNLL columns, or JSON lines
    with ``tokens`` or ``text`` (``file_format``: ``auto``, ``text``, ``conll`` or ``jsonl``). A file that is
    missing, empty, not UTF-8 or not in the format raises an error naming the file and the line."""
    path = os.fspath(path)
    lines = _lines(path)
    kind = _detect_format(lines) if file_format == "auto" else file_format
    if kind == "jsonl":
        return _read_jsonl(path, lines)
    if kind == "conll":
        return _read_conll(path, lines)
    return [line.split() for line in lines if line.strip()]


def transfer_texts(config: TransferConfig, task: Task, raw_train: Dataset, data: DataConfig) -> Dataset:
    """The transfer examples as raw rows of the task (``tokens``/``ner_tags`` for NER, the text and label columns
    for classification), the tags or labels placeholders: augmented copies first, then the files' sentences."""
    token_level = task.name == "ner"
    allowed = TOKEN_AUGMENTATIONS if token_level else SEQUENCE_AUGMENTATIONS
    augmentations = config.augmentations or list(allowed)
    for name in augmentations:
        if name not in allowed:
            raise RecipeError(
                "distillation.transfer.augmentations", name, f"for {task.name}: one of {', '.join(allowed)}"
            )
    files: list[list[str]] = []
    for path in config.files or ():
        files += read_transfer_file(path, config.file_format)
    if config.max_file_sentences is not None:
        files = files[: config.max_file_sentences]
    if token_level:
        gold = list(zip(raw_train["tokens"], raw_train["ner_tags"], strict=True))
        names = _tag_names(raw_train)
        gold = [(list(tokens), [names[t] if names else t for t in tags]) for tokens, tags in gold]
        copies = augment_sentences(gold, config.augmented_copies, augmentations, config.rate, config.seed)
        tokens = [t for t, _ in copies] + files
        tags = [g for _, g in copies] + [["O"] * len(t) for t in files]
        if names:
            index = {name: i for i, name in enumerate(names)}
            tags = [[index[t] for t in row] for row in tags]
        return Dataset.from_dict({"tokens": tokens, "ner_tags": tags}, features=raw_train.features)
    texts = list(raw_train[data.text_column])
    copies = augment_texts(texts, config.augmented_copies, augmentations, config.rate, config.seed)
    rows = copies + [" ".join(words) for words in files]
    if data.text_pair_column:
        raise RecipeError("distillation.transfer", "set", "a transfer set needs single-text classification")
    placeholder = [raw_train[data.label_column][0]] * len(rows)  # any training label: marked as no gold label
    columns: dict[str, Any] = {data.text_column: rows, data.label_column: placeholder}
    return Dataset.from_dict(columns, features=raw_train.select_columns(list(columns)).features)


def _tag_names(raw_train: Dataset) -> Sequence[str] | None:
    feature = raw_train.features["ner_tags"]
    inner = getattr(feature, "feature", None)
    return list(inner.names) if hasattr(inner, "names") else None


def transfer_dataset(
    config: TransferConfig,
    task: Task,
    raw_train: Dataset,
    data: DataConfig,
    tokenizer,
    label2id: dict[str, int],
) -> Dataset:
    """The transfer set tokenized like the training set, its label positions marked as having no gold label:
    concatenate it with the tokenized training set of a :class:`~hf_compress.CompressionTrainer` that distils."""
    raw = transfer_texts(config, task, raw_train, data)
    if len(raw) == 0:
        raise RecipeError("distillation.transfer", "set", "no transfer example: no augmented copy changed a sentence")
    tokenized = task.preprocess(DatasetDict({"train": raw}), tokenizer, label2id, data)["train"]
    marked = task.without_gold_labels(tokenized)
    logger.info(f"transfer set: {len(marked)} examples the teacher labels")
    return marked
