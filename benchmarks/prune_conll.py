"""Benchmark: gradual magnitude pruning of a fine-tuned MiniLM NER model on CoNLL-2003.

For each sparsity (unstructured 50/70/80/90%, FFN neurons 25/50%), the fine-tuned model is trained further with
``GradualPruningCallback`` (cubic ramp over the first ``--ramp`` of the run) while distilling from the dense model
(logit KD, T=2, alpha=0.5; ``--no_distill`` for the task loss only), then evaluated on dev (seqeval F1).
Structured runs are physically shrunk, exported to ONNX through Optimum and timed with ONNX Runtime (2 threads,
batch 1, real dev sentences), side by side with the dense model. A separate measurement gives the callback's
per-step overhead outside mask updates vs the plain Trainer. Writes ``prune_conll.{json,md}``.

    python benchmarks/prune_conll.py --train_file ../shared/data/conll2003/train.txt \\
        --validation_file ../shared/data/conll2003/valid.txt --teacher ../shared/models/minilm-l6-conll2003-teacher
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from latency import export_onnx, onnx_latency, sentences_from_conll
from transformers import AutoModelForTokenClassification, AutoTokenizer, Trainer, TrainerCallback

from hf_compress import GradualPruningCallback, PruningConfig, Recipe, run_recipe
from hf_compress.pipeline import default_training_arguments
from hf_compress.tasks import get_task


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_file", required=True)
    parser.add_argument("--validation_file", required=True)
    parser.add_argument("--teacher", required=True, help="the fine-tuned dense model to prune")
    parser.add_argument("--unstructured", default="0.5,0.7,0.8,0.9")
    parser.add_argument("--neurons", default="0.25,0.5")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--ramp", type=float, default=0.6, help="the ramp ends at this fraction of the run")
    parser.add_argument(
        "--no_distill",
        action="store_true",
        help="prune with the task loss only (default: also distil from the dense model, T=2, alpha=0.5)",
    )
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--latency_sentences", type=int, default=300)
    parser.add_argument("--overhead_steps", type=int, default=40)
    parser.add_argument(
        "--latency_only",
        action="store_true",
        help="re-time the ONNX models of an earlier run (its JSON and work_dir) without training again",
    )
    parser.add_argument("--output_dir", default="benchmarks/results")
    parser.add_argument("--work_dir", default="benchmarks/results/prune_conll-runs")
    return parser.parse_args()


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step (from step begin to step end)."""

    def __init__(self):
        self.times, self._start = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)


def callback_overhead(args, training: dict) -> dict:
    """Median step time with the callback active (masks set once, no update in the window) vs plain Trainer."""
    from hf_compress.recipe import DataConfig

    task = get_task("ner")
    data = DataConfig(
        train_file=args.train_file,
        validation_file=args.validation_file,
        max_train_samples=args.batch_size * args.overhead_steps,
    )
    tokenizer = AutoTokenizer.from_pretrained(args.teacher)
    model_labels = AutoModelForTokenClassification.from_pretrained(args.teacher).config.label2id
    dataset = task.preprocess(task.load_raw(data), tokenizer, model_labels, data)["train"]
    medians = {}
    for name in ("plain", "pruning"):
        model = AutoModelForTokenClassification.from_pretrained(args.teacher)
        timer = StepTimer()
        callbacks = [timer]
        if name == "pruning":  # pruned at step 0, no further update inside the run
            callbacks.append(
                GradualPruningCallback(
                    PruningConfig(
                        final_sparsity=0.8, initial_sparsity=0.8, start_step=0, end_step=10**6, update_every=10**6
                    )
                )
            )
        run_args = default_training_arguments(
            os.path.join(args.work_dir, f"overhead-{name}"),
            {**training, "max_steps": args.overhead_steps, "eval_strategy": "no"},
        )
        Trainer(
            model=model,
            args=run_args,
            train_dataset=dataset,
            data_collator=task.data_collator(tokenizer),
            callbacks=callbacks,
        ).train()
        medians[name] = float(np.median(timer.times[5:]))  # skip warm-up steps
    return {"median_step_seconds": medians, "overhead": medians["pruning"] / medians["plain"] - 1}


def evaluate_dense(args, training: dict, out: str) -> float:
    """Dev F1 of the dense model as given."""
    from hf_compress.recipe import DataConfig

    task = get_task("ner")
    data = DataConfig(train_file=args.train_file, validation_file=args.validation_file)
    tokenizer = AutoTokenizer.from_pretrained(args.teacher)
    model = AutoModelForTokenClassification.from_pretrained(args.teacher)
    dataset = task.preprocess(task.load_raw(data), tokenizer, model.config.label2id, data)["validation"]
    trainer = Trainer(
        model=model,
        args=default_training_arguments(out, training),
        eval_dataset=dataset,
        data_collator=task.data_collator(tokenizer),
        compute_metrics=task.compute_metrics(model.config.id2label),
    )
    return trainer.evaluate()["eval_f1"]


def main() -> None:
    args = parse_args()
    torch.set_num_threads(2)
    data = {
        "task": "ner",
        "train_file": os.path.abspath(args.train_file),
        "validation_file": os.path.abspath(args.validation_file),
    }
    training = {
        "num_train_epochs": args.epochs,
        "learning_rate": args.learning_rate,
        "warmup_ratio": 0.06,
        "weight_decay": 0.01,
        "per_device_train_batch_size": args.batch_size,
        "per_device_eval_batch_size": 64,
        "seed": 42,
        "save_strategy": "no",
        "eval_strategy": "no",
        "logging_steps": 100,
    }
    sentences = sentences_from_conll(args.validation_file, args.latency_sentences)
    runs = [("dense", None)]
    runs += [
        (f"unstructured {float(s):.0%}", {"structure": "unstructured", "final_sparsity": float(s)})
        for s in args.unstructured.split(",")
        if s
    ]
    runs += [
        (f"neurons {float(s):.0%}", {"structure": "neurons", "final_sparsity": float(s)})
        for s in args.neurons.split(",")
        if s
    ]
    report = {
        "command": "python benchmarks/prune_conll.py "
        + " ".join(
            f"--{k}" if v is True else f"--{k} {v}" for k, v in vars(args).items() if v is not None and v is not False
        ),
        "runs": {},
    }
    onnx_models = {}
    previous = os.path.join(args.output_dir, "prune_conll.json")
    if args.latency_only:  # keep the trained models and their F1; time their ONNX exports again
        with open(previous) as handle:
            command = report["command"]
            report = json.load(handle)
            report["latency_command"] = command
        runs = []
        for name in report["runs"]:
            folder = os.path.join(args.work_dir, name.replace(" ", "-").replace("%", ""), "onnx")
            if os.path.isfile(os.path.join(folder, "model.onnx")):
                onnx_models[name] = folder
    for name, pruning in runs:
        out = os.path.join(args.work_dir, name.replace(" ", "-").replace("%", ""))
        if pruning is None:  # the dense model as given: evaluated, not trained
            row = {
                "dev_f1": evaluate_dense(args, training, out),
                "train_seconds": None,
                "parameters": AutoModelForTokenClassification.from_pretrained(args.teacher).num_parameters(),
            }
            model_dir = args.teacher
        else:
            pruning.update({"start_epoch": 0.0, "end_epoch": args.ramp * args.epochs, "update_every": 50})
            blocks = {"model": {"student": args.teacher}, "data": data, "pruning": pruning, "training": training}
            if not args.no_distill:  # the dense model teaches its pruned self
                blocks["model"]["teacher"] = args.teacher
                blocks["distillation"] = {"temperature": 2.0, "alpha": 0.5}
            recipe = Recipe.from_dict(blocks)
            result = run_recipe(recipe, default_training_arguments(out, training))[-1]  # after the teacher row
            row = {
                "dev_f1": result.metrics["f1"],
                "parameters": result.parameters,
                "train_seconds": result.train_seconds,
            }
            model_dir = result.path
        sparsity_file = os.path.join(out, "sparsity_report.json")
        if os.path.isfile(sparsity_file):
            with open(sparsity_file) as handle:
                row["encoder_linear_sparsity"] = json.load(handle)["total"]["sparsity"]
        if pruning is None or pruning["structure"] != "unstructured":
            onnx_models[name] = export_onnx(model_dir, os.path.join(out, "onnx"))
            row["onnx_size_mb"] = os.path.getsize(os.path.join(onnx_models[name], "model.onnx")) / 1e6
        report["runs"][name] = row
        print(f"{name}: dev F1 {100 * row['dev_f1']:.2f}")
    # latency of all ONNX models side by side, interleaved so that machine noise hits them alike
    tokenizer = AutoTokenizer.from_pretrained(args.teacher)
    latencies = onnx_latency(onnx_models, tokenizer, sentences, threads=2)
    for name, stats in latencies.items():
        report["runs"][name].update(stats)
    dense = latencies["dense"]["batch1_median_ms"]
    for name, stats in latencies.items():
        report["runs"][name]["speedup_vs_dense"] = dense / stats["batch1_median_ms"]
    if not args.latency_only:
        report["callback_overhead"] = callback_overhead(args, training)
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "prune_conll.json"), "w") as handle:
        json.dump(report, handle, indent=2)
    lines = [
        "| model | encoder sparsity | dev F1 | params (M) | ONNX MB | batch-1 median ms | p90 ms | speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report["runs"].items():
        lat = (
            f"{r['batch1_median_ms']:.2f} | {r['batch1_p90_ms']:.2f} | {r['speedup_vs_dense']:.2f}x"
            if "batch1_median_ms" in r
            else "- | - | -"
        )
        onnx = f"{r['onnx_size_mb']:.1f}" if "onnx_size_mb" in r else "-"
        sparsity = f"{100 * r.get('encoder_linear_sparsity', 0):.0f}%"
        lines.append(
            f"| {name} | {sparsity} | {100 * r['dev_f1']:.2f} | {r['parameters'] / 1e6:.1f} | {onnx} | {lat} |"
        )
    overhead = report["callback_overhead"]
    table = "\n".join(lines) + (
        f"\n\nCallback overhead outside mask updates: median step {overhead['median_step_seconds']['pruning']:.3f} s"
        f" vs {overhead['median_step_seconds']['plain']:.3f} s plain ({100 * overhead['overhead']:+.1f}%)."
    )
    with open(os.path.join(args.output_dir, "prune_conll.md"), "w") as handle:
        retimed = f"\n\nLatency re-measured with: `{report['latency_command']}`" if "latency_command" in report else ""
        handle.write(f"{table}\n\nCommand: `{report['command']}`{retimed}\n")
    print(table)


if __name__ == "__main__":
    main()
