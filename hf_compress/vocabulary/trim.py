"""Vocabulary trimming: keep the pieces a corpus uses (and the alphabet), slice the embedding rows to match.

WordPiece, BPE (byte-level or not) and Unigram (SentencePiece) tokenizers are rewritten so that every corpus text
tokenizes exactly as before (:mod:`~hf_compress.vocabulary.models` says why for each); a text that used a removed
piece falls back to shorter pieces (down to the alphabet, which ``keep_alphabet`` keeps). The trimmed model and
tokenizer are ordinary: they save and load with ``AutoModel*.from_pretrained`` / ``AutoTokenizer.from_pretrained``.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import VocabularyConfig
from .models import TOKENIZER_MODELS, BPEModel, TokenizerModel

__all__ = [
    "alphabet_ids",
    "check_supported_tokenizer",
    "count_pieces",
    "kept_ids",
    "reachable_ids",
    "tokenization_changes",
    "trim_embeddings",
    "trim_tokenizer",
    "trim_vocabulary",
]

#: The tokenizer models vocabulary trimming rewrites.
SUPPORTED_MODELS = tuple(TOKENIZER_MODELS)


def _supported() -> str:
    return "; ".join(f"{m.kind} ({m.examples})" for m in TOKENIZER_MODELS.values())


def check_supported_tokenizer(tokenizer) -> dict[str, Any]:
    """The fast tokenizer's JSON, or ``ValueError`` naming what is supported."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(
            f"vocabulary trimming needs a fast tokenizer (tokenizer.json); got {type(tokenizer).__name__}: "
            f"supported: fast tokenizers of {_supported()}"
        )
    spec = json.loads(backend.to_str())
    kind = spec["model"]["type"]
    if kind not in TOKENIZER_MODELS:
        raise ValueError(
            f"vocabulary trimming rewrites {', '.join(SUPPORTED_MODELS)} vocabularies; this tokenizer's model is "
            f"{kind} ({type(tokenizer).__name__}): supported: fast tokenizers of {_supported()}"
        )
    return spec


def _rules(tokenizer) -> tuple[dict[str, Any], TokenizerModel]:
    spec = check_supported_tokenizer(tokenizer)
    return spec, TOKENIZER_MODELS[spec["model"]["type"]]


def count_pieces(tokenizer, texts: Iterable[str | Sequence[str]]) -> Counter:
    """How often each piece id occurs when ``texts`` are tokenized (a text is a string or a list of words)."""
    counts: Counter = Counter()
    batch: list = []

    def flush() -> None:
        if batch:
            words = not isinstance(batch[0], str)
            encoded = tokenizer(batch, is_split_into_words=words, add_special_tokens=False)["input_ids"]
            for ids in encoded:
                counts.update(ids)
            batch.clear()

    for text in texts:
        batch.append(list(text) if not isinstance(text, str) else text)
        if len(batch) == 1000:
            flush()
    flush()
    return counts


def alphabet_ids(tokenizer) -> set[int]:
    """The ids of the pieces that keep any text tokenizable: WordPiece's single characters and their ``##`` forms,
    byte-level BPE's 256 byte symbols, the single characters of other BPE and Unigram vocabularies."""
    spec, rules = _rules(tokenizer)
    vocab = tokenizer.get_vocab()
    return {vocab[piece] for piece in rules.alphabet(spec["model"]) if piece in vocab}


def reachable_ids(tokenizer, below: int | None = None) -> set[int]:
    """The ids (below ``below``) of the pieces that some text can produce. WordPiece: the normalizer leaves the
    piece's text unchanged and the pre-tokenizer keeps it in one word (``[unused0]`` is split at its brackets; a
    cased piece of an uncased vocabulary is lowercased away). BPE and Unigram: every piece."""
    spec, rules = _rules(tokenizer)
    vocab = tokenizer.get_vocab()
    if rules.kind != "WordPiece":
        return {i for i in vocab.values() if below is None or i < below}
    prefix = spec["model"].get("continuing_subword_prefix", "##")
    backend = tokenizer.backend_tokenizer
    normalize = backend.normalizer.normalize_str if backend.normalizer else (lambda text: text)
    split = backend.pre_tokenizer.pre_tokenize_str if backend.pre_tokenizer else (lambda text: [(text, None)])
    found = set()
    for piece, i in vocab.items():
        if below is not None and i >= below:
            continue
        text = piece[len(prefix) :] if piece.startswith(prefix) and len(piece) > len(prefix) else piece
        if text and normalize(text) == text and [word for word, _ in split(text)] == [text]:
            found.add(i)
    return found


def kept_ids(tokenizer, counts: Counter, config: VocabularyConfig) -> list[int]:
    """The ids to keep, in their old order: pieces counted ``min_count`` times, special and added tokens, the
    alphabet when ``keep_alphabet``, the reachable pieces below ``keep_first_ids``, and what the tokenizer model needs
    to produce the kept pieces as before (BPE: the parts of kept merges)."""
    keep = {i for i, n in counts.items() if n >= config.min_count}
    if not keep:
        raise ValueError("the corpus yields no word pieces: give the training data (or extra_text_files) to keep")
    keep |= set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    if config.keep_alphabet:
        keep |= alphabet_ids(tokenizer)
    if config.keep_first_ids is not None:
        keep |= reachable_ids(tokenizer, below=config.keep_first_ids)
    spec, rules = _rules(tokenizer)
    vocab = tokenizer.get_vocab()
    piece_of = {i: piece for piece, i in vocab.items()}
    closed = rules.close(spec["model"], {piece_of[i] for i in keep})
    return sorted({vocab[piece] for piece in closed})


def trim_tokenizer(tokenizer, keep: Sequence[int]):
    """A tokenizer of the same class with only the pieces ``keep`` (old ids, ascending), renumbered 0..n-1."""
    spec, rules = _rules(tokenizer)
    new_id = {old: new for new, old in enumerate(keep)}
    piece_of = {i: piece for piece, i in tokenizer.get_vocab().items()}
    in_model = rules.vocab(spec["model"])
    pieces = [piece_of[old] for old in keep if piece_of[old] in in_model]
    if [new_id[in_model[p]] for p in pieces] != list(range(len(pieces))):
        raise ValueError("vocabulary trimming needs the added tokens numbered after the tokenizer model's pieces")
    rules.rewrite(spec["model"], pieces)
    for added in spec.get("added_tokens") or []:
        added["id"] = new_id[added["id"]]
    _renumber_post_processor(spec.get("post_processor"), new_id)
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        Path(folder, "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
        _rewrite_slow_files(Path(folder), spec["model"], rules, [piece_of[old] for old in keep])
        config_path = Path(folder, "tokenizer_config.json")
        config = json.loads(config_path.read_text(encoding="utf-8"))
        decoder = config.get("added_tokens_decoder") or {}
        config["added_tokens_decoder"] = {str(new_id[int(i)]): token for i, token in decoder.items()}
        config_path.write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
        return AutoTokenizer.from_pretrained(folder)


def _rewrite_slow_files(folder: Path, model: dict[str, Any], rules: TokenizerModel, pieces: list[str]) -> None:
    """Make the files of the slow tokenizer that ``save_pretrained`` wrote agree with the trimmed ``tokenizer.json``:
    ``vocab.txt`` (WordPiece), ``vocab.json`` and ``merges.txt`` (BPE); a SentencePiece ``.model`` cannot be
    rewritten here and is removed (the fast tokenizer loads from ``tokenizer.json``)."""
    if (folder / "vocab.txt").is_file():
        (folder / "vocab.txt").write_text("".join(p + "\n" for p in pieces), encoding="utf-8")
    if (folder / "vocab.json").is_file():
        vocab = {piece: i for i, piece in enumerate(pieces)}
        (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    if (folder / "merges.txt").is_file() and isinstance(rules, BPEModel):
        lines = [f"{a} {b}" for a, b in BPEModel.merges(model)]
        (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(line + "\n" for line in lines), "utf-8")
    for stale in folder.glob("*.model"):
        stale.unlink()


def _renumber_post_processor(processor: dict | None, new_id: dict[int, int]) -> None:
    if not processor:
        return
    if processor.get("type") == "Sequence":
        for inner in processor.get("processors", []):
            _renumber_post_processor(inner, new_id)
    for special in (processor.get("special_tokens") or {}).values():  # TemplateProcessing
        special["ids"] = [new_id[i] for i in special["ids"]]
    for key in ("sep", "cls"):  # BertProcessing / RobertaProcessing: [token, id]
        if isinstance(processor.get(key), list):
            processor[key][1] = new_id[processor[key][1]]


@torch.no_grad()
def trim_embeddings(model: nn.Module, keep: Sequence[int]) -> None:
    """Keep the rows ``keep`` (old ids, ascending) of the input embeddings (and of an untied output layer), in
    place, and set ``config.vocab_size`` (and ``pad_token_id``)."""
    index = torch.tensor(list(keep), dtype=torch.long)
    new_id = {old: new for new, old in enumerate(keep)}
    old = model.get_input_embeddings()
    padding = new_id.get(old.padding_idx) if old.padding_idx is not None else None
    new = nn.Embedding(
        len(keep), old.embedding_dim, padding_idx=padding, device=old.weight.device, dtype=old.weight.dtype
    )
    new.weight.copy_(old.weight.index_select(0, index.to(old.weight.device)))
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tied = output is not None and output.weight is old.weight
    model.set_input_embeddings(new)
    if output is not None and not tied:
        sliced = nn.Linear(output.in_features, len(keep), bias=output.bias is not None)
        sliced.weight.copy_(output.weight.index_select(0, index.to(output.weight.device)))
        if output.bias is not None:
            sliced.bias.copy_(output.bias.index_select(0, index.to(output.bias.device)))
        model.set_output_embeddings(sliced)
    model.config.vocab_size = len(keep)
    if getattr(model.config, "pad_token_id", None) is not None:
        model.config.pad_token_id = new_id.get(model.config.pad_token_id)
    if tied:
        model.tie_weights()


def tokenization_changes(old_tokenizer, new_tokenizer, texts: Iterable[str | Sequence[str]]) -> dict[str, float]:
    """Over ``texts``: how many pieces the old tokenizer produces, and the fraction of them in words that the new
    tokenizer splits differently."""
    total = changed = 0
    for text in texts:
        words = list(text) if not isinstance(text, str) else text.split()
        for word in words:
            before = old_tokenizer.tokenize(word)
            total += len(before)
            if new_tokenizer.tokenize(word) != before:
                changed += len(before)
    return {"pieces": total, "changed_fraction": changed / max(total, 1)}


def _embedding_parameters(model: nn.Module) -> int:
    return model.get_input_embeddings().weight.numel()


def trim_vocabulary(
    model: nn.Module,
    tokenizer,
    corpus: Iterable[str | Sequence[str]],
    config: VocabularyConfig | None = None,
    validation: Iterable[str | Sequence[str]] | None = None,
):
    """Trim ``model`` (in place) and ``tokenizer`` (a new one) to the pieces ``corpus`` uses; return both and a report.

    ``corpus``: the texts to keep tokenizing exactly (the training data: strings or lists of words), plus
    ``config.extra_text_files``. The report: pieces, parameters and fp32 MB before and after, and with
    ``validation`` the fraction of its pieces whose words tokenize differently.
    """
    config = config or VocabularyConfig()
    check_supported_tokenizer(tokenizer)
    texts = list(corpus)
    for path in config.extra_text_files or []:
        with open(path, encoding="utf-8") as handle:
            texts.extend(line.strip() for line in handle if line.strip())
    counts = count_pieces(tokenizer, texts)
    keep = kept_ids(tokenizer, counts, config)
    parameters_before, pieces_before = model.num_parameters(), len(tokenizer)
    embedding_before = _embedding_parameters(model)
    new_tokenizer = trim_tokenizer(tokenizer, keep)
    trim_embeddings(model, keep)
    report: dict[str, Any] = {
        "pieces_before": pieces_before,
        "pieces_after": len(new_tokenizer),
        "pieces_in_corpus": len([i for i, n in counts.items() if n >= config.min_count]),
        "parameters_before": parameters_before,
        "parameters_after": model.num_parameters(),
        "embedding_mb_before": embedding_before * 4 / 1e6,
        "embedding_mb_after": _embedding_parameters(model) * 4 / 1e6,
    }
    if validation is not None:
        report["validation"] = tokenization_changes(tokenizer, new_tokenizer, validation)
    return model, new_tokenizer, report
