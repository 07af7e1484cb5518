"""Tasks: reading data, aligning labels, scoring. ``get_task(name)`` returns the task for a recipe's ``data.task``."""

import os

from datasets import DatasetDict

from ..configs import DataConfig
from .base import Task, check_data_files
from .text_classification import TextClassificationTask, classification_metrics
from .token_classification import TokenClassificationTask, align_labels_with_tokens, ner_metrics, read_conll

__all__ = [
    "Task",
    "TextClassificationTask",
    "TokenClassificationTask",
    "align_labels_with_tokens",
    "check_data_files",
    "classification_metrics",
    "get_task",
    "load_task_data",
    "task_of_model_class",
    "ner_metrics",
    "read_conll",
]

_TASKS = {
    "ner": TokenClassificationTask,
    "token-classification": TokenClassificationTask,
    "text-classification": TextClassificationTask,
}


def get_task(name: str) -> Task:
    """The task registered under ``name`` (``ner``, ``token-classification``, ``text-classification``)."""
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; allowed: {', '.join(_TASKS)}")
    return _TASKS[name]()


def task_of_model_class(class_name: str) -> Task | None:
    """The task whose model classes end like ``class_name`` (``BertForTokenClassification`` -> NER), or None."""
    for task_class in dict.fromkeys(_TASKS.values()):
        task = task_class()
        if class_name.endswith(task.model_class_suffix):
            return task
    return None


def supported_model_classes() -> str:
    """The model class endings hf-compress handles, for error messages."""
    return " or ".join(task_class().model_class_suffix for task_class in dict.fromkeys(_TASKS.values()))


def load_task_data(data: DataConfig, *, local_only: bool = False) -> tuple[Task, DatasetDict | None, list[str]]:
    """The task of ``data``, its raw splits (``train`` and ``validation``) and its label names, read and checked as
    training reads them. With ``local_only`` (``hf-compress train --check``), a hub dataset is not downloaded:
    ``(task, None, [])``."""
    task = get_task(data.task)
    if local_only and data.train_file is None and not (data.dataset and os.path.isdir(data.dataset)):
        return task, None, []
    check_data_files(data)
    raw = task.load_raw(data)
    if "validation" not in raw:
        raise ValueError("the recipe's data has no validation split: set data.validation_file")
    return task, raw, task.label_list(raw, data)
