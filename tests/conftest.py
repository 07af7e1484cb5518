"""Shared fixtures: tiny models built from configs and a tiny WordPiece tokenizer, all offline."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    BertForSequenceClassification,
    BertForTokenClassification,
    BertTokenizerFast,
)

from hf_compress.compat import optimum_available
from hf_compress.testing import NER_LABELS, WORDS, tiny_bert_config, tiny_tokenizer  # noqa: F401  (used by tests)

pytest.register_assert_rewrite("hf_compress.testing.contract")  # the technique contract, run from a test module

#: The ONNX exporters of this stack: Optimum's and torch.onnx on the Optimum stack, torch.onnx alone without it.
EXPORTERS = ["optimum", "torch"] if optimum_available() else ["torch"]


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
    """A folder with the small uncased WordPiece tokenizer of :func:`hf_compress.testing.tiny_tokenizer`."""
    folder = tmp_path_factory.mktemp("tokenizer")
    tiny_tokenizer(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir) -> BertTokenizerFast:
    return BertTokenizerFast.from_pretrained(tokenizer_dir)


@pytest.fixture
def tiny_ner_teacher(tokenizer) -> BertForTokenClassification:
    torch.manual_seed(0)
    return BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS)).eval()


@pytest.fixture
def tiny_cls_teacher(tokenizer) -> BertForSequenceClassification:
    torch.manual_seed(0)
    return BertForSequenceClassification(tiny_bert_config(len(tokenizer), ["negative", "positive"])).eval()
