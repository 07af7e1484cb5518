"""The export's quality gate: ``max_metric_drop`` compares the exported model's metric with its PyTorch source's."""

import json

import pytest
import torch
from conftest import NER_LABELS, tiny_bert_config
from test_trainer import ner_dataset
from transformers import BertForTokenClassification, DataCollatorForTokenClassification

import hf_compress.export.pipeline as export_module
from hf_compress import ExportConfig, ExportData, export_model
from hf_compress.cli import main as cli_main
from hf_compress.export.pipeline import MetricDropError, _quality_gate
from hf_compress.tasks import ner_metrics


def test_gate_compares_the_task_metric_exactly():
    report = {"metrics": {"f1": 0.88, "accuracy": 0.5}, "pytorch_metrics": {"f1": 0.90, "accuracy": 0.1}}
    gate = _quality_gate(report, "token-classification", 0.01)
    assert gate["metric"] == "f1" and gate["drop"] == pytest.approx(0.02) and gate["passed"] is False
    assert _quality_gate(report, "token-classification", 0.02 + 1e-12)["passed"] is True
    report = {"metrics": {"accuracy": 0.91, "f1": 0.1}, "pytorch_metrics": {"accuracy": 0.90, "f1": 0.9}}
    gate = _quality_gate(report, "text-classification", 0.0)  # accuracy ranks sequence classifiers
    assert gate["metric"] == "accuracy" and gate["drop"] == pytest.approx(-0.01) and gate["passed"] is True


@pytest.fixture
def model_and_data(tokenizer):
    torch.manual_seed(0)
    model = BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS, num_hidden_layers=1)).eval()
    data = ExportData(
        eval_dataset=ner_dataset(tokenizer, n=16, seed=1),
        data_collator=DataCollatorForTokenClassification(tokenizer),
        compute_metrics=ner_metrics(model.config.id2label),
    )
    return model, data


def test_fp32_export_passes_a_zero_drop_gate(model_and_data, tokenizer, tmp_path):
    model, data = model_and_data
    report = export_model(model, tokenizer, tmp_path / "onnx", ExportConfig(max_metric_drop=0.0), data)
    assert report["quality_gate"]["passed"] is True and report["quality_gate"]["drop"] == 0.0
    assert json.loads((tmp_path / "onnx" / "export_report.json").read_text())["quality_gate"]["passed"] is True


@pytest.fixture
def onnx_scores_lower(monkeypatch):
    """The exported model scores 0.1 lower than PyTorch on every metric (the real evaluation, shifted)."""
    real = export_module.compare_with_pytorch

    def lower(*args, **kwargs):
        report = real(*args, **kwargs)
        report["metrics"] = {k: v - 0.1 for k, v in report["metrics"].items()}
        return report

    monkeypatch.setattr(export_module, "compare_with_pytorch", lower)


def test_a_drop_beyond_the_gate_fails_and_keeps_the_export(model_and_data, tokenizer, tmp_path, onnx_scores_lower):
    model, data = model_and_data
    with pytest.raises(
        MetricDropError, match=r"f1 fell by 0\.1000 .* more than max_metric_drop=0\.05; .* kept in"
    ) as e:
        export_model(model, tokenizer, tmp_path / "onnx", ExportConfig(max_metric_drop=0.05), data)
    saved = json.loads((tmp_path / "onnx" / "export_report.json").read_text())
    assert saved["quality_gate"]["passed"] is False and e.value.report["quality_gate"] == saved["quality_gate"]
    assert (tmp_path / "onnx" / "model.onnx").is_file() and (tmp_path / "onnx" / "README.md").is_file()


def model_and_sample(tmp_path, tokenizer) -> None:
    """``tmp_path/model`` (a tiny NER model with its tokenizer) and ``tmp_path/sample.txt`` (8 CoNLL sentences)."""
    torch.manual_seed(0)
    model = BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS, num_hidden_layers=1))
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    conll = "\n\n".join("John NNP B-NP B-PER\nSmith NNP I-NP I-PER\nsaid VBD B-VP O" for _ in range(8)) + "\n"
    (tmp_path / "sample.txt").write_text(conll)


def test_cli_export_exits_3_when_the_gate_fails(tmp_path, tokenizer, capsys, onnx_scores_lower):
    model_and_sample(tmp_path, tokenizer)
    (tmp_path / "recipe.yaml").write_text(
        "data: {train_file: sample.txt, validation_file: sample.txt}\nexport: {max_metric_drop: 0.05}\n"
    )
    argv = ["export", str(tmp_path / "model"), "--recipe", str(tmp_path / "recipe.yaml")]
    with pytest.raises(SystemExit) as stop:
        cli_main([*argv, "--output_dir", str(tmp_path / "onnx")])
    captured = capsys.readouterr()
    assert stop.value.code == 3
    assert "failed its quality gate: f1 fell by 0.1000" in captured.err and "f1 (ONNX Runtime)" in captured.out
    assert (tmp_path / "onnx" / "model.onnx").is_file()
    with pytest.raises(SystemExit) as stop:  # the command-line value wins over the recipe's
        cli_main([*argv, "--output_dir", str(tmp_path / "onnx2"), "--max_metric_drop", "0.2"])
    assert stop.value.code == 0


def test_train_saves_the_student_and_results_then_exits_3(tmp_path, tokenizer, capsys, onnx_scores_lower):
    model_and_sample(tmp_path, tokenizer)
    (tmp_path / "recipe.yaml").write_text(
        f"model: {{student: {tmp_path / 'model'}}}\ndata: {{train_file: sample.txt, validation_file: sample.txt}}\n"
        "export: {max_metric_drop: 0.05}\n"
        "training: {num_train_epochs: 1, use_cpu: true, disable_tqdm: true, save_strategy: 'no'}\n"
    )
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        cli_main(["train", str(tmp_path / "recipe.yaml"), "--output_dir", str(out)])
    assert stop.value.code == 3 and "failed its quality gate" in capsys.readouterr().err
    assert (out / "model.safetensors").is_file() and (out / "onnx" / "model.onnx").is_file()
    results = json.loads((out / "results.json").read_text())
    assert results[-1]["name"] == "exported: ONNX fp32" and "f1" in results[-1]["metrics"]
