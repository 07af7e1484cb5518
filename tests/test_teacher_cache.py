"""Cached teacher outputs: the same values as the teacher (to the stored precision), keyed by content and teacher,
and the same training losses as the online teacher."""

import gc
from pathlib import Path
from types import SimpleNamespace

import pytest
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
    for row, stored in enumerate([2, 0]):  # exactly the stored values rounded to float16 (right padding)
        n = int(real[row].sum())
        assert torch.equal(cached.logits[row, :n], online.logits[stored, :n].half().float())
        assert torch.equal(cached.hidden_states[2][row, :n], online.hidden_states[2][stored, :n].half().float())
    assert torch.allclose(cached.logits[real], fresh.logits[real], rtol=2**-11, atol=1e-6)  # float16
    assert cached.logits.dtype == torch.float32 and not cached.logits[~real].any()
    assert cached.hidden_states[0] is None and cached.hidden_states[1] is None and cached.attentions[0] is None
    for layer in (1, 3):  # float16: relative precision 2^-11
        got, want = cached.hidden_states[layer + 1][real], fresh.hidden_states[layer + 1][real]
        assert torch.allclose(got, want, rtol=2**-11, atol=1e-6)
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


def test_bytes_per_token_are_the_stored_values_in_half_precision(tokenizer, tmp_path):
    teacher = _teacher(tokenizer)
    inputs = _batch(tokenizer, range(6))
    with torch.no_grad():
        outputs = teacher(**inputs, output_hidden_states=True)
    labels, width = len(NER_LABELS), 48
    for dtype, itemsize in ((torch.float16, 2), (torch.bfloat16, 2), (torch.float32, 4)):
        cache = TeacherCache(
            tmp_path, teacher, hidden_layers=[1, 3], attention_layers=[], num_hidden_layers=4, dtype=dtype
        )
        cache.store(inputs, outputs)
        cache.refresh()
        tokens = int(inputs["attention_mask"].sum())
        per_token = itemsize * (labels + 2 * width)  # logits + two hidden states, at real tokens only
        assert cache.bytes_per_token(labels, width) == per_token
        assert cache.size() == {
            "examples": 6,
            "tokens": tokens,
            "bytes": tokens * per_token,
            "bytes_per_token": per_token,
        }
        cached = cache.lookup(inputs, SHAPES)
        real = inputs["attention_mask"].bool()
        assert torch.equal(cached.logits[real], outputs.logits[real].to(dtype).float())
        assert torch.equal(cached.hidden_states[4][real], outputs.hidden_states[4][real].to(dtype).float())
        cache.close()
    assert TeacherCache(tmp_path, teacher, [1], [2], 4).bytes_per_token(labels, width) is None  # maps: per length
    repeated = _batch(tokenizer, [0, 0, 1])  # an example twice in a batch is stored once
    with torch.no_grad():
        outputs = teacher(**repeated, output_hidden_states=True)
    cache = TeacherCache(tmp_path / "repeated", teacher, hidden_layers=[1], attention_layers=[], num_hidden_layers=4)
    cache.store(repeated, outputs)
    cache.refresh()
    tokens = int(repeated["attention_mask"][1:].sum())
    assert cache.size() == {
        "examples": 2,
        "tokens": tokens,
        "bytes": tokens * 2 * (labels + width),
        "bytes_per_token": 2 * (labels + width),
    }
    with pytest.raises(ValueError, match=r"dtype=torch.int8: not a storage type; one of float16, bfloat16, float32"):
        TeacherCache(tmp_path, teacher, [1], [], 4, dtype=torch.int8)


def _resident_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads VmRSS from /proc")
def test_an_epoch_over_the_cache_keeps_resident_memory_flat(tmp_path):
    """Reading every record of a cache much larger than the bound (the small-fast layout: 9 labels, three 384-wide
    hidden states, 2,322 bytes per token) grows resident memory by less than the bound: records are read, not
    mapped, so the pages read stay with the kernel."""
    examples, length, width, layers, labels, batch = 1024, 64, 384, 3, 9, 32
    cache = TeacherCache(tmp_path, torch.nn.Linear(2, 2), list(range(layers)), [], layers)
    generator = torch.Generator().manual_seed(0)
    batches = []
    for start in range(0, examples, batch):
        ids = torch.randint(5, 30000, (batch, length), generator=generator)
        ids[:, 0] = torch.arange(start, start + batch)  # every example distinct
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        hidden = tuple(torch.randn(batch, length, width, generator=generator) for _ in range(layers + 1))
        cache.store(
            inputs,
            SimpleNamespace(logits=torch.randn(batch, length, labels, generator=generator), hidden_states=hidden),
        )
        batches.append(inputs)
    cache.refresh()
    stored = cache.size()["bytes"]
    bound = 24 * 2**20
    assert stored == examples * length * 2 * (labels + layers * width) > 5 * bound  # 148 MB
    shapes = {"labels": labels, "token_level": True, "hidden": width, "heads": 12}
    assert cache.lookup(batches[-1], shapes) is not None  # the batch tensors' first allocation
    gc.collect()
    before = peak = _resident_bytes()
    for inputs in batches:
        assert cache.lookup(inputs, shapes) is not None
        peak = max(peak, _resident_bytes())
    assert peak - before < bound, f"resident memory grew by {(peak - before) / 2**20:.1f} MiB over the epoch"
    cache.close()
