"""What the contract tests of a technique train on, built offline: a tiny WordPiece tokenizer, tiny BERT models
from configs, random NER data; and :func:`run_contract`, the contract suite (:mod:`hf_compress.testing.contract`)
run on named techniques (``hf-compress test-technique NAME``).

Importing this package needs only hf-compress's own requirements; running the contract needs pytest
(``pip install "hf-compress[dev]"``).
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "NER_LABELS",
    "WORDS",
    "flat_params",
    "ner_dataset",
    "run_contract",
    "tiny_bert_config",
    "tiny_tokenizer",
    "training_arguments",
]

NER_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
WORDS = (
    "the a of in to and said on for was is at by with from he it that his as has will be "
    "john smith paris london germany france bank england world cup german united nations "
    "peter blackburn brussels european commission thursday good bad great awful movie film"
).split()


def tiny_tokenizer(folder: str | os.PathLike):
    """A small uncased WordPiece tokenizer (:data:`WORDS`, letters, digits, punctuation) saved in ``folder``."""
    from transformers import BertTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"()-/&$%")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *chars, *[f"##{c}" for c in chars]]
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    # the file positionally: transformers 4 names the argument vocab_file, 5 names it vocab (and ignores vocab_file)
    tokenizer = BertTokenizerFast(str(folder / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(folder)
    return tokenizer


def tiny_bert_config(vocab_size: int, labels: Sequence[str], **overrides: Any):
    """A ``BertConfig`` of 4 layers, width 32, 4 heads, FFN 64, with ``labels`` (``overrides`` replace any)."""
    from transformers import BertConfig

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


def ner_dataset(tokenizer, n: int = 48, seed: int = 0):
    """``n`` random sentences of :data:`WORDS` (3 to 12 words) with random NER labels, tokenized."""
    from datasets import Dataset

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        length = rng.randint(3, 12)
        ids = [tokenizer.convert_tokens_to_ids(rng.choice(WORDS)) for _ in range(length)]
        labels = [rng.randrange(len(NER_LABELS)) for _ in ids]
        rows.append(
            {"input_ids": [tokenizer.cls_token_id, *ids, tokenizer.sep_token_id], "labels": [-100, *labels, -100]}
        )
    return Dataset.from_list(rows)


def training_arguments(path: str | os.PathLike, **kwargs: Any):
    """``TrainingArguments`` for a few quick, seeded CPU steps (``kwargs`` replace any)."""
    from transformers import TrainingArguments

    defaults = dict(
        per_device_train_batch_size=8,
        num_train_epochs=2,
        learning_rate=1e-3,
        logging_steps=2,
        report_to="none",
        save_strategy="no",
        seed=7,
        use_cpu=True,
        disable_tqdm=True,
    )
    return TrainingArguments(str(path), **{**defaults, **kwargs})


def flat_params(model: torch.nn.Module) -> torch.Tensor:
    """Every parameter of ``model``, flattened into one vector."""
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def run_contract(names: Sequence[str], pytest_args: Sequence[str] = ()) -> int:
    """Run the contract tests (:mod:`hf_compress.testing.contract`) on the techniques registered under ``names``;
    return pytest's exit code (0: every test passed).

    ``ValueError`` for a name that is not registered (import its module first), ``ModuleNotFoundError`` without
    pytest.
    """
    from ..technique import get_technique, registered_techniques

    try:
        import pytest
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "the contract tests need pytest: pip install 'hf-compress[dev]' (or pip install pytest)"
        ) from None
    for name in names:
        if get_technique(name) is None:
            known = ", ".join(t.name for t in registered_techniques())
            raise ValueError(
                f"no technique '{name}' is registered (registered: {known}); install its plugin or give "
                "--import MODULE"
            )
    contract = Path(__file__).with_name("contract.py")
    pytest.register_assert_rewrite(f"{__name__}.contract")  # the failing values in the messages
    selected = [arg for name in names for arg in ("--hf-compress-technique", name)]
    quiet = ["-p", "no:cacheprovider", "-W", "ignore::pytest.PytestAssertRewriteWarning"]
    return int(pytest.main([str(contract), *quiet, *selected, *pytest_args], plugins=[_Options()]))


class _Options:
    """The pytest plugin that declares the option naming the techniques to test."""

    def pytest_addoption(self, parser) -> None:
        parser.addoption(
            "--hf-compress-technique",
            action="append",
            default=None,
            help="run the contract tests on this technique (repeatable; default: every registered technique)",
        )
