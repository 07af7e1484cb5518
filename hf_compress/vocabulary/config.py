"""The settings of vocabulary trimming (a block of the recipe's ``model.student``, defined with the model block)."""

from ..configs import VocabularyConfig

__all__ = ["VocabularyConfig"]
