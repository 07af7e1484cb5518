"""transformers' own run_ner.py with CompressionTrainer (examples/run_ner: run_ner.diff applied by make_run_ner.py):
train, save compressed, export by the recipe, on the project's NER sample converted to JSON lines, with tiny models.
The original script is downloaded, or read from HF_COMPRESS_RUN_NER_ORIGINAL; without either the run is skipped."""

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
import yaml
from conftest import tiny_bert_config
from packaging import version
from transformers import AutoModelForTokenClassification, BertForTokenClassification

from hf_compress.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "run_ner"
SAMPLE = ROOT / "examples" / "data" / "conll-sample"

pytestmark = pytest.mark.skipif(
    version.parse(transformers.__version__) < version.parse("5.8.0"),
    reason="transformers' run_ner.py of this folder needs transformers 5.8 or later",
)


MAKE = runpy.run_path(str(EXAMPLE / "make_run_ner.py"))


def test_the_diff_applies_hunk_by_hunk_and_refuses_a_file_it_was_not_written_for():
    apply = MAKE["apply_unified_diff"]
    original = "a\nb\nc\nd\ne\n"
    diff = "--- a/f\n+++ b/f\n@@ -1,2 +1,3 @@\n a\n+x\n b\n@@ -4,2 +5,2 @@\n-d\n+y\n e\n"
    assert apply(original, diff) == "a\nx\nb\nc\ny\ne\n"
    assert apply("0\n" + original, diff) == "0\na\nx\nb\nc\ny\ne\n"  # the file moved by a line: still applies
    with pytest.raises(MAKE["PatchError"], match="line 4"):
        apply(original.replace("d", "D"), diff)
    changes = [line for line in (EXAMPLE / "run_ner.diff").read_text().splitlines() if line[:1] in "+-"]
    removed = [line for line in changes if line.startswith("-") and not line.startswith("---")]
    assert removed == ["-    trainer = Trainer("] and len(changes) - len(removed) - 2 == 10


def original_run_ner() -> str:
    """transformers' run_ner.py: a copy named by HF_COMPRESS_RUN_NER_ORIGINAL, else downloaded (skip offline)."""
    if path := os.environ.get("HF_COMPRESS_RUN_NER_ORIGINAL"):
        return Path(path).read_text()
    try:
        return MAKE["read_original"](None)
    except OSError as error:
        pytest.skip(f"transformers' run_ner.py is not reachable ({error}); set HF_COMPRESS_RUN_NER_ORIGINAL")


def test_run_ner_trains_saves_compressed_and_exports(tmp_path, tokenizer, capsys):
    script = tmp_path / "run_ner.py"
    script.write_text(MAKE["apply_unified_diff"](original_run_ner(), (EXAMPLE / "run_ner.diff").read_text()))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    env["OMP_NUM_THREADS"] = "1"  # a tiny model: threads would only wait for each other on a busy machine
    convert = runpy.run_path(str(EXAMPLE / "conll_to_json.py"))["convert"]
    assert [convert(SAMPLE / f"{s}.txt", tmp_path / f"{s}.json") for s in ("train", "valid")] == [1200, 300]
    rows = [json.loads(line) for line in (tmp_path / "train.json").read_text().splitlines()]
    assert rows[0] == {
        "tokens": [
            "Floods",
            "in",
            "the",
            "north",
            "of",
            "Accra",
            "forced",
            "thousands",
            "from",
            "their",
            "homes",
            ".",
        ],
        "ner_tags": ["O"] * 5 + ["B-LOC"] + ["O"] * 6,
    }
    labels = sorted({tag for row in rows for tag in row["ner_tags"]})  # run_ner.py's label order
    torch.manual_seed(0)
    for name, layers in (("teacher", 4), ("student", 2)):
        config = tiny_bert_config(len(tokenizer), labels, num_hidden_layers=layers, max_position_embeddings=64)
        BertForTokenClassification(config).save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    recipe = {
        "model": {"teacher": str(tmp_path / "teacher")},
        "distillation": {"temperature": 2.0, "alpha": 0.5},
        "pruning": {"structure": "neurons", "final_sparsity": 0.5, "start_step": 0, "end_step": 8, "update_every": 2},
        "quantization": {"start_step": 6, "freeze_observers_step": 10},
        "export": {"int8": "qat"},
        "training": {"per_device_train_batch_size": 16, "learning_rate": 1.0e-3, "max_steps": 12},
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out"
    command = [
        *(sys.executable, str(script), "--model_name_or_path", str(tmp_path / "student")),
        *("--train_file", str(tmp_path / "train.json"), "--validation_file", str(tmp_path / "valid.json")),
        *("--output_dir", str(out), "--do_train", "--do_eval", "--recipe", str(tmp_path / "recipe.yaml")),
        *("--max_train_samples", "192", "--max_eval_samples", "64", "--max_seq_length", "64"),
        *("--use_cpu", "--report_to", "none", "--disable_tqdm", "true"),
    ]
    done = subprocess.run(command, cwd=EXAMPLE, env=env, capture_output=True, text=True)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    assert "does not complete" not in log
    state = json.loads((out / "trainer_state.json").read_text())  # the recipe's training block, not the defaults
    assert state["max_steps"] == 12 and state["train_batch_size"] == 16
    assert json.loads((out / "train_results.json").read_text())["train_samples"] == 192
    assert "eval_f1" in json.loads((out / "eval_results.json").read_text())
    saved = AutoModelForTokenClassification.from_pretrained(out)  # the plain class loads the smaller model
    assert saved.config.intermediate_size == 32 and saved.config.num_hidden_layers == 2
    assert (out / "quantization_state.pt").is_file() and (out / "distillation_report.json").is_file()
    assert yaml.safe_load((out / "recipe.yaml").read_text())["export"]["int8"] == "qat"
    with pytest.raises(SystemExit) as stop:
        cli_main(
            ["export", str(out), "--data.train_file", str(tmp_path / "train.json")]
            + ["--data.validation_file", str(tmp_path / "valid.json"), "--data.max_eval_samples", "64"]
            + ["--data.max_length", "64"]
        )
    assert stop.value.code == 0, capsys.readouterr().err
    report = json.loads((out / "onnx-int8-qat" / "export_report.json").read_text())
    assert report["int8"] == "qat" and 0.0 <= report["metrics"]["f1"] <= 1.0
    assert report["parity"]["num_positions"] > 0
