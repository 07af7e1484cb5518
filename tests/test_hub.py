"""Model card and upload of an export folder; only the network calls themselves are replaced."""

import json

import pytest
from huggingface_hub import HfApi, ModelCard
from transformers import BertConfig

from hf_compress.export.hub import model_card, push_to_hub, write_model_card

REPORT = {
    "task": "token-classification",
    "model_type": "bert",
    "base_model": "dslim/bert-base-NER",
    "int8": "qat",
    "onnx_file": "model.onnx",
    "size_mb": 22.9,
    "parameters": 22_500_000,
    "parity": {"reference": "PyTorch", "max_abs_logit_diff": 0.0312, "argmax_agreement": 0.998, "num_positions": 4123},
    "metrics": {"f1": 0.905, "precision": 0.9},
    "pytorch_metrics": {"f1": 0.908, "precision": 0.901},
    "eval_examples": 3250,
    "techniques": {"pruning": {"removed_structures": None, "sparsity": None}},
    "recipe": None,
}


def test_card_metadata_and_sections():
    card = ModelCard(model_card(REPORT, repo_id="me/ner-int8"))
    assert card.data.library_name == "optimum" and card.data.pipeline_tag == "token-classification"
    assert card.data.base_model == "dslim/bert-base-NER"
    assert {"onnx", "int8", "quantization-qat"} <= set(card.data.tags) and "pruned" not in card.data.tags
    assert 'ORTModelForTokenClassification.from_pretrained("me/ner-int8")' in card.text
    assert "| f1 | 90.50 | 90.80 |" in card.text and "| model.onnx | 22.9 | 22.5M | 0.0312 | 99.80% |" in card.text
    assert "## Sparsity" not in card.text and "## Recipe" not in card.text


def test_card_with_sparsity_recipe_and_local_base_model(tmp_path):
    sparsity = {
        "layers": [
            {
                "layer": "bert.encoder.layer.0",
                "parameters": 100,
                "zeros": 50,
                "sparsity": 0.5,
                "heads": 12,
                "ffn_neurons": 1536,
            }
        ],
        "total": {"parameters": 1000, "encoder_linear_parameters": 100, "encoder_linear_zeros": 50, "sparsity": 0.5},
    }
    report = {
        **REPORT,
        "task": "text-classification",
        "int8": None,
        "base_model": str(tmp_path),
        "techniques": {"pruning": {"removed_structures": None, "sparsity": sparsity}},
        "recipe": {"pruning": {"final_sparsity": 0.5}},
    }
    card = ModelCard(model_card(report))
    assert card.data.base_model is None and card.data.pipeline_tag == "text-classification"
    assert "pruned" in card.data.tags and "int8" not in card.data.tags
    assert "ORTModelForSequenceClassification" in card.text
    assert "| bert.encoder.layer.0 | 50.00% | 12 | 1536 |" in card.text
    assert "```yaml\npruning:\n  final_sparsity: 0.5\n```" in card.text


def export_folder(tmp_path, card=True):
    BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2).save_pretrained(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    (tmp_path / "vocab.txt").write_text("[PAD]\n")
    (tmp_path / "export_report.json").write_text(json.dumps(REPORT))
    if card:
        write_model_card(tmp_path)
    return tmp_path


def test_write_model_card_reads_the_report(tmp_path):
    with pytest.raises(FileNotFoundError, match="export_report.json"):
        write_model_card(tmp_path)
    path = write_model_card(export_folder(tmp_path, card=False))
    assert ModelCard.load(path).data.pipeline_tag == "token-classification"


class FakeHub:
    def __init__(self, monkeypatch):
        self.calls = []
        monkeypatch.setattr(HfApi, "create_repo", self.create_repo)
        monkeypatch.setattr(HfApi, "upload_folder", self.upload_folder)

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs["repo_id"], kwargs))

        class Commit:
            commit_url = f"https://huggingface.co/{kwargs['repo_id']}/commit/abc"

        return Commit()


def test_push_uploads_the_folder(tmp_path, monkeypatch):
    hub = FakeHub(monkeypatch)
    folder = export_folder(tmp_path, card=False)  # the card is written before upload
    url = push_to_hub(folder, "me/ner-int8", private=True, token="hf_x")
    assert url == "https://huggingface.co/me/ner-int8/commit/abc"
    (create, repo, create_kwargs), (upload, upload_repo, upload_kwargs) = hub.calls
    assert (create, repo, create_kwargs["private"], create_kwargs["exist_ok"]) == (
        "create_repo",
        "me/ner-int8",
        True,
        True,
    )
    assert (upload, upload_repo, upload_kwargs["folder_path"]) == ("upload_folder", "me/ner-int8", folder)
    assert (folder / "README.md").is_file()


def test_push_refuses_an_incomplete_folder(tmp_path, monkeypatch):
    hub = FakeHub(monkeypatch)
    folder = export_folder(tmp_path)
    (folder / "vocab.txt").unlink()
    (folder / "model.onnx").unlink()
    with pytest.raises(ValueError, match=r"missing an \.onnx model, a tokenizer"):
        push_to_hub(folder, "me/x")
    with pytest.raises(FileNotFoundError):
        push_to_hub(tmp_path / "nowhere", "me/x")
    assert hub.calls == []
