"""Shared fixtures: tiny models built from configs and a tiny WordPiece tokenizer, all offline."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertTokenizerFast,
)

from hf_compress.compat import optimum_available

#: The ONNX exporters of this stack: Optimum's and torch.onnx on the Optimum stack, torch.onnx alone without it.
EXPORTERS = ["optimum", "torch"] if optimum_available() else ["torch"]

NER_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
WORDS = (
    "the a of in to and said on for was is at by with from he it that his as has will be "
    "john smith paris london germany france bank england world cup german united nations "
    "peter blackburn brussels european commission thursday good bad great awful movie film"
).split()


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: give --runslow to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> str:
    """A folder with a small uncased WordPiece tokenizer (words above, letters, digits, punctuation)."""
    folder = tmp_path_factory.mktemp("tokenizer")
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"()-/&$%")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *chars, *[f"##{c}" for c in chars]]
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    # the file positionally: transformers 4 names the argument vocab_file, 5 names it vocab (and ignores vocab_file)
    BertTokenizerFast(str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir) -> BertTokenizerFast:
    return BertTokenizerFast.from_pretrained(tokenizer_dir)


def tiny_bert_config(vocab_size: int, labels: list[str], **overrides) -> BertConfig:
    kwargs = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    kwargs.update(overrides)
    return BertConfig(**kwargs)


@pytest.fixture
def tiny_ner_teacher(tokenizer) -> BertForTokenClassification:
    torch.manual_seed(0)
    return BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS)).eval()


@pytest.fixture
def tiny_cls_teacher(tokenizer) -> BertForSequenceClassification:
    torch.manual_seed(0)
    return BertForSequenceClassification(tiny_bert_config(len(tokenizer), ["negative", "positive"])).eval()
