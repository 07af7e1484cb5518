"""Sequence classification from CSV, TSV, JSON (lines) or Parquet files, hub datasets or ``save_to_disk`` folders,
scored by accuracy and macro F1."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from datasets import ClassLabel, DatasetDict
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, PreTrainedTokenizerBase

from ..checks import short_repr
from ..configs import DataConfig
from .base import Task, load_hub_dataset, select_first
from .files import missing_value, read_table, table_format

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


def _check_columns(ds, data: DataConfig, source: str, where: Callable[[int], str]) -> None:
    """The text columns hold text and the label column a label in every row (``where(i)``: row i in ``source``)."""
    texts = [data.text_column] + ([data.text_pair_column] if data.text_pair_column else [])
    missing = [c for c in [*texts, data.label_column] if c not in ds.column_names]
    if missing:
        raise ValueError(
            f"{source}: missing column(s) {missing}; columns: {ds.column_names} "
            "(set data.text_column / data.label_column)"
        )
    for column in texts:
        for index, value in enumerate(ds[column]):
            if not isinstance(value, str):
                what = "no text" if missing_value(value) else f"{short_repr(value)}, not text,"
                raise ValueError(f"{source}, {where(index)}: {what} in column {column!r}")
    for index, value in enumerate(ds[data.label_column]):
        if missing_value(value) or not isinstance(value, (str, int, float)):
            what = "no value" if missing_value(value) else f"{short_repr(value)}, not a label,"
            raise ValueError(f"{source}, {where(index)}: {what} in the label column {data.label_column!r}")


class TextClassificationTask(Task):
    """Single-sentence or sentence-pair classification (``text_column``, optional ``text_pair_column``) on CSV, TSV,
    JSON (lines) or Parquet files, a hub dataset or a ``save_to_disk`` folder."""

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
            kinds = {table_format(path) for path in files.values()}
            if len(kinds) > 1:
                raise ValueError(f"train and validation files must have the same format, got {files}")
            tables = {split: read_table(path) for split, path in files.items()}
            raw = DatasetDict({split: table for split, (table, _) in tables.items()})
            sources = {split: (files[split], where) for split, (_, where) in tables.items()}
        else:
            raw = load_hub_dataset(data)
            sources = {split: (f"{data.dataset} ({split})", lambda i: f"row {i + 1}") for split in raw}
        for split, ds in raw.items():
            _check_columns(ds, data, *sources[split])
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
        try:
            ordered = sorted(values)  # numbers in numeric order
        except TypeError:  # numbers in one split, strings in another
            ordered = sorted(values, key=str)
        return list(dict.fromkeys(str(v) for v in ordered))

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
