"""Vocabulary trimming: the corpus tokenizes exactly as before, the model computes exactly as before on it, and the
trimmed pair saves and loads with plain transformers."""

import pytest
import torch
from conftest import NER_LABELS, tiny_bert_config
from transformers import AutoModelForTokenClassification, AutoTokenizer, BertForTokenClassification

from hf_compress.vocabulary import VocabularyConfig, alphabet_ids, trim_vocabulary

CORPUS = [["john", "smith", "said", "in", "paris"], ["the", "bank", "of", "england"], ["peter", "blackburn"]]
VALIDATION = [["john", "went", "to", "london"], ["germany", "and", "france"]]


def _model(tokenizer) -> BertForTokenClassification:
    torch.manual_seed(0)
    return BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS, num_hidden_layers=2)).eval()


def test_trimmed_pair_tokenizes_and_computes_the_corpus_exactly_as_before(tokenizer, tmp_path):
    model = _model(tokenizer)
    old_inputs = tokenizer(CORPUS, is_split_into_words=True, padding=True, return_tensors="pt")
    with torch.no_grad():
        before = model(**old_inputs).logits
    trimmed, new_tokenizer, report = trim_vocabulary(model, tokenizer, CORPUS, validation=VALIDATION)
    corpus_pieces = {p for words in CORPUS for p in tokenizer.tokenize(" ".join(words))}
    specials = set(tokenizer.all_special_tokens)
    alphabet = {t for t, i in tokenizer.get_vocab().items() if i in alphabet_ids(tokenizer)}
    assert set(new_tokenizer.get_vocab()) == corpus_pieces | specials | alphabet
    assert report["pieces_before"] == len(tokenizer) and report["pieces_after"] == len(new_tokenizer) < len(tokenizer)
    assert report["parameters_after"] == report["parameters_before"] - (len(tokenizer) - len(new_tokenizer)) * 32
    # words outside the corpus ("went", "london", ...) fall back to letters: changed, never [UNK]
    assert 0 < report["validation"]["changed_fraction"] < 1
    assert new_tokenizer.unk_token_id not in new_tokenizer(" ".join(VALIDATION[0]))["input_ids"]

    new_inputs = new_tokenizer(CORPUS, is_split_into_words=True, padding=True, return_tensors="pt")
    for old_ids, new_ids in zip(old_inputs["input_ids"], new_inputs["input_ids"], strict=True):
        assert tokenizer.convert_ids_to_tokens(old_ids) == new_tokenizer.convert_ids_to_tokens(new_ids)
    with torch.no_grad():
        assert torch.equal(trimmed(**new_inputs).logits, before)

    trimmed.save_pretrained(tmp_path)
    new_tokenizer.save_pretrained(tmp_path)
    reloaded, reloaded_tokenizer = (
        AutoModelForTokenClassification.from_pretrained(tmp_path).eval(),
        AutoTokenizer.from_pretrained(tmp_path),
    )
    assert reloaded.config.vocab_size == len(reloaded_tokenizer) == len(new_tokenizer)
    assert (
        reloaded_tokenizer(CORPUS, is_split_into_words=True)["input_ids"]
        == new_tokenizer(CORPUS, is_split_into_words=True)["input_ids"]
    )
    with torch.no_grad():
        assert torch.equal(reloaded(**new_inputs).logits, before)


def test_min_count_and_alphabet(tokenizer):
    counts_twice = [["the", "the"], ["bank"]]
    _, new_tokenizer, _ = trim_vocabulary(
        _model(tokenizer), tokenizer, counts_twice, VocabularyConfig(min_count=2, keep_alphabet=False)
    )
    assert set(new_tokenizer.get_vocab()) == {"the", *tokenizer.all_special_tokens}


def test_bad_input_is_named(tokenizer):
    with pytest.raises(ValueError, match="corpus yields no word pieces"):
        trim_vocabulary(_model(tokenizer), tokenizer, [])
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    bpe = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE(vocab={"a": 0, "b": 1}, merges=[])))
    with pytest.raises(ValueError, match="model is BPE.*supported: fast WordPiece tokenizers"):
        trim_vocabulary(_model(tokenizer), bpe, CORPUS)
    with pytest.raises(ValueError, match="min_count"):
        VocabularyConfig(min_count=0)


def test_a_trimmed_model_with_the_untrimmed_tokenizer_is_refused_at_export(tokenizer, tmp_path):
    from hf_compress import export_model

    trimmed, new_tokenizer, _ = trim_vocabulary(_model(tokenizer), tokenizer, CORPUS)
    with pytest.raises(ValueError, match=r"tokenizer has \d+ pieces but the model's embeddings only \d+ rows"):
        export_model(trimmed, tokenizer, tmp_path / "wrong")
    assert not (tmp_path / "wrong").exists()
    report = export_model(trimmed, new_tokenizer, tmp_path / "right")
    assert report["parameters"] == trimmed.num_parameters()
