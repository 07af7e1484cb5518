"""Tasks: CoNLL reading, label alignment, metrics, text-classification files."""

import re

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value

from hf_compress.recipe import DataConfig
from hf_compress.tasks import align_labels_with_tokens, classification_metrics, get_task, ner_metrics, read_conll
from hf_compress.tasks.token_classification import label_list_from_tags

CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
-DOCSTART- -X- -X- O
BRUSSELS NNP B-NP B-LOC
"""


def test_read_conll(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text(CONLL)
    ds = read_conll(path)
    assert ds["tokens"] == [["EU", "rejects", "German", "call"], ["Peter", "Blackburn"], ["BRUSSELS"]]
    assert ds["ner_tags"][0] == ["B-ORG", "O", "B-MISC", "O"]
    assert label_list_from_tags(ds["ner_tags"]) == [
        "O",
        "B-LOC",
        "I-LOC",
        "B-MISC",
        "I-MISC",
        "B-ORG",
        "I-ORG",
        "B-PER",
        "I-PER",
    ]


def test_two_column_conll(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("Paris B-LOC\nis O\n\nJohn B-PER\n")
    assert read_conll(path)["ner_tags"] == [["B-LOC", "O"], ["B-PER"]]


def test_align_labels_first_sub_token():
    # [CLS] Blackburn -> black ##burn, rejects -> rejects, [SEP]
    word_ids = [None, 0, 0, 1, None]
    assert align_labels_with_tokens(word_ids, [2, 0]) == [-100, 2, -100, 0, -100]
    assert align_labels_with_tokens(word_ids, [2, 0], label_all_tokens=True) == [-100, 2, 2, 0, -100]


def test_ner_preprocess_aligns_labels(tmp_path, tokenizer):
    path = tmp_path / "train.txt"
    path.write_text("Peter B-PER\nBlackburn I-PER\nsaid O\n")
    task = get_task("ner")
    data = DataConfig(train_file=str(path), validation_file=str(path))
    raw = task.load_raw(data)
    labels = task.label_list(raw, data)
    out = task.preprocess(raw, tokenizer, {name: i for i, name in enumerate(labels)}, data)
    row = out["train"][0]
    tokens = tokenizer.convert_ids_to_tokens(row["input_ids"])
    assert tokens[:3] == ["[CLS]", "peter", "blackburn"] and tokens[-2:] == ["said", "[SEP]"]
    assert row["labels"] == [-100, labels.index("B-PER"), labels.index("I-PER"), 0, -100]


def test_ner_preprocess_with_class_label_features_and_unknown_tags(tokenizer):
    names = ["O", "B-PER", "I-PER"]
    features = Features(
        {"tokens": Sequence(feature=Value("string")), "ner_tags": Sequence(feature=ClassLabel(names=names))}
    )
    ds = Dataset.from_dict({"tokens": [["john", "smith"]], "ner_tags": [[1, 2]]}, features=features)
    raw = DatasetDict({"train": ds, "validation": ds})
    task, data = get_task("ner"), DataConfig(dataset="x")
    assert task.label_list(raw, data) == names
    out = task.preprocess(raw, tokenizer, {n: i for i, n in enumerate(names)}, data)
    assert out["train"][0]["labels"] == [-100, 1, 2, -100]
    with pytest.raises(ValueError, match="tags the model does not know: \\['I-PER'\\]"):
        task.preprocess(raw, tokenizer, {"O": 0, "B-PER": 1}, data)


def test_ner_metrics_entity_level():
    id2label = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC"}
    labels = np.array([[-100, 1, 2, 0, 3, -100]])
    logits = np.zeros((1, 6, 4))
    for position, label in enumerate([0, 1, 2, 0, 0, 3]):  # PER right, LOC missed
        logits[0, position, label] = 1.0
    metrics = ner_metrics(id2label)((logits, labels))
    assert metrics["precision"] == 1.0 and metrics["recall"] == 0.5
    assert metrics["f1"] == pytest.approx(2 / 3)
    assert metrics["accuracy"] == pytest.approx(3 / 4)


def test_classification_metrics():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 2.0]])
    labels = np.array([0, 1, 1, 1])
    metrics = classification_metrics({0: "neg", 1: "pos"})((logits, labels))
    assert metrics["accuracy"] == 0.75
    assert metrics["f1"] == pytest.approx((2 / 3 + 0.8) / 2)


def test_text_classification_csv(tmp_path, tokenizer):
    (tmp_path / "train.csv").write_text("sentence,label\ngood film,pos\nbad movie,neg\n")
    (tmp_path / "valid.csv").write_text("sentence,label\ngreat film,pos\n")
    task = get_task("text-classification")
    data = DataConfig(
        task="text-classification",
        train_file=str(tmp_path / "train.csv"),
        validation_file=str(tmp_path / "valid.csv"),
        text_column="sentence",
    )
    raw = task.load_raw(data)
    labels = task.label_list(raw, data)
    assert labels == ["neg", "pos"]
    out = task.preprocess(raw, tokenizer, {"neg": 0, "pos": 1}, data)
    assert out["train"]["labels"] == [1, 0]
    bad = DataConfig(task="text-classification", train_file=str(tmp_path / "train.csv"), text_column="text")
    with pytest.raises(ValueError, match=r"train\.csv: missing column\(s\) \['text'\]"):
        task.load_raw(bad)
    with pytest.raises(ValueError, match="unsupported file type '.xlsx'"):
        task.load_raw(DataConfig(task="text-classification", train_file=str(tmp_path / "train.xlsx")))


def test_unknown_task():
    with pytest.raises(ValueError, match="unknown task 'qa'"):
        get_task("qa")


# ------------------------------------------------------------------------------------------ NER in other formats
def test_ner_json_lines_json_parquet_and_saved_datasets_read_as_conll(tmp_path):
    import json

    (tmp_path / "train.txt").write_text(CONLL)
    conll = read_conll(tmp_path / "train.txt")
    pairs = zip(conll["tokens"], conll["ner_tags"], strict=True)
    rows = [{"tokens": t, "ner_tags": n, "id": i} for i, (t, n) in enumerate(pairs)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (tmp_path / "train.json").write_text(json.dumps(rows, indent=1))  # an array of objects
    names = label_list_from_tags(conll["ner_tags"])
    features = Features({"tokens": Sequence(Value("string")), "ner_tags": Sequence(ClassLabel(names=names))})
    ids = [[names.index(tag) for tag in tags] for tags in conll["ner_tags"]]
    typed = Dataset.from_dict({"tokens": conll["tokens"], "ner_tags": ids}, features=features)
    typed.to_parquet(tmp_path / "train.parquet")
    DatasetDict({"train": typed, "validation": typed}).save_to_disk(tmp_path / "saved")
    task = get_task("ner")
    expected = (conll["tokens"], conll["ner_tags"])
    for name in ("train.jsonl", "train.json", "train.parquet"):
        raw = task.load_raw(DataConfig(train_file=str(tmp_path / name), validation_file=str(tmp_path / "train.txt")))
        assert (raw["train"]["tokens"], raw["train"]["ner_tags"]) == expected, name
        assert task.label_list(raw, DataConfig(train_file="x")) == names
    raw = task.load_raw(DataConfig(dataset=str(tmp_path / "saved")))
    assert list(raw) == ["train", "validation"] and task.label_list(raw, DataConfig(train_file="x")) == names


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"tokens": ["a", "b"], "ner_tags": [0, 1]}\n', r"line 1: 'ner_tags' must be a list of tag names"),
        (
            '{"tokens": ["a"], "ner_tags": ["O"]}\n{"tokens": ["a", "b"], "ner_tags": ["O"]}\n',
            "line 2: 2 tokens but 1",
        ),
        ('{"tokens": "a b", "ner_tags": ["O", "O"]}\n', r"line 1: 'tokens' must be a list of words"),
        ('{"words": ["a"], "tags": ["O"]}\n', r"no column\(s\) \['tokens', 'ner_tags'\]"),
        ('{"tokens": ["a"], "ner_tags": ["I-PER"]}\n', "line 1: 'I-PER' after 'the sentence start'"),
        ('{"tokens": ["a"], "ner_tags": ["O"]}\n{"tokens": [\n', r"line 2: not valid JSON"),
    ],
    ids=["integer-tags", "lengths", "tokens-string", "columns", "iob1", "broken-json"],
)
def test_bad_ner_json_lines(tmp_path, content, message):
    path = tmp_path / "train.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}(, |: ){message}"):
        get_task("ner").load_raw(DataConfig(train_file=str(path)))


def test_ner_csv_is_refused(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("tokens,ner_tags\na,O\n")
    with pytest.raises(ValueError, match="NER data cannot be CSV"):
        get_task("ner").load_raw(DataConfig(train_file=str(path)))
