"""What trimming keeps and rewrites for each tokenizer model of the ``tokenizers`` library (``tokenizer.json``).

Each kind keeps every piece the corpus produces and guarantees that the corpus tokenizes exactly as before:

* ``WordPiece`` (BERT): greedy longest known prefix. Removing pieces never makes a longer prefix known, so a word
  whose pieces are all kept splits as before. The alphabet: every single character and its ``##`` form.
* ``BPE`` (RoBERTa, GPT-2, ModernBERT; byte-level or not): the merges applied, in priority order, to the word's
  symbols. Keeping every merge that was applied (and the lower-priority ones that stay) applies the same merges:
  at each step the pair applied was the best of all merges, so it is the best of any subset holding it. The kept
  pieces are closed under the merges that make them (a kept piece's parts are kept, down to the alphabet), and a
  merge is kept when its two parts and its result are. The alphabet: the 256 byte symbols of byte-level BPE (any
  text stays tokenizable), else the single characters.
* ``Unigram`` (XLM-R, CamemBERT, ALBERT, DeBERTa-v3, T5: SentencePiece): the segmentation of highest total score.
  The corpus's segmentations use kept pieces only, and removing other pieces only removes other candidates, so
  the best stays the best. Pieces keep their scores; the lowest-scoring piece is kept too, since the score of an
  unknown character is derived from it. The alphabet: the single characters (with and without ``▁``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["TOKENIZER_MODELS", "TokenizerModel"]


class TokenizerModel:
    """The trimming rules of one tokenizer model type (``spec["model"]["type"]``)."""

    kind: str = ""
    examples: str = ""

    def vocab(self, model: dict[str, Any]) -> dict[str, int]:
        """Piece -> id."""
        return dict(model["vocab"])

    def alphabet(self, model: dict[str, Any]) -> set[str]:
        """The pieces that keep any text tokenizable."""
        return {piece for piece in self.vocab(model) if len(piece) == 1}

    def close(self, model: dict[str, Any], keep: set[str]) -> set[str]:
        """``keep`` with what the kept pieces need to be produced as before."""
        return keep

    def rewrite(self, model: dict[str, Any], keep: list[str]) -> None:
        """Reduce ``model`` (the JSON of ``tokenizer.json``'s ``model``) to the ``keep`` pieces, numbered in order."""
        model["vocab"] = {piece: i for i, piece in enumerate(keep)}


class WordPieceModel(TokenizerModel):
    kind = "WordPiece"
    examples = "BERT, DistilBERT, ELECTRA, MobileBERT, MiniLM"

    def alphabet(self, model):
        prefix = model.get("continuing_subword_prefix", "##")
        return {p for p in self.vocab(model) if len(p) == 1 or (p.startswith(prefix) and len(p) == len(prefix) + 1)}


class BPEModel(TokenizerModel):
    kind = "BPE"
    examples = "RoBERTa, GPT-2, ModernBERT, DeBERTa"

    @staticmethod
    def merges(model: dict[str, Any]) -> list[tuple[str, str]]:
        return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]

    @staticmethod
    def merged(model: dict[str, Any], left: str, right: str) -> str:
        prefix = model.get("continuing_subword_prefix") or ""
        return left + (right[len(prefix) :] if prefix and right.startswith(prefix) else right)

    def alphabet(self, model):
        from tokenizers import pre_tokenizers

        vocab = self.vocab(model)
        byte_level = set(pre_tokenizers.ByteLevel.alphabet())
        if byte_level <= set(vocab):  # a byte-level vocabulary
            return byte_level
        return super().alphabet(model)

    def close(self, model, keep):
        makes: dict[str, list[tuple[str, str]]] = {}
        for left, right in self.merges(model):
            makes.setdefault(self.merged(model, left, right), []).append((left, right))
        closed, stack = set(keep), list(keep)
        while stack:
            for pair in makes.get(stack.pop(), ()):
                for part in pair:
                    if part not in closed:
                        closed.add(part)
                        stack.append(part)
        return closed

    def rewrite(self, model, keep):
        kept = set(keep)
        merges = [
            (left, right)
            for left, right in self.merges(model)
            if left in kept and right in kept and self.merged(model, left, right) in kept
        ]
        strings = model.get("merges") and isinstance(model["merges"][0], str)
        model["merges"] = [f"{a} {b}" if strings else [a, b] for a, b in merges]
        super().rewrite(model, keep)


class UnigramModel(TokenizerModel):
    kind = "Unigram"
    examples = "XLM-R, CamemBERT, ALBERT, DeBERTa-v3, T5"

    def vocab(self, model):
        return {piece: i for i, (piece, _) in enumerate(model["vocab"])}

    def alphabet(self, model):
        return {p for p in self.vocab(model) if len(p) == 1 or (len(p) == 2 and p[0] == "\u2581")}

    def close(self, model, keep):
        lowest = min(model["vocab"], key=lambda entry: entry[1])[0]
        return keep | {lowest}

    def rewrite(self, model, keep):
        scores = dict((piece, score) for piece, score in model["vocab"])
        unk = model["vocab"][model["unk_id"]][0] if model.get("unk_id") is not None else None
        model["vocab"] = [[piece, scores[piece]] for piece in keep]
        if unk is not None:
            model["unk_id"] = keep.index(unk)


#: The tokenizer models vocabulary trimming rewrites, by ``tokenizer.json`` model type.
TOKENIZER_MODELS: dict[str, TokenizerModel] = {m.kind: m for m in (WordPieceModel(), BPEModel(), UnigramModel())}
