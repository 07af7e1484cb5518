#!/usr/bin/env python
"""Fine-tune (and distil) a token-classification model for NER, in the style of transformers' examples.

Distil a 3-layer student from a fine-tuned 6-layer teacher on local CoNLL files:

    python examples/ner/run_ner.py \\
        --teacher_name_or_path ../shared/models/minilm-l6-conll2003-teacher \\
        --student_from_teacher_layers 0,2,4 \\
        --train_file ../shared/data/conll2003/train.txt --validation_file ../shared/data/conll2003/valid.txt \\
        --temperature 2 --alpha 0.5 --hidden_state_weight 1 \\
        --output_dir out/ner-student --num_train_epochs 3 --learning_rate 1e-4 --per_device_train_batch_size 32

Or fine-tune a model on the hub's ``conll2003`` without distillation:

    python examples/ner/run_ner.py --student_name_or_path bert-base-cased --dataset_name conll2003 \\
        --output_dir out/bert-ner

A YAML ``--recipe`` may give any block; the flags here override it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser, TrainingArguments
from transformers.utils import logging

from hf_compress import Recipe, run_recipe
from hf_compress.pipeline import results_table

logger = logging.get_logger(__name__)


@dataclass
class ModelArguments:
    teacher_name_or_path: str | None = field(
        default=None, metadata={"help": "Teacher: a local folder, a hub id, or package:MODULE/dir."}
    )
    train_teacher: bool = field(
        default=False, metadata={"help": "Fine-tune the teacher on the task first (for a pretrained encoder)."}
    )
    student_name_or_path: str | None = field(default=None, metadata={"help": "Student: a folder or hub id."})
    student_from_teacher_layers: str | None = field(
        default=None, metadata={"help": "Build the student from these teacher layers, e.g. '0,2,4'."}
    )


@dataclass
class DataTrainingArguments:
    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset id, e.g. 'conll2003'."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "The hub dataset's configuration."})
    train_file: str | None = field(default=None, metadata={"help": "A CoNLL training file."})
    validation_file: str | None = field(default=None, metadata={"help": "A CoNLL validation file."})
    max_seq_length: int = field(default=128, metadata={"help": "Truncate sentences to this many tokens."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training examples."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N validation examples."})
    label_all_tokens: bool = field(default=False, metadata={"help": "Label every sub-token, not only the first."})


@dataclass
class CompressionArguments:
    recipe: str | None = field(default=None, metadata={"help": "A YAML recipe; the flags below override it."})
    temperature: float | None = field(default=None, metadata={"help": "Distillation temperature T."})
    alpha: float | None = field(default=None, metadata={"help": "Weight of the task loss in [0, 1]."})
    hidden_state_weight: float | None = field(default=None, metadata={"help": "Weight of the hidden-state MSE."})
    layer_map: str | None = field(
        default=None, metadata={"help": "Student->teacher layers for the hidden-state term, e.g. '0:1,1:3,2:5'."}
    )
    final_sparsity: float | None = field(default=None, metadata={"help": "Prune to this sparsity (cubic schedule)."})
    pruning_structure: str = field(default="unstructured", metadata={"help": "unstructured, neurons or heads."})
    pruning_epochs: str = field(default="0,1", metadata={"help": "Start and end of the pruning ramp, in epochs."})
    qat_epochs: str | None = field(
        default=None, metadata={"help": "Quantization-aware training: start and observer-freeze epochs, e.g. '2,2.5'."}
    )
    lowrank_rank_ratio: float | None = field(
        default=None, metadata={"help": "Factorize the FFN linears at this fraction of their full rank."}
    )
    export_int8: str | None = field(
        default=None, metadata={"help": "Export to ONNX at the end: none (fp32), qat, dynamic or static."}
    )


def build_recipe(
    model_args: ModelArguments, data_args: DataTrainingArguments, compression_args: CompressionArguments
) -> Recipe:
    """The recipe these flags describe, on top of ``--recipe`` when given."""
    base = Recipe.coerce(compression_args.recipe).to_dict()
    model = base.setdefault("model", {})
    for key, value in (("teacher", model_args.teacher_name_or_path), ("train_teacher", model_args.train_teacher)):
        if value:
            model[key] = value
    if model_args.student_name_or_path:
        model["student"] = {"name_or_path": model_args.student_name_or_path}
    elif model_args.student_from_teacher_layers:
        model["student"] = {"from_teacher_layers": [int(x) for x in model_args.student_from_teacher_layers.split(",")]}
    data = base.setdefault("data", {"task": "ner"})
    flags = {
        "dataset": data_args.dataset_name,
        "dataset_config": data_args.dataset_config_name,
        "train_file": data_args.train_file,
        "validation_file": data_args.validation_file,
        "max_length": data_args.max_seq_length,
        "max_train_samples": data_args.max_train_samples,
        "max_eval_samples": data_args.max_eval_samples,
        "label_all_tokens": data_args.label_all_tokens or None,
    }
    data.update({k: v for k, v in flags.items() if v is not None})
    distillation = dict(base.get("distillation") or {})
    for key in ("temperature", "alpha"):
        if getattr(compression_args, key) is not None:
            distillation[key] = getattr(compression_args, key)
    if compression_args.hidden_state_weight is not None or compression_args.layer_map:
        hidden = distillation.setdefault("hidden_states", {})
        if compression_args.hidden_state_weight is not None:
            hidden["weight"] = compression_args.hidden_state_weight
        if compression_args.layer_map:
            pairs = (pair.split(":") for pair in compression_args.layer_map.split(","))
            hidden["layer_map"] = {int(s): int(t) for s, t in pairs}
    if distillation or (model.get("teacher") and model.get("student")):
        base["distillation"] = distillation  # a teacher and a student: distil (with defaults if no flags)
    if compression_args.final_sparsity is not None:
        start, end = (float(x) for x in compression_args.pruning_epochs.split(","))
        base["pruning"] = {
            "final_sparsity": compression_args.final_sparsity,
            "start_epoch": start,
            "end_epoch": end,
            "structure": compression_args.pruning_structure,
        }
    if compression_args.qat_epochs:
        start, freeze = (float(x) for x in compression_args.qat_epochs.split(","))
        base["quantization"] = {"start_epoch": start, "freeze_observers_epoch": freeze}
    if compression_args.lowrank_rank_ratio is not None:
        base["lowrank"] = {"rank_ratio": compression_args.lowrank_rank_ratio}
    if compression_args.export_int8 is not None:
        base["export"] = {"int8": compression_args.export_int8}
    base.pop("training", None)  # TrainingArguments come from the command line here
    return Recipe.from_dict(base)


def main() -> None:
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, CompressionArguments, TrainingArguments))
    if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        model_args, data_args, compression_args, training_args = parser.parse_json_file(sys.argv[1])
    else:
        model_args, data_args, compression_args, training_args = parser.parse_args_into_dataclasses()
    logging.set_verbosity_info() if training_args.should_log else logging.set_verbosity_warning()
    recipe = build_recipe(model_args, data_args, compression_args)
    logger.info(f"Recipe:\n{recipe.to_yaml()}")
    results = run_recipe(recipe, training_args, resume_from_checkpoint=training_args.resume_from_checkpoint)
    if training_args.should_save:
        print(results_table(results))


if __name__ == "__main__":
    main()
