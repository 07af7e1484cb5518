"""Augmented copies of a training set, for distillation (the teacher labels them; no gold label is used).

Token classification, after Dai & Adel (COLING 2020, "An Analysis of Simple Data Augmentation for Named Entity
Recognition"); each operation draws one Bernoulli(``rate``) per unit:

- ``mention_replacement``: a mention (a ``B-X I-X ...`` span) is swapped for another mention of type X from the
  training set, its tags rewritten for the new length;
- ``label_wise_token_replacement``: a token is replaced by a training token with the same tag, drawn by frequency;
- ``shuffle_within_segments``: a segment (a mention, or a run of ``O``) has its tokens shuffled, tags kept.

Tags stay legal IOB2 after each operation. Sequence classification, after Wei & Zou (EMNLP 2019, "EDA"): words
replaced by training words (``token_replacement``), deleted (``token_deletion``, one word always kept) or swapped
with another position (``token_swap``).

Every function is pure given its ``random.Random``: the copies are a function of the training set and the seed.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Sequence

__all__ = [
    "SEQUENCE_AUGMENTATIONS",
    "TOKEN_AUGMENTATIONS",
    "augment_sentences",
    "augment_texts",
    "label_wise_token_replacement",
    "mention_replacement",
    "mention_spans",
    "shuffle_within_segments",
    "token_deletion",
    "token_replacement",
    "token_swap",
]

Tagged = tuple[list[str], list[str]]


def mention_spans(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """The mentions of an IOB2 tag sequence as ``(start, end, type)``, ``end`` exclusive."""
    spans, start = [], None
    for i, tag in enumerate([*tags, "O"]):
        if start is not None and not (tag.startswith("I-") and tag[2:] == tags[start][2:]):
            spans.append((start, i, tags[start][2:]))
            start = None
        if tag.startswith("B-") or (tag.startswith("I-") and start is None):
            start = i
    return spans


def _segments(tags: Sequence[str]) -> list[tuple[int, int]]:
    """Mentions and the runs of ``O`` between them, in order, as ``(start, end)``."""
    segments, position = [], 0
    for start, end, _ in mention_spans(tags):
        if start > position:
            segments.append((position, start))
        segments.append((start, end))
        position = end
    if position < len(tags):
        segments.append((position, len(tags)))
    return segments


class TrainingVocabulary:
    """What the operations draw from: the training set's mentions by type and tokens by tag (with repeats, so that
    a draw follows the frequencies)."""

    def __init__(self, sentences: Sequence[Tagged]):
        self.mentions: dict[str, list[tuple[str, ...]]] = defaultdict(list)
        self.tokens: dict[str, list[str]] = defaultdict(list)
        for tokens, tags in sentences:
            for start, end, kind in mention_spans(tags):
                self.mentions[kind].append(tuple(tokens[start:end]))
            for token, tag in zip(tokens, tags, strict=True):
                self.tokens[tag].append(token)


def mention_replacement(
    tokens: list[str], tags: list[str], vocab: TrainingVocabulary, rng: random.Random, rate: float
) -> Tagged:
    """Each mention, with probability ``rate``, becomes a training mention of the same type."""
    out_tokens, out_tags, position = [], [], 0
    for start, end, kind in mention_spans(tags):
        out_tokens += tokens[position:start]
        out_tags += tags[position:start]
        if rng.random() < rate and vocab.mentions.get(kind):
            mention = list(rng.choice(vocab.mentions[kind]))
            out_tokens += mention
            out_tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(mention) - 1)
        else:
            out_tokens += tokens[start:end]
            out_tags += tags[start:end]
        position = end
    return out_tokens + tokens[position:], out_tags + tags[position:]


def label_wise_token_replacement(
    tokens: list[str], tags: list[str], vocab: TrainingVocabulary, rng: random.Random, rate: float
) -> Tagged:
    """Each token, with probability ``rate``, becomes a training token with the same tag."""
    out = [
        rng.choice(vocab.tokens[tag]) if rng.random() < rate and vocab.tokens.get(tag) else token
        for token, tag in zip(tokens, tags, strict=True)
    ]
    return out, list(tags)


def shuffle_within_segments(
    tokens: list[str], tags: list[str], vocab: TrainingVocabulary, rng: random.Random, rate: float
) -> Tagged:
    """Each segment (a mention or a run of ``O``), with probability ``rate``, has its tokens shuffled."""
    out = list(tokens)
    for start, end in _segments(tags):
        if rng.random() < rate and end - start > 1:
            part = out[start:end]
            rng.shuffle(part)
            out[start:end] = part
    return out, list(tags)


def token_replacement(words: list[str], vocabulary: Sequence[str], rng: random.Random, rate: float) -> list[str]:
    """Each word, with probability ``rate``, becomes a word of the training texts (drawn by frequency)."""
    return [rng.choice(vocabulary) if rng.random() < rate and vocabulary else word for word in words]


def token_deletion(words: list[str], vocabulary: Sequence[str], rng: random.Random, rate: float) -> list[str]:
    """Each word, with probability ``rate``, is deleted; one word is always kept."""
    kept = [word for word in words if rng.random() >= rate]
    return kept or ([rng.choice(words)] if words else [])


def token_swap(words: list[str], vocabulary: Sequence[str], rng: random.Random, rate: float) -> list[str]:
    """``round(rate * len(words))`` times (at least once), two random positions swap their words."""
    out = list(words)
    if len(out) < 2:
        return out
    for _ in range(max(1, round(rate * len(out)))):
        i, j = rng.sample(range(len(out)), 2)
        out[i], out[j] = out[j], out[i]
    return out


TOKEN_AUGMENTATIONS: dict[str, Callable] = {
    "mention_replacement": mention_replacement,
    "label_wise_token_replacement": label_wise_token_replacement,
    "shuffle_within_segments": shuffle_within_segments,
}
SEQUENCE_AUGMENTATIONS: dict[str, Callable] = {
    "token_replacement": token_replacement,
    "token_deletion": token_deletion,
    "token_swap": token_swap,
}


def _copy_random(seed: int, copy: int) -> random.Random:
    return random.Random(f"{seed}/{copy}")


def augment_sentences(
    sentences: Sequence[Tagged], copies: int, augmentations: Sequence[str], rate: float, seed: int
) -> list[Tagged]:
    """``copies`` augmented copies of tagged sentences: each operation in ``augmentations`` applied in turn to every
    sentence of every copy. A sentence that no operation changed is left out (the teacher already sees it)."""
    vocab = TrainingVocabulary(sentences)
    operations = [TOKEN_AUGMENTATIONS[name] for name in augmentations]
    out = []
    for copy in range(copies):
        rng = _copy_random(seed, copy)
        for tokens, tags in sentences:
            new_tokens, new_tags = list(tokens), list(tags)
            for operation in operations:
                new_tokens, new_tags = operation(new_tokens, new_tags, vocab, rng, rate)
            if new_tokens != list(tokens):
                out.append((new_tokens, new_tags))
    return out


def augment_texts(
    texts: Sequence[str], copies: int, augmentations: Sequence[str], rate: float, seed: int
) -> list[str]:
    """``copies`` augmented copies of texts (words split on whitespace), as :func:`augment_sentences`."""
    vocabulary = [word for text in texts for word in text.split()]
    operations = [SEQUENCE_AUGMENTATIONS[name] for name in augmentations]
    out = []
    for copy in range(copies):
        rng = _copy_random(seed, copy)
        for text in texts:
            words = text.split()
            for operation in operations:
                words = operation(words, vocabulary, rng, rate)
            new = " ".join(words)
            if new != " ".join(text.split()):
                out.append(new)
    return out
