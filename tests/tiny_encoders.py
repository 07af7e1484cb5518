"""Tiny random encoders of every described architecture, with offline tokenizers of the kind each ships with
(WordPiece, byte-level BPE, Unigram), trained with the ``tokenizers`` library on the repository's CoNLL sample."""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from tokenizers import decoders as tokenizer_decoders
from tokenizers.implementations import ByteLevelBPETokenizer, SentencePieceUnigramTokenizer
from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer, PreTrainedTokenizerFast

from hf_compress.tasks.token_classification import read_conll

SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "data" / "conll-sample"
LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]

#: One row per described architecture: an id, the model type, the tokenizer kind, whether the tokenizer gives token
#: types (as the architecture's own tokenizer does) and config overrides.
ROWS: dict[str, tuple[str, str, bool, dict]] = {
    "bert": ("bert", "wordpiece", True, {}),
    "distilbert": ("distilbert", "wordpiece", False, {}),
    "roberta": ("roberta", "bpe", False, {}),
    "xlm-roberta": ("xlm-roberta", "unigram", False, {}),
    "camembert": ("camembert", "unigram", False, {}),
    "electra": ("electra", "wordpiece", True, {"embedding_size": 16}),
    "deberta": ("deberta", "bpe", True, {"relative_attention": True, "pos_att_type": ["c2p", "p2c"]}),
    "deberta-v3": (
        "deberta-v2",
        "unigram",
        True,
        {
            "relative_attention": True,
            "pos_att_type": ["p2c", "c2p"],
            "position_buckets": 16,
            "share_att_key": True,
            "norm_rel_ebd": "layer_norm",
            "position_biased_input": False,
            "type_vocab_size": 0,
        },
    ),
    "modernbert": ("modernbert", "bpe", False, {"global_attn_every_n_layers": 2, "local_attention": 8}),
    "mpnet": ("mpnet", "wordpiece", False, {}),
    "mobilebert": (
        "mobilebert",
        "wordpiece",
        True,
        {"embedding_size": 16, "true_hidden_size": 16, "intra_bottleneck_size": 16, "num_feedforward_networks": 2},
    ),
    "albert": ("albert", "unigram", True, {"embedding_size": 16}),
}

#: Special tokens of each tokenizer kind, in id order.
SPECIALS = {
    "wordpiece": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
    "bpe": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    "unigram": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
}


@functools.cache
def sentences() -> list[list[str]]:
    """The word lists of the CoNLL sample's training sentences."""
    return list(read_conll(SAMPLE / "train.txt")["tokens"])


def _texts() -> list[str]:
    return [" ".join(words) for words in sentences()]


def build_tokenizer(kind: str, folder: str | Path, vocab_size: int = 2000, token_types: bool = False):
    """Train a tokenizer of ``kind`` on the sample, save it in ``folder`` and load it back with AutoTokenizer;
    ``token_types``: it returns ``token_type_ids`` too."""
    specials = SPECIALS[kind]
    if kind == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = tokenizer_decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials)
        tokenizer.train_from_iterator(_texts(), trainer)
        cls, sep, pad, unk, mask = "[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]"
    elif kind == "bpe":
        wrapper = ByteLevelBPETokenizer(add_prefix_space=True)
        wrapper.train_from_iterator(_texts(), vocab_size=vocab_size, special_tokens=specials)
        tokenizer = wrapper._tokenizer
        cls, sep, pad, unk, mask = "<s>", "</s>", "<pad>", "<unk>", "<mask>"
    else:
        wrapper = SentencePieceUnigramTokenizer()
        wrapper.train_from_iterator(_texts(), vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>")
        tokenizer = wrapper._tokenizer
        cls, sep, pad, unk, mask = "<s>", "</s>", "<pad>", "<unk>", "<mask>"
    ids = {token: tokenizer.token_to_id(token) for token in specials}
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B {sep}", special_tokens=[(cls, ids[cls]), (sep, ids[sep])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        cls_token=cls,
        sep_token=sep,
        pad_token=pad,
        unk_token=unk,
        mask_token=mask,
        bos_token=cls,
        eos_token=sep,
        add_prefix_space=kind == "bpe",
        model_max_length=128,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"][:: 1 if token_types else 2],
    )
    fast.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def tiny_config(row: str, tokenizer, num_layers: int = 4, **overrides):
    """A tiny config of the row's architecture (hidden 32, 4 heads, FFN 64) for ``tokenizer``'s vocabulary."""
    model_type, _, _, extra = ROWS[row]
    kwargs = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
        **extra,
    )
    kwargs.update(overrides)
    if model_type == "distilbert":
        for name, own in (
            ("hidden_size", "dim"),
            ("num_hidden_layers", "n_layers"),
            ("num_attention_heads", "n_heads"),
        ):
            kwargs[own] = kwargs.pop(name)
        kwargs["hidden_dim"] = kwargs.pop("intermediate_size")
    return AutoConfig.for_model(model_type, **kwargs)


def tiny_model(row: str, tokenizer, seed: int = 0, **overrides):
    """A tiny random token classifier of the row's architecture, in eval mode."""
    torch.manual_seed(seed)
    return AutoModelForTokenClassification.from_config(tiny_config(row, tokenizer, **overrides)).eval()
