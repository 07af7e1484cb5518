"""Quantization-aware training: exact quantization parameters, schedule, freezing, composition, resume."""

import numpy as np
import pytest
import torch
from conftest import NER_LABELS, tiny_bert_config
from onnxruntime.quantization.quant_utils import compute_scale_zp, get_qmin_qmax_for_qType
from onnxruntime.quantization.quant_utils import onnx_proto as ort_proto
from safetensors.torch import load_file
from test_trainer import args_for, flat_params, ner_dataset
from transformers import (
    AutoModelForTokenClassification,
    BertForTokenClassification,
    DataCollatorForTokenClassification,
    Trainer,
    TrainerCallback,
)

from hf_compress import (
    CompressionTrainer,
    GradualPruningCallback,
    QATCallback,
    QuantizationConfig,
    Recipe,
    RecipeError,
)
from hf_compress.quantization import (
    FakeQuantLinear,
    activation_qparams,
    activation_ranges,
    convert_to_qat,
    qat_modules,
    qat_phase,
    remove_qat,
    set_qat_phase,
    weight_scale,
)


def test_activation_qparams_exact():
    scale, zero_point = activation_qparams(torch.tensor(-1.0), torch.tensor(3.0))
    assert scale.item() == pytest.approx(4 / 255) and zero_point.item() == 64  # round(1 / (4 / 255)) = 64
    scale, zero_point = activation_qparams(torch.tensor(0.5), torch.tensor(2.0))  # widened to [0, 2]
    assert scale.item() == pytest.approx(2 / 255) and zero_point.item() == 0
    scale, zero_point = activation_qparams(torch.tensor(-3.0), torch.tensor(-1.0))  # widened to [-3, 0]
    assert scale.item() == pytest.approx(3 / 255) and zero_point.item() == 255


def test_scales_equal_what_onnxruntime_computes():
    weight = torch.tensor([[0.5, -2.0, 1.0], [0.0, 0.0, 0.0], [0.25, 0.1, -0.05]])
    assert weight_scale(weight).tolist() == pytest.approx([2.0 / 127, 1.0, 0.25 / 127])
    qmin, qmax = get_qmin_qmax_for_qType(ort_proto.TensorProto.INT8, symmetric=True)
    for row, ours in zip(weight.numpy(), weight_scale(weight), strict=True):
        _, ort_scale = compute_scale_zp(row.min(), row.max(), qmin, qmax, symmetric=True)
        assert float(ort_scale) == pytest.approx(float(ours), rel=1e-6)
    qmin, qmax = get_qmin_qmax_for_qType(ort_proto.TensorProto.UINT8)
    ranges = [(-0.3, 1.9), (-2.5, 0.4), (0.0, 3.1)]
    if np.lib.NumpyVersion(np.__version__) >= "2.0.0":
        # 0.7 / (3.0 / 255) is a tie, 59.5, which ONNX Runtime rounds to 60 under numpy 2; numpy 1's value-based
        # casting makes it compute in float32 there, and 59.4999 rounds to 59 (ours, in float64, gives 60 on both).
        ranges.append((-0.7, 2.3))
    for low, high in ranges:
        ort_zero, ort_scale = compute_scale_zp(np.float32(low), np.float32(high), qmin, qmax)
        scale, zero_point = activation_qparams(torch.tensor(low), torch.tensor(high))
        assert (float(scale), int(zero_point)) == (pytest.approx(float(ort_scale), rel=1e-6), int(ort_zero))


def test_qat_phase_exact():
    assert [qat_phase(s, start=2, freeze=5) for s in range(7)] == ["off"] * 2 + ["observing"] * 3 + ["frozen"] * 2
    assert qat_phase(100, start=0, freeze=None) == "observing"


def tiny_model(tokenizer):
    torch.manual_seed(0)
    return BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS))


def test_fake_quant_linear_by_hand_and_conversion_is_invisible(tokenizer):
    model = tiny_model(tokenizer)
    keys = list(model.state_dict())
    converted = convert_to_qat(model)
    assert len(converted) == 4 * 6 and all(isinstance(m, FakeQuantLinear) for m in converted.values())
    assert list(model.state_dict()) == keys  # checkpoints keep their keys
    linear = converted["bert.encoder.layer.0.intermediate.dense"]
    x = torch.randn(2, 5, 32)
    assert torch.equal(linear(x), torch.nn.functional.linear(x, linear.weight, linear.bias))  # inert while off
    set_qat_phase(model, "observing")
    linear.train()
    y = linear(x)
    low, high = float(x.min()), float(x.max())
    assert activation_ranges(model)["bert.encoder.layer.0.intermediate.dense"] == (low, high)
    s_x, z_x = (high - low) / 255, round(-low / ((high - low) / 255))
    x_q = (torch.clamp(torch.round(x / s_x) + z_x, 0, 255) - z_x) * s_x
    s_w = linear.weight.detach().abs().amax(dim=1, keepdim=True) / 127
    w_q = torch.clamp(torch.round(linear.weight.detach() / s_w), -127, 127) * s_w
    assert torch.allclose(y, torch.nn.functional.linear(x_q, w_q, linear.bias), atol=1e-5)
    linear(x * 3)  # moving average: m <- m + 0.01 (batch - m)
    assert activation_ranges(model)["bert.encoder.layer.0.intermediate.dense"][1] == pytest.approx(
        high + 0.01 * (3 * high - high)
    )
    ranges = remove_qat(model)
    assert not qat_modules(model) and type(linear) is torch.nn.Linear and len(ranges) == 1
    assert list(model.state_dict()) == keys


def _trainer(tokenizer, path, callbacks, **kwargs):
    model = tiny_model(tokenizer).train()
    return Trainer(
        model=model,
        args=args_for(path, **kwargs),
        train_dataset=ner_dataset(tokenizer, n=64),
        data_collator=DataCollatorForTokenClassification(tokenizer),
        callbacks=callbacks,
    )


def test_wrappers_change_nothing_before_start(tokenizer, tmp_path):
    plain = _trainer(tokenizer, tmp_path / "plain", [], logging_steps=1)
    plain.train()
    qat = _trainer(tokenizer, tmp_path / "qat", [QATCallback(start_step=1000)], logging_steps=1)
    qat.train()
    assert len(qat_modules(qat.model)) == 24
    assert torch.equal(flat_params(plain.model), flat_params(qat.model))
    assert [log.get("loss") for log in plain.state.log_history] == [log.get("loss") for log in qat.state.log_history]


class RangeRecorder(TrainerCallback):
    def __init__(self):
        self.ranges = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.ranges[state.global_step] = activation_ranges(model)


def test_scales_stop_changing_after_freeze_and_logs(tokenizer, tmp_path):
    recorder = RangeRecorder()
    callback = QATCallback(start_step=2, freeze_observers_step=6)
    trainer = _trainer(tokenizer, tmp_path, [callback, recorder], logging_steps=1)  # 16 optimizer steps
    trainer.train()
    assert recorder.ranges[1] == {} and recorder.ranges[2] == {}  # off for steps 1 and 2 (global_step 0, 1)
    assert recorder.ranges[3] != recorder.ranges[5]  # observing
    assert all(recorder.ranges[step] == recorder.ranges[6] for step in range(6, 17))  # frozen from step 6 on
    logs = {log["step"]: log for log in trainer.state.log_history if "loss" in log}
    assert (logs[2]["qat_active"], logs[3]["qat_active"], logs[5]["qat_observers_frozen"]) == (0.0, 1.0, 0.0)
    assert logs[16]["qat_observers_frozen"] == 1.0 and logs[16]["qat_mean_input_scale"] > 0
    assert (tmp_path / QATCallback.state_file).is_file()  # beside the final model, for `hf-compress export --int8 qat`


def test_phase_counts_optimizer_steps_under_gradient_accumulation(tokenizer, tmp_path):
    seen = []
    for batch, accumulation in ((8, 1), (2, 4)):
        callback = QATCallback(start_epoch=0.25, freeze_observers_epoch=0.75)
        trainer = _trainer(
            tokenizer,
            tmp_path / str(batch),
            [callback],
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=accumulation,
            logging_steps=1,
            num_train_epochs=1,
        )
        trainer.train()
        assert (callback.start_step, callback.freeze_step) == (2, 6)
        logs = [log for log in trainer.state.log_history if "loss" in log]
        seen.append([(log["step"], log["qat_active"], log["qat_observers_frozen"]) for log in logs])
    assert seen[0] == seen[1] and len(seen[0]) == 8


def test_pruned_weights_stay_exactly_zero_under_fake_quant(tokenizer, tmp_path):
    pruning = GradualPruningCallback(final_sparsity=0.7, start_step=0, end_step=6, update_every=2)
    trainer = _trainer(tokenizer, tmp_path, [pruning, QATCallback(start_step=0, freeze_observers_step=8)])
    trainer.train()
    for name, linear in qat_modules(trainer.model).items():
        pruned = linear.weight_mask == 0
        assert pruned.float().mean().item() == pytest.approx(0.7, abs=0.01), name
        assert bool((linear.weight[pruned] == 0).all()) and bool((linear.quantized_weight()[pruned] == 0).all())


def test_resume_in_the_middle_of_qat_gives_the_same_scales(tokenizer, tmp_path):
    def run():
        callback = QATCallback(start_step=2, freeze_observers_step=12)
        return _trainer(tokenizer, tmp_path / "run", [callback], save_strategy="steps", save_steps=6)

    full = run()
    full.train()
    checkpoint = tmp_path / "run" / "checkpoint-6"
    assert (checkpoint / QATCallback.state_file).is_file()
    assert set(load_file(checkpoint / "model.safetensors")) == set(tiny_model(tokenizer).state_dict())
    AutoModelForTokenClassification.from_pretrained(checkpoint)  # plain loading works mid-QAT
    resumed = run()
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert activation_ranges(full.model) == activation_ranges(resumed.model)
    assert torch.allclose(flat_params(full.model), flat_params(resumed.model), atol=1e-6)


@pytest.mark.parametrize(
    "block, message",
    [
        ({"start_step": 5, "freeze_observers_step": 5}, r"quantization\.freeze_observers_step.*after start_step"),
        ({"start_epoch": 1.0, "freeze_observers_step": 3}, r"quantization\.start_step.*epochs or in steps"),
        ({"averaging_constant": 0.0}, r"quantization\.averaging_constant"),
        ({"start_epoch": -1.0}, r"quantization\.start_epoch.*-1\.0"),
        ({"observer": "minmax"}, r"quantization\.observer.*unknown key"),
    ],
)
def test_bad_quantization_blocks(block, message):
    with pytest.raises(RecipeError, match=message):
        Recipe.from_dict({"quantization": block})


def test_bad_targets_and_export_without_qat_fail_early(tokenizer, tmp_path):
    with pytest.raises(ValueError, match=r"'targets': got '\*\.ffn\.lin1'.*matches no nn\.Linear"):
        convert_to_qat(tiny_model(tokenizer), ["*.ffn.lin1"])  # torch level: the setting; the recipe adds the key
    with pytest.raises(RecipeError, match=r"quantization\.targets.*'\*\.ffn\.lin1'.*matches no nn\.Linear"):
        CompressionTrainer(
            model=tiny_model(tokenizer), args=args_for(tmp_path), recipe={"quantization": {"targets": ["*.ffn.lin1"]}}
        )
    with pytest.raises(RecipeError, match=r"export\.int8.*needs a 'quantization' block"):
        Recipe.from_dict({"export": {"int8": "qat"}})
    with pytest.raises(RecipeError, match=r"export\.int8.*allowed: none, dynamic, static, qat"):
        Recipe.from_dict({"export": {"int8": "fp16"}})
    assert QuantizationConfig().start_step == 0
