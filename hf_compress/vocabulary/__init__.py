"""Vocabulary trimming: the word pieces a corpus uses (and the alphabet), with the embedding rows to match.

``config.py`` holds the settings, ``trim.py`` the mechanics (tokenizer rewrite, embedding slicing, report),
``models.py`` what each tokenizer model (WordPiece, BPE, Unigram) keeps and rewrites. Importing the package
registers trimming as the student-preparation step of ``model.student.vocabulary``
(:func:`~hf_compress.students.register_student_step`).
"""

from .config import VocabularyConfig
from .step import trim_student_vocabulary
from .trim import (
    alphabet_ids,
    check_supported_tokenizer,
    count_pieces,
    kept_ids,
    tokenization_changes,
    trim_embeddings,
    trim_tokenizer,
    trim_vocabulary,
)

__all__ = [
    "VocabularyConfig",
    "alphabet_ids",
    "check_supported_tokenizer",
    "count_pieces",
    "kept_ids",
    "tokenization_changes",
    "trim_embeddings",
    "trim_student_vocabulary",
    "trim_tokenizer",
    "trim_vocabulary",
]
