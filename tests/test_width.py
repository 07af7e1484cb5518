"""Narrower students: activation importance and block influence on hand-made activations, the masked LayerNorm,
hidden-width pruning's checks, and ``model.student.width`` through the command line (the per-architecture cells,
reference and export parity, are in test_architectures.py)."""

from __future__ import annotations

import copy
import json
import math
import re

import pytest
import torch
import yaml
from conftest import NER_LABELS, tiny_bert_config
from test_cli import write_conll
from transformers import (
    AutoModelForTokenClassification,
    BertForTokenClassification,
    BertModel,
    ElectraConfig,
    ElectraForTokenClassification,
)

from hf_compress import Recipe, RecipeError
from hf_compress.cli import main as cli_main
from hf_compress.pruning import (
    PruningConfig,
    WidthConfig,
    block_influence,
    collect_importance,
    masked_layer_norm,
    narrow_student,
    prune_hidden_width,
    residual_channels,
)
from hf_compress.pruning.importance import batch_l2, token_mean


# ------------------------------------------------------------------------------------------ pure functions
def test_token_mean_counts_real_tokens_only():
    values = torch.tensor([[[1.0, -2.0], [3.0, 4.0], [100.0, 100.0]], [[2.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert torch.equal(token_mean(values, mask), torch.tensor([[2.0, 1.0], [2.0, 0.0]]))


def test_batch_l2_aggregates_examples():
    per_example = torch.tensor([[3.0, 1.0], [4.0, 0.0]])
    assert torch.equal(batch_l2(per_example), torch.tensor([5.0, 1.0], dtype=torch.float64))


def test_block_influence_is_one_minus_cosine_over_real_tokens():
    inputs = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [5.0, 5.0]]])
    outputs = torch.tensor([[[0.0, 2.0], [2.0, 2.0], [-5.0, -5.0]]])  # orthogonal, parallel, (padding: opposite)
    influence = block_influence(inputs, outputs, torch.tensor([[1, 1, 0]]))
    assert influence.tolist() == pytest.approx([0.5])
    same = block_influence(inputs, inputs * 3, torch.tensor([[1, 1, 1]]))
    assert same.tolist() == pytest.approx([0.0], abs=1e-12)


def test_masked_layer_norm_is_the_layer_norm_of_the_kept_channels():
    torch.manual_seed(0)
    x, weight, bias = torch.randn(2, 3, 6), torch.randn(6), torch.randn(6)
    keep = torch.tensor([True, False, True, True, False, True])
    y = masked_layer_norm(x, keep, weight, bias, 1e-5)
    expected = torch.nn.functional.layer_norm(x[..., keep], (4,), weight[keep], bias[keep], 1e-5)
    assert torch.allclose(y[..., keep], expected, atol=1e-6)
    assert torch.equal(y[..., ~keep], torch.zeros(2, 3, 2))


# ------------------------------------------------------------------------------------------ importance on a model
@pytest.fixture
def bert(tokenizer) -> BertForTokenClassification:
    torch.manual_seed(0)
    return BertForTokenClassification(tiny_bert_config(len(tokenizer), ["O", "B-X", "I-X"])).eval()


def _batches(tokenizer):
    texts = [["the", "bank", "of", "paris"], ["john"], ["a", "b", "c", "d", "e", "f"]]
    return [dict(tokenizer(texts, is_split_into_words=True, padding=True, return_tensors="pt"))]


def test_activation_importance_matches_the_hidden_states(bert, tokenizer):
    """Channels at the embedding LayerNorm are ``batch_l2(token_mean(|hidden_states[0]|))``; block influence of
    layer ``l`` is the mean over examples of ``1 - cos(hidden_states[l], hidden_states[l + 1])``; padding changes
    nothing (the same examples one by one give the same scores)."""
    batches = _batches(tokenizer)
    found = collect_importance(bert, batches, norms=["bert.embeddings.LayerNorm"])
    with torch.no_grad():
        hidden = bert(**batches[0], output_hidden_states=True).hidden_states
    mask = batches[0]["attention_mask"]
    assert torch.allclose(found.channel_scores(), batch_l2(token_mean(hidden[0].abs(), mask)), atol=1e-6)
    for layer, value in enumerate(found.layer_influence()):
        assert value == pytest.approx(float(block_influence(hidden[layer], hidden[layer + 1], mask).mean()), abs=1e-9)
    one_by_one = [{k: v[i : i + 1, : int(mask[i].sum())] for k, v in batches[0].items()} for i in range(mask.shape[0])]
    alone = collect_importance(bert, one_by_one, norms=["bert.embeddings.LayerNorm"])
    assert torch.allclose(alone.channel_scores(), found.channel_scores(), atol=1e-5)
    units = zip(alone.head_scores() + alone.neuron_scores(), found.head_scores() + found.neuron_scores(), strict=True)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in units)


def test_a_silent_head_and_a_silent_neuron_score_zero(bert, tokenizer):
    """A head whose value rows are zero outputs nothing; a neuron whose input row and bias are zero outputs
    GELU(0) = 0: both score exactly 0 and are the first to go."""
    with torch.no_grad():
        layer = bert.bert.encoder.layer[1]
        layer.attention.self.value.weight[8:16] = 0  # head 1 (head size 8)
        layer.attention.self.value.bias[8:16] = 0
        layer.intermediate.dense.weight[5] = 0
        layer.intermediate.dense.bias[5] = 0
    found = collect_importance(bert, _batches(tokenizer))
    heads, neurons = found.head_scores()[1], found.neuron_scores()[1]
    assert heads[1] == 0 and bool((heads[[0, 2, 3]] > 0).all())
    assert neurons[5] == 0 and int((neurons == 0).sum()) == 1
    report = narrow_student(bert, WidthConfig(hidden_size=24, intermediate_size=63), _batches(tokenizer))
    assert report["removed_heads"][1] == [1] and bert.config.num_attention_heads == 3
    assert bert.config.intermediate_size == 63 and bert.config.hidden_size == 24


def test_magnitude_importance_keeps_the_heaviest_channels(bert):
    with torch.no_grad():
        bert.bert.embeddings.word_embeddings.weight[:, [3, 17]] *= 100.0
    report = prune_hidden_width(bert, 8)
    assert {3, 17} <= set(report["channels"]) and len(report["channels"]) == 8
    assert bert.config.hidden_size == 8 and bert.config.num_attention_heads == 1
    assert residual_channels(bert).width == 8


def test_layers_by_influence_keeps_the_most_influential_in_order():
    from hf_compress.pruning.width_step import layers_by_influence

    assert layers_by_influence([0.3, 0.05, 0.2, 0.2, 0.01, 0.4], 3) == [0, 2, 5]
    assert layers_by_influence([0.1, 0.1, 0.1], 2) == [0, 1]
    with pytest.raises(ValueError, match="allowed 1..3"):
        layers_by_influence([0.1, 0.1, 0.1], 4)


# ------------------------------------------------------------------------------------------ checks
def test_widths_that_cannot_be_built_are_refused(bert):
    with pytest.raises(ValueError, match="a multiple of the attention head size 8"):
        prune_hidden_width(bert, 20)
    with pytest.raises(ValueError, match="between 8 and 32"):
        prune_hidden_width(bert, 40)
    torch.manual_seed(0)
    electra = ElectraForTokenClassification(
        ElectraConfig(vocab_size=50, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)
    )
    with pytest.raises(ValueError, match="embeddings_project"):
        prune_hidden_width(electra, 16)
    assert electra.config.hidden_size == 32  # refused before anything changed
    with pytest.raises(RecipeError, match="hidden_size and/or intermediate_size"):
        WidthConfig()


def test_the_recipe_refuses_width_pruning_where_the_architecture_does(tmp_path):
    from transformers import AutoConfig

    recipe = Recipe.from_dict(
        {
            "model": {"teacher": "x", "student": {"from_teacher_layers": [0], "width": {"hidden_size": 16}}},
            "data": {"task": "ner", "train_file": "t.txt"},
        }
    )
    assert recipe.model.student.width == WidthConfig(hidden_size=16)
    with pytest.raises(RecipeError, match="model.student.width.hidden_size.*DeBERTa-v2/v3 does not support"):
        recipe.check_architecture(AutoConfig.for_model("deberta-v2"))
    recipe.check_architecture(AutoConfig.for_model("bert"))


# ------------------------------------------------------------------------------------------ end to end
def test_cli_trains_a_narrower_student(tmp_path, tokenizer):
    """``model.student.width`` through ``hf-compress train``, on a student of the teacher's two layers of highest
    block influence: the saved student is 2 layers deep, 16 wide with 2 heads, loads with plain
    ``from_pretrained``, the width report is written, and hidden-state distillation learns projections to the
    teacher's width."""
    torch.manual_seed(0)
    encoder = tmp_path / "encoder"
    BertModel(tiny_bert_config(len(tokenizer), ["LABEL_0", "LABEL_1"])).save_pretrained(encoder)
    tokenizer.save_pretrained(encoder)
    write_conll(tmp_path / "train.txt", 40, seed=0)
    write_conll(tmp_path / "valid.txt", 12, seed=1)
    recipe = {
        "model": {
            "teacher": str(encoder),
            "train_teacher": True,
            "student": {
                "from_teacher_layers_by_influence": 2,
                "width": {"hidden_size": 16, "calibration_samples": 20},
            },
        },
        "data": {"task": "ner", "train_file": "train.txt", "validation_file": "valid.txt"},
        "distillation": {"temperature": 2.0, "alpha": 0.5, "hidden_states": {"weight": 1.0}},
        "export": {"int8": "dynamic"},
        "training": {"num_train_epochs": 1, "per_device_train_batch_size": 8, "use_cpu": True, "disable_tqdm": True},
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        cli_main(["train", str(tmp_path / "recipe.yaml"), "--output_dir", str(out)])
    assert stop.value.code == 0
    student = AutoModelForTokenClassification.from_pretrained(out)
    assert student.config.hidden_size == 16 and student.config.num_attention_heads == 2
    assert student.config.num_hidden_layers == 2
    name = json.loads((out / "results.json").read_text())[1]["name"]
    assert re.search(r"teacher layers \[\d, \d\], hidden 16", name), name
    report = json.loads((out / "width_report.json").read_text())
    assert report["hidden_size"] == {"before": 32, "after": 16} and report["calibration_examples"] == 20
    assert len(report["channels"]) == 16 and all(math.isfinite(v) for v in report["block_influence"])
    distillation = json.loads((out / "distillation_report.json").read_text())
    assert distillation["projections"] == 2
    assert (out / "onnx-int8-dynamic" / "model.onnx").is_file()


# ------------------------------------------------------------------------------------------ gradual, by activation
def test_gradual_pruning_by_activation_ranks_what_the_neurons_did(bert, tokenizer):
    """Neuron 7 of every FFN has a silent input (zero row and bias) but a huge output column: by magnitude it is
    the last to go, by activation (measured on the training batches) the first. Evaluation batches do not count,
    and the sums are part of the pruning state."""
    from hf_compress import MagnitudePruner, PruningConfig

    with torch.no_grad():
        for layer in bert.bert.encoder.layer:
            layer.intermediate.dense.weight[7] = 0
            layer.intermediate.dense.bias[7] = 0
            layer.output.dense.weight[:, 7] = 100.0
    batch = _batches(tokenizer)[0]
    by_magnitude = MagnitudePruner(bert, PruningConfig(structure="neurons", start_step=0, end_step=1))
    by_magnitude.update(1 / 64)
    assert all(bool(m[7]) for m in by_magnitude.unit_masks)
    by_magnitude.update(0.0)
    config = PruningConfig(structure="neurons", start_step=0, end_step=1, importance="activation")
    pruner = MagnitudePruner(bert, config)
    bert.eval()
    bert(**batch)
    assert pruner.activations.scores() is None  # evaluation passes are not counted
    bert.train()
    bert(**batch)
    state = pruner.state_dict()
    assert state["activations"]["examples"] == 3
    resumed = MagnitudePruner(bert, config)
    resumed.load_state_dict(state)
    assert all(
        torch.equal(a, b) for a, b in zip(resumed.activations.scores(), pruner.activations.scores(), strict=True)
    )
    pruner.update(1 / 64)
    assert all(not bool(m[7]) and int(m.sum()) == 63 for m in pruner.unit_masks)
    assert pruner.activations.scores() is None  # each update ranks what happened since the previous one
    with pytest.raises(RecipeError, match="activation importance ranks heads and neurons"):
        PruningConfig(importance="activation", start_step=0, end_step=1)


# ------------------------------------------------------------------------------------------ distillation across widths
def test_hidden_states_across_widths_read_the_kept_teacher_channels(bert, tokenizer):
    from hf_compress import DistillationConfig, LayerLossConfig
    from hf_compress.distillation.losses import DistillationLoss, hidden_state_loss

    student = (torch.zeros(1, 2, 2), torch.tensor([[[1.0, 2.0], [3.0, 4.0]]]))
    teacher = (torch.zeros(1, 2, 3), torch.tensor([[[1.0, 9.0, 2.0], [3.0, 9.0, 5.0]]]))
    loss = hidden_state_loss(student, teacher, {0: 0}, None, torch.tensor([[1, 1]]), torch.tensor([0, 2]))
    assert float(loss) == pytest.approx(0.25)  # squared differences 0, 0, 0, 1 over two tokens of two channels

    teacher_model = BertForTokenClassification(copy.deepcopy(bert.config))
    narrow_student(bert, WidthConfig(hidden_size=16), _batches(tokenizer))
    assert len(bert.kept_hidden_channels) == 16 and bert.kept_hidden_channels == sorted(bert.kept_hidden_channels)
    narrow_student(bert, WidthConfig(hidden_size=8, importance="magnitude"), None)  # twice: channels of the first
    assert set(bert.kept_hidden_channels) < set(range(32)) and len(bert.kept_hidden_channels) == 8
    kept = DistillationConfig(hidden_states=LayerLossConfig(across_widths="kept_channels"))
    module = DistillationLoss(kept, bert.config, teacher_model.config, bert.kept_hidden_channels)
    assert len(module.projections) == 0 and module.teacher_channels.tolist() == bert.kept_hidden_channels
    projected = DistillationLoss(
        DistillationConfig(hidden_states=LayerLossConfig()), bert.config, teacher_model.config
    )
    assert len(projected.projections) == 4 and projected.teacher_channels is None
    with pytest.raises(ValueError, match="does not say which teacher channels it kept"):
        DistillationLoss(kept, bert.config, teacher_model.config, None)


# ------------------------------------------------------------------------------------------ gradual hidden width
def test_masked_channels_compute_what_the_narrower_model_computes(bert, tokenizer):
    """Masking channels on the ramp (LayerNorms over the kept channels) is exact: slicing the zeroed channels and
    heads out afterwards changes no logit. Mid-ramp, the heads that fit the kept width stay."""
    from hf_compress.pruning import HiddenWidthPruner, remove_dead_channels

    batch = _batches(tokenizer)[0]
    pruner = HiddenWidthPruner(bert, PruningConfig(structure="hidden", final_sparsity=0.5, start_step=0, end_step=2))
    pruner.update(0.25)  # 24 of 32 channels: 3 heads of 8
    assert int(pruner.keep.sum()) == 24 and [int(k.sum()) for k in pruner.head_keep] == [3] * 4
    pruner.update(0.5)
    assert int(pruner.keep.sum()) == 16 and [int(k.sum()) for k in pruner.head_keep] == [2] * 4
    with torch.no_grad():
        masked = bert(**batch).logits
    narrow = copy.deepcopy(bert)
    pruner.remove_hooks()
    report = remove_dead_channels(narrow)
    assert report["hidden_size"] == {"before": 32, "after": 16} and narrow.config.num_attention_heads == 2
    with torch.no_grad():
        assert torch.allclose(narrow(**batch).logits, masked, atol=1e-5)
    with pytest.raises(ValueError, match="multiple of the head size 8"):
        HiddenWidthPruner(bert, PruningConfig(structure="hidden", final_sparsity=0.3, start_step=0, end_step=2))


def test_hidden_and_neurons_pruned_gradually_then_removed(tokenizer, tmp_path):
    """A recipe with a hidden block (by activation) and a neurons block: trained with CompressionTrainer, resumable
    state, then exported (channels, heads and neurons sliced out, the export equal to the masked model) and
    compacted for saving (plain from_pretrained reloads it)."""
    from test_trainer import args_for
    from transformers import DataCollatorForTokenClassification

    from hf_compress import CompressionTrainer, ExportConfig, export_model
    from hf_compress.export import ExportData
    from hf_compress.testing import ner_dataset

    recipe = Recipe.from_dict(
        {
            "pruning": [
                {
                    "structure": "hidden",
                    "final_sparsity": 0.5,
                    "start_step": 0,
                    "end_step": 4,
                    "update_every": 1,
                    "importance": "activation",
                },
                {"structure": "neurons", "final_sparsity": 0.5, "start_step": 0, "end_step": 4, "update_every": 1},
            ]
        }
    )
    with pytest.raises(RecipeError, match="drop the heads block"):
        Recipe.from_dict(
            {
                "pruning": [
                    {"structure": "hidden", "start_step": 0, "end_step": 1},
                    {"structure": "heads", "start_step": 0, "end_step": 1},
                ]
            }
        )
    torch.manual_seed(0)
    model = BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS))
    collator = DataCollatorForTokenClassification(tokenizer)
    trainer = CompressionTrainer(
        model=model,
        args=args_for(tmp_path / "run", logging_steps=1, max_steps=5),
        recipe=recipe,
        train_dataset=ner_dataset(tokenizer, n=64),
        data_collator=collator,
    )
    callback = trainer.techniques[0]
    trainer.train()
    state = callback.state_dict()["blocks"][0]
    assert int(state["keep"].sum()) == 16 and state["activations"]["examples"] >= 0
    logs = {log["step"]: log for log in trainer.state.log_history if "loss" in log}
    assert logs[4]["sparsity_target_hidden"] == 0.5 and logs[4]["sparsity_hidden"] == 0.5
    model.eval()
    input_ids = torch.randint(5, 60, (3, 9))
    with torch.no_grad():
        masked = model(input_ids=input_ids).logits
    export = export_model(
        model,
        tokenizer,
        tmp_path / "onnx",
        ExportConfig(int8="none"),
        ExportData(eval_dataset=ner_dataset(tokenizer, n=16, seed=1), data_collator=collator),
    )
    removed = export["techniques"]["pruning"]["removed_structures"]
    assert removed["width"]["hidden_size"] == {"before": 32, "after": 16} and removed["neurons_per_layer"] == 32
    assert export["parity"]["max_abs_logit_diff"] < 1e-5 and export["parity"]["argmax_agreement"] == 1.0
    callback.compact(model)
    assert model.config.hidden_size == 16 and model.config.intermediate_size == 32
    model.save_pretrained(tmp_path / "saved")
    reloaded = AutoModelForTokenClassification.from_pretrained(tmp_path / "saved").eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=input_ids).logits, masked, atol=1e-5)
