"""Bad input beyond recipe values: data files, model folders, checkpoints, output folders and exports.

Each case fails early, with a message naming the file, key or value and what is allowed, and loses nothing: the
files that were there are still there, unchanged.
"""

import errno
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import NER_LABELS, tiny_bert_config
from test_trainer import args_for, ner_dataset
from transformers import BertForTokenClassification, DataCollatorForTokenClassification

from hf_compress import CompressionTrainer, ExportConfig, ExportData, Recipe, RecipeError, export_model
from hf_compress.checkpoints import SAVING_MARKER, CheckpointError, CheckpointSaveError
from hf_compress.cli import main as cli_main
from hf_compress.files import LOCK_FILE, DiskFullError, check_output_dir, output_dir_lock, staged_directory
from hf_compress.recipe import DataConfig
from hf_compress.tasks import check_data_files, get_task, read_conll

CONLL = "-DOCSTART- -X- -X- O\n\nJohn NNP B-NP B-PER\nSmith NNP I-NP I-PER\nsaid VBD B-VP O\n\nParis NNP B-NP B-LOC\n"


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def cli_error(capsys, argv: list[str]) -> str:
    """Run the CLI, expect exit status 2, return what it printed on stderr (one line, no traceback)."""
    with pytest.raises(SystemExit) as stop:
        cli_main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    assert "Traceback" not in err
    return err


# ------------------------------------------------------------------------------------------------ CoNLL files
@pytest.mark.parametrize(
    "text, message",
    [
        ("EU NNP B-NP B-ORG\nrejects VBZ O\n", r"line 2: 3 columns where the file's lines have 4"),
        ("EU NNP B-NP O\nrejects VBZ B-VP I-ORG\n", r"line 2: 'I-ORG' after 'O': in IOB2 an entity starts with B-ORG"),
        ("EU NNP B-NP B-PER\nrejects VBZ B-VP I-ORG\n", r"line 2: 'I-ORG' after 'B-PER'"),
        ("\nGerman JJ B-NP I-MISC\n", r"line 2: 'I-MISC' after 'the sentence start'"),
        (b"Z\xfcrich NNP B-NP B-LOC\n", r"line 1: not UTF-8 text \(byte 0xfc at column 2\)"),
        ("", r"no sentences found"),
    ],
    ids=["column-count", "bio-after-o", "bio-other-type", "bio-sentence-start", "not-utf8", "empty-file"],
)
def test_malformed_conll_names_file_and_line(tmp_path, text, message):
    path = write(tmp_path / "train.txt", text)
    with pytest.raises(ValueError, match=message) as error:
        read_conll(path)
    assert "train.txt" in str(error.value)


def test_a_folder_as_data_file(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder; give the CoNLL file itself"):
        read_conll(tmp_path)
    data = DataConfig(train_file=str(tmp_path))
    with pytest.raises(IsADirectoryError, match=r"data\.train_file: .* is a folder"):
        check_data_files(data)


def test_validation_tag_outside_the_training_label_set(tmp_path):
    train = write(tmp_path / "train.txt", CONLL)
    valid = write(tmp_path / "valid.txt", "Monday NNP B-NP B-DATE\n")
    data = DataConfig(train_file=str(train), validation_file=str(valid))
    with pytest.raises(ValueError, match=r"valid\.txt: sentence 1 has tag\(s\) \['B-DATE'\] that .*train\.txt never"):
        get_task("ner").load_raw(data)


# ------------------------------------------------------------------------------------------------ CSV files
def _csv(tmp_path, train: str | bytes, valid: str | bytes = "text,label\ngood film,pos\n") -> DataConfig:
    return DataConfig(
        task="text-classification",
        train_file=str(write(tmp_path / "train.csv", train)),
        validation_file=str(write(tmp_path / "valid.csv", valid)),
    )


@pytest.mark.parametrize(
    "train, valid, message",
    [
        (b"text,label\nd\xe9j\xe0 vu,pos\n", "text,label\nok,pos\n", r"train\.csv, line 2: not UTF-8 text"),
        ("   \n", "text,label\nok,pos\n", r"train\.csv: the file is empty"),
        ("text,label\ngood,pos\nbad,neg\n", "text,label\nmeh,neutral\n", r"label\(s\) \['neutral'\] never occur"),
        ("text,label\ngood,pos\nbad,\n", "text,label\nok,pos\n", r"train\.csv, line 3: no value in the label"),
    ],
    ids=["not-utf8", "empty", "unseen-label", "missing-label"],
)
def test_bad_classification_files(tmp_path, train, valid, message):
    with pytest.raises(ValueError, match=message):
        get_task("text-classification").load_raw(_csv(tmp_path, train, valid))


# ------------------------------------------------------------------------------------------------ models and CLI
@pytest.fixture
def model_dir(tmp_path, tokenizer) -> Path:
    torch.manual_seed(0)
    folder = tmp_path / "model"
    BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS, num_hidden_layers=2)).save_pretrained(
        folder
    )
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def recipe_for(tmp_path):
    write(tmp_path / "train.txt", CONLL * 4)
    write(tmp_path / "valid.txt", CONLL)

    def make(student: str, **blocks) -> str:
        recipe = {
            "model": {"student": student},
            "data": {"train_file": "train.txt", "validation_file": "valid.txt"},
            "training": {"num_train_epochs": 1, "use_cpu": True, "disable_tqdm": True, "save_strategy": "no"},
            **blocks,
        }
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe))
        return str(path)

    return make


def test_model_folder_that_does_not_exist(recipe_for, tmp_path, capsys):
    err = cli_error(capsys, ["train", recipe_for(str(tmp_path / "nope")), "--output_dir", str(tmp_path / "out")])
    assert "model.student.name_or_path: no such model folder:" in err and "nope" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "remove, message",
    [
        ("config.json", "lacks config.json"),
        ("model.safetensors", r"lacks weights \(model.safetensors or pytorch_model.bin\)"),
        ("tokenizer", "lacks tokenizer files"),
    ],
    ids=["no-config", "no-weights", "no-tokenizer"],
)
def test_model_folder_missing_a_part(model_dir, recipe_for, tmp_path, capsys, remove, message):
    names = ["tokenizer.json", "vocab.txt"] if remove == "tokenizer" else [remove]
    for name in names:
        (model_dir / name).unlink(missing_ok=True)  # transformers 5 saves tokenizer.json alone
    err = cli_error(capsys, ["train", recipe_for(str(model_dir)), "--output_dir", str(tmp_path / "out")])
    assert "model.student.name_or_path: the model folder" in err
    assert re.search(message, err)


def test_model_path_is_a_file(model_dir, recipe_for, tmp_path, capsys):
    err = cli_error(capsys, ["train", recipe_for(str(model_dir / "config.json")), "--output_dir", str(tmp_path / "o")])
    assert "config.json is a file; give the model's folder" in err


def test_max_length_beyond_the_model_positions(model_dir, recipe_for, tmp_path, capsys):
    argv = ["train", recipe_for(str(model_dir)), "--output_dir", str(tmp_path / "out"), "--data.max_length", "512"]
    err = cli_error(capsys, argv)
    assert "recipe key 'data.max_length': got 512; the student has 128 positions" in err


def test_output_dir_with_a_previous_run_is_refused(model_dir, recipe_for, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    write(out / "results.json", "[]")
    before = snapshot(out)
    err = cli_error(capsys, ["train", recipe_for(str(model_dir)), "--output_dir", str(out)])
    assert "already exists and is not empty (results.json)" in err and "--overwrite_output_dir" in err
    assert snapshot(out) == before
    check_output_dir(out, overwrite=True)  # asked for: allowed (and nothing is deleted by it)
    check_output_dir(out, resume=True)
    write(tmp_path / "file", "x")
    with pytest.raises(FileExistsError, match="is a file, not a folder"):
        check_output_dir(tmp_path / "file")


# ------------------------------------------------------------------------------------------------ recipes
@pytest.mark.parametrize(
    "blocks, key, message",
    [
        (
            {"lowrank": {"rank": 4}, "pruning": {"structure": "neurons", "start_step": 0, "end_step": 2}},
            "pruning.structure",
            "cannot compose with the 'lowrank' block",
        ),
        ({"distillation": {"alpha": 0.5}}, "distillation", "needs a teacher: set model.teacher"),
    ],
    ids=["lowrank+neurons", "distillation-without-teacher"],
)
def test_blocks_that_cannot_compose(blocks, key, message):
    with pytest.raises(RecipeError, match=rf"'{key}'.*{message}"):
        Recipe.from_dict({"model": {"student": "some/model"}, "data": {"train_file": "t.txt"}, **blocks})


# ------------------------------------------------------------------------------------------------ checkpoints
@pytest.fixture(scope="module")
def checkpointed(tokenizer, tmp_path_factory):
    """A tiny run with pruning and QAT that saved checkpoints at steps 2, 4 and 6; returns (folder, make_trainer)."""
    folder = tmp_path_factory.mktemp("checkpointed")
    recipe = {
        "pruning": {"final_sparsity": 0.5, "start_step": 0, "end_step": 6, "update_every": 1},
        "quantization": {"start_step": 1},
    }

    def make_trainer(output_dir: Path, recipe: dict = recipe, **model_overrides) -> CompressionTrainer:
        torch.manual_seed(0)
        config = tiny_bert_config(len(tokenizer), NER_LABELS, num_hidden_layers=2, **model_overrides)
        return CompressionTrainer(
            model=BertForTokenClassification(config),
            recipe=recipe,
            args=args_for(output_dir, max_steps=6, save_strategy="steps", save_steps=2, save_total_limit=None),
            train_dataset=ner_dataset(tokenizer, n=32),
            data_collator=DataCollatorForTokenClassification(tokenizer),
        )

    make_trainer(folder).train()
    return folder, make_trainer


@pytest.fixture
def run_copy(checkpointed, tmp_path):
    folder, make_trainer = checkpointed
    copy = tmp_path / "run"
    shutil.copytree(folder, copy)
    return copy, make_trainer


def test_resume_from_a_checkpoint_that_does_not_exist(run_copy):
    run, make_trainer = run_copy
    with pytest.raises(CheckpointError, match=r"checkpoint-99 is not a checkpoint folder \(no such folder\)"):
        make_trainer(run).train(resume_from_checkpoint=str(run / "checkpoint-99"))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda c: (c / "trainer_state.json").unlink(), "no trainer_state.json"),
        (lambda c: (c / "model.safetensors").unlink(), "no model weights"),
        (lambda c: (c / "pruning_state.pt").unlink(), "no pruning_state.pt"),
        (lambda c: (c / "quantization_state.pt").unlink(), "no quantization_state.pt"),
        (lambda c: write(c / "pruning_state.pt", b"PK\x03\x04 truncated"), "pruning_state.pt is corrupted"),
        (lambda c: write(c / "trainer_state.json", '{"global_step": 4, "log_hi'), "trainer_state.json is corrupted"),
        (lambda c: (c / "optimizer.pt").unlink(), "no optimizer.pt"),
    ],
    ids=[
        "no-trainer-state",
        "no-weights",
        "no-pruning-state",
        "no-qat-state",
        "corrupted-pruning-state",
        "truncated-trainer-state",
        "no-optimizer",
    ],
)
def test_damaged_checkpoint_is_refused_before_training(run_copy, damage, message):
    run, make_trainer = run_copy
    damage(run / "checkpoint-4")
    before = snapshot(run)
    with pytest.raises(CheckpointError, match=rf"checkpoint-4 is incomplete or damaged: {message}"):
        make_trainer(run).train(resume_from_checkpoint=str(run / "checkpoint-4"))
    assert snapshot(run) == before


def test_resume_latest_skips_a_truncated_checkpoint(run_copy):
    run, make_trainer = run_copy
    (run / "checkpoint-6" / "quantization_state.pt").unlink()  # killed while saving step 6
    shutil.rmtree(run / "checkpoint-4")
    kept = snapshot(run / "checkpoint-2")
    trainer = make_trainer(run)
    trainer.train(resume_from_checkpoint=True)  # takes checkpoint-2, the latest complete one, and goes on
    assert trainer.state.global_step == 6
    assert snapshot(run / "checkpoint-2") == kept
    for name in ("checkpoint-4", "checkpoint-6"):  # saved again, complete
        assert (run / name / "quantization_state.pt").is_file() and (run / name / "recipe.yaml").is_file()


def test_checkpoint_from_another_recipe(run_copy):
    run, make_trainer = run_copy
    other = {
        "pruning": {"final_sparsity": 0.8, "start_step": 0, "end_step": 6, "update_every": 1},
        "quantization": {"start_step": 1},
    }
    with pytest.raises(CheckpointError, match=r"another recipe: pruning.final_sparsity: 0.5 in the checkpoint, 0.8"):
        make_trainer(run, recipe=other).train(resume_from_checkpoint=str(run / "checkpoint-4"))


def test_checkpoint_of_a_model_of_another_shape(run_copy):
    run, make_trainer = run_copy
    with pytest.raises(CheckpointError, match=r"another shape: intermediate_size 64 in the checkpoint, 48 now"):
        make_trainer(run, intermediate_size=48).train(resume_from_checkpoint=str(run / "checkpoint-4"))


# ------------------------------------------------------------------------------------------------ exports
@pytest.fixture
def ner_model(tokenizer):
    torch.manual_seed(0)
    return BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS, num_hidden_layers=1)).eval()


def test_export_into_a_folder_of_other_files_is_refused_even_with_overwrite(ner_model, tokenizer, tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    write(target / "notes.txt", "my notes")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="not empty|did not write"):
            export_model(ner_model, tokenizer, target, overwrite=overwrite)
    assert snapshot(target) == {"notes.txt": b"my notes"}


def test_export_over_an_earlier_export_needs_overwrite(ner_model, tokenizer, tmp_path):
    target = tmp_path / "onnx"
    export_model(ner_model, tokenizer, target)
    before = snapshot(target)
    with pytest.raises(FileExistsError, match="already exists and is not empty.*--overwrite"):
        export_model(ner_model, tokenizer, target)
    assert snapshot(target) == before
    report = export_model(ner_model, tokenizer, target, ExportConfig(int8="dynamic"), overwrite=True)
    assert report["int8"] == "dynamic" and json.loads((target / "export_report.json").read_text())["int8"] == "dynamic"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_a_failed_export_leaves_no_folder_and_the_model_untouched(ner_model, tokenizer, tmp_path, monkeypatch):
    before = {k: v.clone() for k, v in ner_model.state_dict().items()}

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("hf_compress.export.hub.write_model_card", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        export_model(ner_model, tokenizer, tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists()
    assert not list(tmp_path.iterdir())  # the partial folder is gone too
    assert all(torch.equal(before[k], v) for k, v in ner_model.state_dict().items())


def test_staged_directory_keeps_the_old_folder_when_the_block_fails(tmp_path):
    target = tmp_path / "export"
    target.mkdir()
    write(target / "export_report.json", "{}")
    with pytest.raises(KeyboardInterrupt):
        with staged_directory(target, overwrite=True, marker="export_report.json") as staging:
            write(staging / "model.onnx", "half")
            raise KeyboardInterrupt
    assert snapshot(target) == {"export_report.json": b"{}"}


def test_opset_too_low(ner_model, tokenizer, tmp_path):
    with pytest.raises(ValueError, match=r"'opset': got 13; too low.*allowed: opset >= 14"):
        export_model(ner_model, tokenizer, tmp_path / "onnx", ExportConfig(opset=13))
    with pytest.raises(RecipeError, match=r"'export.opset': got 12"):
        Recipe.from_dict({"export": {"opset": 12}})


def test_evaluation_sequences_longer_than_the_model(ner_model, tokenizer, tmp_path):
    data = ner_dataset(tokenizer, n=4).map(lambda row: {k: v * 20 for k, v in row.items()})  # up to 280 tokens
    with pytest.raises(ValueError, match=r"sequences of \d+ tokens but the model has 128 positions"):
        export_model(
            ner_model,
            tokenizer,
            tmp_path / "onnx",
            data=ExportData(eval_dataset=data, data_collator=DataCollatorForTokenClassification(tokenizer)),
        )
    assert not (tmp_path / "onnx").exists()


def test_inference_on_text_longer_than_the_model_truncates(ner_model, tokenizer, tmp_path):
    from transformers import AutoTokenizer

    from hf_compress.compat import optimum_available
    from hf_compress.inference import OnnxTokenClassifier

    export_model(ner_model, tokenizer, tmp_path / "onnx")
    shipped = AutoTokenizer.from_pretrained(tmp_path / "onnx")
    assert tokenizer.model_max_length > 128 and shipped.model_max_length == 128
    long_text = " ".join(["john smith said in paris"] * 100)  # 500 words: cut at 128 tokens, not an ORT error
    entities = OnnxTokenClassifier(tmp_path / "onnx")(long_text)
    assert all(e["end"] <= len(long_text) for e in entities)
    if optimum_available():
        from optimum.onnxruntime import ORTModelForTokenClassification
        from transformers import pipeline

        ner = pipeline(
            "token-classification",
            model=ORTModelForTokenClassification.from_pretrained(tmp_path / "onnx"),
            tokenizer=shipped,
        )
        ner(long_text)


def test_max_metric_drop_needs_evaluation_data(ner_model, tokenizer, tmp_path):
    with pytest.raises(ValueError, match="max_metric_drop needs evaluation data"):
        export_model(ner_model, tokenizer, tmp_path / "onnx", ExportConfig(max_metric_drop=0.01))


def test_cli_export_of_a_folder_without_its_tokenizer(model_dir, tmp_path, capsys):
    for name in ("tokenizer.json", "vocab.txt"):
        (model_dir / name).unlink(missing_ok=True)  # transformers 5 saves tokenizer.json alone
    err = cli_error(capsys, ["export", str(model_dir), "--output_dir", str(tmp_path / "onnx")])
    assert "model_dir: the model folder" in err and "lacks tokenizer files" in err
    assert not (tmp_path / "onnx").exists()


def test_cli_export_qat_without_qat_state(model_dir, tmp_path, capsys):
    err = cli_error(capsys, ["export", str(model_dir), "--int8", "qat", "--output_dir", str(tmp_path / "onnx")])
    assert "quantization_state.pt: int8 'qat' needs the observers saved by quantization-aware training" in err


def test_cli_export_into_an_existing_export(model_dir, tmp_path, capsys):
    target = tmp_path / "onnx"
    with pytest.raises(SystemExit) as stop:
        cli_main(["export", str(model_dir), "--output_dir", str(target)])
    assert stop.value.code == 0
    err = cli_error(capsys, ["export", str(model_dir), "--output_dir", str(target)])
    assert f"{target} already exists and is not empty" in err
    with pytest.raises(SystemExit) as stop:
        cli_main(["export", str(model_dir), "--output_dir", str(target), "--overwrite"])
    assert stop.value.code == 0


@pytest.fixture
def without_optimum(monkeypatch):
    """This process as if Optimum were not installed (the default stack), whichever stack runs the tests:
    ``import optimum`` fails as it does there."""

    from hf_compress.compat import optimum_available

    for name in [n for n in sys.modules if n == "optimum" or n.startswith("optimum.")] + ["optimum"]:
        monkeypatch.setitem(sys.modules, name, None)  # also what earlier tests of this process imported
    optimum_available.cache_clear()
    yield
    optimum_available.cache_clear()


def test_optimum_exporter_without_optimum_is_one_clear_line(without_optimum, model_dir, tmp_path, capsys):
    with pytest.raises(RecipeError, match=r"'export.exporter': got 'optimum'; Optimum is not installed \(pip install"):
        Recipe.from_dict({"export": {"exporter": "optimum"}})
    err = cli_error(capsys, ["export", str(model_dir), "--exporter", "optimum", "--output_dir", str(tmp_path / "o")])
    assert err.count("\n") == 1 and "pip install 'hf-compress[optimum]'" in err
    assert not (tmp_path / "o").exists()
    config = ExportConfig()
    config.exporter = "optimum"  # set after the config's own check, as a config made before Optimum went away
    model = BertForTokenClassification.from_pretrained(model_dir)
    with pytest.raises(ImportError, match=r"export.exporter: optimum needs Optimum, which is not installed"):
        export_model(model, None, tmp_path / "p", config)
    assert not (tmp_path / "p").exists()
    assert ExportConfig().exporter == "auto" and export_model(model, None, tmp_path / "q")["exporter"].startswith(
        "torch.onnx"
    )  # auto: torch.onnx without Optimum


# ------------------------------------------------------------------------------------------------ a full disk
def full_disk_at(monkeypatch, name: str, folder: str) -> None:
    """``torch.save`` (the Trainer's writer of optimizer.pt, and the techniques' through save_torch_state) fails with
    ENOSPC for ``name`` inside ``folder``, leaving the file cut short as a full disk does."""
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if name in str(f) and folder in str(f):
            Path(f).write_bytes(b"PK\x03\x04 cut short")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


@pytest.mark.parametrize("writer", ["optimizer.pt", "pruning_state.pt"], ids=["trainer-file", "technique-state"])
def test_a_full_disk_while_saving_a_checkpoint_keeps_the_previous_one(checkpointed, tmp_path, monkeypatch, writer):
    _, make_trainer = checkpointed
    run = tmp_path / "run"
    trainer = make_trainer(run)
    trainer.args.save_total_limit = 1  # the previous checkpoint is rotated out only once the new one is complete
    full_disk_at(monkeypatch, writer, "checkpoint-4")
    with pytest.raises(CheckpointSaveError) as error:
        trainer.train()
    message = str(error.value)
    assert "\n" not in message and error.value.disk_full
    assert message.startswith(f"saving checkpoint {run / 'checkpoint-4'} failed: no space left on device (")
    assert message.endswith(
        f"the partial folder was removed and the last complete checkpoint, {run / 'checkpoint-2'}, is intact; "
        "free space, then resume with --resume_from_checkpoint"
    )
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-2"]
    kept = snapshot(run / "checkpoint-2")
    assert SAVING_MARKER not in kept and "pruning_state.pt" in kept
    if writer == "optimizer.pt":  # (once is enough)
        monkeypatch.undo()
        resumed = make_trainer(run)
        resumed.train(resume_from_checkpoint=True)  # the last complete checkpoint, and on to the end
        assert resumed.techniques[0].resume_from == str(run / "checkpoint-2") and resumed.state.global_step == 6


def test_a_full_disk_during_an_export_keeps_the_previous_export(model_dir, tmp_path, monkeypatch, capsys):
    target = tmp_path / "onnx"
    with pytest.raises(SystemExit) as stop:
        cli_main(["export", str(model_dir), "--output_dir", str(target)])
    assert stop.value.code == 0
    before = snapshot(target)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("hf_compress.export.hub.write_model_card", full)
    model = BertForTokenClassification.from_pretrained(model_dir)
    with pytest.raises(DiskFullError) as error:
        export_model(model, None, target, overwrite=True)
    assert str(error.value) == (
        f"no space left on device while writing {target} (OSError: [Errno 28] No space left on device); the partial "
        f"folder was removed and the previous {target} is intact: free space and run again"
    )
    err = cli_error(capsys, ["export", str(model_dir), "--output_dir", str(target), "--overwrite"])
    assert err.splitlines()[-1] == f"hf-compress: {error.value}"  # (above it: transformers' progress bars)
    assert snapshot(target) == before and sorted(p.name for p in tmp_path.iterdir()) == ["model", "onnx"]


def test_resume_skips_a_checkpoint_that_was_still_being_written(run_copy):
    run, make_trainer = run_copy
    write(run / "checkpoint-6" / SAVING_MARKER, "1234\n")  # every file there, some perhaps cut short
    with pytest.raises(CheckpointError, match=r"checkpoint-6 is incomplete or damaged: it was still being written"):
        make_trainer(run).train(resume_from_checkpoint=str(run / "checkpoint-6"))
    trainer = make_trainer(run)
    trainer.train(resume_from_checkpoint=True)
    assert trainer.techniques[0].resume_from == str(run / "checkpoint-4")
    assert not (run / "checkpoint-6" / SAVING_MARKER).exists()  # written again, complete


# ------------------------------------------------------------------------------------------------ one run a folder
def test_a_second_run_into_a_held_output_dir_is_refused_naming_the_holder(model_dir, recipe_for, tmp_path, capsys):
    out = tmp_path / "out"
    with output_dir_lock(out):
        started = time.monotonic()
        err = cli_error(capsys, ["train", recipe_for(str(model_dir)), "--output_dir", str(out)])
        seconds = time.monotonic() - started
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]
    assert err.startswith(
        f"hf-compress: --output_dir {out} is in use by another run: pid {os.getpid()} on {socket.gethostname()}, "
        "started "
    )
    assert err.endswith("; wait for it to end, or choose another folder\n") and seconds < 30
    assert not out.exists()  # the lock made the folder, and removed it with the lock file


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path, caplog):
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout)
    out = tmp_path / "out"
    out.mkdir()
    holder = {"pid": dead, "host": socket.gethostname(), "started": "2024-01-01 00:00:00", "command": "hf-compress"}
    write(out / LOCK_FILE, json.dumps(holder))  # left by a run that was killed
    with caplog.at_level(logging.WARNING, logger="hf_compress.files"):
        with output_dir_lock(out) as lock:
            assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert (
        f"taking over the lock of {out}: its holder (pid {dead} on {socket.gethostname()}, started 2024-01-01 "
        "00:00:00 (hf-compress)) is no longer running"
    ) in caplog.text
    assert out.is_dir() and not (out / LOCK_FILE).exists()
