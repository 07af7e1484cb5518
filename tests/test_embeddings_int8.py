"""Quantized embedding tables (int8 per row, int4 in blocks): the same in training (fake quantization) and in the ONNX
graph."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import NER_LABELS, tiny_bert_config
from onnx import TensorProto, numpy_helper
from test_trainer import args_for, ner_dataset
from transformers import BertForTokenClassification, DataCollatorForTokenClassification

from hf_compress import CompressionTrainer, ExportConfig, RecipeError, export_model
from hf_compress.quantization.embeddings import (
    TABLE_FORMATS,
    FakeQuantEmbedding,
    convert_embeddings_to_qat,
    quantize_embedding_gathers,
    quantize_rows,
    remove_embedding_qat,
)

TABLE = "bert.embeddings.word_embeddings.weight"


def _model(tokenizer) -> BertForTokenClassification:
    torch.manual_seed(0)
    return BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS, num_hidden_layers=2)).eval()


def test_rows_are_quantized_symmetric_per_row_with_exact_numbers():
    table = torch.tensor([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0], [2.54, -0.01, 1.27]])
    levels, scale = quantize_rows(table)
    assert scale.tolist() == pytest.approx([1.0 / 127, 1.0, 2.54 / 127])  # max|row| / 127; 1.0 for a zero row
    assert levels.tolist() == [[64, -127, 32], [0, 0, 0], [127, 0, 64]]  # round half to even: 63.5 -> 64, 31.75 -> 32
    assert levels.dtype == np.int8 and scale.dtype == np.float32


def test_fake_quant_embedding_returns_the_dequantized_int8_rows(tokenizer):
    model = _model(tokenizer)
    embedding = model.get_input_embeddings()
    table = embedding.weight.detach().clone()
    assert list(convert_embeddings_to_qat(model)) == ["bert.embeddings.word_embeddings"]
    ids = torch.arange(len(tokenizer)).view(2, -1)
    assert torch.equal(embedding(ids), table[ids])  # inert until enabled
    embedding.fake_quant_enabled = True
    levels, scale = quantize_rows(table)
    expected = torch.from_numpy(levels).float() * torch.from_numpy(scale)[:, None]
    assert torch.equal(embedding(ids), expected[ids])
    embedding(ids).sum().backward()  # straight-through: every looked-up row gets a gradient (not [PAD]'s, as usual)
    grad = embedding.weight.grad
    assert bool((grad[1:] != 0).all()) and bool((grad[embedding.padding_idx] == 0).all())
    assert remove_embedding_qat(model) == {"bert.embeddings.word_embeddings": "int8"}
    assert type(model.get_input_embeddings()) is torch.nn.Embedding


def _gather_inputs(path) -> tuple[dict, set]:
    graph = onnx.load(path).graph
    types = {t.name: t.data_type for t in graph.initializer}
    return types, {n.input[0] for n in graph.node if n.op_type == "Gather"}


@pytest.mark.parametrize("embeddings", ["int8", "fp32"])
def test_dynamic_export_stores_the_table_int8_unless_told_not_to(tokenizer, tmp_path, embeddings):
    model = _model(tokenizer)
    report = export_model(model, tokenizer, tmp_path, ExportConfig(int8="dynamic", embeddings=embeddings))
    types, gathered = _gather_inputs(tmp_path / "model.onnx")
    if embeddings == "int8":
        assert report["embeddings"][TABLE] == "int8 per row" and TABLE not in types
        assert types[f"{TABLE}_int8"] == TensorProto.INT8 and f"{TABLE}_int8" in gathered
        levels, scale = quantize_rows(model.get_input_embeddings().weight)
        stored = {t.name: numpy_helper.to_array(t) for t in onnx.load(tmp_path / "model.onnx").graph.initializer}
        assert np.array_equal(stored[f"{TABLE}_int8"], levels) and np.array_equal(stored[f"{TABLE}_scale"], scale)
    else:
        assert report["embeddings"] == "fp32" and types[TABLE] == TensorProto.FLOAT and TABLE in gathered
    # the int8 table is what the exported model computes with: its embeddings are the dequantized rows
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    ids = np.array([[2, 10, 40, 3]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    logits = session.run(["logits"], {i.name: feeds[i.name] for i in session.get_inputs()})[0]
    if embeddings == "int8":
        convert_embeddings_to_qat(model).popitem()[1].fake_quant_enabled = True
    with torch.no_grad():
        reference = model(torch.from_numpy(ids)).logits.numpy()
    assert np.abs(logits - reference).max() < 2e-2  # the MatMuls are int8 too: close, not equal


def test_qat_without_embeddings_keeps_the_table_fp32_in_its_export(tokenizer, tmp_path):
    recipe = {"quantization": {"start_step": 0, "embeddings": False}}
    trainer = CompressionTrainer(
        model=_model(tokenizer),
        args=args_for(tmp_path, max_steps=3),
        recipe=recipe,
        train_dataset=ner_dataset(tokenizer, n=16),
        data_collator=DataCollatorForTokenClassification(tokenizer),
    )
    trainer.train()
    assert not isinstance(trainer.model.get_input_embeddings(), FakeQuantEmbedding)
    report = trainer.export(tmp_path / "qat", int8="qat")
    assert report["embeddings"] == "fp32"  # the qat route follows training, not export.embeddings
    types, _ = _gather_inputs(tmp_path / "qat" / "model.onnx")
    assert types[TABLE] == TensorProto.FLOAT
    with pytest.raises(RecipeError, match=r"export\.embeddings.*allowed: int8, int4, fp32"):
        from hf_compress import Recipe

        Recipe.from_dict({"export": {"embeddings": "int2"}})


def test_int4_blocks_with_exact_numbers():
    fmt = TABLE_FORMATS["int4"]
    assert (fmt.qmax, fmt.block_size(384), fmt.block_size(32), fmt.block_size(48)) == (7, 64, 32, 16)
    with pytest.raises(ValueError, match="multiple of 16; got 40"):
        fmt.block_size(40)
    row = [0.7, -0.35, 0.1, 0.0] * 4 + [0.0] * 16  # width 32: one block of 32 values
    levels, scale = fmt.quantize(torch.tensor([row, [0.0] * 32]))
    assert scale.shape == (2, 1) and scale[:, 0].tolist() == pytest.approx([0.1, 1.0])  # max|block| / 7; zero: 1.0
    assert levels[0, :4].tolist() == [7, -4, 1, 0] and not levels[1].any()  # -3.5 -> -4: round half to even
    rows = torch.randn(5, 64)
    expected = torch.from_numpy(levels.astype(np.float32))  # fake quantization gives exactly levels x scale
    assert torch.equal(fmt.fake_quantize(torch.tensor([row, [0.0] * 32])), expected * torch.from_numpy(scale))
    levels, scale = fmt.quantize(rows)  # width 64: one block per row here; two blocks of 32 would differ
    assert scale.shape == (5, 1) and np.abs(levels).max(axis=1).tolist() == [7] * 5


def test_int4_gather_in_onnx_runtime_returns_the_fake_quantized_rows():
    from onnx import helper

    torch.manual_seed(0)
    table = torch.randn(50, 128)  # blocks of 64: two per row
    node = helper.make_node("Gather", ["table", "ids"], ["rows"], name="lookup")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 3])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(table.numpy(), "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert quantize_embedding_gathers(model, {"table": "int4"}) == {"table": "int4, blocks of 64"}
    stored = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert stored["table_int4"].shape == (50, 64) and stored["table_scale"].shape == (50, 2)  # 2 levels per byte
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ids = np.array([[0, 7, 49], [3, 3, 12]], dtype=np.int64)
    expected = TABLE_FORMATS["int4"].fake_quantize(table)[torch.from_numpy(ids)].numpy()
    assert np.array_equal(session.run(None, {"ids": ids})[0], expected)
    assert len(model.SerializeToString()) < table.numel() * 4 / 6  # about 7x smaller than fp32


def test_int4_export_with_int8_positions(tokenizer, tmp_path):
    model = _model(tokenizer)
    report = export_model(model, tokenizer, tmp_path, ExportConfig(int8="dynamic", embeddings="int4"))
    assert report["embeddings"] == {
        TABLE: "int4, blocks of 32",
        "bert.embeddings.position_embeddings.weight": "int8 per row",
        "bert.embeddings.token_type_embeddings.weight": "int8 per row",
    }
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    ids = np.array([[2, 10, 40, 3]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    logits = session.run(["logits"], {i.name: feeds[i.name] for i in session.get_inputs()})[0]
    convert_embeddings_to_qat(model, "int4").popitem()[1].fake_quant_enabled = True
    with torch.no_grad():
        reference = model(torch.from_numpy(ids)).logits.numpy()
    assert np.abs(logits - reference).max() < 2e-2  # int8 MatMuls and positions: close, not equal
