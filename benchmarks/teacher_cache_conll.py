"""Benchmark: training time per epoch of a distilled student, online teacher vs cached teacher vs no teacher.

A student of the teacher's ``--student_layers`` trained ``--epochs`` epochs on CoNLL-2003 three ways, one after
the other in one run: without distillation; distilled with the teacher run on every batch (logits + hidden
states); distilled with ``distillation.cache_teacher: true`` (the teacher runs on epoch 1, epochs 2+ read its
outputs from the cache). Wall time of each epoch (the Trainer's own loop, no evaluation or checkpoint inside),
the final training loss, and the ratio of the cached run's later epochs to the no-distillation epochs.
Writes ``teacher_cache_conll.{json,md}`` (``teacher_cache_conll-transfer<N>`` with copies).

With ``--transfer_copies N`` the distilled runs also learn from N augmented copies of the training set
(``distillation.transfer``), and the run without distillation trains on the same rows: the training file plus
the same copies (seeded alike) with their augmented tags as labels. The cache then covers the transfer rows too.
With ``--transfer_file`` (one sentence per line, ``transfer_text.py``) the transfer set holds its first
``--max_transfer_sentences`` sentences instead, and the run without distillation trains on the training file plus
those sentences tagged ``O`` (the same rows and lengths; only the times are compared). ``--runs`` picks the runs.

    python benchmarks/teacher_cache_conll.py --train_file ../shared/data/conll2003/train.txt \\
        --validation_file ../shared/data/conll2003/valid.txt --teacher ../shared/models/minilm-l6-conll2003-teacher
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from common import add_data_arguments, command_line, data_block, fine_tuned_model
from latency import markdown_table, write_results
from transformers import TrainerCallback

from hf_compress import Recipe, run_recipe
from hf_compress.distillation import DistillationCallback
from hf_compress.distillation.augment import TOKEN_AUGMENTATIONS, augment_sentences
from hf_compress.distillation.config import TransferConfig
from hf_compress.distillation.transfer import read_transfer_file
from hf_compress.pipeline import default_training_arguments
from hf_compress.tasks import read_conll


class EpochTimes(TrainerCallback):
    """Wall time and CPU time (this process, every thread) of each training epoch: on a shared machine the CPU
    time is the steadier of the two."""

    def __init__(self):
        self.seconds: list[float] = []
        self.cpu_seconds: list[float] = []
        self.started = self.cpu_started = 0.0

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.started, self.cpu_started = time.perf_counter(), time.process_time()

    def on_epoch_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self.started)
        self.cpu_seconds.append(time.process_time() - self.cpu_started)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    parser.add_argument("--student_layers", default="0,2,4", help="teacher layers the student is built from")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max_train_samples", type=int, help="train on the first N sentences only")
    parser.add_argument("--transfer_copies", type=int, default=0, help="augmented copies in a transfer set")
    parser.add_argument("--transfer_file", help="a text file of transfer sentences (one per line)")
    parser.add_argument("--max_transfer_sentences", type=int, help="its first N sentences only")
    parser.add_argument("--runs", default="plain,online,cached", help="which of plain, online, cached to train")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--output_dir", default="benchmarks/results", help="where teacher_cache_conll.{json,md} go")
    parser.add_argument("--work_dir", default="benchmarks/results/teacher_cache_conll-runs", help="the runs")
    return parser.parse_args()


def train(
    args: argparse.Namespace, teacher: str, name: str, distillation: dict | None, train_file: str | None = None
) -> dict:
    data = {**data_block(args), "max_eval_samples": 64}
    if train_file:  # the same rows as the transfer set's run, all labelled
        data["train_file"] = train_file
    elif args.max_train_samples:
        data["max_train_samples"] = args.max_train_samples
    recipe = {
        "model": {
            "teacher": teacher,
            "student": {"from_teacher_layers": [int(x) for x in args.student_layers.split(",")]},
        },
        "data": data,
        "export": {"onnx": False},
        "training": {
            "num_train_epochs": args.epochs,
            "learning_rate": 1e-4,
            "warmup_ratio": 0.06,
            "per_device_train_batch_size": 32,
            "seed": 42,
            "save_strategy": "no",
            "eval_strategy": "no",
            "logging_steps": 50,
            "disable_tqdm": True,
        },
    }
    if distillation is not None:
        recipe["distillation"] = distillation
    recipe = Recipe.from_dict(recipe)
    timer = EpochTimes()
    out = os.path.join(args.work_dir, name)
    run_recipe(recipe, default_training_arguments(out, recipe.training), callbacks=[timer], overwrite_output_dir=True)
    result = {"epoch_seconds": timer.seconds, "epoch_cpu_seconds": timer.cpu_seconds}
    if distillation and distillation.get("cache_teacher"):  # its size: examples, tokens, bytes per token
        with open(os.path.join(out, f"{DistillationCallback.report_name}.json")) as handle:
            result["teacher_cache"] = json.load(handle)["teacher_cache"]
    return result


def write_labelled_copies(args: argparse.Namespace, transfer: TransferConfig) -> str:
    """The training sentences and the transfer set's rows: augmented copies (as ``distillation.transfer`` makes
    them) with their tags, or the transfer file's sentences tagged ``O``."""
    sentences = read_conll(args.train_file)
    sentences = sentences.select(range(min(len(sentences), args.max_train_samples or len(sentences))))
    gold = [(list(t), list(g)) for t, g in zip(sentences["tokens"], sentences["ner_tags"], strict=True)]
    if transfer.files:
        text = read_transfer_file(transfer.files[0])[: transfer.max_file_sentences]
        rows = gold + [(tokens, ["O"] * len(tokens)) for tokens in text]
    else:
        operations = transfer.augmentations or list(TOKEN_AUGMENTATIONS)
        rows = gold + augment_sentences(gold, transfer.augmented_copies, operations, transfer.rate, transfer.seed)
    path = os.path.join(args.work_dir, "train-and-copies.txt")
    os.makedirs(args.work_dir, exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        for tokens, tags in rows:
            out.write("".join(f"{token} {tag}\n" for token, tag in zip(tokens, tags, strict=True)) + "\n")
    print(f"{path}: {len(gold)} sentences and {len(rows) - len(gold)} transfer rows, all labelled")
    return path


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    teacher = fine_tuned_model(args)
    kd = {"temperature": 2.0, "alpha": 0.5, "hidden_states": {"weight": 1.0}}
    labelled = None
    if args.transfer_file:
        path = os.path.abspath(args.transfer_file)
        kd["transfer"] = {"files": [path], "max_file_sentences": args.max_transfer_sentences}
    elif args.transfer_copies:
        kd["transfer"] = {"augmented_copies": args.transfer_copies}
    if "transfer" in kd:
        labelled = write_labelled_copies(args, TransferConfig(**kd["transfer"]))
    chosen = args.runs.split(",")
    runs = {}
    if "plain" in chosen:
        runs["no distillation"] = train(args, teacher, "plain", None, labelled)
    if "online" in chosen:
        runs["distilled, online teacher"] = train(args, teacher, "online", kd)
    if "cached" in chosen:
        runs["distilled, cached teacher"] = train(args, teacher, "cached", {**kd, "cache_teacher": True})
    plain = statistics.median(runs["no distillation"]["epoch_seconds"])
    plain_cpu = statistics.median(runs["no distillation"]["epoch_cpu_seconds"])
    for run in runs.values():
        seconds, cpu = run["epoch_seconds"], run["epoch_cpu_seconds"]
        run["first_epoch_s"] = seconds[0]
        run["later_epochs_median_s"] = statistics.median(seconds[1:]) if len(seconds) > 1 else None
        run["later_vs_no_distillation"] = run["later_epochs_median_s"] / plain if len(seconds) > 1 else None
        run["later_cpu_vs_no_distillation"] = statistics.median(cpu[1:]) / plain_cpu if len(cpu) > 1 else None
    table = markdown_table(
        [
            ("run", lambda name, r: name),
            ("epoch seconds", lambda name, r: ", ".join(f"{s:.0f}" for s in r["epoch_seconds"])),
            ("epochs 2+ median s", lambda name, r: f"{r['later_epochs_median_s']:.0f}"),
            ("epochs 2+ / no-distillation epoch", lambda name, r: f"{r['later_vs_no_distillation']:.2f}x"),
            ("epoch CPU seconds", lambda name, r: ", ".join(f"{s:.0f}" for s in r["epoch_cpu_seconds"])),
            ("CPU: epochs 2+ / no-distillation", lambda name, r: f"{r['later_cpu_vs_no_distillation']:.2f}x"),
        ],
        runs,
    )
    report = {
        "command": command_line("teacher_cache_conll.py", args),
        "model": teacher,
        "transfer_copies": args.transfer_copies,
        "transfer_file": args.transfer_file,
        "max_transfer_sentences": args.max_transfer_sentences,
        "runs": runs,
    }
    stem = "teacher_cache_conll" + (f"-transfer{args.transfer_copies}" if args.transfer_copies else "")
    if args.transfer_file:
        stem = f"teacher_cache_conll-{Path(args.transfer_file).stem}{args.max_transfer_sentences or ''}"
    write_results(args.output_dir, stem, report, table)
    print(table)


if __name__ == "__main__":
    main()
