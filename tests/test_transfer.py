"""Distillation's transfer set: augmentations with exact outputs, files in three formats and their errors, transfer
examples' loss (teacher terms only), the teacher cache over them, and the recipe keys."""

import random

import pytest
import torch
from conftest import NER_LABELS, tiny_bert_config
from datasets import Dataset, DatasetDict, concatenate_datasets
from test_cli import encoder_dir, recipe_path  # noqa: F401 (fixtures)
from test_trainer import args_for
from transformers import BertForTokenClassification, DataCollatorForTokenClassification, TrainerCallback

from hf_compress import CompressionTrainer, Recipe, RecipeError
from hf_compress.configs import DataConfig
from hf_compress.distillation import DistillationCallback
from hf_compress.distillation.augment import (
    TrainingVocabulary,
    augment_sentences,
    augment_texts,
    label_wise_token_replacement,
    mention_replacement,
    mention_spans,
    shuffle_within_segments,
    token_deletion,
    token_replacement,
    token_swap,
)
from hf_compress.distillation.config import DistillationConfig, TransferConfig
from hf_compress.distillation.losses import DistillationLoss
from hf_compress.distillation.transfer import read_transfer_file, transfer_dataset, transfer_texts
from hf_compress.tasks import get_task, read_conll
from hf_compress.tasks.base import NO_GOLD_LABEL

SENTENCE = (
    ["John", "Smith", "visited", "New", "York", "on", "Monday", "."],
    ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "O", "O"],
)
TRAINING = [SENTENCE, (["Ann", "Lee", "left", "Oslo"], ["B-PER", "I-PER", "O", "B-LOC"])]


def _legal(tags) -> bool:
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            return False
        previous = tag
    return True


def test_mention_spans():
    assert mention_spans(SENTENCE[1]) == [(0, 2, "PER"), (3, 5, "LOC")]
    assert mention_spans(["B-PER", "B-PER", "I-PER", "O", "B-LOC"]) == [(0, 1, "PER"), (1, 3, "PER"), (4, 5, "LOC")]


def test_mention_replacement_swaps_mentions_of_the_same_type_and_rewrites_their_tags():
    vocab = TrainingVocabulary([(["Ann", "Marie", "Lee"], ["B-PER", "I-PER", "I-PER"]), (["Oslo"], ["B-LOC"])])
    tokens, tags = mention_replacement(*SENTENCE, vocab, random.Random(0), rate=1.0)
    assert tokens == ["Ann", "Marie", "Lee", "visited", "Oslo", "on", "Monday", "."]
    assert tags == ["B-PER", "I-PER", "I-PER", "O", "B-LOC", "O", "O", "O"]
    assert mention_replacement(*SENTENCE, vocab, random.Random(0), rate=0.0) == SENTENCE


def test_label_wise_token_replacement_draws_tokens_with_the_same_tag():
    vocab = TrainingVocabulary([(["Ann", "Lee", "in", "Oslo", "Fjord"], ["B-PER", "I-PER", "O", "B-LOC", "I-LOC"])])
    tokens, tags = label_wise_token_replacement(*SENTENCE, vocab, random.Random(0), rate=1.0)
    assert tokens == ["Ann", "Lee", "in", "Oslo", "Fjord", "in", "in", "in"]
    assert tags == SENTENCE[1]


def test_shuffle_within_segments_keeps_every_token_in_its_segment():
    tokens, tags = shuffle_within_segments(*SENTENCE, TrainingVocabulary(TRAINING), random.Random(3), rate=1.0)
    assert tags == SENTENCE[1]
    assert tokens == ["Smith", "John", "visited", "York", "New", "on", ".", "Monday"]  # seed 3: every segment moved
    for start, end in [(0, 2), (2, 3), (3, 5), (5, 8)]:
        assert sorted(tokens[start:end]) == sorted(SENTENCE[0][start:end])


def test_sequence_operations():
    words = "the film was good fun".split()
    assert token_replacement(words, ["dull"], random.Random(0), 1.0) == ["dull"] * 5
    assert token_deletion(words, [], random.Random(0), 1.0) in [[w] for w in words]  # one word always kept
    assert token_deletion(words, [], random.Random(0), 0.0) == words
    swapped = token_swap(words, [], random.Random(0), 0.4)  # round(0.4 * 5) = 2 swaps
    assert sorted(swapped) == sorted(words) and swapped != words
    assert token_swap(["one"], [], random.Random(0), 1.0) == ["one"]


def test_augmented_copies_are_seeded_legal_and_leave_out_unchanged_sentences():
    raw = read_conll("examples/data/conll-sample/train.txt")
    sentences = [(list(t), list(g)) for t, g in zip(raw["tokens"], raw["ner_tags"], strict=True)]
    operations = ["mention_replacement", "label_wise_token_replacement", "shuffle_within_segments"]
    copies = augment_sentences(sentences, 2, operations, 0.3, seed=7)
    assert copies == augment_sentences(sentences, 2, operations, 0.3, seed=7)
    assert copies != augment_sentences(sentences, 2, operations, 0.3, seed=8)
    assert len(sentences) < len(copies) <= 2 * len(sentences)
    for tokens, tags in copies:
        assert len(tokens) == len(tags) and _legal(tags)
    texts = ["a good film", "a bad one", "x y z w"]
    assert augment_texts(texts, 1, ["token_swap"], 0.5, seed=1) == ["film a good", "bad one a", "z y w x"]
    assert augment_texts(texts[:2], 1, ["token_swap"], 0.5, seed=0) == []  # both swaps undone: left out


def test_transfer_files_in_the_three_formats(tmp_path):
    text = tmp_path / "news.txt"
    text.write_text("EU rejects German call .\n\nPeter Blackburn\n")
    conll = tmp_path / "news.conll"
    conll.write_text("-DOCSTART- -X- O\n\nEU NNP\nrejects VBZ\n\nPeter NNP\nBlackburn NNP\n")
    jsonl = tmp_path / "news.jsonl"
    jsonl.write_text('{"tokens": ["EU", "rejects"]}\n\n{"text": "Peter Blackburn"}\n')
    assert read_transfer_file(text) == [["EU", "rejects", "German", "call", "."], ["Peter", "Blackburn"]]
    assert read_transfer_file(conll) == [["EU", "rejects"], ["Peter", "Blackburn"]]
    assert read_transfer_file(jsonl) == [["EU", "rejects"], ["Peter", "Blackburn"]]
    assert read_transfer_file(conll, "text") == [["-DOCSTART-", "-X-", "O"], ["EU", "NNP"], ["rejects", "VBZ"],
                                                 ["Peter", "NNP"], ["Blackburn", "NNP"]]  # fmt: skip


@pytest.mark.parametrize(
    "content, fmt, message",
    [
        (b"", "auto", r"empty: expected sentences"),
        (b"\n  \n", "auto", r"empty"),
        (b"EU rejects\nM\xfcller said\n", "auto", r"line 2: not UTF-8 text \(byte 0xfc at column 2\)"),
        (b"EU rejects\x00\n", "auto", r"line 1: a NUL character"),
        (b'{"tokens": ["EU"]}\n{"words": ["x"]}\n', "auto", r"line 2: expected a JSON object with 'tokens'"),
        (b'{"tokens": []}\n', "auto", r"line 1: expected a JSON object"),
        (b"{not json\n", "auto", r"line 1: not a JSON object"),
        (b"EU NNP\nrejects VBZ\n\nPeter\n", "conll", r"line 4: 1 columns where the file's lines have 2"),
    ],
)
def test_bad_transfer_files_name_the_file_and_line(tmp_path, content, fmt, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"{path}.*{message}"):
        read_transfer_file(path, fmt)
    with pytest.raises(FileNotFoundError, match="transfer file not found"):
        read_transfer_file(tmp_path / "missing.txt")


def test_transfer_config_is_checked():
    with pytest.raises(RecipeError, match="augmented_copies.*augmented copies \\(>= 1\\) or files"):
        TransferConfig()
    with pytest.raises(RecipeError, match="augmentations.*'synonyms'"):
        TransferConfig(augmented_copies=1, augmentations=["synonyms"])
    recipe = Recipe.from_dict({"distillation": {"transfer": {"augmented_copies": 2, "files": ["news.txt"]}}})
    assert recipe.distillation.transfer == TransferConfig(augmented_copies=2, files=["news.txt"])


def test_transfer_files_in_a_recipe_are_relative_to_it(tmp_path):
    (tmp_path / "r.yaml").write_text("distillation:\n  transfer:\n    files: [news.txt, /abs/more.txt]\n")
    recipe = Recipe.from_yaml(tmp_path / "r.yaml")
    assert recipe.distillation.transfer.files == [str(tmp_path / "news.txt"), "/abs/more.txt"]


def test_transfer_examples_are_marked_without_gold_labels(tokenizer, tmp_path):
    train = Dataset.from_dict({"tokens": [t for t, _ in TRAINING], "ner_tags": [g for _, g in TRAINING]})
    (tmp_path / "news.txt").write_text("Peter Blackburn visited Brussels\n")
    config = TransferConfig(augmented_copies=1, augmentations=["mention_replacement"], rate=1.0,
                            files=[str(tmp_path / "news.txt")])  # fmt: skip
    raw = transfer_texts(config, get_task("ner"), train, DataConfig(train_file="x"))
    # seed 42: the first sentence drew its own two mentions back (unchanged: left out), the second John Smith
    assert list(raw["tokens"]) == [["John", "Smith", "left", "Oslo"], ["Peter", "Blackburn", "visited", "Brussels"]]
    assert list(raw["ner_tags"]) == [["B-PER", "I-PER", "O", "B-LOC"], ["O"] * 4]  # placeholders, never read
    label2id = {name: i for i, name in enumerate(NER_LABELS)}
    tokenized = transfer_dataset(config, get_task("ner"), train, DataConfig(train_file="x"), tokenizer, label2id)
    for row, words in zip(tokenized, raw["tokens"], strict=True):
        marked = [label for label in row["labels"] if label != -100]
        assert marked == [NO_GOLD_LABEL] * len(words)  # one per word (its first sub-token)
    with pytest.raises(RecipeError, match="for ner: one of"):
        transfer_texts(TransferConfig(augmented_copies=1, augmentations=["token_swap"]), get_task("ner"), train,
                       DataConfig(train_file="x"))  # fmt: skip


def test_transfer_examples_get_the_teacher_terms_and_no_task_loss():
    torch.manual_seed(0)
    config = tiny_bert_config(100, NER_LABELS)
    loss = DistillationLoss(DistillationConfig(alpha=0.5), config, config)
    student, teacher = torch.randn(2, 4, len(NER_LABELS)), torch.randn(2, 4, len(NER_LABELS))
    outputs = type("Out", (), {"logits": student, "loss": torch.tensor(float("nan"))})()
    teacher_out = type("Out", (), {"logits": teacher})()
    transfer = torch.tensor([[-100, NO_GOLD_LABEL, NO_GOLD_LABEL, -100], [-100, NO_GOLD_LABEL, -100, -100]])
    total, terms = loss(outputs, teacher_out, transfer, None)
    assert "task" not in terms  # the model's mean over no gold position (NaN) is not used
    assert torch.equal(total, 0.5 * terms["kd"]) and torch.isfinite(total)
    from hf_compress.distillation.losses import soft_target_loss

    assert torch.allclose(terms["kd"], soft_target_loss(student, teacher, 2.0, transfer != -100))


class _Hits(TrainerCallback):
    def __init__(self):
        self.rates = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "teacher_cache_hit_rate" in logs:
            self.rates.append((round(state.epoch), logs["teacher_cache_hit_rate"]))


def test_the_model_never_sees_transfer_labels_and_the_cache_covers_transfer_rows(tokenizer, tmp_path):
    torch.manual_seed(0)
    teacher = BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS)).eval()
    student = BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS, num_hidden_layers=2))
    words = ["john", "smith", "went", "to", "paris", "london", "bank", "the"]
    train_raw = Dataset.from_dict({"tokens": [words[:4], words[2:]], "ner_tags": [["O"] * 4, ["O"] * 6]})
    label2id = {name: i for i, name in enumerate(NER_LABELS)}
    data = DataConfig(train_file="x")
    task = get_task("ner")
    gold = task.preprocess(DatasetDict(train=train_raw), tokenizer, label2id, data)["train"]
    transfer = transfer_dataset(
        TransferConfig(augmented_copies=3, rate=0.5), task, train_raw, data, tokenizer, label2id
    )
    seen = []
    student.register_forward_pre_hook(lambda _, args, kwargs: seen.append(kwargs["labels"].clone()), with_kwargs=True)
    hits = _Hits()
    trainer = CompressionTrainer(
        model=student,
        teacher=teacher,
        recipe={"distillation": {"alpha": 0.5, "cache_teacher": True}},
        args=args_for(tmp_path, num_train_epochs=3, logging_steps=1, per_device_train_batch_size=4),
        train_dataset=concatenate_datasets([gold, transfer.cast(gold.features)]),
        data_collator=DataCollatorForTokenClassification(tokenizer),
        callbacks=[hits],
    )
    trainer.train()
    assert seen and all(not bool((labels == NO_GOLD_LABEL).any()) for labels in seen)
    distiller = next(t for t in trainer.techniques if isinstance(t, DistillationCallback))
    rows = len(gold) + len(transfer)
    assert distiller.cache.misses == -(-rows // 4) and distiller.cache.hits == 2 * -(-rows // 4)
    assert [rate for epoch, rate in hits.rates if epoch == 3][-1] == round(2 / 3, 4)


def test_cli_train_with_a_transfer_set_and_constrained_decoding(recipe_path, tmp_path):  # noqa: F811
    """The student trains on the gold rows plus the transfer rows; the teacher stage on the gold rows only."""
    import json

    import yaml

    from hf_compress.cli import main as cli_main

    (tmp_path / "news.txt").write_text("\n".join(["john went to paris", "the bank of london said"] * 8) + "\n")
    recipe = yaml.safe_load(recipe_path.read_text())
    recipe["distillation"]["transfer"] = {"augmented_copies": 1, "files": ["news.txt"]}
    recipe["data"]["decoding"] = "constrained"
    recipe_path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        cli_main(["train", str(recipe_path), "--output_dir", str(out)])
    assert stop.value.code == 0
    data = Recipe.from_yaml(recipe_path).data
    raw = get_task("ner").load_raw(data)["train"]
    added = len(transfer_texts(Recipe.from_yaml(recipe_path).distillation.transfer, get_task("ner"), raw, data))
    assert 16 < added <= 40 + 16  # the 16 file sentences and the changed copies of the 40 training sentences
    steps = 2 * -(-(40 + added) // 8)
    assert (out / f"checkpoint-{steps}").is_dir() and (out / "teacher" / "checkpoint-10").is_dir()
    assert yaml.safe_load((out / "recipe.yaml").read_text())["distillation"]["transfer"]["files"] == [
        str(tmp_path / "news.txt")
    ]
    results = json.loads((out / "results.json").read_text())
    assert all(0.0 <= r["metrics"]["f1"] <= 1.0 for r in results)
