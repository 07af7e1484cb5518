"""The contract every registered technique keeps: pytest tests, run on a technique by
``hf-compress test-technique NAME`` (or on every registered one, as hf-compress's own test suite does).

For each technique, trained with its ``example_config`` on a tiny BERT built from a config (a teacher, wider, for
those that take one): its recipe block round-trips through YAML; it runs as a callback of the plain ``Trainer``
(or says clearly that it needs CompressionTrainer); resuming mid-schedule ends exactly where an uninterrupted run
does, model and technique state element by element; every checkpoint loads (plain ``from_pretrained`` unless the
technique saves another structure); the fp32 and int8 exports agree with PyTorch.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import yaml
from transformers import (
    AutoModelForTokenClassification,
    BertForTokenClassification,
    DataCollatorForTokenClassification,
    Trainer,
)

from ..recipe import Recipe
from ..technique import get_technique, load_pretrained, registered_techniques
from ..trainer import CompressionTrainer
from . import NER_LABELS, flat_params, ner_dataset, tiny_bert_config, tiny_tokenizer, training_arguments

MAX_STEPS, SAVE_STEPS, RESUME_AT = 6, 2, 2


def pytest_generate_tests(metafunc) -> None:
    """One module-scoped run per technique: those named by ``--hf-compress-technique``, else every registered one."""
    if "technique" in metafunc.fixturenames:
        names = metafunc.config.getoption("hf_compress_technique", default=None)
        techniques = [get_technique(name) for name in names] if names else registered_techniques()
        metafunc.parametrize("technique", techniques, ids=[t.name for t in techniques], scope="module")


@pytest.fixture(scope="module")
def contract_tokenizer(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("contract-tokenizer"))


def _student(tokenizer) -> BertForTokenClassification:
    torch.manual_seed(0)
    return BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS, num_hidden_layers=2))


def _resources(tokenizer) -> dict:
    """The run's other models, for the techniques that take them: a wider teacher (so widths differ)."""
    torch.manual_seed(1)
    teacher = BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS, hidden_size=48)).eval()
    return {"teacher": teacher, "teacher_processing_class": tokenizer}


def _trainer(technique, tokenizer, path, **kwargs) -> CompressionTrainer:
    resources = _resources(tokenizer)
    args = training_arguments(path, save_strategy="steps", save_steps=SAVE_STEPS, max_steps=MAX_STEPS, logging_steps=1)
    return CompressionTrainer(
        model=_student(tokenizer),
        args=args,
        recipe={technique.name: dataclasses.asdict(technique.example_config())},
        teacher=resources["teacher"] if "teacher" in technique.resources else None,
        train_dataset=ner_dataset(tokenizer),
        eval_dataset=ner_dataset(tokenizer, n=16, seed=1),
        data_collator=DataCollatorForTokenClassification(tokenizer),
        processing_class=tokenizer,
        **kwargs,
    )


def _technique_of(trainer: CompressionTrainer, technique):
    return next(t for t in trainer.techniques if isinstance(t, technique))


def _assert_states_equal(a: dict, b: dict, where: str = "") -> None:
    assert a.keys() == b.keys(), where
    for key in a:
        left, right = a[key], b[key]
        if isinstance(left, dict):
            _assert_states_equal(left, right, f"{where}.{key}")
        elif isinstance(left, (list, tuple)):
            assert len(left) == len(right), f"{where}.{key}"
            for i, (x, y) in enumerate(zip(left, right, strict=True)):
                _assert_states_equal({i: x}, {i: y}, f"{where}.{key}")
        elif isinstance(left, torch.Tensor):
            assert left.dtype == right.dtype and left.shape == right.shape, f"{where}.{key}"
            assert torch.allclose(left.float(), right.float(), atol=1e-6), f"{where}.{key}"
        else:
            assert left == pytest.approx(right), f"{where}.{key}"


@pytest.fixture(scope="module")
def full_run(technique, contract_tokenizer, tmp_path_factory):
    """One uninterrupted run per technique, checkpoints every 2 steps."""
    path = tmp_path_factory.mktemp(f"contract-{technique.name}")
    trainer = _trainer(technique, contract_tokenizer, path)
    trainer.train()
    return technique, trainer, path


def test_recipe_block_round_trips(full_run):
    technique, _, _ = full_run
    block = dataclasses.asdict(technique.example_config())
    recipe = Recipe.from_dict({technique.name: block})
    assert recipe.techniques == {technique.name: technique.example_config()}
    assert getattr(recipe, technique.name) == technique.example_config()
    again = Recipe.from_dict(yaml.safe_load(recipe.to_yaml()))
    assert again == recipe and again.to_dict() == {technique.name: block}


def test_runs_under_the_plain_trainer(full_run, contract_tokenizer, tmp_path):
    technique, _, _ = full_run
    tokenizer = contract_tokenizer
    callback = technique.from_recipe(technique.example_config(), **_resources(tokenizer))
    trainer = Trainer(
        model=_student(tokenizer),
        args=training_arguments(tmp_path, max_steps=4, logging_steps=1),
        train_dataset=ner_dataset(tokenizer),
        data_collator=DataCollatorForTokenClassification(tokenizer),
        processing_class=tokenizer,
        callbacks=[callback],
    )
    if technique.contributes_loss:  # a loss term needs CompressionTrainer: said, not silently dropped
        with pytest.raises(RuntimeError, match="CompressionTrainer"):
            trainer.train()
        return
    trainer.train()
    assert trainer.state.global_step == 4 and callback.model is trainer.model
    if technique.report_name and callback.report() is not None:
        report = json.loads((tmp_path / f"{technique.report_name}.json").read_text())
        assert report and (tmp_path / f"{technique.report_name}.md").read_text().startswith("|")


def test_resume_mid_schedule_equals_the_uninterrupted_run(full_run, contract_tokenizer, tmp_path):
    technique, full, path = full_run
    checkpoint = path / f"checkpoint-{RESUME_AT}"
    if _technique_of(full, technique).has_state():
        assert (checkpoint / technique.state_file).is_file()
    resumed = _trainer(technique, contract_tokenizer, tmp_path)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == MAX_STEPS
    assert torch.allclose(flat_params(resumed.model), flat_params(full.model), atol=1e-6)
    expected, got = _technique_of(full, technique), _technique_of(resumed, technique)
    assert got.has_state() == expected.has_state()
    if expected.has_state():
        _assert_states_equal(expected.state_dict(), got.state_dict(), technique.name)
        saved = torch.load(path / f"checkpoint-{MAX_STEPS}" / technique.state_file, weights_only=True)
        _assert_states_equal(saved, got.state_dict(), technique.name)


def test_every_checkpoint_loads(full_run):
    technique, full, path = full_run
    final = {k: v for k, v in full.model.state_dict().items()}
    for step in range(SAVE_STEPS, MAX_STEPS + 1, SAVE_STEPS):
        folder = path / f"checkpoint-{step}"
        if technique.export_side.load_pretrained(folder, AutoModelForTokenClassification, full.model.config) is None:
            _, info = AutoModelForTokenClassification.from_pretrained(folder, output_loading_info=True)
            assert not info["missing_keys"] and not info["unexpected_keys"], info
        loaded = load_pretrained(folder, AutoModelForTokenClassification)
        assert loaded.state_dict().keys() == final.keys()
    for key, value in loaded.state_dict().items():  # the last checkpoint is the trained model
        assert torch.equal(value, final[key]), key


def test_export_agrees_with_pytorch(full_run, tmp_path):
    technique, full, _ = full_run
    fp32 = full.export(tmp_path / "fp32", int8="none")
    assert fp32["parity"]["max_abs_logit_diff"] < 1e-4 and fp32["parity"]["argmax_agreement"] == 1.0
    assert list(fp32["techniques"]) == [technique.name]  # its export hooks ran, its entries under its own key
    int8 = full.export(tmp_path / "int8", int8="dynamic")
    assert int8["parity"]["argmax_agreement"] >= 0.95 and int8["int8"] == "dynamic"
    layers = full.model.config.num_hidden_layers  # fused (export.fuse): Q, K, V in one Attention per layer
    assert int8["fused_operators"]["Attention"] == layers
    assert int8["quantized_matmuls"] >= 4 * layers  # (factorized layers: two MatMuls each)
