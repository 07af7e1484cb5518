"""The settings of vocabulary trimming."""

from __future__ import annotations

from dataclasses import dataclass

from ..configs import check_range

__all__ = ["VocabularyConfig"]


@dataclass
class VocabularyConfig:
    """Keep the word pieces a corpus uses, and the ones every word needs to stay tokenizable.

    Attributes:
        min_count: keep a piece the corpus produces at least this many times (1: every piece it produces, so that
            every corpus sentence tokenizes exactly as before).
        extra_text_files: more text (one text per line) whose pieces are kept too.
        keep_alphabet: keep every single-character piece and its continuation form (``a``, ``##a``): any word made
            of characters the tokenizer knew stays tokenizable without ``[UNK]``.
    """

    min_count: int = 1
    extra_text_files: list[str] | None = None
    keep_alphabet: bool = True

    def __post_init__(self) -> None:
        check_range("min_count", self.min_count, 1)
