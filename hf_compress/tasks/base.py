"""What every task provides to the trainer: data, labels, preprocessing, collator and metrics."""

from __future__ import annotations

import abc
import os
from collections.abc import Callable

from datasets import DatasetDict, load_dataset
from transformers import PreTrainedTokenizerBase

from ..configs import DataConfig
from .files import load_saved_dataset

__all__ = ["NO_GOLD_LABEL", "Task", "load_hub_dataset", "select_first"]

#: The label of a position to predict whose gold label is unknown (an example the teacher labels: distillation's
#: transfer set). Losses that read gold labels skip it like -100; the teacher's terms count it.
NO_GOLD_LABEL = -99


class Task(abc.ABC):
    """A supervised task: how to read its data and score a model on it."""

    name: str
    auto_model_class: type
    metric_name: str  # the key of ``compute_metrics`` results that ranks models (``eval_<metric_name>``)
    pipeline_tag: str  # Optimum's task for the ONNX export, and the Hub's pipeline tag
    inference_class: str  # the class of hf_compress.inference that runs an export of the task

    @property
    def model_class_suffix(self) -> str:
        """What the model classes of the task end with (``ForTokenClassification``)."""
        return self.auto_model_class.__name__.removeprefix("AutoModel")

    @property
    def ort_model_class(self) -> str:
        """The ``optimum.onnxruntime`` class that loads an export of the task."""
        return "ORTModel" + self.model_class_suffix

    @abc.abstractmethod
    def load_raw(self, data: DataConfig) -> DatasetDict:
        """The raw ``train`` (and ``validation`` when there is one) splits."""

    @abc.abstractmethod
    def texts(self, split, data: DataConfig) -> list:
        """The texts of a raw split as the tokenizer reads them (strings, or word lists for NER)."""

    @abc.abstractmethod
    def label_list(self, raw: DatasetDict, data: DataConfig) -> list[str]:
        """Label names in id order."""

    @abc.abstractmethod
    def preprocess(
        self, raw: DatasetDict, tokenizer: PreTrainedTokenizerBase, label2id: dict[str, int], data: DataConfig
    ) -> DatasetDict:
        """Tokenized splits with ``labels``."""

    def without_gold_labels(self, tokenized):
        """Tokenized examples whose labels are placeholders, marked as having no gold label: label positions
        become :data:`NO_GOLD_LABEL` (per token), or the example's label -100 (per sequence)."""

        def mark(batch):
            return {
                "labels": [
                    [NO_GOLD_LABEL if label != -100 else -100 for label in row] if isinstance(row, list) else -100
                    for row in batch["labels"]
                ]
            }

        return tokenized.map(mark, batched=True, desc="Marking transfer examples")

    @abc.abstractmethod
    def data_collator(self, tokenizer: PreTrainedTokenizerBase):
        """The collator that pads a batch."""

    @abc.abstractmethod
    def compute_metrics(self, id2label: dict[int, str], decoding: str = "argmax") -> Callable:
        """A ``compute_metrics`` function for the Trainer; its ``decoding`` attribute says how predictions are read
        from the logits (:mod:`hf_compress.tasks.decoding`)."""


def load_hub_dataset(data: DataConfig) -> DatasetDict:
    """``datasets.load_dataset(dataset, dataset_config)``, or a local folder written by ``save_to_disk``, with the
    usual split names checked."""
    if os.path.isdir(data.dataset) and any(
        os.path.isfile(os.path.join(data.dataset, name)) for name in ("dataset_dict.json", "state.json")
    ):
        raw = load_saved_dataset(data.dataset)
    else:
        raw = load_dataset(data.dataset, data.dataset_config)
    if "train" not in raw:
        raise ValueError(f"dataset {data.dataset!r} has no 'train' split (splits: {list(raw)})")
    splits = {"train": raw["train"]}
    for name in ("validation", "valid", "dev", "test"):
        if name in raw:
            splits["validation"] = raw[name]
            break
    return DatasetDict(splits)


def select_first(raw: DatasetDict, data: DataConfig) -> DatasetDict:
    """Keep the first ``max_train_samples`` / ``max_eval_samples`` examples."""
    limits = {"train": data.max_train_samples, "validation": data.max_eval_samples}
    return DatasetDict(
        {
            split: ds.select(range(min(len(ds), limits[split]))) if limits.get(split) else ds
            for split, ds in raw.items()
        }
    )


def check_data_files(data: DataConfig) -> None:
    """Fail early, before any model is loaded, when a data file given in the recipe does not exist."""
    for key in ("train_file", "validation_file"):
        path = getattr(data, key)
        if path is not None and os.path.isdir(path):
            raise IsADirectoryError(f"data.{key}: {path} is a folder; give the data file itself")
        if path is not None and not os.path.isfile(path):
            raise FileNotFoundError(f"data.{key}: file not found: {path}")
