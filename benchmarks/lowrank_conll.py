"""Benchmark: SVD-factorized FFN layers (rank ratio 0.5 and 0.25) fine-tuned with distillation, on CoNLL-2003 dev.

From one fine-tuned model (``--teacher``, or trained here from ``--encoder``): the dense model, and for each rank
ratio the same model with every FFN linear factorized (``lowrank: {rank_ratio: R}``) then fine-tuned for
``--epochs`` with logit distillation from the dense model. Every model is exported to ONNX fp32 through Optimum;
dev F1 is computed from ONNX Runtime's outputs and batch-1 latency measured interleaved with 2 threads, side by
side in one run. Writes ``lowrank_conll.{json,md}``.

    python benchmarks/lowrank_conll.py --train_file ../shared/data/conll2003/train.txt \\
        --validation_file ../shared/data/conll2003/valid.txt --teacher ../shared/models/minilm-l6-conll2003-teacher
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from common import add_data_arguments, add_run_arguments, command_line, data_block, dev_sentences, fine_tuned_model
from latency import LATENCY_COLUMNS, markdown_table, measure_latency, onnx_runner, write_results
from transformers import AutoTokenizer

from hf_compress import Recipe, run_recipe
from hf_compress.export import export as export_folder
from hf_compress.pipeline import default_training_arguments


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    parser.add_argument("--rank_ratios", default="0.5,0.25")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    add_run_arguments(parser, "lowrank_conll")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    started = time.time()
    dense = fine_tuned_model(args)
    folders, rows = {}, {}
    folders["dense"] = os.path.join(args.work_dir, "dense-onnx")
    report = export_folder(dense, folders["dense"], recipe=Recipe.from_dict({"data": data_block(args)}), int8="none")
    rows["dense"] = {
        "parameters": report["parameters"],
        "size_mb": report["size_mb"],
        "dev_f1": report["metrics"]["f1"],
        "train_seconds": None,
    }
    training = {
        "num_train_epochs": args.epochs,
        "learning_rate": args.learning_rate,
        "warmup_ratio": 0.06,
        "per_device_train_batch_size": 32,
        "per_device_eval_batch_size": 64,
        "seed": 42,
        "save_strategy": "no",
        "eval_strategy": "no",
        "logging_steps": 50,
    }
    for ratio in [float(r) for r in args.rank_ratios.split(",") if r]:
        name = f"FFN rank ratio {ratio:g}"
        out = os.path.join(args.work_dir, f"ratio-{ratio:g}")
        recipe = Recipe.from_dict(
            {
                "model": {"teacher": dense, "student": dense},
                "data": data_block(args),
                "distillation": {"temperature": 2.0, "alpha": 0.5},
                "lowrank": {"rank_ratio": ratio},
                "export": {"onnx": True},
                "training": training,
            }
        )
        results = run_recipe(recipe, default_training_arguments(out, training))
        folders[name] = os.path.join(out, "onnx")
        with open(os.path.join(folders[name], "export_report.json")) as handle:
            report = json.load(handle)
        with open(os.path.join(out, "lowrank_report.json")) as handle:
            factorization = json.load(handle)["total"]
        rows[name] = {
            "parameters": report["parameters"],
            "size_mb": report["size_mb"],
            "dev_f1": report["metrics"]["f1"],
            "train_seconds": results[-2].train_seconds,
            "ffn_parameters_before": factorization["parameters_before"],
            "ffn_parameters_after": factorization["parameters_after"],
        }
        print(f"{name}: dev F1 {100 * rows[name]['dev_f1']:.2f}")
    tokenizer = AutoTokenizer.from_pretrained(dense)
    sentences = dev_sentences(args, args.latency_sentences)
    latency = measure_latency({n: onnx_runner(f, args.threads) for n, f in folders.items()}, tokenizer, sentences)
    for name, stats in latency.items():
        rows[name].update(stats)
        rows[name]["batch1_speedup_vs_dense"] = latency["dense"]["batch1_median_ms"] / stats["batch1_median_ms"]
    command = command_line("lowrank_conll.py", args)
    table = markdown_table(
        [
            ("model", lambda name, r: name),
            ("params (M)", lambda name, r: f"{r['parameters'] / 1e6:.1f}"),
            ("ONNX MB", lambda name, r: f"{r['size_mb']:.1f}"),
            ("dev F1", lambda name, r: f"{100 * r['dev_f1']:.2f}"),
            *LATENCY_COLUMNS,
            ("speed-up", lambda name, r: f"{r['batch1_speedup_vs_dense']:.2f}x"),
        ],
        rows,
    )
    report = {"command": command, "total_seconds": time.time() - started, "runs": rows}
    write_results(args.output_dir, "lowrank_conll", report, table)


if __name__ == "__main__":
    main()
