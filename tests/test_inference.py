"""Running an export with ONNX Runtime alone: the entity spans ``pipeline(..., aggregation_strategy="simple")``
gives for the PyTorch model, from the exported folder."""

import pytest
import torch
from conftest import EXPORTERS, NER_LABELS, tiny_bert_config
from transformers import BertForTokenClassification, pipeline

from hf_compress import ExportConfig, export_model
from hf_compress.inference import OnnxTokenClassifier, group_entities

TEXTS = [
    "John Smith said in Paris on Thursday that the bank of England will be good.",
    "Peter Blackburn, European Commission, Brussels",
    "germany and france at the world cup qx7 zz",  # pieces split into sub-words and an unknown character
]


def _token(entity, word, start, score=0.5):
    return {"entity": entity, "score": score, "word": word, "start": start, "end": start + len(word)}


def test_group_entities_follows_the_simple_aggregation():
    tokens = [
        _token("B-PER", "john", 0, 0.9),
        _token("I-PER", "smith", 5, 0.7),
        _token("O", "said", 11),
        _token("I-LOC", "paris", 16, 0.6),  # an I- tag after O opens a group of its type
        _token("B-LOC", "london", 22, 0.8),  # B- always opens a new group
        _token("I-ORG", "bank", 29, 0.4),  # another type opens a new group
    ]
    groups = group_entities(tokens, " ".join)
    assert groups == [
        {"entity_group": "PER", "score": pytest.approx(0.8), "word": "john smith", "start": 0, "end": 10},
        {"entity_group": "LOC", "score": 0.6, "word": "paris", "start": 16, "end": 21},
        {"entity_group": "LOC", "score": 0.8, "word": "london", "start": 22, "end": 28},
        {"entity_group": "ORG", "score": 0.4, "word": "bank", "start": 29, "end": 33},
    ]


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_entities_from_the_export_equal_the_transformers_pipeline(tokenizer, tmp_path, exporter):
    torch.manual_seed(3)  # untrained: many short entities of every type, a hard case for the grouping
    model = BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS, num_hidden_layers=2)).eval()
    export_model(model, tokenizer, tmp_path, ExportConfig(exporter=exporter))
    expected = pipeline("token-classification", model=model, tokenizer=tokenizer, aggregation_strategy="simple")
    ours = OnnxTokenClassifier(tmp_path)
    found = ours(TEXTS)
    assert sum(len(entities) for entities in found) >= 5
    for text, entities in zip(TEXTS, found, strict=True):
        reference = expected(text)
        assert [(e["entity_group"], e["word"], e["start"], e["end"]) for e in entities] == [
            (e["entity_group"], e["word"], e["start"], e["end"]) for e in reference
        ]
        assert [e["score"] for e in entities] == pytest.approx([float(e["score"]) for e in reference], abs=1e-5)
    assert ours(TEXTS[0]) == found[0]  # one text in, its list of entities out


def test_a_folder_without_model_onnx_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an export folder"):
        OnnxTokenClassifier(tmp_path)
