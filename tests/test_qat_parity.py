"""The int8 QAT export computes what training simulated: ONNX Runtime (no graph optimizations) vs the fake-quant
PyTorch model, layer by layer, with 8-bit and 7-bit (reduce_range) weights; the QDQ graph pass; the int8 kernel probe.
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import NER_LABELS, tiny_bert_config
from onnx import TensorProto, helper, numpy_helper
from test_trainer import args_for, ner_dataset
from transformers import BertForTokenClassification, DataCollatorForTokenClassification, Trainer

from hf_compress import ExportConfig, QATCallback, export_model
from hf_compress.configs import CalibrationConfig
from hf_compress.export.graph import _scope_pattern, dequantize_only_for, sort_topologically
from hf_compress.export.int8 import _weight_range, matmul_nodes, quantize_onnx
from hf_compress.int8_formats import _int8_probe_model
from hf_compress.quantization import (
    int8_kernel,
    load_qat_state_dict,
    qat_modules,
    qat_state_dict,
    saturating_matmul,
    set_qat_phase,
)

NUM_LAYERS = 2


def _qat_model(tokenizer, tmp_path, reduce_range: bool, embeddings: str = "int8"):
    """A tiny BERT trained 8 steps, QAT from step 2, observers frozen at step 6: ranges seen on real batches."""
    torch.manual_seed(0)
    model = BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS, num_hidden_layers=NUM_LAYERS))
    callback = QATCallback(start_step=2, freeze_observers_step=6, reduce_range=reduce_range, embeddings=embeddings)
    trainer = Trainer(
        model=model,
        args=args_for(tmp_path / "train", num_train_epochs=2, learning_rate=3e-3),
        train_dataset=ner_dataset(tokenizer, n=32),
        data_collator=DataCollatorForTokenClassification(tokenizer),
        callbacks=[callback],
    )
    trainer.train()
    set_qat_phase(model, "frozen")
    return model.eval()


def _layer_outputs(graph) -> list[str]:
    """The float output of each encoder layer (its last LayerNorm), as PyTorch's ``hidden_states[1:]``."""
    names = []
    for i in range(NUM_LAYERS):
        prefix = f"/bert/encoder/layer.{i}/output/LayerNorm/"
        norms = [n for n in graph.node if n.name.startswith(prefix) and n.op_type == "LayerNormalization"]
        names.append(norms[-1].output[0])
    return names


@pytest.mark.parametrize(("reduce_range", "embeddings"), [(False, "int8"), (True, "int8"), (False, "int4")])
def test_qat_export_matches_fake_quant_pytorch_layer_by_layer(tokenizer, tmp_path, reduce_range, embeddings):
    model = _qat_model(tokenizer, tmp_path, reduce_range, embeddings)
    report = export_model(model, tokenizer, tmp_path / "onnx", ExportConfig(int8="qat"))
    qmax = 64 if reduce_range else 127
    assert report["reduce_range"] is reduce_range and report["weight_levels"] == f"[-{qmax}, {qmax}]"
    assert report["int8_kernel"] == int8_kernel().description and report["float_readers_restored"] == 4 * NUM_LAYERS
    proto = onnx.load(tmp_path / "onnx" / "model.onnx")
    graph = proto.graph
    # only the quantized MatMuls read dequantized activations; residual Adds and Shapes read the float tensors
    targets = {node for node, _ in matmul_nodes(tmp_path / "onnx" / "model.onnx", list(qat_modules(model))).values()}
    producer = {out: n for n in graph.node for out in n.output}
    dequantized = {out for out, n in producer.items() if n.op_type == "DequantizeLinear"}
    readers = [n for n in graph.node if dequantized & set(n.input)]
    assert {n.name for n in readers} == targets and len(targets) == 6 * NUM_LAYERS
    int8 = {t.name: numpy_helper.to_array(t) for t in graph.initializer if t.data_type == TensorProto.INT8}
    int8 = {name: levels for name, levels in int8.items() if levels.ndim == 2}
    if embeddings == "int8":  # the table in the format training saw (quantization.embeddings)
        table = int8.pop("bert.embeddings.word_embeddings.weight_int8")
        assert table.shape == (len(tokenizer), 32) and set(np.abs(table).max(axis=1).tolist()) == {0, 127}  # 0: [PAD]
    else:  # 4-bit, two levels per byte, one GatherBlockQuantized (blocks of 32: the tiny model's whole row)
        stored = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        packed = stored["bert.embeddings.word_embeddings.weight_int4"]
        assert packed.dtype == np.uint8 and packed.shape == (len(tokenizer), 16)
        (gather,) = [n for n in graph.node if n.op_type == "GatherBlockQuantized"]
        assert {a.name: helper.get_attribute_value(a) for a in gather.attribute}["block_size"] == 32
        assert report["embeddings"] == {"bert.embeddings.word_embeddings.weight": "int4, blocks of 32"}
    weights = list(int8.values())
    assert len(weights) == 6 * NUM_LAYERS  # each output channel's largest |level| is qmax: the range training used
    assert all(np.abs(w).max(axis=0).tolist() == [qmax] * w.shape[1] for w in weights)

    hidden = _layer_outputs(graph)
    for name in hidden:
        graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    collator, data = DataCollatorForTokenClassification(tokenizer), ner_dataset(tokenizer, n=64, seed=1)
    logit_diff, hidden_diff, agree, positions = 0.0, [0.0] * NUM_LAYERS, 0, 0
    for start in range(0, len(data), 16):
        batch = collator([data[i] for i in range(start, start + 16)])
        feeds = {k: batch[k].numpy() for k in ("input_ids", "attention_mask")}
        feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
        logits, *states = session.run(["logits", *hidden], feeds)
        with torch.no_grad():
            out = model(batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
        keep = feeds["attention_mask"].astype(bool)
        logit_diff = max(logit_diff, float(np.abs(logits - out.logits.numpy())[keep].max()))
        for i, state in enumerate(states):
            hidden_diff[i] = max(hidden_diff[i], float(np.abs(state - out.hidden_states[i + 1].numpy())[keep].max()))
        agree += int((logits.argmax(-1) == out.logits.numpy().argmax(-1))[keep].sum())
        positions += int(keep.sum())
    assert logit_diff <= 1e-4 and agree == positions, (logit_diff, agree, positions)
    # float rounding, plus at most a level flipped where torch's x * (1/s) and ORT's x / s round apart (~s_x |w|);
    # quantizing the residual path instead moves hidden states by ~0.1
    assert max(hidden_diff) <= 5e-4, hidden_diff


def _graph_with_shared_quantized_input():
    """x -> Q -> DQ -> x' read by MatMul (the target) and by a residual Add; the MatMul output has its own Q/DQ."""
    w = np.arange(12, dtype=np.int8).reshape(4, 3) - 6
    init = [
        numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "x_zero_point"),
        numpy_helper.from_array(np.array(0.1, np.float32), "y_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "y_zero_point"),
        numpy_helper.from_array(w, "w_q"),
        numpy_helper.from_array(np.array(0.02, np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros((4, 4), np.float32), "r"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero_point"], ["x_q"], name="q_x"),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero_point"], ["x_dq"], name="dq_x"),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale"], ["w_dq"], name="dq_w"),
        helper.make_node("MatMul", ["x_dq", "w_dq"], ["y"], name="matmul"),
        helper.make_node("QuantizeLinear", ["y", "y_scale", "y_zero_point"], ["y_q"], name="q_y"),
        helper.make_node("DequantizeLinear", ["y_q", "y_scale", "y_zero_point"], ["y_dq"], name="dq_y"),
        helper.make_node("Add", ["x_dq", "r"], ["residual"], name="residual_add"),
        helper.make_node("Identity", ["y_dq"], ["out"], name="identity"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
        [
            helper.make_tensor_value_info("out", TensorProto.FLOAT, [4, 3]),
            helper.make_tensor_value_info("residual", TensorProto.FLOAT, [4, 4]),
        ],
        init,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_dequantize_only_for_points_other_readers_at_the_float_tensor():
    original = _graph_with_shared_quantized_input()
    before = original.SerializeToString()
    model, moved = dequantize_only_for(original, {"matmul"})
    assert original.SerializeToString() == before  # a pure function
    nodes = {n.name: n for n in model.graph.node}
    assert moved == 2  # the Add reads x, the Identity reads the float MatMul output y
    assert list(nodes["residual_add"].input) == ["x", "r"] and list(nodes["identity"].input) == ["y"]
    assert list(nodes["matmul"].input) == ["x_dq", "w_dq"]
    assert "q_y" not in nodes and "dq_y" not in nodes  # the output pair, read by nobody, is gone with its params
    assert {t.name for t in model.graph.initializer} == {"x_scale", "x_zero_point", "w_q", "w_scale", "r"}
    x = np.linspace(-3, 3, 16, dtype=np.float32).reshape(4, 4)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out, residual = session.run(["out", "residual"], {"x": x})
    assert np.array_equal(residual, x)  # not rounded to x_scale, not clipped to [-6.4, 6.35]
    x_dq = (np.clip(np.round(x / 0.05) + 128, 0, 255) - 128) * np.float32(0.05)
    w_dq = (np.arange(12).reshape(4, 3) - 6) * np.float32(0.02)
    assert np.allclose(out, x_dq @ w_dq, atol=1e-6)


def test_each_reader_of_a_tensor_is_quantized_with_its_own_layers_range(tmp_path):
    """Layers that observed different ranges read one tensor (DeBERTa-v2's q, also fed the relative-position
    embeddings, and v): the graph quantizes it once per range, as each layer did in training."""
    from hf_compress.quantization.route import _quantize_qat

    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], [y], name=name) for name, y in (("q", "yq"), ("k", "yk"), ("v", "yv"))
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, [2, 4]) for y in ("yq", "yk", "yv")],
        [w],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "model.onnx")
    calls = {name: [(name, "x")] for name in ("q", "k", "v")}
    ranges = {"q": (-1.0, 1.0), "k": (-1.0, 1.0), "v": (-2.0, 3.0)}
    path, moved = _quantize_qat(str(tmp_path), str(tmp_path), calls, ranges, reduce_range=False)
    model = onnx.load(path)
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert moved == 0 and [n.op_type for n in model.graph.node].count("Identity") == 0
    assert sorted((list(n.input)[0], float(values[n.input[1]]), int(values[n.input[2]])) for n in quantize) == [
        ("x", np.float32(2 / 255), 128),
        ("x", np.float32(5 / 255), 102),
    ]
    x = np.array([[-2.5, -0.7, 0.31, 2.9], [0.0, 0.5, -1.2, 1.7]], np.float32)
    yq, yk, yv = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )

    def fake_quant(x, low, high):  # torch.fake_quantize_per_tensor_affine with the layer's own range
        scale, zero_point = (high - low) / 255, round(-low * 255 / (high - low))
        return (np.clip(np.round(x / np.float32(scale)) + zero_point, 0, 255) - zero_point) * np.float32(scale)

    assert np.allclose(yq, fake_quant(x, -1, 1), atol=1e-6) and np.array_equal(yq, yk)
    assert np.allclose(yv, fake_quant(x, -2, 3), atol=1e-6)


def test_int8_kernel_probe_agrees_with_exact_or_saturating_arithmetic():
    model, x, w = _int8_probe_model()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    result = session.run(["y"], {"x": x})[0].astype(np.int64)
    exact = x.astype(np.int64) @ w.astype(np.int64)
    saturated = saturating_matmul(x.astype(np.uint8), w)
    assert not np.array_equal(exact, saturated)  # the probe tells the two kernels apart
    assert np.array_equal(exact[:, 3:], saturated[:, 3:])  # |w| <= 64 (reduce_range) never saturates
    assert saturated[0, 0] == 32 * 32767 and exact[0, 0] == 64 * 255 * 127
    kernel = int8_kernel()
    if np.array_equal(result, exact):
        assert not kernel.saturates and kernel.description.startswith("u8s8 exact")
    else:
        assert np.array_equal(result, saturated), result
        assert kernel.saturates and kernel.description.startswith("u8s8 saturating")


def test_weight_range_follows_training_for_qat_and_the_kernel_for_post_training():
    assert _weight_range("dynamic", "auto", None, kernel_saturates=True) == (True, None)
    assert _weight_range("static", "auto", None, kernel_saturates=False) == (False, None)
    assert _weight_range("dynamic", False, None, kernel_saturates=True) == (False, None)
    assert _weight_range("qat", "auto", True, kernel_saturates=False) == (True, None)
    assert _weight_range("qat", False, False, kernel_saturates=False) == (False, None)
    reduced, warning = _weight_range("qat", "auto", False, kernel_saturates=True)
    assert reduced is False and "saturates" in warning
    with pytest.raises(ValueError, match=r"trained with 8-bit weights.*reduce_range=false"):
        _weight_range("qat", True, False, kernel_saturates=False)
    with pytest.raises(ValueError, match=r"trained with 7-bit weights"):
        _weight_range("qat", False, True, kernel_saturates=False)


def test_reduce_range_is_kept_in_the_qat_state(tokenizer, tmp_path):
    model = _qat_model(tokenizer, tmp_path, reduce_range=True)
    state = qat_state_dict(model)
    assert all(bool(layer["reduce_range"]) for layer in state.values())
    torch.manual_seed(0)
    fresh = BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS, num_hidden_layers=NUM_LAYERS))
    from hf_compress.quantization import convert_to_qat

    convert_to_qat(fresh)
    load_qat_state_dict(fresh, state)
    assert all(m.reduce_range for m in qat_modules(fresh).values())
    load_qat_state_dict(fresh, {k: {n: v for n, v in s.items() if n != "reduce_range"} for k, s in state.items()})
    assert not any(m.reduce_range for m in qat_modules(fresh).values())  # a state saved before: 8-bit


def test_dynamic_export_with_reduce_range_has_7bit_weights(tokenizer, tmp_path):
    torch.manual_seed(0)
    model = BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS, num_hidden_layers=NUM_LAYERS))
    export_model(model, tokenizer, tmp_path / "fp32")
    names = [f"bert.encoder.layer.{i}.output.dense" for i in range(NUM_LAYERS)]
    details = quantize_onnx(
        str(tmp_path / "fp32"), str(tmp_path / "int8"), "dynamic", names, {}, None, CalibrationConfig(), True
    )
    assert details["reduce_range"] is True and details["weight_levels"] == "[-64, 64]"
    graph = onnx.load(tmp_path / "int8" / "model.onnx").graph
    weights = [numpy_helper.to_array(t) for t in graph.initializer if t.data_type == TensorProto.INT8 and t.dims[1:]]
    assert len(weights) == NUM_LAYERS and all(int(np.abs(w).max()) == 64 for w in weights)


def test_the_recipe_reduce_range_reaches_the_export(tokenizer, tmp_path):
    """``export.reduce_range`` goes from the recipe through ``CompressionTrainer.export`` to the int8 weights."""
    from hf_compress import CompressionTrainer

    torch.manual_seed(0)
    trainer = CompressionTrainer(
        model=BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS, num_hidden_layers=NUM_LAYERS)),
        recipe={"export": {"int8": "dynamic", "reduce_range": True}},
        args=args_for(tmp_path),
        train_dataset=ner_dataset(tokenizer, n=8),
        data_collator=DataCollatorForTokenClassification(tokenizer),
    )
    report = trainer.export(tmp_path / "int8")
    assert report["reduce_range"] is True and report["weight_levels"] == "[-64, 64]"
    graph = onnx.load(tmp_path / "int8" / "model.onnx").graph
    int8 = [t for t in graph.initializer if t.data_type == TensorProto.INT8 and t.dims[1:]]
    weights = [numpy_helper.to_array(t) for t in int8 if ".embeddings." not in t.name]  # Gathers: no saturation
    assert weights and all(int(np.abs(w).max()) == 64 for w in weights)


def test_sort_topologically_puts_an_if_node_after_what_its_branches_read():
    """DeBERTa's If nodes (transformers 4.x) read outer tensors inside their branches, not as inputs."""
    from onnx import TensorProto, helper

    branch = helper.make_graph(
        [helper.make_node("Identity", ["outer"], ["then_out"])],
        "then",
        [],
        [helper.make_tensor_value_info("then_out", TensorProto.FLOAT, [1])],
    )
    nodes = [
        helper.make_node("If", ["flag"], ["y"], name="if", then_branch=branch, else_branch=branch),
        helper.make_node("Relu", ["x"], ["outer"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, t, [1]) for n, t in (("x", TensorProto.FLOAT), ("flag", TensorProto.BOOL))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    sort_topologically(graph)
    assert [n.name for n in graph.node] == ["relu", "if"]


def test_the_matmul_of_every_call_of_a_linear_is_found():
    pattern = _scope_pattern("albert.encoder.albert_layer_groups.0.albert_layers.0.attention.query")
    prefix = "/albert/encoder/albert_layer_groups.0/albert_layers.0/attention"
    assert pattern.fullmatch(f"{prefix}/query/MatMul") and pattern.fullmatch(f"{prefix}/query_3/MatMul")
    assert not pattern.fullmatch(f"{prefix}/query_proj/MatMul") and not pattern.fullmatch(f"{prefix}_1/MatMul")
