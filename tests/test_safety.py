"""Nothing unsafe by default: no pickles loaded, safetensors only, no remote code, safe YAML, only exports uploaded."""

import ast
from pathlib import Path

import pytest
import torch
from conftest import NER_LABELS, tiny_bert_config
from test_trainer import args_for, ner_dataset
from transformers import BertForTokenClassification, DataCollatorForTokenClassification

from hf_compress import CompressionTrainer, Recipe, RecipeError
from hf_compress.export.hub import EXPORT_FILES, push_to_hub
from hf_compress.pipeline import default_training_arguments

ROOT = Path(__file__).resolve().parents[1]
#: transformers' run_ner.py is kept as its authors wrote it (its --trust_remote_code flag is off unless given)
VENDORED = {ROOT / "examples" / "run_ner" / "run_ner.py"}
FOLDERS = ("hf_compress", "benchmarks", "examples")
SOURCES = sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py") if p not in VENDORED)


def calls(name: str):
    """Every call ``<...>.name(...)`` in the project's sources, with its file."""
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == name:
                yield path, node


def keyword(node: ast.Call, name: str):
    found = [k.value for k in node.keywords if k.arg == name]
    return found[0] if found else None


def test_sources_are_found():
    assert len(SOURCES) > 20 and any(p.name == "trainer.py" for p in SOURCES)


def test_every_torch_load_is_weights_only():
    loads = [(path, node) for path, node in calls("load") if ast.unparse(node.func) == "torch.load"]
    assert loads  # the checkpoints and the QAT state are read this way
    for path, node in loads:
        value = keyword(node, "weights_only")
        assert isinstance(value, ast.Constant) and value.value is True, f"{path}:{node.lineno}"


def test_remote_code_is_never_turned_on():
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
                assert isinstance(node.value, ast.Constant) and node.value.value is False, (
                    f"{path}:{node.value.lineno}"
                )


def test_yaml_is_read_with_the_safe_loader(tmp_path):
    for path, node in calls("load"):
        if ast.unparse(node.func) == "yaml.load":
            assert ast.unparse(keyword(node, "Loader")) == "_YamlLoader", f"{path}:{node.lineno}"
    assert not [path for path, _ in calls("unsafe_load")] and not [path for path, _ in calls("full_load")]
    marker = tmp_path / "ran"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"training: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        Recipe.from_yaml(recipe)
    assert not marker.exists()


def test_models_and_checkpoints_are_safetensors(tokenizer, tmp_path):
    # transformers 5 removed the option (safetensors only); 4.x has it, on by default
    assert getattr(default_training_arguments(str(tmp_path), {}), "save_safetensors", True) is True
    with pytest.raises(RecipeError, match="'training.save_safetensors': got False; .*safetensors"):
        Recipe.from_dict({"training": {"save_safetensors": False}})
    torch.manual_seed(0)
    trainer = CompressionTrainer(
        model=BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS, num_hidden_layers=1)),
        recipe={"pruning": {"final_sparsity": 0.5, "start_step": 0, "end_step": 2}, "quantization": {}},
        args=args_for(tmp_path, max_steps=2, save_strategy="steps", save_steps=2),
        train_dataset=ner_dataset(tokenizer, n=16),
        data_collator=DataCollatorForTokenClassification(tokenizer),
    )
    trainer.train()
    trainer.save_model(tmp_path / "final")
    for folder in (tmp_path / "checkpoint-2", tmp_path / "final"):
        names = {p.name for p in folder.iterdir()}
        assert "model.safetensors" in names and "pytorch_model.bin" not in names


def test_push_uploads_only_the_export_files(tmp_path, monkeypatch):
    folder = tmp_path / "onnx"
    folder.mkdir()
    export = ["model.onnx", "config.json", "tokenizer.json", "vocab.txt", "export_report.json", "README.md"]
    stray = ["optimizer.pt", "training_args.bin", "quantization_state.pt", ".env", "token", "notes.txt"]
    for name in export + stray:
        (folder / name).write_text("x")
    (folder / "checkpoint-5").mkdir()
    (folder / "checkpoint-5" / "model.safetensors").write_text("x")
    uploads = []
    monkeypatch.setattr("huggingface_hub.HfApi.create_repo", lambda self, repo_id, **kw: None)
    monkeypatch.setattr("huggingface_hub.HfApi.upload_folder", lambda self, **kw: uploads.append(kw))
    push_to_hub(folder, "me/model", token="hf_secret")
    allowed = uploads[0]["allow_patterns"]
    assert sorted(allowed) == sorted(export) and set(allowed) <= EXPORT_FILES
    from huggingface_hub.utils import filter_repo_objects

    every_file = [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()]
    uploaded = set(
        filter_repo_objects(every_file, allow_patterns=allowed, ignore_patterns=uploads[0].get("ignore_patterns"))
    )
    assert uploaded == set(export)


def test_files_written_atomically_get_the_usual_permissions(tmp_path):
    """Results, reports and model cards are shared files: the umask decides, not the temporary file's 0600."""
    import os
    import stat

    from hf_compress.files import atomic_write_json

    umask = os.umask(0o022)
    try:
        path = atomic_write_json(tmp_path / "results.json", {"f1": 0.9})
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
