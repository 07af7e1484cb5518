"""Low-rank factorization (exact SVD facts, save/load, ONNX, merge, callback) and PEFT/LoRA students."""

import json

import onnx
import pytest
import torch
from conftest import NER_LABELS, tiny_bert_config
from test_trainer import args_for, flat_params, ner_dataset
from transformers import BertForTokenClassification, DataCollatorForTokenClassification, Trainer

from hf_compress import (
    CompressionTrainer,
    ExportData,
    LowRankCallback,
    LowRankConfig,
    Recipe,
    RecipeError,
    export_model,
)
from hf_compress.lowrank import (
    LowRankLinear,
    choose_rank,
    factorize_linear,
    factorize_model,
    load_lowrank,
    merge_lowrank,
)


def linear_with_spectrum(singular_values, m=6, n=5, seed=0):
    """An nn.Linear whose weight has exactly the given singular values."""
    generator = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(m, m, generator=generator, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    s = torch.tensor(singular_values, dtype=torch.float64)
    linear = torch.nn.Linear(n, m, dtype=torch.float64)
    linear.weight.data = u[:, : len(s)] @ torch.diag(s) @ v[:, : len(s)].T
    return linear


def test_reconstruction_error_is_the_norm_of_dropped_singular_values():
    linear = linear_with_spectrum([5.0, 3.0, 2.0, 1.0, 0.5])
    for rank in (1, 2, 3, 4):
        low = factorize_linear(linear, rank=rank, require_savings=False)
        error = torch.linalg.norm(linear.weight - low.merged_weight())
        dropped = torch.tensor([5.0, 3.0, 2.0, 1.0, 0.5][rank:], dtype=torch.float64)
        assert error.item() == pytest.approx(torch.linalg.norm(dropped).item(), abs=1e-10)
    low = factorize_linear(linear, rank=5, require_savings=False)  # full rank: the same layer
    x = torch.randn(3, 5, dtype=torch.float64)
    assert torch.allclose(low(x), linear(x), atol=1e-12)
    assert (low.first.weight.shape, low.second.weight.shape) == ((5, 5), (6, 5))


def test_rank_rules_and_the_break_even_refusal(caplog):
    s = torch.tensor([4.0, 2.0, 1.0, 1.0])  # squares 16, 4, 1, 1: cumulative 16/22, 20/22, 21/22, 1
    assert choose_rank(s, rank=3) == 3 and choose_rank(s, rank_ratio=0.5) == 2 and choose_rank(s, rank_ratio=0.1) == 1
    assert choose_rank(s, energy=0.7) == 1 and choose_rank(s, energy=0.9) == 2 and choose_rank(s, energy=0.95) == 3
    with pytest.raises(ValueError, match="exactly one"):
        choose_rank(s, rank=1, energy=0.5)
    linear = linear_with_spectrum([5.0, 3.0, 2.0, 1.0, 0.5])  # 6x5: break-even 30 / 11 = 2.7
    assert factorize_linear(linear, rank=2) is not None
    assert factorize_linear(linear, rank=3) is None  # 3 * 11 = 33 parameters > 30: refused


def tiny_model(tokenizer):
    torch.manual_seed(0)
    return BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS, intermediate_size=96))


def test_factorized_model_saves_loads_exports_and_merges(tokenizer, tmp_path):
    model = tiny_model(tokenizer).eval()
    input_ids = torch.tensor([[2, 10, 11, 12, 3]])
    rows = factorize_model(model, [f"bert.encoder.layer.{i}.intermediate.dense" for i in range(4)], rank_ratio=0.25)
    assert [r.rank for r in rows] == [8] * 4  # 0.25 * min(96, 32)
    assert rows[0].parameters_after == 8 * (96 + 32) + 96 and rows[0].flops_after == 8 * 128
    factorized = model(input_ids).logits
    model.save_pretrained(tmp_path / "pt")
    tokenizer.save_pretrained(tmp_path / "pt")
    assert (
        json.loads((tmp_path / "pt" / "config.json").read_text())["lowrank_ranks"][
            "bert.encoder.layer.0.intermediate.dense"
        ]
        == 8
    )
    reloaded = load_lowrank(tmp_path / "pt")
    assert isinstance(reloaded.bert.encoder.layer[0].intermediate.dense, LowRankLinear)
    assert torch.equal(reloaded(input_ids).logits, factorized)
    report = export_model(
        model,
        tokenizer,
        tmp_path / "onnx",
        data=ExportData(
            eval_dataset=ner_dataset(tokenizer, n=16), data_collator=DataCollatorForTokenClassification(tokenizer)
        ),
    )
    assert report["parity"]["max_abs_logit_diff"] < 1e-4
    matmuls = [n.name for n in onnx.load(tmp_path / "onnx" / "model.onnx").graph.node if n.op_type == "MatMul"]
    assert "/bert/encoder/layer.0/intermediate/dense/first/MatMul" in matmuls
    assert "/bert/encoder/layer.0/intermediate/dense/second/MatMul" in matmuls
    assert merge_lowrank(model) == 4 and not hasattr(model.config, "lowrank_ranks")
    assert torch.allclose(model(input_ids).logits, factorized, atol=1e-5)


def test_callback_factorizes_before_the_optimizer_and_reports(tokenizer, tmp_path):
    callback = LowRankCallback(rank=4)
    trainer = Trainer(
        model=tiny_model(tokenizer).train(),
        args=args_for(tmp_path),
        callbacks=[callback],
        train_dataset=ner_dataset(tokenizer, n=32),
        data_collator=DataCollatorForTokenClassification(tokenizer),
    )
    assert isinstance(trainer.model.bert.encoder.layer[3].output.dense, LowRankLinear)
    assert not isinstance(trainer.model.bert.encoder.layer[3].attention.output.dense, LowRankLinear)
    before = flat_params(trainer.model).clone()
    trainer.train()
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert id(trainer.model.bert.encoder.layer[0].intermediate.dense.first.weight) in optimized
    assert not torch.equal(before, flat_params(trainer.model))  # the factors trained
    report = json.loads((tmp_path / "lowrank_report.json").read_text())
    assert len(report["layers"]) == 8 and report["total"]["parameters_after"] < report["total"]["parameters_before"]


def test_lowrank_recipe_composes_with_pruning_and_qat(tokenizer, tmp_path):
    recipe = {
        "lowrank": {"rank": 4, "merge": False},
        "pruning": {"final_sparsity": 0.5, "start_step": 0, "end_step": 4, "update_every": 1},
        "quantization": {"start_step": 2},
    }
    trainer = CompressionTrainer(
        model=tiny_model(tokenizer),
        recipe=recipe,
        args=args_for(tmp_path),
        train_dataset=ner_dataset(tokenizer, n=32),
        data_collator=DataCollatorForTokenClassification(tokenizer),
    )
    trainer.train()
    factor = trainer.model.bert.encoder.layer[0].intermediate.dense.first
    assert type(factor).__name__ == "FakeQuantLinear" and float((factor.weight == 0).float().mean()) == 0.5
    with pytest.raises(RecipeError, match=r"lowrank\.rank_ratio.*exactly one of rank, rank_ratio, energy"):
        Recipe.from_dict({"lowrank": {"rank": 4, "energy": 0.9}})
    with pytest.raises(RecipeError, match=r"lowrank\.energy.*\(0\.0, 1\.0\]"):
        Recipe.from_dict({"lowrank": {"energy": 1.5}})
    assert LowRankConfig(rank_ratio=0.5).targets is None
    with pytest.raises(ValueError, match=r"'targets': got '\*\.ffn\.lin1'"):
        factorize_model(tiny_model(tokenizer), ["*.ffn.lin1"], rank=2)  # torch level: the setting
    with pytest.raises(RecipeError, match=r"lowrank\.targets.*'\*\.ffn\.lin1'"):
        CompressionTrainer(
            model=tiny_model(tokenizer),
            args=args_for(tmp_path),
            recipe={"lowrank": {"targets": ["*.ffn.lin1"], "rank": 2}},
        )


def test_lora_student_distils_and_exports_merged(tokenizer, tmp_path):
    from peft import LoraConfig, get_peft_model

    teacher = tiny_model(tokenizer).eval()
    torch.manual_seed(1)
    base = BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS, num_hidden_layers=2))
    student = get_peft_model(base, LoraConfig(r=4, target_modules=["query", "value"], modules_to_save=["classifier"]))
    trainer = CompressionTrainer(
        model=student,
        teacher=teacher,
        recipe={
            "distillation": {"alpha": 0.5, "hidden_states": {"weight": 1.0}},
            "pruning": {"final_sparsity": 0.5, "start_step": 0, "end_step": 2, "update_every": 1},
        },
        args=args_for(tmp_path),
        train_dataset=ner_dataset(tokenizer, n=32),
        data_collator=DataCollatorForTokenClassification(tokenizer),
    )
    lora_b = student.base_model.model.bert.encoder.layer[0].attention.self.query.lora_B["default"].weight
    trainer.train()
    assert float(lora_b.detach().abs().sum()) > 0  # the adapters trained (LoRA B starts at zero)
    assert float((lora_b == 0).float().mean()) < 0.5  # and were not pruned: adapters are not targets by default
    logs = [log for log in trainer.state.log_history if "loss_kd" in log]
    assert logs and "loss_hidden" in logs[0]
    data = ner_dataset(tokenizer, n=16, seed=3)
    report = trainer.export(tmp_path / "onnx", eval_dataset=data)
    assert report["parity"]["max_abs_logit_diff"] < 1e-4 and report["parity"]["argmax_agreement"] == 1.0
    graph = onnx.load(tmp_path / "onnx" / "model.onnx").graph
    assert not [n.name for n in graph.node if "lora" in n.name.lower()]
    assert "lora_A" in dict(student.named_modules()).keys().__str__()  # the trained model keeps its adapters


def test_structured_pruning_of_factorized_layers_is_refused(tokenizer):
    from hf_compress import MagnitudePruner, PruningConfig

    model = tiny_model(tokenizer)
    factorize_model(model, ["bert.encoder.layer.0.intermediate.dense"], rank=4)
    config = PruningConfig(structure="neurons", final_sparsity=0.5, start_step=0, end_step=2)
    with pytest.raises(ValueError, match=r"layer 0 \(BertLayer\): intermediate.dense is a LowRankLinear, not an nn"):
        MagnitudePruner(model, config)


def test_factorized_embeddings_save_load_export_and_merge(tokenizer, tmp_path):
    """ALBERT-style: the table becomes the rank-r SVD factors; error = norm of the dropped singular values."""
    from hf_compress import ExportConfig
    from hf_compress.lowrank.embeddings import FactorizedEmbedding, factorize_embeddings, merge_embeddings

    model = tiny_model(tokenizer).eval()
    table = model.get_input_embeddings().weight.detach().clone()
    singular = torch.linalg.svdvals(table.double())
    report = factorize_embeddings(model, rank=8)
    assert report["parameters_after"] == 8 * (len(tokenizer) + 32) < report["parameters_before"]
    expected = float(singular[8:].pow(2).sum().sqrt() / singular.pow(2).sum().sqrt())
    assert report["relative_error"] == pytest.approx(expected, rel=1e-9)
    factorized = model.get_input_embeddings()
    assert isinstance(factorized, FactorizedEmbedding) and model.config.lowrank_embedding_rank == 8
    error = torch.linalg.matrix_norm(factorized.merged_weight().double() - table.double()) / torch.linalg.matrix_norm(
        table.double()
    )
    assert float(error) == pytest.approx(expected, rel=1e-4)
    input_ids = torch.tensor([[2, 10, 40, 3]])
    with torch.no_grad():
        logits = model(input_ids).logits
    model.save_pretrained(tmp_path / "pt")
    reloaded = load_lowrank(tmp_path / "pt")
    assert isinstance(reloaded.get_input_embeddings(), FactorizedEmbedding)
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids).logits, logits)
    report = export_model(model, tokenizer, tmp_path / "int8", ExportConfig(int8="dynamic"))
    assert report["embeddings"]["bert.embeddings.word_embeddings.first.weight"] == "int8 per row"  # narrow V x r
    graph = onnx.load(tmp_path / "int8" / "model.onnx").graph
    assert "bert.embeddings.word_embeddings.first.weight_int8" in {t.name for t in graph.initializer}
    with pytest.raises(ValueError, match=r"'embeddings': got 30; a rank below V H / \(V \+ H\) = 26"):
        factorize_embeddings(tiny_model(tokenizer), rank=30)
    assert merge_embeddings(model) and not hasattr(model.config, "lowrank_embedding_rank")
    with torch.no_grad():
        assert torch.allclose(model(input_ids).logits, logits, atol=1e-5)


def test_lowrank_recipe_factorizes_the_embeddings_only(tokenizer, tmp_path):
    trainer = CompressionTrainer(
        model=tiny_model(tokenizer),
        args=args_for(tmp_path, max_steps=2),
        recipe={"lowrank": {"embeddings": {"rank": 8}}},
        train_dataset=ner_dataset(tokenizer, n=16),
        data_collator=DataCollatorForTokenClassification(tokenizer),
    )
    trainer.train()
    from hf_compress.lowrank.embeddings import FactorizedEmbedding

    assert isinstance(trainer.model.get_input_embeddings(), FactorizedEmbedding)
    assert not any(type(m).__name__ == "LowRankLinear" for m in trainer.model.modules())
    report = json.loads((tmp_path / "lowrank_report.json").read_text())
    assert report["embeddings"]["rank"] == 8 and report["layers"] == []
    with pytest.raises(RecipeError, match=r"lowrank\.embeddings\.rank_ratio.*exactly one"):
        Recipe.from_dict({"lowrank": {"embeddings": {"rank": 4, "energy": 0.5}}})
