"""Export on a tiny NER model trained here with pruning + QAT: fp32 and the three int8 routes, through each ONNX
exporter of the stack (Optimum's and torch.onnx with Optimum installed, torch.onnx without)."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import EXPORTERS, tiny_bert_config
from onnx import numpy_helper
from test_trainer import args_for, cls_dataset
from transformers import (
    BertForMaskedLM,
    BertForSequenceClassification,
    DataCollatorWithPadding,
    FNetConfig,
    FNetForTokenClassification,
)

from hf_compress import CompressionTrainer, ExportConfig, ExportData, export_model
from hf_compress.compat import optimum_available
from hf_compress.export import matmul_nodes
from hf_compress.inference import OnnxTextClassifier, OnnxTokenClassifier
from hf_compress.quantization import qat_modules
from hf_compress.recipe import DataConfig
from hf_compress.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "data" / "conll-sample"


@pytest.fixture(scope="module")
def trained(tokenizer, tmp_path_factory):
    """A tiny BERT trained on the NER sample with unstructured pruning (50%) and QAT, through the recipe."""
    task = get_task("ner")
    data = DataConfig(train_file=str(SAMPLE / "train.txt"), validation_file=str(SAMPLE / "valid.txt"))
    raw = task.load_raw(data)
    labels = task.label_list(raw, data)
    torch.manual_seed(0)
    config = tiny_bert_config(len(tokenizer), labels, num_hidden_layers=2, hidden_size=64, intermediate_size=128)
    from transformers import BertForTokenClassification

    model = BertForTokenClassification(config)
    tokenized = task.preprocess(raw, tokenizer, config.label2id, data)
    recipe = {
        "pruning": {"final_sparsity": 0.5, "start_step": 0, "end_step": 150, "update_every": 25},
        "quantization": {"start_step": 200, "freeze_observers_step": 260, "reduce_range": False},
        "export": {"int8": "qat", "calibration": {"num_samples": 64}},
    }
    trainer = CompressionTrainer(
        model=model,
        recipe=recipe,
        args=args_for(
            tmp_path_factory.mktemp("train"),
            num_train_epochs=4,
            learning_rate=3e-3,
            per_device_train_batch_size=16,
            per_device_eval_batch_size=64,
        ),
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["validation"],
        data_collator=task.data_collator(tokenizer),
        processing_class=tokenizer,
        compute_metrics=task.compute_metrics(config.id2label),
    )
    trainer.train()
    return trainer


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("route", ["none", "qat", "dynamic", "static"])
def test_export_routes_load_and_agree_with_pytorch(trained, tmp_path, route, exporter):
    out = tmp_path / route
    report = trained.export(out, int8=route, exporter=exporter)
    assert trained.export_dir == str(out)
    assert report["exporter"].startswith(exporter) and report["opset"] == 18
    assert {"config.json", "tokenizer.json", "model.onnx", "export_report.json", "export_report.md", "README.md"} <= {
        p.name for p in out.iterdir()
    }
    assert json.loads((out / "export_report.json").read_text())["int8"] == (None if route == "none" else route)
    parity = report["parity"]
    assert parity["argmax_agreement"] >= 0.99, parity
    if route == "none":
        assert parity["max_abs_logit_diff"] < 1e-4 and parity["reference"] == "PyTorch"
    elif route == "dynamic":  # fused first: per layer one Attention (Q, K, V) and three MatMuls, all quantized
        fused = {"Attention": 2, "BiasGelu": 2, "SkipLayerNormalization": 4, "LayerNormalization": 1}
        assert report["fused_operators"] == fused
        assert report["quantized_matmuls"] == 2 * 4
        ops = {n.op_type for n in onnx.load(out / "model.onnx").graph.node}
        assert {"QAttention", "MatMulInteger", "GatherBlockQuantized"} & ops == {"QAttention", "MatMulInteger"}
    else:
        assert report["quantized_matmuls"] == 2 * 6 and report["fused_operators"] == {}
    if route == "qat":
        assert parity["reference"].startswith("PyTorch with fake quantization")
    if route in ("qat", "static"):  # QDQ graphs: only the quantized MatMuls read dequantized activations
        graph = onnx.load(out / "model.onnx").graph
        producer = {o: n for n in graph.node for o in n.output}
        readers = {
            n.op_type
            for n in graph.node
            for i in n.input
            if getattr(producer.get(i), "op_type", "") == "DequantizeLinear"
        }
        assert readers == {"MatMul"} and report["float_readers_restored"] == 2 * (
            4 if route == "qat" else 4 + 6
        )  # + static's MatMul outputs
    if route != "none":
        assert report["weight_levels"] == ("[-127, 127]" if not report["reduce_range"] else "[-64, 64]")
        assert report["int8_kernel"].startswith("u8s8 ")
    pytorch_f1, onnx_f1 = report["pytorch_metrics"]["f1"], report["metrics"]["f1"]
    assert pytorch_f1 > 0.3 and abs(onnx_f1 - pytorch_f1) < 0.02  # a tiny model learns the sample partly
    # the folder runs as it is: ONNX Runtime alone, and Optimum's ORTModel where installed
    entities = OnnxTokenClassifier(out)(["john smith said in paris", "the bank"])
    labels = {name.split("-")[-1] for name in trained.model.config.id2label.values()}
    assert len(entities) == 2 and all(e["entity_group"] in labels for found in entities for e in found)
    if optimum_available():
        from optimum.onnxruntime import ORTModelForTokenClassification

        model = ORTModelForTokenClassification.from_pretrained(out)  # no file_name needed: one model.onnx
        encoded = trained.processing_class(["john smith said"], return_tensors="pt")
        assert model(**encoded).logits.shape[-1] == len(trained.model.config.id2label)


def _initializer(graph, name):
    return next(numpy_helper.to_array(t) for t in graph.initializer if t.name == name)


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_qat_graph_carries_the_learned_scales_and_pruned_zeros(trained, tmp_path, exporter):
    report = trained.export(tmp_path / "qat", int8="qat", exporter=exporter)
    graph = onnx.load(tmp_path / "qat" / "model.onnx").graph
    layers = qat_modules(trained.model)
    nodes = {n.name: n for n in graph.node}
    producers = {out: n for n in graph.node for out in n.output}
    for name, linear in layers.items():
        matmul = nodes["/" + name.replace(".", "/").replace("layer/", "layer.") + "/MatMul"]
        # activation: DequantizeLinear(QuantizeLinear(x)) with the observer's scale and zero point
        dq_x = producers[matmul.input[0]]
        assert dq_x.op_type == "DequantizeLinear"
        scale, zero_point = linear.activation_qparams()
        assert float(_initializer(graph, dq_x.input[1])) == pytest.approx(float(scale), rel=1e-6)
        assert int(_initializer(graph, dq_x.input[2])) == int(zero_point)
        # weight: int8 per output channel, scales as in training, pruned weights exactly zero
        dq_w = producers[matmul.input[1]]
        q_weight = _initializer(graph, dq_w.input[0])
        assert q_weight.dtype == np.int8
        w_scale = _initializer(graph, dq_w.input[1])
        expected = linear.weight.detach().abs().amax(dim=1) / 127
        assert np.allclose(w_scale, expected.numpy(), rtol=1e-6)
        pruned = (linear.weight_mask == 0).numpy().T  # the graph holds W^T
        assert pruned.mean() == pytest.approx(0.5, abs=0.01)
        assert (q_weight[pruned] == 0).all()
        assert np.array_equal(q_weight.T, torch.round(linear.weight.detach() / expected[:, None]).numpy())
    assert report["techniques"]["pruning"]["sparsity"]["total"]["sparsity"] == pytest.approx(0.5, abs=0.01)


def test_export_errors_are_clear(trained, tokenizer, tmp_path):
    plain = BertForSequenceClassification(tiny_bert_config(len(tokenizer), ["neg", "pos"], num_hidden_layers=2))
    with pytest.raises(ValueError, match="needs a model trained with quantization-aware training"):
        export_model(plain, tokenizer, tmp_path / "a", ExportConfig(int8="qat"))
    with pytest.raises(ValueError, match="'static' needs calibration data"):
        export_model(plain, tokenizer, tmp_path / "b", ExportConfig(int8="static"))
    with pytest.raises(ValueError, match="cannot export BertForMaskedLM.*token classification and sequence"):
        export_model(BertForMaskedLM(plain.config), tokenizer, tmp_path / "c")
    with pytest.raises(ValueError, match="allowed: none, dynamic, static, qat"):
        export_model(plain, tokenizer, tmp_path / "d", ExportConfig(int8="int4"))
    fnet = FNetForTokenClassification(FNetConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_labels=3))
    for exporter in EXPORTERS:
        with pytest.raises(ValueError, match=f"the {exporter} exporter cannot export FNetForTokenClassification"):
            export_model(fnet, None, tmp_path / "e", ExportConfig(exporter=exporter))


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_sequence_classification_export(tokenizer, tmp_path, exporter):
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_bert_config(len(tokenizer), ["neg", "pos"], num_hidden_layers=2))
    data = cls_dataset(tokenizer)
    report = export_model(
        model,
        tokenizer,
        tmp_path,
        ExportConfig(int8="dynamic", exporter=exporter),
        ExportData(eval_dataset=data, data_collator=DataCollatorWithPadding(tokenizer)),
    )
    assert report["task"] == "text-classification" and report["parity"]["num_positions"] == len(data)
    # the fp32 export, run by ONNX Runtime alone, classifies as the PyTorch model does
    export_model(model, tokenizer, tmp_path / "fp32", ExportConfig(exporter=exporter))
    texts = ["a good movie", "an awful film and a bad film"]
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model.eval()(**encoded).logits.softmax(-1)
    predicted = OnnxTextClassifier(tmp_path / "fp32")(texts)
    assert [p["label"] for p in predicted] == [model.config.id2label[int(i)] for i in expected.argmax(-1)]
    assert [p["score"] for p in predicted] == pytest.approx(expected.max(-1).values.tolist(), abs=1e-5)
    if optimum_available():
        from optimum.onnxruntime import ORTModelForSequenceClassification

        ORTModelForSequenceClassification.from_pretrained(tmp_path)


def test_matmul_nodes_names_a_missing_layer(trained, tmp_path):
    trained.export(tmp_path, int8="none")
    found = matmul_nodes(tmp_path / "model.onnx", ["bert.encoder.layer.1.output.dense"])
    assert found["bert.encoder.layer.1.output.dense"][0] == "/bert/encoder/layer.1/output/dense/MatMul"
    with pytest.raises(ValueError, match="no MatMul node.*encoder.layer.7"):
        matmul_nodes(tmp_path / "model.onnx", ["bert.encoder.layer.7.output.dense"])
