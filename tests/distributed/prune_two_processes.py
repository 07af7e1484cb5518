"""Run by tests/test_distributed.py under accelerate with 2 processes: distil into a tiny student while pruning it,
with QAT, then dump each process's masks, weights, distillation projections and QAT ranges."""

import sys

import torch
from datasets import Dataset
from transformers import BertConfig, BertForTokenClassification, TrainingArguments

from hf_compress import CompressionTrainer, DistillationCallback, GradualPruningCallback
from hf_compress.quantization import activation_ranges

out = sys.argv[1]
torch.manual_seed(0)
config = BertConfig(
    vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, num_labels=3
)
model = BertForTokenClassification(config)
teacher = BertForTokenClassification(
    BertConfig(
        vocab_size=100, hidden_size=48, num_hidden_layers=4, num_attention_heads=4, intermediate_size=96, num_labels=3
    )
)
generator = torch.Generator().manual_seed(0)
rows = [
    {
        "input_ids": torch.randint(5, 100, (10,), generator=generator).tolist(),
        "labels": torch.randint(0, 3, (10,), generator=generator).tolist(),
    }
    for _ in range(64)
]
recipe = {
    "distillation": {"alpha": 0.5, "hidden_states": {"weight": 1.0}},
    "pruning": {
        "structure": "unstructured",
        "scope": "global",
        "final_sparsity": 0.7,
        "start_step": 0,
        "end_step": 6,
        "update_every": 1,
    },
    "quantization": {"start_step": 2, "freeze_observers_step": 6},
}
args = TrainingArguments(
    out,
    per_device_train_batch_size=4,
    max_steps=8,
    learning_rate=1e-2,
    report_to="none",
    save_strategy="no",
    logging_steps=2,
    use_cpu=True,
    disable_tqdm=True,
    seed=1,
)
trainer = CompressionTrainer(
    model=model, teacher=teacher, args=args, recipe=recipe, train_dataset=Dataset.from_list(rows)
)
trainer.train()
pruner = next(c for c in trainer.callback_handler.callbacks if isinstance(c, GradualPruningCallback)).pruner
rank = trainer.args.process_index
assert torch.distributed.get_backend() == "gloo"
torch.save(
    {
        "world_size": trainer.args.world_size,
        "masks": pruner.state_dict()["masks"],
        "weights": {k: v.clone() for k, v in model.state_dict().items()},
        "projections": next(c for c in trainer.techniques if isinstance(c, DistillationCallback)).state_dict(),
        "qat_ranges": activation_ranges(model),
    },
    f"{out}/rank{rank}.pt",
)
