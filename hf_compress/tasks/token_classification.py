"""Token classification (NER): CoNLL files, JSON (lines) or Parquet files of ``tokens``/``ner_tags`` rows, hub
datasets or folders saved with ``save_to_disk``; first-sub-token label alignment, seqeval F1.

The metric calls :mod:`seqeval` directly (entity-level micro F1, the CoNLL-2003 convention), so it works offline,
unlike ``evaluate.load("seqeval")`` which fetches the metric's code from the hub.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from datasets import ClassLabel, Dataset, DatasetDict, Sequence
from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification, PreTrainedTokenizerBase

from ..checks import short_repr
from ..configs import DataConfig
from .base import Task, load_hub_dataset, select_first
from .decoding import decode_tags, iob2_transitions
from .files import file_dataset, read_bytes, read_table, table_format, utf8_lines

__all__ = ["TokenClassificationTask", "read_conll", "read_ner_file", "align_labels_with_tokens", "ner_metrics"]

_TAG = re.compile(r"^(O|[BIES]-\S+)$")


def read_conll(path: str | os.PathLike) -> Dataset:
    """Read a CoNLL file (one ``TOKEN ... TAG`` line per token, blank lines between sentences).

    The first column is the token and the last the tag (IOB2: ``B-`` starts every entity, ``I-`` continues one;
    ``E-``/``S-`` of IOBES are accepted too); ``-DOCSTART-`` lines are skipped. Columns in between (POS, chunk)
    are ignored, but every line must have as many columns as the file's first token line. Any problem (a file that
    is missing, empty, not UTF-8, a malformed line, an ``I-`` tag that continues no entity) raises an error naming
    the file and line.
    """
    sentences: list[tuple[list[str], list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    width = None
    content = read_bytes(path, "CoNLL file")
    for line_number, line in utf8_lines(content, path):
        columns = line.split()
        if not columns or columns[0] == "-DOCSTART-":
            if tokens:
                sentences.append((tokens, tags))
                tokens, tags = [], []
            continue
        where = f"{path}, line {line_number}"
        if len(columns) < 2:
            raise ValueError(f"{where}: expected 'TOKEN ... TAG' (at least 2 columns), got {line.rstrip()!r}")
        if width is None:
            width = len(columns)
        elif len(columns) != width:
            raise ValueError(
                f"{where}: {len(columns)} columns where the file's lines have {width} "
                f"(a token with a space in it, or a missing column?): {line.rstrip()!r}"
            )
        tag = columns[-1]
        problem = _tag_problem(tag, tags[-1] if tags else None)
        if problem:
            raise ValueError(f"{where}: {problem}" + (f" in {line.rstrip()!r}" if "IOB tag" in problem else ""))
        tokens.append(columns[0])
        tags.append(tag)
    if tokens:
        sentences.append((tokens, tags))
    if not sentences:
        raise ValueError(f"{path}: no sentences found (expected CoNLL format: 'TOKEN ... TAG' lines)")
    columns = {"tokens": [s[0] for s in sentences], "ner_tags": [s[1] for s in sentences]}
    return file_dataset(columns, content)


def _tag_names(feature) -> list[str] | None:
    """The tag names of a ``ner_tags`` feature of ``ClassLabel`` ids, or None (tags are names)."""
    return feature.feature.names if isinstance(feature, Sequence) and isinstance(feature.feature, ClassLabel) else None


def _tag_problem(tag: str, previous: str | None) -> str | None:
    """What is wrong with ``tag`` after ``previous`` (None at the sentence start) in IOB2, or None."""
    if not _TAG.match(tag):
        return f"{tag!r} is not an IOB tag (O, B-TYPE or I-TYPE)"
    if tag[:2] in ("I-", "E-") and (previous is None or previous[:2] not in ("B-", "I-") or previous[2:] != tag[2:]):
        return (
            f"{tag!r} after {previous or 'the sentence start'!r}: in IOB2 an entity starts with B-{tag[2:]} "
            "(convert IOB1 files, where I- may start an entity, to IOB2)"
        )
    return None


def read_ner_file(path: str | os.PathLike) -> Dataset:
    """A NER data file: JSON (lines) or Parquet rows with ``tokens`` (the words) and ``ner_tags`` (one IOB2 tag name
    per word, or ``ClassLabel`` ids), as ``transformers``' ``run_ner.py`` reads them; any other file is CoNLL
    (:func:`read_conll`). Problems raise one line naming the file and the line or row."""
    path = str(path)
    kind = table_format(path)
    if kind is None:
        return read_conll(path)
    if kind == "csv":
        raise ValueError(f"{path}: NER data cannot be CSV (no word lists in cells); use CoNLL, JSON lines or Parquet")
    table, where = read_table(path)
    missing = [c for c in ("tokens", "ner_tags") if c not in table.column_names]
    if missing:
        raise ValueError(
            f"{path}: no column(s) {missing} (columns: {table.column_names}); NER rows hold 'tokens' (the words) "
            "and 'ner_tags' (one tag per word)"
        )
    names = _tag_names(table.features["ner_tags"])
    sentences, tag_lists = [], []
    for index, (tokens, tags) in enumerate(zip(table["tokens"], table["ner_tags"], strict=True)):
        at = f"{path}, {where(index)}"
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise ValueError(f"{at}: 'tokens' must be a list of words (strings), got {short_repr(tokens)}")
        if names is not None and isinstance(tags, list):
            tags = [names[t] for t in tags]
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ValueError(
                f"{at}: 'ner_tags' must be a list of tag names (O, B-PER, I-PER, ...), got {short_repr(tags)} "
                "(integer tags need their names: a ClassLabel feature, as save_to_disk keeps it)"
            )
        if len(tags) != len(tokens):
            raise ValueError(f"{at}: {len(tokens)} tokens but {len(tags)} ner_tags")
        for position, tag in enumerate(tags):
            problem = _tag_problem(tag, tags[position - 1] if position else None)
            if problem:
                raise ValueError(f"{at}: {problem}")
        sentences.append(tokens)
        tag_lists.append(tags)
    # fingerprinted by the file's content, as read_table fingerprinted the table it read
    return file_dataset({"tokens": sentences, "ner_tags": tag_lists}, table._fingerprint.encode())


def _check_tags_seen_in_training(train: Dataset, validation: Dataset, data: DataConfig) -> None:
    """A validation tag the training file never uses is outside the label set the model learns: refuse it."""
    known = {tag for tags in train["ner_tags"] for tag in tags}
    for index, tags in enumerate(validation["ner_tags"]):
        unknown = sorted(set(tags) - known)
        if unknown:
            raise ValueError(
                f"{data.validation_file}: sentence {index + 1} has tag(s) {unknown} that {data.train_file} never "
                f"uses; the label set comes from the training file: {sorted(known)}"
            )


def label_list_from_tags(tag_lists: list[list[str]]) -> list[str]:
    """``O`` first, then ``B-``/``I-`` of each entity type in alphabetical order (and ``E-``/``S-``, IOBES, when the
    tags use them)."""
    seen = {tag for tags in tag_lists for tag in tags}
    types = sorted({tag[2:] for tag in seen if tag != "O"})
    prefixes = ("B", "I", *(p for p in ("E", "S") if any(tag.startswith(f"{p}-") for tag in seen)))
    return ["O"] + [f"{prefix}-{kind}" for kind in types for prefix in prefixes]


def align_labels_with_tokens(
    word_ids: list[int | None], word_labels: list[int], label_all_tokens: bool = False
) -> list[int]:
    """Label the first sub-token of each word; -100 for special tokens and (unless asked) later sub-tokens."""
    aligned, previous = [], None
    for word_id in word_ids:
        if word_id is None:
            aligned.append(-100)
        elif word_id != previous or label_all_tokens:
            aligned.append(word_labels[word_id])
        else:
            aligned.append(-100)
        previous = word_id
    return aligned


def ner_metrics(id2label: dict[int, str], decoding: str = "argmax") -> Callable:
    """A ``compute_metrics`` for the Trainer: entity-level precision, recall, F1 (seqeval) and token accuracy, the
    tags read from the logits of the labelled positions by ``decoding`` (``argmax`` or ``constrained``)."""
    from seqeval.metrics import f1_score, precision_score, recall_score

    if decoding == "constrained":
        iob2_transitions([id2label[i] for i in range(len(id2label))])  # IOB2 labels, or a clear error now

    def compute(eval_pred) -> dict[str, float]:
        logits, labels = eval_pred
        keep = labels != -100
        predictions = decode_tags(logits, keep, id2label, decoding)
        true_tags = [[id2label[int(i)] for i in row[k]] for row, k in zip(labels, keep, strict=True)]
        pred_tags = [[id2label[int(i)] for i in row[k]] for row, k in zip(predictions, keep, strict=True)]
        correct, total = int((predictions[keep] == labels[keep]).sum()), int(keep.sum())
        return {
            "precision": precision_score(true_tags, pred_tags),
            "recall": recall_score(true_tags, pred_tags),
            "f1": f1_score(true_tags, pred_tags),
            "accuracy": correct / max(total, 1),
        }

    compute.decoding = decoding
    return compute


class TokenClassificationTask(Task):
    """NER on local files (``train_file``/``validation_file``: CoNLL, JSON lines, JSON or Parquet), or a hub dataset
    or ``save_to_disk`` folder with ``tokens``/``ner_tags``."""

    name = "ner"
    auto_model_class = AutoModelForTokenClassification
    metric_name = "f1"
    pipeline_tag = "token-classification"
    inference_class = "OnnxTokenClassifier"

    def load_raw(self, data: DataConfig) -> DatasetDict:
        if data.train_file is not None:
            splits = {"train": read_ner_file(data.train_file)}
            if data.validation_file is not None:
                splits["validation"] = read_ner_file(data.validation_file)
                _check_tags_seen_in_training(splits["train"], splits["validation"], data)
            raw = DatasetDict(splits)
        else:
            raw = load_hub_dataset(data)
            for column in ("tokens", "ner_tags"):
                if column not in raw["train"].column_names:
                    raise ValueError(
                        f"dataset {data.dataset!r} has no {column!r} column (columns: {raw['train'].column_names})"
                    )
        return select_first(raw, data)

    def texts(self, split, data: DataConfig) -> list[list[str]]:
        return list(split["tokens"])

    def label_list(self, raw: DatasetDict, data: DataConfig) -> list[str]:
        feature = raw["train"].features["ner_tags"]
        if isinstance(feature, Sequence) and isinstance(feature.feature, ClassLabel):
            return list(feature.feature.names)
        tag_lists = [tags for split in raw.values() for tags in split["ner_tags"]]
        return label_list_from_tags(tag_lists)

    def preprocess(
        self, raw: DatasetDict, tokenizer: PreTrainedTokenizerBase, label2id: dict[str, int], data: DataConfig
    ) -> DatasetDict:
        feature = raw["train"].features["ner_tags"]
        names = (
            feature.feature.names
            if isinstance(feature, Sequence) and isinstance(feature.feature, ClassLabel)
            else None
        )
        seen = {names[t] if names else t for split in raw.values() for tags in split["ner_tags"] for t in tags}
        unknown = seen - set(label2id)
        if unknown:
            raise ValueError(
                f"the data has tags the model does not know: {sorted(unknown)}; model labels: {list(label2id)}"
            )

        def tokenize(batch):
            encoded = tokenizer(batch["tokens"], is_split_into_words=True, truncation=True, max_length=data.max_length)
            encoded["labels"] = [
                align_labels_with_tokens(
                    encoded.word_ids(i), [label2id[names[t] if names else t] for t in tags], data.label_all_tokens
                )
                for i, tags in enumerate(batch["ner_tags"])
            ]
            return encoded

        return raw.map(
            tokenize, batched=True, remove_columns=raw["train"].column_names, desc="Tokenizing and aligning labels"
        )

    def data_collator(self, tokenizer: PreTrainedTokenizerBase):
        return DataCollatorForTokenClassification(tokenizer)

    def compute_metrics(self, id2label: dict[int, str], decoding: str = "argmax") -> Callable:
        return ner_metrics(id2label, decoding)
