"""CompressionTrainer in a script of one's own: a recipe's model, data and training blocks, a teacher that is the
student, schedules the run does not complete, the compressed model saved, and exporting that folder by its recipe."""

import copy
import json
import logging
import os
import random
import stat

import pytest
import torch
import yaml
from conftest import NER_LABELS, WORDS, tiny_bert_config
from datasets import Dataset
from transformers import (
    AutoModelForTokenClassification,
    BertForTokenClassification,
    DataCollatorForTokenClassification,
    TrainingArguments,
)

from hf_compress import CompressionTrainer, DistillationCallback, Recipe, student_from_teacher
from hf_compress.cli import main as cli_main
from hf_compress.compat import training_arguments
from hf_compress.tasks import ner_metrics


def ner_rows(tokenizer, n: int, seed: int = 0) -> Dataset:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        ids = [tokenizer.convert_tokens_to_ids(rng.choice(WORDS)) for _ in range(rng.randint(3, 10))]
        labels = [rng.randrange(len(NER_LABELS)) for _ in ids]
        ids = [tokenizer.cls_token_id, *ids, tokenizer.sep_token_id]
        rows.append({"input_ids": ids, "labels": [-100, *labels, -100]})
    return Dataset.from_list(rows)


def args_for(path, **kwargs) -> TrainingArguments:
    defaults = dict(per_device_train_batch_size=8, report_to="none", save_strategy="no", use_cpu=True)
    return TrainingArguments(str(path), **{**defaults, **kwargs})


def tiny_student(tokenizer, seed: int = 0) -> BertForTokenClassification:
    torch.manual_seed(seed)
    return BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS, num_hidden_layers=2))


def make_trainer(tokenizer, path, recipe=None, model=None, args="1 epoch", n=16, **kwargs) -> CompressionTrainer:
    return CompressionTrainer(
        model=model if model is not None else tiny_student(tokenizer),
        args=args_for(path, num_train_epochs=1) if args == "1 epoch" else args,
        recipe=recipe,
        train_dataset=ner_rows(tokenizer, n),
        eval_dataset=ner_rows(tokenizer, 8, seed=1),
        data_collator=DataCollatorForTokenClassification(tokenizer),
        processing_class=tokenizer,
        compute_metrics=ner_metrics(dict(enumerate(NER_LABELS))),
        **kwargs,
    )


# ------------------------------------------------------------------------------------------ the recipe's blocks
def test_training_block_fills_the_arguments_left_at_their_defaults(tokenizer, tmp_path, caplog):
    args = args_for(tmp_path, learning_rate=1e-3)
    recipe = {"training": {"num_train_epochs": 1, "learning_rate": 5e-5, "warmup_ratio": 0.1, "seed": 42}}
    with caplog.at_level(logging.INFO, logger="hf_compress.trainer_recipe"):
        trainer = make_trainer(tokenizer, tmp_path, recipe, args=args)
    assert trainer.args.num_train_epochs == 1 and trainer.args.seed == 42
    for key, value in training_arguments({"warmup_ratio": 0.1}).items():  # warmup_steps 0.1 on transformers 5
        assert getattr(trainer.args, key) == value
    assert trainer.args.learning_rate == 1e-3  # set by the script: kept
    assert "training.learning_rate: 5e-05 (the script's: 0.001)" in caplog.text
    assert "left at their defaults" in caplog.text and "'num_train_epochs': 1" in caplog.text
    assert args.num_train_epochs == 3  # the script's object is not changed


def test_training_block_without_arguments(tokenizer, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer = make_trainer(tokenizer, tmp_path, {"training": {"num_train_epochs": 2}}, args=None)
    assert trainer.args.num_train_epochs == 2 and trainer.args.output_dir.endswith("tmp_trainer")


@pytest.mark.parametrize(
    "blocks, keys",
    [
        ({"data": {"train_file": "train.txt"}}, "data"),
        ({"model": {"teacher": "t", "student": {"from_teacher_layers": [0]}}}, "model.student.from_teacher_layers"),
        ({"model": {"student": "s"}, "data": {"train_file": "t.txt"}}, "data, model.student.name_or_path"),
        ({"model": {"teacher": "t", "train_teacher": True}}, "model.train_teacher"),
    ],
    ids=["data", "from-teacher-layers", "student-and-data", "train-teacher"],
)
def test_blocks_for_the_command_line_are_refused_by_name(tokenizer, tmp_path, blocks, keys):
    recipe = Recipe.from_dict({**blocks, "pruning": {"final_sparsity": 0.5, "start_step": 0, "end_step": 2}})
    with pytest.raises(ValueError, match=rf"cannot apply the recipe's {keys}: these are for `hf-compress train`"):
        make_trainer(tokenizer, tmp_path, recipe)
    trainer = make_trainer(tokenizer, tmp_path, recipe.techniques_only())  # the technique blocks alone
    assert [t.name for t in trainer.techniques] == ["pruning"]


@pytest.fixture
def teacher_dir(tmp_path, tokenizer, tiny_ner_teacher) -> str:
    folder = tmp_path / "teacher"
    tiny_ner_teacher.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_model_teacher_is_loaded_when_a_technique_uses_it(tokenizer, tmp_path, tiny_ner_teacher, teacher_dir):
    student = student_from_teacher(tiny_ner_teacher, [0, 3])
    recipe = {"model": {"teacher": teacher_dir}, "distillation": {"alpha": 0.5}}
    trainer = make_trainer(tokenizer, tmp_path, recipe, model=student)
    (distillation,) = [t for t in trainer.techniques if t.name == "distillation"]
    loaded = distillation.teacher
    assert loaded is not tiny_ner_teacher and not loaded.training
    expected = tiny_ner_teacher.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    assert all(torch.equal(value, expected[key]) for key, value in loaded.state_dict().items())
    trainer.train()
    assert all("loss_kd" in log for log in trainer.state.log_history if "loss" in log)


def test_model_teacher_no_technique_uses_is_not_loaded(tokenizer, tmp_path, teacher_dir, caplog):
    recipe = {"model": {"teacher": teacher_dir}, "pruning": {"final_sparsity": 0.5, "start_step": 0, "end_step": 2}}
    with caplog.at_level(logging.WARNING, logger="hf_compress.trainer_recipe"):
        trainer = make_trainer(tokenizer, tmp_path, recipe)
    assert [t.name for t in trainer.techniques] == ["pruning"]
    assert f"model.teacher ({teacher_dir}) is not loaded: no technique block uses a teacher" in caplog.text


def test_distillation_block_without_any_teacher(tokenizer, tmp_path):
    with pytest.raises(ValueError, match=r"pass CompressionTrainer\(teacher=\.\.\.\) or set model.teacher"):
        make_trainer(tokenizer, tmp_path, {"distillation": {"alpha": 0.5}})


# ------------------------------------------------------------------------------------------ teacher is student
def test_teacher_that_is_or_shares_the_student_is_refused(tokenizer, tmp_path):
    student = tiny_student(tokenizer)
    with pytest.raises(ValueError, match="teacher= is the model being trained: a teacher is frozen"):
        make_trainer(tokenizer, tmp_path, model=student, teacher=student)
    assert all(p.requires_grad for p in student.parameters())  # refused before anything was frozen
    teacher = copy.deepcopy(student)
    teacher.bert.embeddings.word_embeddings.weight = student.bert.embeddings.word_embeddings.weight
    with pytest.raises(ValueError, match=r"teacher= shares 1 parameter\(s\) .*bert.embeddings.word_embeddings.weight"):
        make_trainer(tokenizer, tmp_path, model=student, teacher=teacher)
    callback = DistillationCallback(teacher=copy.deepcopy(student))
    callback.teacher = student  # a callback given a teacher that is the student
    with pytest.raises(ValueError, match="teacher= is the model being trained"):
        make_trainer(tokenizer, tmp_path, model=student, callbacks=[callback])


# ------------------------------------------------------------------------------------------ schedules
def test_schedules_the_run_does_not_complete_are_warned_at_train_start(tokenizer, tmp_path, caplog):
    recipe = {
        "pruning": {"structure": "neurons", "final_sparsity": 0.5, "start_epoch": 0, "end_epoch": 2.0},
        "quantization": {"start_epoch": 1.5, "freeze_observers_epoch": 1.8},
    }
    trainer = make_trainer(tokenizer, tmp_path, recipe)  # 16 examples, batch 8, 1 epoch: 2 optimizer steps
    with caplog.at_level(logging.WARNING, logger="hf_compress.trainer_recipe"):
        trainer.train()
    assert trainer.schedule_problems == [
        "pruning.end_epoch: the pruning ramp ends at optimizer step 4 (epoch 2 at 2 steps per epoch), after this "
        "run's last step 2: the sparsity reaches at most 0.438, not final_sparsity 0.5",
        "quantization.start_epoch: needs optimizer step 4 (epoch 1.5 at 2 steps per epoch), after this run's last "
        "step 2: QAT never starts: the model trains without fake quantization ('qat' exports have no ranges)",
    ]
    for problem in trainer.schedule_problems:
        assert f"{problem} (the schedule does not complete within this run)" in caplog.text
    frozen_late = {"quantization": {"start_step": 0, "freeze_observers_step": 2}}
    trainer = make_trainer(tokenizer, tmp_path, frozen_late)
    trainer.train()
    assert trainer.schedule_problems == [
        "quantization.freeze_observers_step: needs optimizer step 3, after this run's last step 2: the observers "
        "never freeze: no step trains with the scales the int8 model uses"
    ]
    complete = {"pruning": {"final_sparsity": 0.5, "start_step": 0, "end_step": 2}, "quantization": {"start_step": 1}}
    trainer = make_trainer(tokenizer, tmp_path, complete)
    trainer.train()
    assert trainer.schedule_problems == []


# ------------------------------------------------------------------------------------------ saving
PRUNE_NEURONS = {"structure": "neurons", "final_sparsity": 0.5, "start_step": 0, "end_step": 2, "update_every": 1}


def test_save_model_writes_the_compressed_model(tokenizer, tmp_path):
    args = args_for(tmp_path / "run", num_train_epochs=1, save_strategy="steps", save_steps=2)
    trainer = make_trainer(tokenizer, tmp_path, {"pruning": PRUNE_NEURONS}, args=args)
    trainer.train()
    checkpoint = AutoModelForTokenClassification.from_pretrained(tmp_path / "run" / "checkpoint-2")
    assert checkpoint.config.intermediate_size == 64  # checkpoints hold the model as trained
    trainer.save_model(str(tmp_path / "saved"))
    saved = AutoModelForTokenClassification.from_pretrained(tmp_path / "saved")
    assert saved.config.intermediate_size == 32
    assert saved.bert.encoder.layer[0].intermediate.dense.weight.shape == (32, 32)
    assert trainer.model.config.intermediate_size == 64  # the trained model is left as it is
    batch = DataCollatorForTokenClassification(tokenizer)(ner_rows(tokenizer, 4, seed=5).to_list())
    batch.pop("labels")
    trainer.model.eval()
    with torch.no_grad():
        expected, got = trainer.model(**batch).logits, saved.eval()(**batch).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    weights = [(tmp_path / f / "model.safetensors").stat().st_size for f in ("run/checkpoint-2", "saved")]
    assert weights[1] < weights[0]
    assert yaml.safe_load((tmp_path / "saved" / "recipe.yaml").read_text()) == trainer.recipe.to_dict()


# ------------------------------------------------------------------------------------------ export by the recipe
def _modes(folder) -> set[tuple[str, int]]:
    return {("d" if p.is_dir() else "f", stat.S_IMODE(p.stat().st_mode)) for p in [folder, *folder.rglob("*")]}


def test_cli_export_follows_the_saved_recipe(tokenizer, tmp_path, capsys):
    recipe = {
        "pruning": PRUNE_NEURONS,
        "quantization": {"start_step": 0, "freeze_observers_step": 1},
        "export": {"int8": "qat", "fuse": False},
    }
    trainer = make_trainer(tokenizer, tmp_path, recipe, args=args_for(tmp_path / "run", num_train_epochs=1))
    trainer.train()
    model_dir = tmp_path / "model"
    trainer.save_model(str(model_dir))
    assert (model_dir / "quantization_state.pt").is_file()
    rows = [{"tokens": [WORDS[i], WORDS[i + 1]], "ner_tags": ["B-PER", "I-PER"]} for i in range(6)]
    rows += [{"tokens": [WORDS[i]], "ner_tags": ["O"]} for i in range(6)]
    data = tmp_path / "dev.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    old_umask = os.umask(0o022)
    try:
        with pytest.raises(SystemExit) as stop:  # the recipe's export block: int8 qat, not fused
            cli_main(["export", str(model_dir), "--data.train_file", str(data), "--data.validation_file", str(data)])
    finally:
        os.umask(old_umask)
    assert stop.value.code == 0, capsys.readouterr().err
    exported = model_dir / "onnx-int8-qat"
    report = json.loads((exported / "export_report.json").read_text())
    assert report["int8"] == "qat" and "f1" in report["metrics"]  # evaluated on the JSON lines data
    kept = yaml.safe_load((exported / "recipe.yaml").read_text())
    assert kept["export"]["int8"] == "qat" and kept["export"]["fuse"] is False
    assert PRUNE_NEURONS.items() <= kept["pruning"].items()
    assert kept["data"]["validation_file"] == str(data)
    assert _modes(exported) == {("d", 0o755), ("f", 0o644)}
    for argv, route in (
        (["--export.int8", "dynamic", "--export.fuse", "true"], "dynamic"),
        (["--int8", "none", "--export.int8", "dynamic"], None),  # a flag over a dotted override
    ):
        out = tmp_path / f"out-{route}"
        with pytest.raises(SystemExit) as stop:
            cli_main(["export", str(model_dir), "--output_dir", str(out), *argv])
        assert stop.value.code == 0, capsys.readouterr().err
        assert json.loads((out / "export_report.json").read_text())["int8"] == route
        assert yaml.safe_load((out / "recipe.yaml").read_text())["export"]["int8"] == (route or "none")
    with pytest.raises(SystemExit) as stop:
        cli_main(["export", str(model_dir), "--export.int8", "int3"])
    assert stop.value.code == 2 and "recipe key 'export.int8': got 'int3'" in capsys.readouterr().err
