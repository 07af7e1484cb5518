"""Shared by the CoNLL-2003 benchmarks: data arguments, the recipe's data block, the fine-tuned model to start from."""

from __future__ import annotations

import argparse
import os

from latency import sentences_from_conll

from hf_compress import Recipe, run_recipe
from hf_compress.pipeline import default_training_arguments


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """``--train_file``/``--validation_file`` (CoNLL files) or ``--dataset``; ``--teacher`` or ``--encoder``."""
    parser.add_argument("--train_file", help="CoNLL train file (default: the hub dataset)")
    parser.add_argument("--validation_file", help="CoNLL validation file (default: the hub dataset)")
    parser.add_argument("--dataset", default="conll2003", help="hub dataset used when no files are given")
    parser.add_argument("--teacher", help="a fine-tuned fp32 NER model; without it one is trained from --encoder")
    parser.add_argument("--encoder", default="sentence-transformers/all-MiniLM-L6-v2")


def add_run_arguments(parser: argparse.ArgumentParser, stem: str) -> None:
    """``--latency_sentences``, ``--threads``, ``--output_dir`` (``<stem>.{json,md}``) and ``--work_dir`` (models)."""
    parser.add_argument("--latency_sentences", type=int, default=300, help="dev sentences timed")
    parser.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads")
    parser.add_argument("--output_dir", default="benchmarks/results", help=f"where {stem}.json and {stem}.md go")
    parser.add_argument("--work_dir", default=f"benchmarks/results/{stem}-runs", help="trained and exported models")


def data_block(args: argparse.Namespace) -> dict:
    """The recipe's ``data:`` block for the files or the hub dataset given on the command line."""
    if args.train_file:
        return {
            "task": "ner",
            "train_file": os.path.abspath(args.train_file),
            "validation_file": os.path.abspath(args.validation_file),
        }
    return {"task": "ner", "dataset": args.dataset}


def fine_tuned_model(args: argparse.Namespace) -> str:
    """``--teacher``, or ``--encoder`` fine-tuned here (3 epochs, lr 1e-4, as the packaged teacher was)."""
    if args.teacher:
        return args.teacher
    out = os.path.join(args.work_dir, "fp32")
    recipe = Recipe.from_dict(
        {
            "model": {"student": args.encoder},
            "data": data_block(args),
            "training": {
                "num_train_epochs": 3,
                "learning_rate": 1e-4,
                "warmup_ratio": 0.06,
                "weight_decay": 0.01,
                "per_device_train_batch_size": 32,
                "seed": 42,
            },
        }
    )
    run_recipe(recipe, default_training_arguments(out, {**recipe.training, "save_strategy": "no"}))
    return out


def dev_sentences(args: argparse.Namespace, n: int) -> list[list[str]]:
    """The first ``n`` validation sentences (word lists), from ``--validation_file`` or the hub dataset."""
    if args.validation_file:
        return sentences_from_conll(args.validation_file, n)
    from datasets import load_dataset

    return load_dataset(args.dataset, split="validation")["tokens"][:n]


def command_line(script: str, args: argparse.Namespace) -> str:
    """The command that reproduces a run: ``python benchmarks/<script>`` with every argument given a value."""
    options = []
    for key, value in vars(args).items():
        if value is None or value is False:
            continue
        if value is True:
            options.append(f"--{key}")
        else:  # an empty value (e.g. no neuron sparsities) stays on the line as ''
            options.append(f"--{key} {value}" if value != "" else f"--{key} ''")
    return f"python benchmarks/{script} " + " ".join(options)
