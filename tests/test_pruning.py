"""Gradual magnitude pruning: the schedule with exact numbers, masks, physical removal, callback, resume."""

import copy

import pytest
import torch
from conftest import NER_LABELS, tiny_bert_config
from safetensors.torch import load_file
from test_trainer import args_for, flat_params, ner_dataset
from transformers import (
    AutoModelForTokenClassification,
    BertForTokenClassification,
    DataCollatorForTokenClassification,
    Trainer,
)

from hf_compress import (
    CompressionTrainer,
    GradualPruningCallback,
    MagnitudePruner,
    PruningConfig,
    RecipeError,
    cubic_sparsity,
    remove_pruned_structures,
    sparsity_report,
)
from hf_compress.distillation import DistillationCallback
from hf_compress.modules import SettingError


def test_cubic_sparsity_exact_values():
    kwargs = dict(initial=0.0, final=0.8, start=10, end=110)
    assert cubic_sparsity(0, **kwargs) == 0.0
    assert cubic_sparsity(10, **kwargs) == 0.0
    assert cubic_sparsity(35, **kwargs) == pytest.approx(0.8 - 0.8 * 0.75**3)  # 0.4625
    assert cubic_sparsity(35, **kwargs) == pytest.approx(0.4625)
    assert cubic_sparsity(60, **kwargs) == pytest.approx(0.7)
    assert cubic_sparsity(110, **kwargs) == 0.8
    assert cubic_sparsity(500, **kwargs) == 0.8
    assert cubic_sparsity(60, initial=0.2, final=0.6, start=10, end=110) == pytest.approx(0.6 - 0.4 * 0.125)


def model(tokenizer, **overrides):
    torch.manual_seed(0)
    return BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS, **overrides)).eval()


def config(**kwargs):
    return PruningConfig(**{"start_step": 0, "end_step": 10, **kwargs})


def test_unstructured_per_layer_and_global_counts(tokenizer):
    m = model(tokenizer)
    pruner = MagnitudePruner(m, config(final_sparsity=0.7))
    assert len(pruner.targets) == 4 * 6 and not any("classifier" in n for n in pruner.targets)
    pruner.update(0.7)
    for linear in pruner.targets.values():
        assert int((linear.weight == 0).sum()) == round(0.7 * linear.weight.numel())
    m = model(tokenizer)
    pruner = MagnitudePruner(m, config(final_sparsity=0.7, scope="global"))
    before = {n: lin.weight.detach().abs().clone() for n, lin in pruner.targets.items()}
    pruner.update(0.6)
    total = sum(w.numel() for w in before.values())
    zeros = sum(int((lin.weight == 0).sum()) for lin in pruner.targets.values())
    assert zeros == round(0.6 * total)
    kept = torch.cat([before[n][lin.weight != 0] for n, lin in pruner.targets.items()])
    pruned = torch.cat([before[n][lin.weight == 0] for n, lin in pruner.targets.items()])
    assert kept.min() >= pruned.max()  # one global threshold
    # masks only grow, and live beside the weights as non-persistent buffers
    first = {n: lin.weight_mask.clone() for n, lin in pruner.targets.items()}
    pruner.update(0.7)
    assert all(bool((pruner.targets[n].weight_mask <= mask).all()) for n, mask in first.items())
    assert not any(k.endswith("_mask") for k in m.state_dict())


def test_targets_by_pattern_and_errors(tokenizer):
    m = model(tokenizer)
    pruner = MagnitudePruner(m, config(targets=["*.intermediate.dense"]))
    assert sorted(pruner.targets) == [f"bert.encoder.layer.{i}.intermediate.dense" for i in range(4)]
    with pytest.raises(SettingError, match=r"'targets': got '\*\.ffn\.lin1'.*matches no nn\.Linear"):
        MagnitudePruner(m, config(targets=["*.ffn.lin1"]))  # torch level: the setting; the recipe adds the key
    with pytest.raises(RecipeError, match="neurons are pruned per layer"):
        config(structure="neurons", scope="global")
    with pytest.raises(RecipeError, match=r"end_epoch': got 1\.0; allowed: a value after start_epoch"):
        PruningConfig(start_epoch=2.0, end_epoch=1.0)
    with pytest.raises(RecipeError, match=r"final_sparsity': got 1\.0"):
        config(final_sparsity=1.0)
    with pytest.raises(RecipeError, match="in epochs or in steps, not both"):
        PruningConfig(start_epoch=0, end_epoch=1, start_step=0, end_step=3)


def _outputs(m, input_ids):
    with torch.no_grad():
        return m(input_ids, attention_mask=torch.ones_like(input_ids)).logits


@pytest.mark.parametrize("structure, scope", [("neurons", "per_layer"), ("heads", "per_layer"), ("heads", "global")])
def test_structured_masks_and_physical_removal(tokenizer, tmp_path, structure, scope):
    m = model(tokenizer)
    pruner = MagnitudePruner(m, config(structure=structure, scope=scope, final_sparsity=0.5))
    pruner.update(0.5)
    units = torch.stack(pruner.unit_masks)
    input_ids = torch.randint(5, 60, (3, 9))
    masked = _outputs(m, input_ids)
    params_before = sum(p.numel() for p in m.parameters())
    report = sparsity_report(m)
    hidden, n_layers = 32, 4
    if structure == "neurons":
        assert units.sum(1).tolist() == [32] * n_layers  # 64 neurons, half kept in every layer
        assert [r["ffn_neurons"] for r in report["layers"]] == [32] * n_layers
    else:
        assert int(units.sum()) == 8 and bool((units.sum(1) >= 1).all())  # 16 heads, 8 kept, >= 1 per layer
        assert sum(r["heads"] for r in report["layers"]) == 8
    saved = copy.deepcopy(m)
    removed = remove_pruned_structures(m, loadable=False)  # what the export does: every zero unit sliced out
    params_after = sum(p.numel() for p in m.parameters())
    if structure == "neurons":
        assert removed["neurons_per_layer"] == 32 and m.config.intermediate_size == 32
        assert params_before - params_after == n_layers * 32 * (hidden + 1 + hidden)
    else:
        head_size = hidden // 4
        pruned_heads = 16 - 8
        assert sum(len(h) for h in removed["heads"].values()) == pruned_heads
        assert params_before - params_after == pruned_heads * (
            3 * (hidden * head_size + head_size) + hidden * head_size
        )
    assert torch.allclose(_outputs(m, input_ids), masked, atol=1e-5)
    # what is saved loads with plain from_pretrained: heads removed where transformers records them (4.x's
    # config.pruned_heads), kept as zeros on transformers 5, which has no way to say a layer has fewer heads
    saved_removed = remove_pruned_structures(saved, loadable=True)
    heads_recorded = hasattr(saved, "prune_heads")
    assert ("heads_kept_as_zeros" in saved_removed) == (structure == "heads" and not heads_recorded)
    saved.save_pretrained(tmp_path)
    reloaded = AutoModelForTokenClassification.from_pretrained(tmp_path).eval()
    expected = params_after if structure == "neurons" or heads_recorded else params_before
    assert sum(p.numel() for p in reloaded.parameters()) == expected
    assert torch.allclose(_outputs(reloaded, input_ids), masked, atol=1e-5)


@pytest.mark.parametrize("structure", ["neurons", "heads"])
def test_every_public_removal_saves_a_loadable_checkpoint_or_is_refused(tokenizer, tmp_path, structure):
    """The default removal keeps the model loadable with plain from_pretrained (on this stack: heads removed where
    transformers records them, else kept as zeros); the export's slicing (loadable=False) is refused at save."""
    from hf_compress import CompressionTrainer

    m = model(tokenizer)
    MagnitudePruner(m, config(structure=structure, final_sparsity=0.5)).update(0.5)
    input_ids = torch.randint(5, 60, (3, 9))
    masked = _outputs(m, input_ids)
    callback = GradualPruningCallback(config(structure=structure, final_sparsity=0.5))
    for name, remove in (
        ("default", lambda x: remove_pruned_structures(x)),
        ("loadable", lambda x: remove_pruned_structures(x, loadable=True)),
        ("compact", callback.compact),
    ):
        copy_ = copy.deepcopy(m)
        remove(copy_)
        for how in ("save_pretrained", "save_model"):
            folder = tmp_path / f"{name}-{how}"
            if how == "save_pretrained":
                copy_.save_pretrained(folder)
            else:
                CompressionTrainer(model=copy_, args=args_for(tmp_path / "run")).save_model(str(folder))
            reloaded = AutoModelForTokenClassification.from_pretrained(folder).eval()
            assert torch.allclose(_outputs(reloaded, input_ids), masked, atol=1e-5), (name, how)
    sliced = copy.deepcopy(m)
    removed = remove_pruned_structures(sliced, loadable=False)
    assert torch.allclose(_outputs(sliced, input_ids), masked, atol=1e-5)
    trainer = CompressionTrainer(model=sliced, args=args_for(tmp_path / "run"))
    if structure == "heads":
        assert removed["heads"]
        with pytest.raises(ValueError, match=r"refusing to save BertForTokenClassification: attention heads were"):
            trainer.save_model(str(tmp_path / "sliced"))
        assert not (tmp_path / "sliced").exists()
    else:  # neurons are recorded in config.intermediate_size: loadable either way
        trainer.save_model(str(tmp_path / "sliced"))
        reloaded = AutoModelForTokenClassification.from_pretrained(tmp_path / "sliced").eval()
        assert torch.allclose(_outputs(reloaded, input_ids), masked, atol=1e-5)


def _trainer(tokenizer, path, callback, **kwargs):
    m = model(tokenizer).train()
    return Trainer(
        model=m,
        args=args_for(path, **kwargs),
        train_dataset=ner_dataset(tokenizer, n=64),
        data_collator=DataCollatorForTokenClassification(tokenizer),
        callbacks=[callback],
    )


def test_callback_with_plain_trainer(tokenizer, tmp_path):
    callback = GradualPruningCallback(final_sparsity=0.75, start_epoch=0.25, end_epoch=1.5, update_every=2)
    trainer = _trainer(tokenizer, tmp_path, callback, logging_steps=1)
    trainer.train()
    # 64 examples / batch 8 = 8 optimizer steps an epoch: ramp from step 2 to step 12 of 16
    assert (callback.start_step, callback.end_step) == (2, 12)
    for linear in callback.pruner.targets.values():
        assert int((linear.weight == 0).sum()) == round(0.75 * linear.weight.numel())
    logs = {log["step"]: log for log in trainer.state.log_history if "loss" in log}
    assert logs[1]["sparsity_target"] == 0.0 and logs[2]["sparsity_target"] == 0.0
    assert logs[7]["sparsity_target"] == pytest.approx(0.75 - 0.75 * 0.5**3, abs=1e-4)
    assert logs[8]["sparsity"] == pytest.approx(cubic_sparsity(8, 0, 0.75, 2, 12), abs=1e-3)  # updated at 8
    assert logs[9]["sparsity"] == logs[8]["sparsity"]  # not an update step: masks held
    assert logs[16]["sparsity"] == pytest.approx(0.75, abs=1e-3)
    assert {"sparsity_layer_0", "sparsity_layer_3"} <= set(logs[16])
    assert (tmp_path / "sparsity_report.json").is_file()


def test_schedule_counts_optimizer_steps_under_gradient_accumulation(tokenizer, tmp_path):
    seen = []
    for batch, accumulation in ((8, 1), (2, 4)):
        callback = GradualPruningCallback(final_sparsity=0.6, start_epoch=0.0, end_epoch=1.0, update_every=1)
        trainer = _trainer(
            tokenizer,
            tmp_path / str(batch),
            callback,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=accumulation,
            logging_steps=1,
            num_train_epochs=1,
        )
        trainer.train()
        seen.append(
            [
                (log["step"], log["sparsity_target"], log["sparsity"])
                for log in trainer.state.log_history
                if "loss" in log
            ]
        )
    assert seen[0] == seen[1]
    assert len(seen[0]) == 8 and seen[0][-1][1] == 0.6


def test_resume_mid_ramp_gives_the_same_masks(tokenizer, tmp_path):
    def run(**kwargs):
        callback = GradualPruningCallback(final_sparsity=0.8, start_step=2, end_step=14, update_every=2)
        trainer = _trainer(tokenizer, tmp_path / "run", callback, save_strategy="steps", save_steps=6, **kwargs)
        return trainer, callback

    full, full_cb = run()
    full.train()
    checkpoint = tmp_path / "run" / "checkpoint-6"
    assert (checkpoint / GradualPruningCallback.state_file).is_file()
    assert not any(k.endswith("_mask") for k in load_file(checkpoint / "model.safetensors"))
    AutoModelForTokenClassification.from_pretrained(checkpoint)  # plain loading works mid-pruning
    resumed, resumed_cb = run()
    resumed.train(resume_from_checkpoint=str(checkpoint))
    full_masks, resumed_masks = full_cb.pruner.state_dict()["masks"], resumed_cb.pruner.state_dict()["masks"]
    assert full_masks.keys() == resumed_masks.keys()
    for key in full_masks:
        assert torch.equal(full_masks[key], resumed_masks[key]), key
    assert torch.allclose(flat_params(full.model), flat_params(resumed.model), atol=1e-6)


def test_compression_trainer_builds_pruning_from_recipe(tokenizer, tiny_ner_teacher, tmp_path):
    student = BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS, num_hidden_layers=2))
    recipe = {
        "distillation": {"alpha": 0.5},
        "pruning": {"structure": "neurons", "final_sparsity": 0.5, "start_step": 0, "end_step": 4, "update_every": 1},
    }
    trainer = CompressionTrainer(
        model=student,
        teacher=tiny_ner_teacher,
        recipe=recipe,
        args=args_for(tmp_path, logging_steps=1, max_steps=6),
        train_dataset=ner_dataset(tokenizer),
        data_collator=DataCollatorForTokenClassification(tokenizer),
    )
    assert [type(c) for c in trainer.callback_handler.callbacks[:2]] == [DistillationCallback, GradualPruningCallback]
    trainer.train()
    assert [r["ffn_neurons"] for r in sparsity_report(student)["layers"]] == [32, 32]
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert all("loss_kd" in log and "sparsity" in log for log in logs)
    with pytest.raises(RecipeError, match=r"pruning\.targets.*'nothing\.\*'.*matches no nn\.Linear"):
        CompressionTrainer(
            model=student,
            args=args_for(tmp_path),
            recipe={"pruning": {"targets": ["nothing.*"], "start_step": 0, "end_step": 2}},
        )


def test_heads_and_neurons_pruned_in_one_run_each_on_its_schedule_both_removed(tokenizer, tmp_path):
    """Two pruning blocks: heads ramp over steps 0-2, neurons over 2-5; both are sliced out, save and export agree."""
    from hf_compress import ExportConfig, Recipe, export_model
    from hf_compress.export import ExportData

    recipe = Recipe.from_dict(
        {
            "pruning": [
                {"structure": "heads", "final_sparsity": 0.5, "start_step": 0, "end_step": 2, "update_every": 1},
                {"structure": "neurons", "final_sparsity": 0.75, "start_step": 2, "end_step": 5, "update_every": 1},
            ]
        }
    )
    assert [b.structure for b in recipe.pruning] == ["heads", "neurons"]
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    m = model(tokenizer).train()
    data = ner_dataset(tokenizer, n=64)
    collator = DataCollatorForTokenClassification(tokenizer)
    trainer = CompressionTrainer(
        model=m,
        args=args_for(tmp_path / "run", logging_steps=1, max_steps=6),
        recipe=recipe,
        train_dataset=data,
        data_collator=collator,
    )
    callback = trainer.techniques[0]
    trainer.train()
    logs = {log["step"]: log for log in trainer.state.log_history if "loss" in log}
    # each block on its own cubic ramp: heads reach 0.5 at step 2 while neurons start there
    assert logs[1]["sparsity_target_heads"] == pytest.approx(0.5 - 0.5 * 0.5**3)
    assert logs[1]["sparsity_target_neurons"] == 0.0
    assert logs[2]["sparsity_target_heads"] == 0.5 and logs[2]["sparsity_target_neurons"] == 0.0
    assert logs[5]["sparsity_target_neurons"] == 0.75
    report = sparsity_report(m)
    assert sum(r["heads"] for r in report["layers"]) == 8
    assert [r["ffn_neurons"] for r in report["layers"]] == [16] * 4
    assert callback.report()["target_sparsity"] == {"heads": 0.5, "neurons": 0.75}
    assert len(callback.state_dict()["blocks"]) == 2
    m.eval()
    input_ids = torch.randint(5, 60, (3, 9))
    masked = _outputs(m, input_ids)
    export = export_model(
        m,
        tokenizer,
        tmp_path / "onnx",
        ExportConfig(int8="none"),
        ExportData(eval_dataset=ner_dataset(tokenizer, n=16, seed=1), data_collator=collator),
    )
    removed = export["techniques"]["pruning"]["removed_structures"]
    assert removed["neurons_per_layer"] == 48 and sum(len(h) for h in removed["heads"].values()) == 8
    assert export["parity"]["max_abs_logit_diff"] < 1e-5 and export["parity"]["argmax_agreement"] == 1.0
    callback.compact(m)  # what hf-compress train saves: neurons (and, where transformers records them, heads) gone
    assert m.config.intermediate_size == 16
    assert torch.allclose(_outputs(m, input_ids), masked, atol=1e-5)
    m.save_pretrained(tmp_path / "saved")
    reloaded = AutoModelForTokenClassification.from_pretrained(tmp_path / "saved").eval()
    assert torch.allclose(_outputs(reloaded, input_ids), masked, atol=1e-5)


@pytest.mark.parametrize(
    "blocks, key",
    [
        ([{"structure": "neurons"}, {"structure": "neurons"}], r"pruning\.1\.structure.*block 0 prunes neurons"),
        ([{"structure": "unstructured"}, {"structure": "unstructured"}], r"pruning\.1\.structure"),
        ([], r"recipe key 'pruning': got \[\]"),
    ],
)
def test_pruning_blocks_that_cannot_run_together(blocks, key):
    from hf_compress import Recipe

    with pytest.raises(RecipeError, match=key):
        Recipe.from_dict({"pruning": [{**b, "start_step": 0, "end_step": 2} for b in blocks]})


def test_unstructured_blocks_on_overlapping_targets_are_refused(tokenizer):
    blocks = [config(targets=["*.intermediate.dense"]), config(targets=["*.layer.0.*"])]
    with pytest.raises(RecipeError, match=r"pruning\.1\.targets.*disjoint from block 0"):
        GradualPruningCallback(blocks).prepare(model(tokenizer))
