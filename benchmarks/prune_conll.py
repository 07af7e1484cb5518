"""Benchmark: gradual magnitude pruning of a fine-tuned MiniLM NER model on CoNLL-2003.

From one fine-tuned model (``--teacher``, or trained here from ``--encoder``), for each sparsity (unstructured
50/70/80/90%, FFN neurons 25/50%) the model is trained further with ``GradualPruningCallback`` (cubic ramp over the
first ``--ramp`` of ``--epochs``, masks updated every ``--update_every`` steps) while distilling from the dense model
(logit KD, T=2, alpha=0.5, plus ``--hidden_distill`` times the hidden-state MSE of every layer; ``--no_distill`` for
the task loss only), then evaluated on dev (seqeval F1). Structured runs are physically shrunk, exported to ONNX
through Optimum (dev F1 from ONNX Runtime's outputs) and timed with ONNX Runtime (``--threads``, batch 1 on real dev
sentences, batch-32 throughput), interleaved with the dense model. A separate measurement gives the callback's
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
from common import add_data_arguments, add_run_arguments, command_line, data_block, dev_sentences, fine_tuned_model
from latency import markdown_table, onnx_latency, write_results
from transformers import AutoModelForTokenClassification, AutoTokenizer, Trainer, TrainerCallback

from hf_compress import GradualPruningCallback, PruningConfig, Recipe, run_recipe
from hf_compress.export import export as export_folder
from hf_compress.pipeline import default_training_arguments
from hf_compress.recipe import DataConfig
from hf_compress.tasks import get_task


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    parser.add_argument("--unstructured", default="0.5,0.7,0.8,0.9")
    parser.add_argument("--neurons", default="0.25,0.5")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--ramp", type=float, default=0.6, help="the ramp ends at this fraction of the run")
    parser.add_argument(
        "--no_distill",
        action="store_true",
        help="prune with the task loss only (default: also distil from the dense model, T=2, alpha=0.5)",
    )
    parser.add_argument(
        "--hidden_distill",
        type=float,
        default=0.0,
        help="weight of the hidden-state MSE between each layer and the same layer of the dense model (0: off)",
    )
    parser.add_argument(
        "--scope", default="per_layer", choices=["per_layer", "global"], help="ranking of unstructured weights"
    )
    parser.add_argument("--update_every", type=int, default=50, help="optimizer steps between mask updates")
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--overhead_steps", type=int, default=40, help="0 skips the overhead measurement")
    parser.add_argument(
        "--latency_only",
        action="store_true",
        help="re-time the ONNX models of an earlier run (its JSON and work_dir) without training again",
    )
    add_run_arguments(parser, "prune_conll")
    return parser.parse_args()


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step (from step begin to step end)."""

    def __init__(self):
        self.times, self._start = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)


def callback_overhead(args, dense: str, training: dict) -> dict:
    """Median step time with the callback active (masks set once, no update in the window) vs plain Trainer."""
    task = get_task("ner")
    data = DataConfig(**data_block(args), max_train_samples=args.batch_size * args.overhead_steps)
    tokenizer = AutoTokenizer.from_pretrained(dense)
    model_labels = AutoModelForTokenClassification.from_pretrained(dense).config.label2id
    dataset = task.preprocess(task.load_raw(data), tokenizer, model_labels, data)["train"]
    medians = {}
    for name in ("plain", "pruning"):
        model = AutoModelForTokenClassification.from_pretrained(dense)
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


def run_dir(args, name: str) -> str:
    """The work folder of one run: ``unstructured 80%`` -> ``<work_dir>/unstructured-80``."""
    return os.path.join(args.work_dir, name.replace(" ", "-").replace("%", ""))


def pruning_runs(args) -> list[tuple[str, dict]]:
    """(name, ``pruning:`` block) for every sparsity asked for."""
    ramp = {"start_epoch": 0.0, "end_epoch": args.ramp * args.epochs, "update_every": args.update_every}
    runs = [
        (
            f"unstructured {float(s):.0%}",
            {"structure": "unstructured", "final_sparsity": float(s), "scope": args.scope, **ramp},
        )
        for s in args.unstructured.split(",")
        if s
    ]
    runs += [
        (f"neurons {float(s):.0%}", {"structure": "neurons", "final_sparsity": float(s), **ramp})
        for s in args.neurons.split(",")
        if s
    ]
    return runs


def prune(args, dense: str, name: str, pruning: dict, training: dict) -> tuple[dict, str | None]:
    """Train one pruned model; its report row and, for a structured run, its ONNX folder."""
    out = run_dir(args, name)
    structured = pruning["structure"] != "unstructured"
    blocks = {"model": {"student": dense}, "data": data_block(args), "pruning": pruning, "training": training}
    if structured:  # physically shrunk, exported and evaluated through ONNX Runtime
        blocks["export"] = {"onnx": True}
    if not args.no_distill:  # the dense model teaches its pruned self
        blocks["model"]["teacher"] = dense
        blocks["distillation"] = {"temperature": 2.0, "alpha": 0.5}
        if args.hidden_distill > 0:
            blocks["distillation"]["hidden_states"] = {"weight": args.hidden_distill}
    results = run_recipe(Recipe.from_dict(blocks), default_training_arguments(out, training))
    student = results[-2] if structured else results[-1]  # the trained student (before the export row)
    row = {"dev_f1": student.metrics["f1"], "parameters": student.parameters, "train_seconds": student.train_seconds}
    with open(os.path.join(out, "sparsity_report.json")) as handle:
        row["encoder_linear_sparsity"] = json.load(handle)["total"]["sparsity"]
    if not structured:
        return row, None
    onnx_dir = os.path.join(out, "onnx")
    with open(os.path.join(onnx_dir, "export_report.json")) as handle:
        export = json.load(handle)
    row.update(onnx_dev_f1=export["metrics"]["f1"], onnx_size_mb=export["size_mb"])
    return row, onnx_dir


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    started = time.time()
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
    command = command_line("prune_conll.py", args)
    onnx_models = {}
    if args.latency_only:  # keep the trained models and their F1; time their ONNX exports again
        with open(os.path.join(args.output_dir, "prune_conll.json")) as handle:
            report = json.load(handle)
        report["latency_command"] = command
        for name in report["runs"]:
            folder = os.path.join(run_dir(args, name), "onnx")
            if os.path.isfile(os.path.join(folder, "model.onnx")):
                onnx_models[name] = folder
        dense = report.get("dense_model") or args.teacher
    else:
        dense = fine_tuned_model(args)
        report = {"command": command, "dense_model": dense, "runs": {}}
        onnx_models["dense"] = os.path.join(run_dir(args, "dense"), "onnx")
        export = export_folder(
            dense, onnx_models["dense"], recipe=Recipe.from_dict({"data": data_block(args)}), int8="none"
        )
        report["runs"]["dense"] = {
            "dev_f1": export["pytorch_metrics"]["f1"],
            "onnx_dev_f1": export["metrics"]["f1"],
            "parameters": export["parameters"],
            "onnx_size_mb": export["size_mb"],
            "encoder_linear_sparsity": 0.0,
            "train_seconds": None,
        }
        for name, pruning in pruning_runs(args):
            report["runs"][name], onnx_dir = prune(args, dense, name, pruning, training)
            if onnx_dir:
                onnx_models[name] = onnx_dir
            print(f"{name}: dev F1 {100 * report['runs'][name]['dev_f1']:.2f}")
    # latency of all ONNX models side by side, interleaved so that machine noise hits them alike
    tokenizer = AutoTokenizer.from_pretrained(dense)
    latencies = onnx_latency(onnx_models, tokenizer, dev_sentences(args, args.latency_sentences), args.threads)
    for name, stats in latencies.items():
        report["runs"][name].update(
            stats, speedup_vs_dense=latencies["dense"]["batch1_median_ms"] / stats["batch1_median_ms"]
        )
    if not args.latency_only:
        if args.overhead_steps > 0:
            report["callback_overhead"] = callback_overhead(args, dense, training)
        report["total_seconds"] = time.time() - started

    def optional(key: str, fmt: str, scale: float = 1.0):
        """A cell for a value only some rows have (ONNX numbers of structured runs): ``-`` where it is missing."""
        return lambda name, r: format(scale * r[key], fmt) if key in r else "-"

    table = markdown_table(
        [
            ("model", lambda name, r: name),
            ("encoder sparsity", lambda name, r: f"{r.get('encoder_linear_sparsity', 0):.0%}"),
            ("dev F1", lambda name, r: f"{100 * r['dev_f1']:.2f}"),
            ("ONNX dev F1", optional("onnx_dev_f1", ".2f", scale=100)),
            ("params (M)", lambda name, r: f"{r['parameters'] / 1e6:.1f}"),
            ("ONNX MB", optional("onnx_size_mb", ".1f")),
            ("batch-1 median ms", optional("batch1_median_ms", ".2f")),
            ("batch-1 p90 ms", optional("batch1_p90_ms", ".2f")),
            ("batch-32 sentences/s", optional("batch32_sentences_per_s", ".0f")),
            ("batch-1 speed-up x", optional("speedup_vs_dense", ".2f")),
        ],
        report["runs"],
    )
    if "callback_overhead" in report:
        seconds = report["callback_overhead"]["median_step_seconds"]
        table += (
            f"\n\nCallback overhead outside mask updates: median step {seconds['pruning']:.3f} s vs"
            f" {seconds['plain']:.3f} s plain ({100 * report['callback_overhead']['overhead']:+.1f}%)."
        )
    if "latency_command" in report:
        table += f"\n\nLatency re-measured with: `{report['latency_command']}`"
    write_results(args.output_dir, "prune_conll", report, table)


if __name__ == "__main__":
    main()
