"""Vocabulary trimming: the corpus tokenizes exactly as before, the model computes exactly as before on it, and the
trimmed pair saves and loads with plain transformers."""

import pytest
import torch
from conftest import NER_LABELS, tiny_bert_config
from transformers import AutoModelForTokenClassification, AutoTokenizer, BertForTokenClassification

from hf_compress.vocabulary import VocabularyConfig, alphabet_ids, trim_vocabulary
from hf_compress.vocabulary.trim import reachable_ids

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


def test_keep_first_ids_adds_the_reachable_pieces_below_it(tmp_path):
    from transformers import BertTokenizerFast

    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "the", "London", "café", "new", "##ing"]
    pieces += ["york", "bank", *"abcdefghijklmnopqrstuvwxyz", *[f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]]
    (tmp_path / "vocab.txt").write_text("\n".join(pieces) + "\n")
    tokenizer = BertTokenizerFast(str(tmp_path / "vocab.txt"), do_lower_case=True)
    ids = tokenizer.get_vocab()
    # [unused0] is split at its brackets, "London" lowercased and "café" stripped of its accent by the normalizer
    unreachable = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "London", "café"}
    assert reachable_ids(tokenizer) == {ids[p] for p in pieces if p not in unreachable}
    assert reachable_ids(tokenizer, below=ids["york"]) == {ids["the"], ids["new"], ids["##ing"]}
    model = BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS, num_hidden_layers=1))
    config = VocabularyConfig(keep_first_ids=ids["york"], keep_alphabet=False)
    _, trimmed, _ = trim_vocabulary(model, tokenizer, [["bank"]], config)
    kept = sorted(trimmed.get_vocab(), key=trimmed.get_vocab().get)
    assert kept == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "new", "##ing", "bank"]
    assert trimmed.tokenize("the newing bank") == ["the", "new", "##ing", "bank"]
    with pytest.raises(Exception, match="keep_first_ids"):
        VocabularyConfig(keep_first_ids=0)


def test_bad_input_is_named(tokenizer):
    with pytest.raises(ValueError, match="corpus yields no word pieces"):
        trim_vocabulary(_model(tokenizer), tokenizer, [])
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    words = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab={"a": 0, "b": 1}, unk_token="a"))
    )
    with pytest.raises(ValueError, match=r"model is WordLevel.*supported: fast tokenizers of WordPiece \(BERT"):
        trim_vocabulary(_model(tokenizer), words, CORPUS)
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


def _write_conll(path, words, n, seed) -> None:
    import random

    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        for _ in range(rng.randint(3, 8)):
            lines.append(f"{rng.choice(words)} NN O {rng.choice(['O', 'O', 'B-PER', 'B-LOC'])}")
        lines.append("")
    path.write_text("\n".join(lines))


def test_a_recipe_distils_into_a_student_with_a_trimmed_vocabulary(tokenizer, tmp_path):
    """The student's vocabulary is cut to the training data's pieces; the teacher keeps its own and reads the same
    words (ids translated): finite distillation losses, metrics on the same words, a plain student folder."""
    import json
    import math

    from conftest import WORDS
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from hf_compress import Recipe, run_recipe
    from hf_compress.pipeline import default_training_arguments

    torch.manual_seed(0)
    labels = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]  # the data's label list
    teacher_dir = tmp_path / "teacher"
    BertForTokenClassification(tiny_bert_config(len(tokenizer), labels)).save_pretrained(teacher_dir)
    tokenizer.save_pretrained(teacher_dir)
    train_words, other_words = WORDS[:30], WORDS[30:]
    _write_conll(tmp_path / "train.txt", train_words, 40, seed=0)
    _write_conll(tmp_path / "valid.txt", train_words[:10] + other_words, 12, seed=1)
    recipe = Recipe.from_dict(
        {
            "model": {"teacher": str(teacher_dir), "student": {"from_teacher_layers": [0, 2], "vocabulary": {}}},
            "data": {
                "task": "ner",
                "train_file": str(tmp_path / "train.txt"),
                "validation_file": str(tmp_path / "valid.txt"),
            },
            "distillation": {"alpha": 0.5, "hidden_states": {"weight": 1.0}, "cache_teacher": True},
            "export": {"int8": "dynamic"},
            "training": {"num_train_epochs": 2, "per_device_train_batch_size": 8, "use_cpu": True, "logging_steps": 1},
        }
    )
    out = tmp_path / "out"
    from transformers import TrainerCallback

    class Epochs(TrainerCallback):
        seen = 0

        def on_epoch_end(self, args, state, control, **kwargs):
            Epochs.seen += 1

    results = run_recipe(recipe, default_training_arguments(str(out), recipe.training), callbacks=[Epochs()])
    assert Epochs.seen == 2  # run_recipe's callbacks reach the student's trainer
    student_tokenizer = AutoTokenizer.from_pretrained(out)
    student = AutoModelForTokenClassification.from_pretrained(out)
    assert student.config.vocab_size == len(student_tokenizer) < len(tokenizer)
    train_sentences = [line.split()[0] for line in (tmp_path / "train.txt").read_text().splitlines() if line]
    assert student_tokenizer.tokenize(" ".join(train_sentences)) == tokenizer.tokenize(" ".join(train_sentences))
    report = json.loads((out / "vocabulary_report.json").read_text())
    assert report["pieces_after"] == len(student_tokenizer) and report["validation"]["changed_fraction"] > 0
    history = json.loads(next(out.glob("checkpoint-*/trainer_state.json")).read_text())["log_history"]
    kd = [entry["loss_kd"] for entry in history if "loss_kd" in entry]
    assert kd and all(math.isfinite(v) for v in kd) and any("loss_hidden" in entry for entry in history)
    # the teacher's outputs (on its own ids, translated from the student's) are read from the cache in epoch 2
    assert history[-2]["teacher_cache_hit_rate"] == 0.5 and (out / "teacher_cache").is_dir()
    student_row, exported = results[1], results[-1]
    assert "f1" in student_row.metrics and "f1" in exported.metrics  # both scored on the validation words
    assert len(AutoTokenizer.from_pretrained(exported.path)) == len(student_tokenizer)


def test_bpe_keeps_the_parts_of_kept_pieces_and_the_merges_between_kept_pieces():
    """A merge is kept when its two parts and its result are; a kept piece's parts are kept (closure)."""
    from hf_compress.vocabulary.models import TOKENIZER_MODELS

    model = {
        "vocab": {p: i for i, p in enumerate(["a", "b", "c", "d", "ab", "abc", "cd", "abcd", "bc"])},
        "merges": [["a", "b"], ["ab", "c"], ["c", "d"], ["abc", "d"], ["b", "c"]],
    }
    rules = TOKENIZER_MODELS["BPE"]
    assert rules.close(model, {"abc"}) == {"abc", "ab", "c", "a", "b"}
    assert rules.close(model, {"abcd", "bc"}) == {"abcd", "abc", "ab", "a", "b", "c", "d", "bc"}
    rules.rewrite(model, ["a", "b", "c", "ab", "abc", "bc"])
    assert model["vocab"] == {"a": 0, "b": 1, "c": 2, "ab": 3, "abc": 4, "bc": 5}
    assert model["merges"] == [["a", "b"], ["ab", "c"], ["b", "c"]]  # in their old priority order
    strings = {"vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}  # the older "a b" form stays a string
    rules.rewrite(strings, ["a", "b", "ab"])
    assert strings["merges"] == ["a b"]


def test_unigram_keeps_scores_and_the_lowest_scoring_piece():
    from hf_compress.vocabulary.models import TOKENIZER_MODELS

    model = {"unk_id": 1, "vocab": [["<s>", 0.0], ["<unk>", 0.0], ["▁the", -2.5], ["x", -9.0], ["q", -12.0]]}
    rules = TOKENIZER_MODELS["Unigram"]
    assert rules.alphabet(model) == {"x", "q"}
    assert rules.close(model, {"<unk>", "▁the"}) == {"<unk>", "▁the", "q"}  # q: the unknown's score
    rules.rewrite(model, ["<unk>", "▁the", "q"])
    assert model == {"unk_id": 0, "vocab": [["<unk>", 0.0], ["▁the", -2.5], ["q", -12.0]]}


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_bpe_and_unigram_tokenizers_trim_with_the_corpus_exactly_as_before(kind, tmp_path):
    """Byte-level BPE (RoBERTa) and Unigram (XLM-R) tokenizers trained offline: the corpus keeps its pieces and
    logits, the trimmed tokenizer saves and loads, and unseen text stays tokenizable without an unknown."""
    from tiny_encoders import build_tokenizer, sentences, tiny_model

    tokenizer = build_tokenizer(kind, tmp_path / "tokenizer", vocab_size=2000)
    corpus, unseen = sentences()[:100], sentences()[1000:1100]
    model = tiny_model("roberta" if kind == "bpe" else "xlm-roberta", tokenizer, num_layers=1)
    old = tokenizer(corpus, is_split_into_words=True, padding=True, return_tensors="pt")
    with torch.no_grad():
        before = model(**old).logits
    trimmed, new_tokenizer, report = trim_vocabulary(model, tokenizer, corpus, validation=unseen)
    assert report["pieces_after"] < report["pieces_before"] == len(tokenizer)
    new = new_tokenizer(corpus, is_split_into_words=True, padding=True, return_tensors="pt")
    for old_ids, new_ids in zip(old["input_ids"], new["input_ids"], strict=True):
        assert tokenizer.convert_ids_to_tokens(old_ids) == new_tokenizer.convert_ids_to_tokens(new_ids)
    with torch.no_grad():
        assert torch.equal(trimmed(**new).logits, before)
    new_tokenizer.save_pretrained(tmp_path / "trimmed")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "trimmed")
    assert (
        reloaded(corpus, is_split_into_words=True)["input_ids"]
        == new_tokenizer(corpus, is_split_into_words=True)["input_ids"]
    )
    unseen_ids = [i for words in unseen for i in new_tokenizer(words, is_split_into_words=True)["input_ids"]]
    assert new_tokenizer.unk_token_id not in unseen_ids and 0 < report["validation"]["changed_fraction"] < 1
