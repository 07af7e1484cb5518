"""What share of an XLM-R-base-shaped token classifier vocabulary trimming to a CoNLL-sized corpus removes.

The model is ``XLMRobertaConfig`` at XLM-R base's sizes (250,002 pieces, hidden 768, 12 layers, FFN 3072, 514
positions), built on the meta device (no weights: only the shapes count). The tokenizer is a 250,002-piece Unigram
(SentencePiece) model trained offline with the ``tokenizers`` library (``--train_corpus``: any text, not the
corpus to trim to) or given as a ``tokenizer.json``. :func:`hf_compress.trim_vocabulary` then keeps the pieces the
corpus produces, the special tokens and the alphabet; the share removed is ``(V - kept) * 768`` over the model's
parameters, which the report's parameter counts give.

    python benchmarks/xlmr_trim_share.py --train_corpus text.txt --train_file conll2003/train.txt
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast, XLMRobertaConfig, XLMRobertaForTokenClassification

from hf_compress import trim_vocabulary
from hf_compress.tasks.token_classification import read_conll

PIECES = 250_002
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]


def train_tokenizer(corpus: Path, target: Path) -> None:
    """A 250,002-piece Unigram tokenizer (XLM-R's size, specials and post-processing) trained on ``corpus``."""
    from tokenizers import processors
    from tokenizers.implementations import SentencePieceUnigramTokenizer

    def lines():
        with open(corpus, encoding="utf-8", errors="ignore") as handle:
            yield from (line.strip() for line in handle if line.strip())

    tokenizer = SentencePieceUnigramTokenizer()
    tokenizer.train_from_iterator(lines(), vocab_size=PIECES - 1, special_tokens=SPECIALS, unk_token="<unk>")
    tokenizer.add_special_tokens(["<mask>"])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    tokenizer.save(str(target))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", default="benchmarks/results/xlmr-unigram-250k/tokenizer.json")
    parser.add_argument("--train_corpus", help="train the tokenizer on this text first (one text per line)")
    parser.add_argument("--train_file", required=True, help="the CoNLL file to trim to")
    parser.add_argument("--output", default="benchmarks/results/xlmr_trim_share.json")
    args = parser.parse_args()
    path = Path(args.tokenizer)
    if args.train_corpus:
        path.parent.mkdir(parents=True, exist_ok=True)
        start = time.time()
        train_tokenizer(Path(args.train_corpus), path)
        print(f"tokenizer trained in {time.time() - start:.0f} s")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(path), bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>",
        pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
    )  # fmt: skip
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=514,
        type_vocab_size=1,
        num_labels=9,
    )
    with torch.device("meta"):
        model = XLMRobertaForTokenClassification(config)
    sentences = list(read_conll(args.train_file)["tokens"])
    _, trimmed, report = trim_vocabulary(model, tokenizer, sentences)
    before, after = report["parameters_before"], report["parameters_after"]
    result = {
        "tokenizer_pieces": len(tokenizer),
        "corpus_sentences": len(sentences),
        "pieces_in_corpus": report["pieces_in_corpus"],
        "pieces_kept": len(trimmed),
        "parameters_before": before,
        "parameters_after": after,
        "embedding_share_before": len(tokenizer) * 768 / before,
        "share_removed": (before - after) / before,
        "removed_is_(V-kept)*768": before - after == (len(tokenizer) - len(trimmed)) * 768,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
