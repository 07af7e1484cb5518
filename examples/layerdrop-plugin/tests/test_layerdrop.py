"""LayerDrop on tiny BERTs built from configs: the schedule, what a skipped layer computes, training and resuming
with hf-compress's Trainer, the recipe block from the installed entry point, and the export."""

from __future__ import annotations

import json

import pytest
import torch
from hf_compress_layerdrop import LayerDropCallback, LayerDropConfig, layerdrop_rate
from transformers import AlbertConfig, AlbertForTokenClassification, BertForTokenClassification
from transformers import DataCollatorForTokenClassification as Collator

from hf_compress import CompressionTrainer, Recipe, RecipeError
from hf_compress.plugins import ENTRY_POINT_GROUP
from hf_compress.technique import get_technique
from hf_compress.testing import NER_LABELS, ner_dataset, tiny_bert_config, tiny_tokenizer, training_arguments


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("tokenizer"))


def _model(tokenizer, layers: int = 3) -> BertForTokenClassification:
    torch.manual_seed(0)
    return BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS, num_hidden_layers=layers))


def _trainer(tokenizer, path, recipe: dict, **args) -> CompressionTrainer:
    return CompressionTrainer(
        model=_model(tokenizer),
        args=training_arguments(path, **{"max_steps": 8, "logging_steps": 1, **args}),
        recipe=recipe,
        train_dataset=ner_dataset(tokenizer),
        eval_dataset=ner_dataset(tokenizer, n=16, seed=1),
        data_collator=Collator(tokenizer),
        processing_class=tokenizer,
    )


def test_the_rate_ramps_from_start_to_end():
    assert [layerdrop_rate(s, 0.4, 2, 6) for s in range(8)] == [0.0, 0.0, 0.0, 0.1, 0.2, 0.30000000000000004, 0.4, 0.4]
    assert [layerdrop_rate(s, 0.4, 0, None) for s in (0, 5)] == [0.4, 0.4]


def test_the_block_is_the_installed_entry_point_and_checks_its_values():
    import importlib.metadata

    (entry,) = [e for e in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if e.name == "layerdrop"]
    assert entry.value == "hf_compress_layerdrop:LayerDropCallback" and get_technique("layerdrop") is LayerDropCallback
    recipe = Recipe.from_dict({"layerdrop": {"drop_rate": 0.3, "start_epoch": 0, "end_epoch": 1}})
    assert recipe.layerdrop == LayerDropConfig(drop_rate=0.3, start_epoch=0.0, end_epoch=1.0)
    for block, message in (
        ({"drop_rate": 0.95}, r"recipe key 'layerdrop.drop_rate': got 0.95; allowed: a number in \[0.0, 0.9\]"),
        ({"layers": []}, r"recipe key 'layerdrop.layers': got \[\]; allowed: a non-empty list of distinct"),
        ({"end_step": 4}, r"recipe key 'layerdrop.start_step': got None; give start_step"),
    ):
        with pytest.raises(RecipeError, match=message):
            Recipe.from_dict({"layerdrop": block})
    distil = {"layerdrop": {}, "distillation": {"attentions": {"weight": 1.0}}, "model": {"teacher": "t"}}
    with pytest.raises(RecipeError, match="does not compose with distillation.attentions"):
        Recipe.from_dict(distil)


def test_a_skipped_layer_passes_its_input_on_and_gets_no_gradient(tokenizer):
    model = _model(tokenizer)
    reference = _model(tokenizer).eval()
    callback = LayerDropCallback(drop_rate=0.5, layers=[1, 2])
    callback.prepare(model)
    assert [name for _, name, _ in callback.layers] == ["bert.encoder.layer.1", "bert.encoder.layer.2"]
    batch = tokenizer(["john smith said in paris"], return_tensors="pt")
    model.train()
    for _, _, layer in callback.layers:
        layer._layerdrop_skip = True
    hidden = model(**batch, output_hidden_states=True).hidden_states
    assert not torch.equal(hidden[1], hidden[0])  # layer 0 is not a candidate: it runs
    assert torch.equal(hidden[2], hidden[1]) and torch.equal(hidden[3], hidden[1])
    model.zero_grad()
    model(**batch, labels=torch.zeros_like(batch["input_ids"])).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if ".encoder.layer." in n}
    assert all(g is None for n, g in grads.items() if ".layer.0." not in n)
    assert all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if ".layer.0." in n and "weight" in n)
    model.eval()  # evaluation runs every layer, whatever was drawn
    assert torch.equal(model(**batch).logits, reference(**batch).logits)


def test_training_skips_the_drawn_layers_and_resumes_exactly(tokenizer, tmp_path):
    recipe = {"layerdrop": {"drop_rate": 0.6, "start_step": 2, "end_step": 6, "seed": 3}}
    full = _trainer(tokenizer, tmp_path / "full", recipe, save_strategy="steps", save_steps=4)
    full.train()
    (callback,) = full.techniques
    draws = torch.stack([callback.draw(step) for step in range(8)]).long()
    assert draws[:3].sum() == 0 and draws.sum() > 0  # nothing before start_step + 1 (rate 0 at steps 0..2)
    report = json.loads((tmp_path / "full" / "layerdrop_report.json").read_text())
    assert report["steps"] == 8 and [r["skipped_steps"] for r in report["layers"]] == draws.sum(0).tolist()
    logged = [log["layerdrop_skipped"] for log in full.state.log_history if "layerdrop_skipped" in log]
    assert logged == draws.sum(1).float().tolist()
    resumed = _trainer(tokenizer, tmp_path / "resumed", recipe, save_strategy="steps", save_steps=4)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-4"))
    for a, b in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(resumed.techniques[0].skipped, callback.skipped) and resumed.techniques[0].steps == 8


def test_the_export_runs_every_layer_and_reports_under_its_name(tokenizer, tmp_path):
    trainer = _trainer(tokenizer, tmp_path, {"layerdrop": {"drop_rate": 0.5}, "pruning": _pruning()}, max_steps=4)
    trainer.train()
    report = trainer.export(tmp_path / "onnx", int8="none")
    assert report["techniques"]["layerdrop"] == {"drop_rate": 0.5, "layers": 3, "layers_trained_with_layerdrop": 3}
    assert report["techniques"]["pruning"]["removed_structures"]["neurons_per_layer"] == 32
    assert report["parity"]["max_abs_logit_diff"] < 1e-4 and report["parity"]["argmax_agreement"] == 1.0
    card = (tmp_path / "onnx" / "README.md").read_text()
    assert "- layerdrop" in card and "3 of its 3 transformer layers were skipped at random" in card
    assert all("_layerdrop_skip" in layer.__dict__ for _, _, layer in trainer.techniques[0].layers)  # (not the copy)


def _pruning() -> dict:
    return {"structure": "neurons", "final_sparsity": 0.5, "start_step": 0, "end_step": 2, "update_every": 1}


def test_shared_layers_and_missing_layers_are_refused(tokenizer, tmp_path):
    config = AlbertConfig(
        vocab_size=len(tokenizer), embedding_size=16, hidden_size=32, num_attention_heads=4, intermediate_size=64,
        num_hidden_layers=2, num_labels=len(NER_LABELS),
    )  # fmt: skip
    with pytest.raises(RecipeError, match=r"'layerdrop.layers': got 'ALBERT'; ALBERT shares one layer's weights"):
        LayerDropCallback()._prepare(AlbertForTokenClassification(config))
    with pytest.raises(RecipeError, match=r"'layerdrop.layers': got 3; the model has 3 layers: allowed 0..2"):
        LayerDropCallback(layers=[0, 3])._prepare(_model(tokenizer))
