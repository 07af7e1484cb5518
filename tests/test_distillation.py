"""Distillation losses with exact numbers, and students built from teacher layers."""

import math

import pytest
import torch
from conftest import NER_LABELS, tiny_bert_config
from transformers import AutoModelForTokenClassification, BertForTokenClassification

from hf_compress import DistillationConfig, LayerLossConfig
from hf_compress.distillation import (
    DistillationLoss,
    attention_loss,
    default_layer_map,
    distillation_loss,
    hidden_state_loss,
    soft_target_loss,
)
from hf_compress.modules import SettingError
from hf_compress.students import student_from_teacher

# ------------------------------------------------------------------------------------------- soft targets


def test_soft_target_loss_matches_hand_computation():
    # T=2, z_s = [1, 2, 3], z_t = [3, 2, 1]: both softmaxes share one normaliser, so
    # log p_t - log p_s = (z_t - z_s) / T = [1, 0, -1] and KL = p_t[0] - p_t[2].
    student = torch.tensor([[1.0, 2.0, 3.0]])
    teacher = torch.tensor([[3.0, 2.0, 1.0]])
    e = math.exp
    expected = 4 * (e(1.5) - e(0.5)) / (e(1.5) + e(1.0) + e(0.5))
    assert soft_target_loss(student, teacher, temperature=2.0).item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(1.2806266713, abs=1e-9)


def test_soft_target_loss_is_mean_over_positions():
    student = torch.tensor([[1.0, 2.0, 3.0], [1.0, 0.0, 0.0]])
    teacher = torch.tensor([[3.0, 2.0, 1.0], [0.0, 0.0, 1.0]])
    # second position by hand: T^2 * sum p_t log(p_t / p_s) = 0.3555882856...
    assert soft_target_loss(student, teacher, 2.0).item() == pytest.approx((1.2806266713 + 0.3555882856) / 2, 1e-6)


def test_soft_target_loss_zero_when_logits_equal():
    logits = torch.randn(2, 5, 9)
    assert soft_target_loss(logits, logits.clone(), 3.0).item() == pytest.approx(0.0, abs=1e-7)


def test_soft_target_loss_ignores_unlabelled_positions():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 6, 9), torch.randn(2, 6, 9)
    labels = torch.tensor([[-100, 1, 0, -100, 2, -100], [-100, 0, 0, 3, -100, -100]])
    before = soft_target_loss(student, teacher, 2.0, labels.ne(-100))
    student2, teacher2 = student.clone(), teacher.clone()
    student2[labels.eq(-100)] = torch.randn(int(labels.eq(-100).sum()), 9) * 10
    teacher2[labels.eq(-100)] = torch.randn(int(labels.eq(-100).sum()), 9) * 10
    after = soft_target_loss(student2, teacher2, 2.0, labels.ne(-100))
    assert after.item() == pytest.approx(before.item(), abs=1e-6)
    # and only labelled positions count: equal to the mean over the selected rows
    keep = labels.ne(-100)
    assert before.item() == pytest.approx(soft_target_loss(student[keep], teacher[keep], 2.0).item(), abs=1e-6)


def test_soft_target_loss_t_squared_scaling():
    torch.manual_seed(1)
    student, teacher = torch.randn(4, 7), torch.randn(4, 7)
    for temperature in (1.0, 2.0, 4.0):
        p_t = torch.softmax(teacher / temperature, -1)
        kl = (p_t * (p_t.log() - torch.log_softmax(student / temperature, -1))).sum(-1).mean()
        value = soft_target_loss(student, teacher, temperature)
        assert value.item() == pytest.approx(temperature**2 * kl.item(), rel=1e-5)


def test_distillation_loss_combines_with_alpha():
    student = torch.tensor([[1.0, 2.0, 3.0]])
    teacher = torch.tensor([[3.0, 2.0, 1.0]])
    task = torch.tensor(0.7)
    loss = distillation_loss(task, student, teacher, alpha=0.25, temperature=2.0)
    assert loss.item() == pytest.approx(0.25 * 0.7 + 0.75 * 1.2806266713, abs=1e-6)
    assert distillation_loss(task, student, teacher, alpha=1.0, temperature=2.0).item() == pytest.approx(0.7)


# ------------------------------------------------------------------------------------------- intermediate layers


def test_hidden_state_loss_exact_with_mask():
    # hidden_states[0] is the embedding output; layer i is hidden_states[i + 1]
    s = [torch.zeros(1, 3, 2), torch.tensor([[[1.0, 1.0], [2.0, 0.0], [9.0, 9.0]]])]
    t = [torch.zeros(1, 3, 2), torch.zeros(1, 3, 2), torch.tensor([[[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]])]
    mask = torch.tensor([[1, 1, 0]])
    # real tokens: (1-0)^2 + (1-1)^2 + (2-0)^2 + 0 = 5 over 4 values
    assert hidden_state_loss(s, t, {0: 1}, attention_mask=mask).item() == pytest.approx(5 / 4)
    assert hidden_state_loss(s, t, {0: 1}).item() == pytest.approx((5 + 81 + 81) / 6)


def test_hidden_state_loss_uses_projection_when_widths_differ():
    projection = torch.nn.ModuleDict({"0": torch.nn.Linear(2, 3, bias=False)})
    with torch.no_grad():
        projection["0"].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    s = [torch.zeros(1, 1, 2), torch.tensor([[[1.0, 2.0]]])]
    t = [torch.zeros(1, 1, 3), torch.tensor([[[1.0, 2.0, 0.0]]])]
    assert hidden_state_loss(s, t, {0: 0}, projection).item() == pytest.approx(9 / 3)


def test_attention_loss_counts_real_query_key_pairs():
    s = [torch.zeros(1, 1, 2, 2)]
    t = [torch.tensor([[[[1.0, 0.0], [5.0, 5.0]]]])]
    mask = torch.tensor([[1, 0]])  # only the (query 0, key 0) pair is real
    assert attention_loss(s, t, {0: 0}, mask).item() == pytest.approx(1.0)
    assert attention_loss(s, t, {0: 0}).item() == pytest.approx((1 + 25 + 25) / 4)


def test_default_layer_map():
    assert default_layer_map(3, 6) == {0: 1, 1: 3, 2: 5}
    assert default_layer_map(4, 12) == {0: 2, 1: 5, 2: 8, 3: 11}
    assert default_layer_map(6, 6) == {i: i for i in range(6)}


def test_distillation_loss_module_projections_and_layer_map_checks(tokenizer):
    student_cfg = tiny_bert_config(len(tokenizer), NER_LABELS, num_hidden_layers=2, hidden_size=16)
    teacher_cfg = tiny_bert_config(len(tokenizer), NER_LABELS)
    module = DistillationLoss(DistillationConfig(hidden_states=LayerLossConfig()), student_cfg, teacher_cfg)
    assert module.hidden_layer_map == {0: 1, 1: 3}
    assert set(module.projections) == {"0", "1"} and module.projections["0"].in_features == 16
    with pytest.raises(SettingError, match=r"layer_map\.5.*student has 2 layers"):
        DistillationLoss(DistillationConfig(hidden_states=LayerLossConfig(layer_map={5: 1})), student_cfg, teacher_cfg)
    with pytest.raises(SettingError, match=r"teacher has 4 layers"):
        DistillationLoss(DistillationConfig(hidden_states=LayerLossConfig(layer_map={0: 4})), student_cfg, teacher_cfg)
    with pytest.raises(SettingError, match="same number of heads"):
        DistillationLoss(
            DistillationConfig(attentions=LayerLossConfig()),
            tiny_bert_config(len(tokenizer), NER_LABELS, num_attention_heads=2),
            teacher_cfg,
        )


# ------------------------------------------------------------------------------------------- student building


def _first(output):
    """A layer's hidden states: transformers 4.x layers return a tuple, 5.x the tensor."""
    return output[0] if isinstance(output, tuple) else output


def test_student_from_teacher_reproduces_chosen_layers(tiny_ner_teacher, tmp_path):
    teacher = tiny_ner_teacher
    layers = [0, 2, 3]
    student = student_from_teacher(teacher, layers).eval()
    assert student.config.num_hidden_layers == 3 and len(student.bert.encoder.layer) == 3
    assert teacher.config.num_hidden_layers == 4 and len(teacher.bert.encoder.layer) == 4  # teacher untouched
    torch.manual_seed(0)
    input_ids = torch.randint(5, 60, (2, 7))
    attention_mask = torch.ones_like(input_ids)
    with torch.no_grad():
        t_out = teacher(input_ids, attention_mask=attention_mask, output_hidden_states=True)
        s_out = student(input_ids, attention_mask=attention_mask, output_hidden_states=True)
        # same embeddings
        assert torch.equal(s_out.hidden_states[0], t_out.hidden_states[0])
        # layer by layer: student layer k on teacher layer layers[k]'s input gives teacher layer layers[k]'s output
        ext_mask = (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min  # no padding
        for k, t_index in enumerate(layers):
            inputs = t_out.hidden_states[t_index]
            expected = _first(teacher.bert.encoder.layer[t_index](inputs, attention_mask=ext_mask))
            got = _first(student.bert.encoder.layer[k](inputs, attention_mask=ext_mask))
            assert torch.equal(got, expected)
            assert torch.equal(expected, t_out.hidden_states[t_index + 1])
        # same head: the student's logits are the teacher's classifier on the student's last hidden state
        assert torch.equal(s_out.logits, teacher.classifier(s_out.hidden_states[-1]))
    # parameters are copies, not shared
    assert (
        student.bert.encoder.layer[0].attention.self.query.weight.data_ptr()
        != teacher.bert.encoder.layer[0].attention.self.query.weight.data_ptr()
    )
    # plain save / load
    student.save_pretrained(tmp_path)
    reloaded = AutoModelForTokenClassification.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded, BertForTokenClassification)
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids).logits, student(input_ids).logits)


def test_student_from_teacher_rejects_bad_layers(tiny_ner_teacher):
    with pytest.raises(SettingError, match=r"from_teacher_layers.*allowed 0\.\.3"):
        student_from_teacher(tiny_ner_teacher, [0, 4])
    with pytest.raises(ValueError, match="at least one layer"):
        student_from_teacher(tiny_ner_teacher, [])
