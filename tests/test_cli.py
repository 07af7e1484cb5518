"""End to end on tiny models: the CLI, python -m, the NER example script, and the packaged quickstart (slow)."""

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import WORDS, tiny_bert_config
from transformers import AutoModelForTokenClassification, AutoTokenizer, BertModel

from hf_compress.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
TYPES = ["PER", "ORG", "LOC"]


def write_conll(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    lines = ["-DOCSTART- -X- -X- O", ""]
    for _ in range(n):
        for _ in range(rng.randint(3, 9)):
            tag = rng.choice(["O", "O", "O", *(f"B-{t}" for t in TYPES)])
            lines.append(f"{rng.choice(WORDS)} NN O {tag}")
        lines.append("")
    path.write_text("\n".join(lines))


@pytest.fixture
def encoder_dir(tmp_path, tokenizer, tokenizer_dir) -> str:
    """A tiny 'pretrained encoder' without a task head, saved like a hub model."""
    torch.manual_seed(0)
    folder = tmp_path / "encoder"
    BertModel(tiny_bert_config(len(tokenizer), ["LABEL_0", "LABEL_1"])).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture
def recipe_path(tmp_path, encoder_dir) -> Path:
    write_conll(tmp_path / "train.txt", 40, seed=0)
    write_conll(tmp_path / "valid.txt", 12, seed=1)
    recipe = {
        "model": {"teacher": encoder_dir, "train_teacher": True, "student": {"from_teacher_layers": [0, 2]}},
        "data": {"task": "ner", "train_file": "train.txt", "validation_file": "valid.txt"},
        "distillation": {"temperature": 2.0, "alpha": 0.5, "hidden_states": {"weight": 1.0}},
        "training": {
            "num_train_epochs": 2,
            "per_device_train_batch_size": 8,
            "learning_rate": 1e-3,
            "use_cpu": True,
            "disable_tqdm": True,
        },
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_cli_train_end_to_end_and_resume(recipe_path, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        cli_main(["train", str(recipe_path), "--output_dir", str(out), "--training.seed", "3"])
    assert stop.value.code == 0
    printed = capsys.readouterr().out
    assert "| teacher | 4 |" in printed and "| student (distilled), teacher layers [0, 2] | 2 |" in printed
    results = json.loads((out / "results.json").read_text())
    assert [r["layers"] for r in results] == [4, 2]
    assert all(0.0 <= r["metrics"]["f1"] <= 1.0 and r["train_seconds"] > 0 for r in results)
    assert results[1]["size_mb"] < results[0]["size_mb"]
    assert yaml.safe_load((out / "recipe.yaml").read_text())["training"]["seed"] == 3
    # both saved models load with plain from_pretrained and carry the data's labels
    student = AutoModelForTokenClassification.from_pretrained(out)
    teacher = AutoModelForTokenClassification.from_pretrained(out / "teacher")
    assert student.config.id2label == teacher.config.id2label
    assert set(student.config.label2id) == {"O", *(f"{p}-{t}" for t in sorted(TYPES) for p in "BI")}
    assert (out / "tokenizer.json").is_file() and (out / "checkpoint-10").is_dir()
    # resuming a finished run trains nothing more and gives the same student
    with pytest.raises(SystemExit) as stop:
        cli_main(
            ["train", str(recipe_path), "--output_dir", str(out), "--training.seed", "3", "--resume_from_checkpoint"]
        )
    assert stop.value.code == 0
    again = AutoModelForTokenClassification.from_pretrained(out)
    for a, b in zip(student.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)


def test_teacher_with_other_labels_needs_train_teacher(recipe_path, tmp_path, capsys):
    recipe = yaml.safe_load(recipe_path.read_text())
    recipe["model"]["train_teacher"] = False
    teacher = AutoModelForTokenClassification.from_pretrained(
        recipe["model"]["teacher"], num_labels=3, id2label={0: "O", 1: "B-X", 2: "I-X"}, label2id={}
    )
    teacher.save_pretrained(tmp_path / "other-teacher")
    AutoTokenizer.from_pretrained(recipe["model"]["teacher"]).save_pretrained(tmp_path / "other-teacher")
    recipe["model"]["teacher"] = str(tmp_path / "other-teacher")
    recipe_path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(SystemExit) as stop:
        cli_main(["train", str(recipe_path), "--output_dir", str(tmp_path / "out")])
    assert stop.value.code == 2
    assert re.search("labels .* differ from the data's labels.*train_teacher", capsys.readouterr().err)


def test_a_recipe_without_a_student_has_no_technique_or_export_block(recipe_path, tmp_path, capsys):
    """Without a student the teacher alone is fine-tuned: a technique block would compress nothing; refused, named,
    before anything is trained (``--check`` too)."""
    recipe = yaml.safe_load(recipe_path.read_text())
    del recipe["model"]["student"]
    recipe["export"] = {"int8": "dynamic"}
    recipe_path.write_text(yaml.safe_dump(recipe))
    for extra in (["--check"], []):
        with pytest.raises(SystemExit) as stop:
            cli_main(["train", str(recipe_path), "--output_dir", str(tmp_path / "out"), *extra])
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "model.student" in err
        assert "the distillation, export blocks need a student" in err
    assert not (tmp_path / "out" / "teacher").exists()


def test_a_teacher_alone_is_evaluated_once_per_epoch_and_not_again(recipe_path, tmp_path):
    """The teacher stage reports the evaluation the Trainer ran after its last step: a base-size dev set is not
    evaluated twice."""
    from transformers import TrainerCallback

    from hf_compress import Recipe, run_recipe
    from hf_compress.pipeline import default_training_arguments

    class CountEvaluations(TrainerCallback):
        def __init__(self):
            self.metrics = []

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            self.metrics.append(metrics)

    settings = yaml.safe_load(recipe_path.read_text())
    del settings["model"]["student"], settings["distillation"]
    recipe = Recipe.from_dict(settings, base_dir=tmp_path)
    counter = CountEvaluations()
    out = tmp_path / "out"
    (result,) = run_recipe(recipe, default_training_arguments(str(out), recipe.training), callbacks=[counter])
    assert len(counter.metrics) == 2  # eval_strategy epoch, 2 epochs
    assert result.name == "teacher" and result.metrics["f1"] == counter.metrics[-1]["eval_f1"]
    saved = json.loads((out / "teacher" / "eval_results.json").read_text())
    assert saved["eval_f1"] == counter.metrics[-1]["eval_f1"] and saved["epoch"] == 2.0


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_python_dash_m_checks_a_recipe(recipe_path, tmp_path):
    done = _run(
        [
            "-m",
            "hf_compress",
            "train",
            str(recipe_path),
            "--output_dir",
            "x",
            "--check",
            "--distillation.alpha",
            "0.25",
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(done.stdout)["distillation"]["alpha"] == 0.25
    bad = _run(
        ["-m", "hf_compress", "train", str(recipe_path), "--output_dir", "x", "--distillation.alhpa", "1"], tmp_path
    )
    assert bad.returncode == 2 and "did you mean 'alpha'" in bad.stderr


def test_run_ner_example_distils_prunes_quantizes_exports(recipe_path, tmp_path, encoder_dir):
    done = _run(
        [
            str(ROOT / "examples/ner/run_ner.py"),
            "--teacher_name_or_path",
            encoder_dir,
            "--train_teacher",
            "--student_from_teacher_layers",
            "0,3",
            "--train_file",
            str(tmp_path / "train.txt"),
            "--validation_file",
            str(tmp_path / "valid.txt"),
            "--alpha",
            "0.3",
            "--layer_map",
            "0:1,1:3",
            "--final_sparsity",
            "0.5",
            "--pruning_epochs",
            "0,0.5",
            "--qat_epochs",
            "0.5,0.8",
            "--export_int8",
            "qat",
            "--output_dir",
            str(tmp_path / "example"),
            "--num_train_epochs",
            "1",
            "--use_cpu",
            "--report_to",
            "none",
            "--disable_tqdm",
            "true",
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| student (distilled), teacher layers [0, 3], unstructured sparsity 0.5 | 2 |" in done.stdout
    saved = yaml.safe_load((tmp_path / "example" / "recipe.yaml").read_text())
    assert saved["distillation"]["alpha"] == 0.3
    assert saved["distillation"]["hidden_states"]["layer_map"] == {0: 1, 1: 3}
    assert saved["pruning"]["final_sparsity"] == 0.5 and saved["quantization"]["freeze_observers_epoch"] == 0.8
    assert "| exported: ONNX int8 (qat) | 2 |" in done.stdout
    assert (tmp_path / "example" / "onnx-int8-qat" / "model.onnx").is_file()


@pytest.mark.slow
def test_quickstart_with_packaged_minilm(tmp_path):
    """The README's main job: the packaged MiniLM on the project's NER sample (about 5 minutes)."""
    done = _run(
        [
            "-m",
            "hf_compress",
            "train",
            str(ROOT / "recipes/quickstart-ner.yaml"),
            "--output_dir",
            str(tmp_path / "quickstart"),
        ],
        ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    teacher, student, exported = json.loads((tmp_path / "quickstart" / "results.json").read_text())
    assert teacher["layers"] == 6 and student["layers"] == 3 and exported["size_mb"] < 12
    assert student["metrics"]["f1"] > 0.5 and exported["metrics"]["f1"] > 0.5


def test_cli_prune_quantize_export_and_push(recipe_path, tmp_path, capsys, monkeypatch):
    recipe = yaml.safe_load(recipe_path.read_text())
    recipe["pruning"] = {"structure": "neurons", "final_sparsity": 0.5, "start_step": 0, "end_step": 6}
    recipe["quantization"] = {"start_step": 4, "freeze_observers_step": 8}
    recipe["export"] = {"int8": "qat"}
    recipe_path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        cli_main(["train", str(recipe_path), "--output_dir", str(out)])
    assert stop.value.code == 0
    results = json.loads((out / "results.json").read_text())
    assert results[-1]["name"] == "exported: ONNX int8 (qat)" and "f1" in results[-1]["metrics"]
    report = json.loads((out / "onnx-int8-qat" / "export_report.json").read_text())
    removed = report["techniques"]["pruning"]["removed_structures"]
    assert removed["neurons_per_layer"] == 32 and report["parity"]["num_positions"] > 0
    student = AutoModelForTokenClassification.from_pretrained(out)  # saved after physical removal
    assert student.config.intermediate_size == 32
    # export the saved folder again, by each route, from the command line
    for route in ("qat", "dynamic"):
        with pytest.raises(SystemExit) as stop:
            cli_main(["export", str(out), "--int8", route, "--output_dir", str(tmp_path / route)])
        assert stop.value.code == 0
        assert json.loads((tmp_path / route / "export_report.json").read_text())["int8"] == route
    assert "argmax agreement" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:  # the teacher never ran QAT
        cli_main(["export", str(out / "teacher"), "--int8", "qat"])
    assert stop.value.code == 2 and "quantization_state.pt" in capsys.readouterr().err
    uploads = []
    monkeypatch.setattr("huggingface_hub.HfApi.create_repo", lambda self, repo_id, **kw: None)
    monkeypatch.setattr("huggingface_hub.HfApi.upload_folder", lambda self, **kw: uploads.append(kw))
    with pytest.raises(SystemExit) as stop:
        cli_main(["push", str(tmp_path / "qat"), "--repo_id", "me/tiny-ner-int8"])
    assert stop.value.code == 0 and uploads[0]["repo_id"] == "me/tiny-ner-int8"
