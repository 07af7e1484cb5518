"""Sequence classification from CSV / JSON (lines) files or hub datasets, scored by accuracy and macro F1."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
from datasets import ClassLabel, DatasetDict, load_dataset
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, PreTrainedTokenizerBase

from ..configs import DataConfig
from .base import Task, load_hub_dataset, select_first

__all__ = ["TextClassificationTask", "classification_metrics"]


def classification_metrics(id2label: dict[int, str]) -> Callable:
    """A ``compute_metrics`` for the Trainer: accuracy and macro F1."""
    from sklearn.metrics import f1_score

    def compute(eval_pred) -> dict[str, float]:
        logits, labels = eval_pred
        predictions = np.argmax(logits, axis=-1)
        return {
            "accuracy": float((predictions == labels).mean()),
            "f1": float(f1_score(labels, predictions, average="macro", labels=sorted(id2label))),
        }

    return compute


def _file_format(path: str) -> str:
    extension = os.path.splitext(path)[1].lower()
    formats = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json"}
    if extension not in formats:
        raise ValueError(f"{path}: unsupported file type {extension!r}; use .csv, .tsv, .json or .jsonl")
    return formats[extension]


def _check_text_file(path: str) -> None:
    """Fail with the file's name when it is missing, a folder, empty or not UTF-8 (before ``datasets`` reads it)."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a folder; give the data file itself")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file not found: {path}")
    with open(path, "rb") as handle:
        content = handle.read()
    if not content.strip():
        raise ValueError(f"{path}: the file is empty")
    try:
        content.decode("utf-8")
    except UnicodeDecodeError as error:
        line = content[: error.start].count(b"\n") + 1
        raise ValueError(
            f"{path}, line {line}: not UTF-8 text (byte {content[error.start]:#04x}); convert it to UTF-8"
        ) from None


class TextClassificationTask(Task):
    """Single-sentence or sentence-pair classification (``text_column``, optional ``text_pair_column``)."""

    name = "text-classification"
    auto_model_class = AutoModelForSequenceClassification
    metric_name = "accuracy"
    pipeline_tag = "text-classification"
    inference_class = "OnnxTextClassifier"

    def load_raw(self, data: DataConfig) -> DatasetDict:
        if data.train_file is not None:
            files = {"train": data.train_file}
            if data.validation_file is not None:
                files["validation"] = data.validation_file
            kinds = {_file_format(path) for path in files.values()}
            if len(kinds) > 1:
                raise ValueError(f"train and validation files must have the same format, got {files}")
            kind = kinds.pop()
            for path in files.values():
                _check_text_file(path)
            extra = {"delimiter": "\t"} if kind == "csv" and data.train_file.endswith(".tsv") else {}
            try:
                raw = load_dataset(kind, data_files=files, **extra)
            except Exception as error:  # datasets raises several types for unreadable files
                raise ValueError(f"could not read {files}: {error}") from error
        else:
            raw = load_hub_dataset(data)
        columns = [data.text_column, data.label_column] + ([data.text_pair_column] if data.text_pair_column else [])
        for split, ds in raw.items():
            missing = [c for c in columns if c not in ds.column_names]
            if missing:
                source = files[split] if data.train_file is not None else data.dataset
                raise ValueError(
                    f"{source}: missing column(s) {missing}; columns: {ds.column_names} "
                    "(set data.text_column / data.label_column)"
                )
        for split, ds in raw.items():
            values = ds[data.label_column]
            if None in values:
                source = files[split] if data.train_file is not None else data.dataset
                raise ValueError(
                    f"{source}: row {values.index(None) + 1} has no value in the label column {data.label_column!r}"
                )
        if "validation" in raw and not isinstance(raw["train"].features[data.label_column], ClassLabel):
            unseen = sorted(
                set(map(str, raw["validation"][data.label_column])) - set(map(str, raw["train"][data.label_column]))
            )
            if unseen:
                raise ValueError(
                    f"{data.validation_file or data.dataset}: label(s) {unseen} never occur in the training data; "
                    "the label set comes from the training data"
                )
        return select_first(raw, data)

    def texts(self, split, data: DataConfig) -> list[str]:
        texts = list(split[data.text_column])
        if data.text_pair_column:
            texts += list(split[data.text_pair_column])
        return texts

    def label_list(self, raw: DatasetDict, data: DataConfig) -> list[str]:
        feature = raw["train"].features[data.label_column]
        if isinstance(feature, ClassLabel):
            return list(feature.names)
        values = {v for split in raw.values() for v in split[data.label_column]}
        return [str(v) for v in sorted(values)]

    def preprocess(
        self, raw: DatasetDict, tokenizer: PreTrainedTokenizerBase, label2id: dict[str, int], data: DataConfig
    ) -> DatasetDict:
        feature = raw["train"].features[data.label_column]
        names = feature.names if isinstance(feature, ClassLabel) else None

        def tokenize(batch):
            pair = batch[data.text_pair_column] if data.text_pair_column else None
            encoded = tokenizer(batch[data.text_column], pair, truncation=True, max_length=data.max_length)
            labels = []
            for value in batch[data.label_column]:
                name = names[value] if names else str(value)
                if name not in label2id:
                    raise ValueError(f"label {name!r} is not one of the model's labels {list(label2id)}")
                labels.append(label2id[name])
            encoded["labels"] = labels
            return encoded

        return raw.map(tokenize, batched=True, remove_columns=raw["train"].column_names, desc="Tokenizing")

    def data_collator(self, tokenizer: PreTrainedTokenizerBase):
        return DataCollatorWithPadding(tokenizer)

    def compute_metrics(self, id2label: dict[int, str], decoding: str = "argmax") -> Callable:
        if decoding != "argmax":
            raise ValueError(f"decoding {decoding!r} reads tags: NER only; text classification takes the argmax")
        compute = classification_metrics(id2label)
        compute.decoding = "argmax"
        return compute
