"""Cached teacher outputs: the same values as the teacher (to the stored precision), keyed by content and teacher,
and the same training losses as the online teacher."""

import torch
from conftest import NER_LABELS, tiny_bert_config
from test_trainer import args_for, ner_dataset
from transformers import BertForTokenClassification, DataCollatorForTokenClassification, TrainerCallback

from hf_compress import CompressionTrainer
from hf_compress.distillation import DistillationCallback
from hf_compress.distillation.cache import TeacherCache

SHAPES = {"labels": len(NER_LABELS), "token_level": True, "hidden": 48, "heads": 4}


def _teacher(tokenizer, seed: int = 0) -> BertForTokenClassification:
    torch.manual_seed(seed)
    config = tiny_bert_config(len(tokenizer), NER_LABELS, hidden_size=48, attn_implementation="eager")
    return BertForTokenClassification(config).eval()


def _batch(tokenizer, rows, pad_to=None):
    collator = DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=pad_to)
    batch = collator([ner_dataset(tokenizer, n=8, seed=3)[i] for i in rows])
    return {k: v for k, v in batch.items() if k != "labels"}


def test_the_cache_returns_what_the_teacher_computed_whatever_the_padding(tokenizer, tmp_path):
    teacher = _teacher(tokenizer)
    cache = TeacherCache(tmp_path, teacher, hidden_layers=[1, 3], attention_layers=[2], num_hidden_layers=4)
    inputs = _batch(tokenizer, range(4))
    with torch.no_grad():
        online = teacher(**inputs, output_hidden_states=True, output_attentions=True)
    assert cache.lookup(inputs, SHAPES) is None  # nothing readable yet
    cache.store(inputs, online)
    assert cache.lookup(inputs, SHAPES) is None  # stored, readable after the next refresh (an epoch start)
    cache.refresh()
    assert len(cache) == 4
    # the same examples in another batch: padded further, in another order, with one never stored
    other = _batch(tokenizer, [2, 0, 5], pad_to=32)
    assert cache.lookup(other, SHAPES) is None and cache.misses == 3
    other = _batch(tokenizer, [2, 0], pad_to=32)
    cached = cache.lookup(other, SHAPES)
    with torch.no_grad():
        fresh = teacher(**other, output_hidden_states=True, output_attentions=True)
    real = other["attention_mask"].bool()
    assert torch.allclose(cached.logits[real], fresh.logits[real], atol=1e-6)  # float32
    assert not cached.logits[~real].any()
    assert cached.hidden_states[0] is None and cached.hidden_states[1] is None and cached.attentions[0] is None
    for layer in (1, 3):  # float16: relative precision 2^-11
        got, want = cached.hidden_states[layer + 1][real], fresh.hidden_states[layer + 1][real]
        assert torch.allclose(got, want, rtol=1e-3, atol=1e-3)
    pairs = (real[:, :, None] & real[:, None, :])[:, None].expand_as(fresh.attentions[2])
    assert torch.allclose(cached.attentions[2][pairs], fresh.attentions[2][pairs], atol=1e-3)

    # a reopened cache (a resumed run) reads what was flushed; another teacher, or other stored layers, never does
    assert len(TeacherCache(tmp_path, teacher, [1, 3], [2], 4)) == 4
    assert len(TeacherCache(tmp_path, _teacher(tokenizer, seed=1), [1, 3], [2], 4)) == 0
    assert len(TeacherCache(tmp_path, teacher, [3], [2], 4)) == 0
    # other token ids (another tokenizer, max_length or dataset) are other keys
    truncated = {k: v[:, :4] for k, v in inputs.items()}
    assert set(TeacherCache.keys(truncated)).isdisjoint(TeacherCache.keys(inputs))


class _Losses(TrainerCallback):
    def __init__(self):
        self.losses = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append((state.epoch, logs["loss"], logs.get("teacher_cache_hit_rate")))


def _distil(tokenizer, tmp_path, cache: bool, epochs: int = 3):
    torch.manual_seed(0)
    student = BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS, num_hidden_layers=2))
    recipe = {"distillation": {"alpha": 0.5, "hidden_states": {"weight": 1.0}, "cache_teacher": cache}}
    losses = _Losses()
    trainer = CompressionTrainer(
        model=student,
        teacher=_teacher(tokenizer),
        recipe=recipe,
        args=args_for(tmp_path, num_train_epochs=epochs, logging_steps=1),
        train_dataset=ner_dataset(tokenizer, n=32),
        data_collator=DataCollatorForTokenClassification(tokenizer),
        callbacks=[losses],
    )
    trainer.train()
    return trainer, losses.losses


def test_distillation_from_the_cache_gives_the_online_losses(tokenizer, tmp_path):
    _, online = _distil(tokenizer, tmp_path / "online", cache=False)
    trainer, cached = _distil(tokenizer, tmp_path / "cached", cache=True)
    assert len(online) == len(cached) == 12  # 4 steps per epoch
    first, later = cached[:4], cached[4:]
    assert [loss for _, loss, _ in first] == [loss for _, loss, _ in online[:4]]  # epoch 1: the teacher runs
    for (_, want, _), (_, got, _) in zip(online[4:], later, strict=True):  # then float16 hidden states
        assert abs(got - want) <= 1e-3 * max(1.0, abs(want)), (got, want)
    distiller = next(t for t in trainer.techniques if isinstance(t, DistillationCallback))
    assert (distiller.cache.hits, distiller.cache.misses) == (8, 4)  # every batch of epochs 2 and 3 read
    assert cached[-1][2] == round(8 / 12, 4)
    assert distiller.cache.folder.parent == tmp_path / "cached" / "teacher_cache"
