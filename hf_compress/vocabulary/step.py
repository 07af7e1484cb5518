"""Vocabulary trimming as the student-preparation step of the recipe's ``model.student.vocabulary``."""

from __future__ import annotations

import os

from transformers.utils import logging

from ..files import atomic_write_json
from ..students import StudentDraft, register_student_step
from .config import VocabularyConfig
from .trim import trim_vocabulary

logger = logging.get_logger(__name__)

__all__ = ["trim_student_vocabulary"]


def trim_student_vocabulary(draft: StudentDraft, config: VocabularyConfig) -> None:
    """The student keeps the pieces of the training data (and the alphabet); the data is then tokenized again with
    its tokenizer, which splits every training sentence as before. The teacher keeps its own tokenizer. The report
    goes to ``vocabulary_report.json`` in the output folder."""
    draft.model, draft.tokenizer, report = trim_vocabulary(
        draft.model, draft.tokenizer, draft.texts("train"), config, validation=draft.texts("validation")
    )
    logger.warning(
        f"student vocabulary trimmed: {report['pieces_before']} -> {report['pieces_after']} pieces, "
        f"{100 * report['validation']['changed_fraction']:.1f}% of the validation pieces split differently"
    )
    if draft.should_save:
        os.makedirs(draft.output_dir, exist_ok=True)
        atomic_write_json(os.path.join(draft.output_dir, "vocabulary_report.json"), report)


register_student_step("vocabulary", trim_student_vocabulary)
