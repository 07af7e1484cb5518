"""Run by tests/test_distributed.py under accelerate with 2 processes: train a tiny student with each registered
technique's example config in turn, then dump, per technique, each process's weights and technique state, and
what the teacher is (its type, whether the optimizer holds any of its parameters)."""

import dataclasses
import sys

import torch
from datasets import Dataset
from transformers import BertConfig, BertForTokenClassification, TrainingArguments

from hf_compress import CompressionTrainer, registered_techniques

out = sys.argv[1]


def config(**overrides) -> BertConfig:
    kwargs = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    return BertConfig(**{**kwargs, "num_labels": 3, **overrides})


generator = torch.Generator().manual_seed(0)
rows = [
    {
        "input_ids": torch.randint(5, 100, (10,), generator=generator).tolist(),
        "labels": torch.randint(0, 3, (10,), generator=generator).tolist(),
    }
    for _ in range(64)
]
dump = {}
for technique in registered_techniques():
    torch.manual_seed(0)
    model = BertForTokenClassification(config())
    teacher = BertForTokenClassification(config(hidden_size=48, num_hidden_layers=4, intermediate_size=96))
    args = TrainingArguments(
        f"{out}/{technique.name}",
        per_device_train_batch_size=4,
        max_steps=6,
        learning_rate=1e-2,
        report_to="none",
        save_strategy="no",
        logging_steps=2,
        use_cpu=True,
        disable_tqdm=True,
        seed=1,
    )
    trainer = CompressionTrainer(
        model=model,
        teacher=teacher if "teacher" in technique.resources else None,
        args=args,
        recipe={technique.name: dataclasses.asdict(technique.example_config())},
        train_dataset=Dataset.from_list(rows),
    )
    trainer.train()
    callback = next(t for t in trainer.techniques if isinstance(t, technique))
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    frozen = getattr(callback, "teacher", None)
    dump[technique.name] = {
        "weights": {
            k: v.detach().clone() for k, v in trainer.accelerator.unwrap_model(trainer.model).state_dict().items()
        },
        "state": callback.state_dict() if callback.has_state() else {},
        "wrapped": type(trainer.model_wrapped).__name__,
        "teacher_type": type(frozen).__name__ if frozen is not None else None,
        "teacher_in_optimizer": frozen is not None and any(id(p) in optimized for p in frozen.parameters()),
        "teacher_training": frozen.training if frozen is not None else None,
    }
dump["world_size"] = trainer.accelerator.num_processes
torch.save(dump, f"{out}/rank{trainer.accelerator.process_index}.pt")
