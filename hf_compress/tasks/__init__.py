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
