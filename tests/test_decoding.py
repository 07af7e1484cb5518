"""Constrained IOB2 decoding: exact paths on hand-made logits, optimality against brute force, never an illegal
transition; in the metric, the export's evaluation, the bench and the ONNX Runtime inference path."""

import itertools
import json

import numpy as np
import pytest
import torch
from conftest import NER_LABELS, tiny_bert_config
from transformers import BertForTokenClassification, DataCollatorForTokenClassification, EvalPrediction

from hf_compress import ExportConfig, export_model
from hf_compress.export import ExportData
from hf_compress.inference import OnnxTokenClassifier
from hf_compress.tasks import get_task, ner_metrics
from hf_compress.tasks.decoding import constrained_viterbi, decode_tags, iob2_transitions

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
ID2LABEL = dict(enumerate(LABELS))
TINY = 1e-6  # a label the model all but rules out


def _logits(*rows: dict[str, float]) -> np.ndarray:
    """Log-probabilities as logits (their log-softmax is themselves): ``{"I-PER": 0.5, ...}`` per position."""
    out = np.full((len(rows), len(LABELS)), np.log(TINY))
    for t, row in enumerate(rows):
        for label, p in row.items():
            out[t, LABELS.index(label)] = np.log(p)
    return out


def _legal(path) -> bool:
    previous = "O"
    for label in (LABELS[i] for i in path):
        if label.startswith("I-") and previous[2:] != label[2:]:
            return False
        previous = label
    return True


def test_transition_mask_of_iob2_labels():
    allowed, start = iob2_transitions(LABELS)
    assert start.tolist() == [True, True, False, True, False]
    assert allowed[:, LABELS.index("I-PER")].tolist() == [False, True, True, False, False]
    assert allowed[:, LABELS.index("I-LOC")].tolist() == [False, False, False, True, True]
    assert allowed[:, [0, 1, 3]].all()  # O and any B- may follow anything


@pytest.mark.parametrize(
    "labels, message",
    [(["O", "B-PER", "E-PER"], "'E-PER' is not one"), (["O", "I-PER"], "I-PER has no B-PER"), (["O", "X"], "'X'")],
)
def test_labels_that_are_not_iob2_are_refused(labels, message):
    with pytest.raises(ValueError, match=message):
        iob2_transitions(labels)


def test_an_entity_that_starts_with_i_becomes_a_b():
    # argmax: I-PER I-PER (a span that starts nowhere); legal paths: B-PER I-PER 0.1 * 0.9 beats O O 0.4 * 0.1
    logits = _logits({"O": 0.4, "I-PER": 0.5, "B-PER": 0.1}, {"I-PER": 0.9, "O": 0.1})
    assert logits.argmax(-1).tolist() == [2, 2]
    assert constrained_viterbi(logits, *iob2_transitions(LABELS)).tolist() == [1, 2]


def test_an_i_of_another_type_continues_the_open_entity_or_ends_it():
    logits = _logits({"B-PER": 0.9, "O": 0.1}, {"I-LOC": 0.6, "I-PER": 0.3, "O": 0.1})
    assert constrained_viterbi(logits, *iob2_transitions(LABELS)).tolist() == [1, 2]  # 0.27 > O's 0.09
    logits = _logits({"B-PER": 0.9, "O": 0.1}, {"I-LOC": 0.6, "I-PER": 0.05, "O": 0.35})
    assert constrained_viterbi(logits, *iob2_transitions(LABELS)).tolist() == [1, 0]  # 0.315 > I-PER's 0.045


def test_a_later_position_can_change_an_earlier_tag():
    # O wins position 1 alone, but I-LOC at position 2 is so likely that B-LOC I-LOC I-LOC... must open it
    logits = _logits({"B-LOC": 0.8, "O": 0.2}, {"O": 0.5, "I-LOC": 0.4, "B-LOC": 0.1}, {"I-LOC": 0.99, "O": 0.01})
    assert logits.argmax(-1).tolist() == [3, 0, 4]
    assert constrained_viterbi(logits, *iob2_transitions(LABELS)).tolist() == [3, 4, 4]


def test_viterbi_is_the_best_legal_path_and_never_illegal():
    """Against brute force over every path, on 300 random cases of 1 to 4 positions."""
    rng = np.random.default_rng(0)
    allowed, start = iob2_transitions(LABELS)
    for _ in range(300):
        logits = rng.normal(scale=3.0, size=(int(rng.integers(1, 5)), len(LABELS)))
        path = constrained_viterbi(logits, allowed, start)
        log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        legal = [p for p in itertools.product(range(len(LABELS)), repeat=len(logits)) if _legal(p)]
        best = max(legal, key=lambda p: sum(log_p[t, i] for t, i in enumerate(p)))
        assert _legal(path)
        assert sum(log_p[t, i] for t, i in enumerate(path)) == pytest.approx(
            sum(log_p[t, i] for t, i in enumerate(best))
        )
    assert constrained_viterbi(np.zeros((0, len(LABELS))), allowed, start).tolist() == []


def test_decode_tags_reads_only_the_labelled_positions():
    # a sub-token (unlabelled) between the two words carries I-LOC: it neither breaks nor joins the PER entity
    logits = _logits({"O": 0.4, "I-PER": 0.5, "B-PER": 0.1}, {"I-LOC": 0.9, "O": 0.1}, {"I-PER": 0.9, "O": 0.1})
    mask = np.array([[True, False, True]])
    assert decode_tags(logits[None], mask, ID2LABEL).tolist() == [[2, 4, 2]]
    assert decode_tags(logits[None], mask, ID2LABEL, "constrained").tolist() == [[1, 4, 2]]
    with pytest.raises(ValueError, match="decoding: 'crf'"):
        decode_tags(logits[None], mask, ID2LABEL, "crf")


def test_the_metric_with_constrained_decoding():
    gold = np.array([[-100, 1, 2, 0, -100]])  # B-PER I-PER O
    logits = np.zeros((1, 5, len(LABELS)))
    logits[0, 1:4] = _logits({"O": 0.4, "I-PER": 0.5, "B-PER": 0.1}, {"I-PER": 0.9, "O": 0.1}, {"O": 1 - 2 * TINY})
    argmax = ner_metrics(ID2LABEL)(EvalPrediction(logits, gold))
    constrained = ner_metrics(ID2LABEL, "constrained")(EvalPrediction(logits, gold))
    # seqeval reads the argmax's I-PER I-PER as one entity too, but with a wrong token: accuracy shows it
    assert argmax["accuracy"] == pytest.approx(2 / 3) and constrained["accuracy"] == 1.0
    assert constrained["f1"] == 1.0
    assert ner_metrics(ID2LABEL, "constrained").decoding == "constrained"
    with pytest.raises(ValueError, match="NER only"):
        get_task("text-classification").compute_metrics({0: "neg", 1: "pos"}, "constrained")


def test_export_evaluation_and_inference_use_the_decoding(tokenizer, tmp_path):
    torch.manual_seed(3)  # untrained: many illegal I- tags
    model = BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS, num_hidden_layers=2)).eval()
    words = [["John", "Smith", "said", "in", "Paris", "on", "Thursday"], ["Peter", "Blackburn", "of", "Brussels"]]
    encoded = tokenizer(words, is_split_into_words=True)
    rows = []
    for i in range(len(words)):
        ids, previous, labels = encoded.word_ids(i), None, []
        for w in ids:
            labels.append(-100 if w is None or w == previous else 0)
            previous = w
        rows.append(
            {"input_ids": encoded["input_ids"][i], "attention_mask": encoded["attention_mask"][i], "labels": labels}
        )
    from datasets import Dataset

    dataset = Dataset.from_list(rows)
    id2label = model.config.id2label
    report = export_model(
        model,
        tokenizer,
        tmp_path / "onnx",
        ExportConfig(int8="none"),
        ExportData(
            eval_dataset=dataset,
            data_collator=DataCollatorForTokenClassification(tokenizer),
            compute_metrics=ner_metrics(id2label, "constrained"),
        ),
    )
    assert report["decoding"] == "constrained"
    assert json.loads((tmp_path / "onnx" / "export_report.json").read_text())["decoding"] == "constrained"
    constrained = OnnxTokenClassifier(tmp_path / "onnx")  # the export's decoding is the default
    argmax = OnnxTokenClassifier(tmp_path / "onnx", decoding="argmax")
    assert constrained.decoding == "constrained"
    text = "John Smith said in Paris on Thursday that the bank of England will be good."
    encoded = constrained.tokenizer(text, return_tensors="np")
    logits = constrained._logits(encoded)[0]
    word_ids = encoded.word_ids(0)
    labels = constrained._constrained(logits, word_ids)
    tags = [id2label[int(i)] for i, w in zip(labels, word_ids, strict=True) if w is not None]
    previous = "O"
    for tag in tags:  # every sub-token's tag continues a legal sequence
        assert not (tag.startswith("I-") and previous[2:] != tag[2:]), tags
        previous = tag
    assert constrained(text) != argmax(text)  # the untrained model's illegal tags change the spans
