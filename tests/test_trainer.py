"""CompressionTrainer on tiny models: plain-Trainer equivalence, teacher handling, checkpoints and resume."""

import json
import os
import random

import pytest
import torch
from conftest import NER_LABELS, WORDS, tiny_bert_config
from datasets import Dataset
from safetensors.torch import load_file
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertForTokenClassification,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    Trainer,
)

from hf_compress import CompressionTrainer, student_from_teacher
from hf_compress.distillation import DistillationCallback
from hf_compress.tasks import classification_metrics, ner_metrics
from hf_compress.testing import flat_params, ner_dataset
from hf_compress.testing import training_arguments as args_for


def cls_dataset(tokenizer, n: int = 48, seed: int = 0) -> Dataset:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randrange(2)
        words = [rng.choice(["good", "great"] if label else ["bad", "awful"])] + rng.sample(WORDS[:20], 5)
        rows.append({**tokenizer(" ".join(words)), "labels": label})
    return Dataset.from_list(rows)


def test_without_teacher_and_recipe_it_is_the_plain_trainer(tokenizer, tmp_path):
    data, collator = ner_dataset(tokenizer), DataCollatorForTokenClassification(tokenizer)
    finals = []
    for cls in (Trainer, CompressionTrainer):
        torch.manual_seed(0)
        model = BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS))
        trainer = cls(model=model, args=args_for(tmp_path / cls.__name__), train_dataset=data, data_collator=collator)
        trainer.train()
        finals.append((flat_params(model), [log.get("loss") for log in trainer.state.log_history]))
    assert torch.equal(finals[0][0], finals[1][0])
    assert finals[0][1] == finals[1][1]


def make_ner_trainer(tokenizer, teacher, path, recipe, **kwargs):
    student = student_from_teacher(teacher, [0, 3])
    return CompressionTrainer(
        model=student,
        teacher=teacher,
        recipe=recipe,
        args=args_for(path, **kwargs),
        train_dataset=ner_dataset(tokenizer),
        eval_dataset=ner_dataset(tokenizer, 16, seed=1),
        data_collator=DataCollatorForTokenClassification(tokenizer),
        processing_class=tokenizer,
        compute_metrics=ner_metrics(teacher.config.id2label),
    )


def test_distillation_token_classification(tokenizer, tiny_ner_teacher, tmp_path):
    teacher = tiny_ner_teacher
    before = flat_params(teacher).clone()
    recipe = {
        "distillation": {
            "temperature": 2.0,
            "alpha": 0.5,
            "hidden_states": {"weight": 1.0},
            "attentions": {"weight": 1.0},
        }
    }
    trainer = make_ner_trainer(tokenizer, teacher, tmp_path, recipe, save_strategy="epoch")
    trainer.train()
    # the teacher is never trained, never in the optimizer, stays in eval mode
    assert torch.equal(flat_params(teacher), before)
    assert not teacher.training
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in teacher.parameters()}
    assert all(id(p) in optimized for p in trainer.model.parameters())
    # KD terms are logged next to the task loss
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert logs and all({"loss_task", "loss_kd", "loss_hidden", "loss_attention"} <= set(log) for log in logs)
    # checkpoints hold exactly the student, and load with plain from_pretrained
    checkpoint = tmp_path / "checkpoint-12"
    saved = load_file(checkpoint / "model.safetensors")
    assert set(saved) == set(trainer.model.state_dict())
    reloaded = AutoModelForTokenClassification.from_pretrained(checkpoint)
    assert reloaded.config.num_hidden_layers == 2
    assert not (checkpoint / DistillationCallback.state_file).exists()  # same widths: no projections to keep
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_f1"] <= 1.0 and "eval_loss" in metrics


def test_projections_are_trained_kept_out_of_the_student_and_resumed(tokenizer, tiny_ner_teacher, tmp_path):
    torch.manual_seed(3)
    narrow = BertForTokenClassification(
        tiny_bert_config(len(tokenizer), NER_LABELS, num_hidden_layers=2, hidden_size=16, intermediate_size=32)
    )
    recipe = {"distillation": {"alpha": 0.3, "hidden_states": {"weight": 2.0}}}

    def run(path, **kwargs):
        torch.manual_seed(3)
        student = BertForTokenClassification(narrow.config)
        student.load_state_dict(narrow.state_dict())
        trainer = CompressionTrainer(
            model=student,
            teacher=tiny_ner_teacher,
            recipe=recipe,
            args=args_for(path, save_strategy="steps", save_steps=6, **kwargs),
            train_dataset=ner_dataset(tokenizer),
            data_collator=DataCollatorForTokenClassification(tokenizer),
        )
        return trainer

    def projections(trainer):
        return next(t for t in trainer.techniques if isinstance(t, DistillationCallback)).loss_module

    full = run(tmp_path / "full")
    initial_projection = projections(full).projections["0"].weight.detach().clone()
    full.train()
    assert not torch.equal(projections(full).projections["0"].weight, initial_projection)  # trained
    checkpoint = tmp_path / "full" / "checkpoint-6"
    assert (checkpoint / DistillationCallback.state_file).is_file()
    assert not any("projection" in key for key in load_file(checkpoint / "model.safetensors"))

    # resume from the middle: same final student and projections as the uninterrupted run
    resumed = run(tmp_path / "full")
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert torch.allclose(flat_params(resumed.model), flat_params(full.model), atol=1e-6)
    assert torch.allclose(flat_params(projections(resumed)), flat_params(projections(full)), atol=1e-6)


def test_distillation_sequence_classification(tokenizer, tiny_cls_teacher, tmp_path):
    teacher = tiny_cls_teacher
    before = flat_params(teacher).clone()
    student = student_from_teacher(teacher, [1, 3])
    trainer = CompressionTrainer(
        model=student,
        teacher=teacher,
        recipe={"distillation": {"temperature": 3.0, "alpha": 0.2}},
        args=args_for(tmp_path, num_train_epochs=3),
        train_dataset=cls_dataset(tokenizer),
        eval_dataset=cls_dataset(tokenizer, 16, seed=1),
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=classification_metrics(teacher.config.id2label),
    )
    trainer.train()
    assert torch.equal(flat_params(teacher), before)
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert all("loss_kd" in log and "loss_task" in log and "loss_hidden" not in log for log in logs)
    metrics = trainer.evaluate()
    assert {"eval_accuracy", "eval_f1"} <= set(metrics)
    trainer.save_model(tmp_path / "final")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "final")
    assert reloaded.config.num_hidden_layers == 2
    with open(tmp_path / "final" / "config.json") as handle:
        assert json.load(handle)["id2label"] == {"0": "negative", "1": "positive"}


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_alpha_extremes(tokenizer, tiny_ner_teacher, tmp_path, alpha):
    """alpha=1 is the task loss alone; alpha=0 the soft-target term alone."""
    trainer = make_ner_trainer(
        tokenizer, tiny_ner_teacher, tmp_path, {"distillation": {"alpha": alpha}}, max_steps=2, logging_steps=1
    )
    trainer.train()
    for log in (log for log in trainer.state.log_history if "loss" in log):
        expected = log["loss_task"] if alpha == 1.0 else log["loss_kd"]
        assert log["loss"] == pytest.approx(expected, abs=2e-4)
    assert os.path.isdir(tmp_path)


def test_the_teacher_is_prepared_by_accelerate_and_gives_the_same_loss(tokenizer, tmp_path):
    """The teacher goes through ``accelerator.prepare_model(..., evaluation_mode=True)`` when training starts; it is
    not in the optimizer nor in any checkpoint, and the loss is the distillation loss computed by hand."""
    from hf_compress.distillation import DistillationConfig, DistillationLoss, LayerLossConfig

    torch.manual_seed(0)
    student = BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS, num_hidden_layers=2))
    teacher = BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS, hidden_size=48)).eval()
    teacher_before = flat_params(teacher).clone()
    config = DistillationConfig(alpha=0.3, temperature=3.0, hidden_states=LayerLossConfig(weight=0.5))
    recipe = {"distillation": {"alpha": 0.3, "temperature": 3.0, "hidden_states": {"weight": 0.5}}}
    prepared = []
    trainer = CompressionTrainer(
        model=student,
        teacher=teacher,
        recipe=recipe,
        args=args_for(tmp_path, max_steps=4, save_strategy="steps", save_steps=2),
        train_dataset=ner_dataset(tokenizer),
        data_collator=DataCollatorForTokenClassification(tokenizer),
    )
    real_prepare = trainer.accelerator.prepare_model
    trainer.accelerator.prepare_model = lambda m, **kw: prepared.append((m, kw)) or real_prepare(m, **kw)
    trainer.train()
    assert [kw for m, kw in prepared if m is teacher] == [{"evaluation_mode": True}]  # once, for evaluation
    distiller = next(t for t in trainer.techniques if isinstance(t, DistillationCallback))
    assert distiller.teacher is teacher and not teacher.training and torch.equal(flat_params(teacher), teacher_before)
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not any(id(p) in optimized for p in teacher.parameters())
    assert all(id(p) in optimized for p in distiller.loss_module.parameters())  # the projections are trained
    for step in (2, 4):
        folder = tmp_path / f"checkpoint-{step}"
        assert set(load_file(folder / "model.safetensors")) == set(student.state_dict())
        projections = torch.load(folder / DistillationCallback.state_file, weights_only=True)
        assert set(projections) == set(distiller.loss_module.state_dict())  # the projections, not the teacher

    # the loss of a batch: what the pre-refactor trainer computed (teacher on the student's device, same module)
    batch = DataCollatorForTokenClassification(tokenizer)([ner_dataset(tokenizer, n=8, seed=5)[i] for i in range(8)])
    by_hand = DistillationLoss(config, student.config, teacher.config)
    by_hand.load_state_dict(distiller.loss_module.state_dict())
    student.train()
    torch.manual_seed(11)
    loss = trainer.compute_loss(student, dict(batch))
    torch.manual_seed(11)
    outputs = student(**batch, output_hidden_states=True, output_attentions=False)
    with torch.no_grad():
        teacher_outputs = teacher(
            **{k: v for k, v in batch.items() if k != "labels"}, output_hidden_states=True, output_attentions=False
        )
    expected, _ = by_hand(outputs, teacher_outputs, batch["labels"], batch["attention_mask"])
    assert torch.equal(loss, expected)
