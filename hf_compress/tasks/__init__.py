"""Tasks: reading data, aligning labels, scoring. ``get_task(name)`` returns the task for a recipe's ``data.task``."""

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
