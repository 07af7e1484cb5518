"""Benchmark: the word embeddings of an int8 export, CoNLL-2003 dev: dense, int8/int4 tables, trimmed, factorized.

For the fine-tuned teacher (``--teacher``, or trained here from ``--encoder``) and for a student distilled from
it (``--student_layers``, logits + hidden states, ``--student_epochs``), each exported to ONNX int8 by dynamic
quantization (the MatMuls of the layers int8 per channel), side by side in one run:

* dense, fp32 tables: only the layers int8;
* dense, int8 tables: every embedding table int8 per row (``export.embeddings: int8``, the default);
* dense, int4 table: the word-embedding table 4-bit in blocks of 64 values, positions int8 per row
  (``export.embeddings: int4``);
* trimmed to the corpus, int4 table: the vocabulary trimmed to the pieces of the training split (plus the specials
  and the alphabet; ``hf_compress.vocabulary.trim_vocabulary``), so every training sentence tokenizes as before;
* trimmed to the corpus and the first ids, int8 / int4 table: also the pieces text can produce among the first
  ``--keep_first_ids`` ids (the commonest pieces of a BERT vocabulary);
* factorized (rank r), int8 table: the table replaced by its rank-r SVD factors (``V x r`` int8 per row, then
  ``r x H``), for each of ``--embedding_ranks``, without fine-tuning afterwards.

The ONNX fp32 export of the dense model is the speed reference. For each: dev F1 computed from ONNX Runtime's
outputs (each model with its own tokenizer), ONNX file MB, batch-1 median/p90 and batch-32 throughput measured
interleaved. Writes ``embeddings_conll.{json,md}``. The student is trained once, with its full vocabulary: trimming
before or after training gives the same rows for the training pieces (their tokenization and gradients are the
same; the unused rows never enter the loss). Not covered: fine-tuning after factorization.

    python benchmarks/embeddings_conll.py --train_file ../shared/data/conll2003/train.txt \\
        --validation_file ../shared/data/conll2003/valid.txt --teacher ../shared/models/minilm-l6-conll2003-teacher
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from common import add_data_arguments, add_run_arguments, command_line, data_block, dev_sentences, fine_tuned_model
from latency import LATENCY_COLUMNS, markdown_table, measure_latency, onnx_runner, write_results
from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer

from hf_compress import Recipe, run_recipe
from hf_compress.export import export as export_folder
from hf_compress.pipeline import default_training_arguments
from hf_compress.tasks import get_task
from hf_compress.vocabulary import VocabularyConfig, trim_vocabulary


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    parser.add_argument("--min_count", type=int, default=1, help="keep pieces the training split uses this often")
    parser.add_argument("--keep_first_ids", type=int, default=22000, help="also keep the reachable ids below this")
    parser.add_argument("--embedding_ranks", default="128,192", help="ranks of the factorized tables")
    parser.add_argument("--student_layers", default="0,2,4", help="teacher layers of the distilled student ('' none)")
    parser.add_argument("--student_epochs", type=float, default=3.0, help="distillation epochs of the student")
    add_run_arguments(parser, "embeddings_conll")
    return parser.parse_args()


def trimmed_model(args: argparse.Namespace, source: str, label: str, keep_first_ids: int | None) -> tuple[str, dict]:
    """``source`` with its vocabulary trimmed to the training split (and the reachable ids below
    ``keep_first_ids``), saved in ``work_dir/<label>-trimmed[-<keep_first_ids>]``."""
    out = os.path.join(args.work_dir, f"{label}-trimmed" + (f"-{keep_first_ids}" if keep_first_ids else ""))
    recipe = Recipe.from_dict({"data": data_block(args)})
    task = get_task("ner")
    raw = task.load_raw(recipe.data)
    model = AutoModelForTokenClassification.from_pretrained(source)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model, tokenizer, report = trim_vocabulary(
        model,
        tokenizer,
        raw["train"]["tokens"],
        VocabularyConfig(min_count=args.min_count, keep_first_ids=keep_first_ids),
        validation=raw["validation"]["tokens"],
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out, report


def factorized_model(args: argparse.Namespace, source: str, label: str, rank: int) -> tuple[str, dict]:
    """``source`` with its word embeddings factorized at ``rank``, saved in ``work_dir/<label>-factorized-<rank>``."""
    from hf_compress.lowrank.embeddings import factorize_embeddings

    out = os.path.join(args.work_dir, f"{label}-factorized-{rank}")
    model = AutoModelForTokenClassification.from_pretrained(source)
    report = factorize_embeddings(model, rank=rank)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    return out, report


def distilled_student(args: argparse.Namespace, teacher: str) -> str:
    """A student of the teacher's ``--student_layers``, distilled (logits, hidden states) ``--student_epochs``."""
    training = {
        "num_train_epochs": args.student_epochs,
        "learning_rate": 1e-4,
        "warmup_ratio": 0.06,
        "weight_decay": 0.01,
        "per_device_train_batch_size": 32,
        "per_device_eval_batch_size": 64,
        "seed": 42,
        "save_strategy": "no",
        "eval_strategy": "no",
        "logging_steps": 100,
    }
    layers = [int(x) for x in args.student_layers.split(",")]
    recipe = Recipe.from_dict(
        {
            "model": {"teacher": teacher, "student": {"from_teacher_layers": layers}},
            "data": data_block(args),
            "distillation": {"temperature": 2.0, "alpha": 0.5, "hidden_states": {"weight": 1.0}},
            "training": training,
        }
    )
    out = os.path.join(args.work_dir, "student")
    results = run_recipe(recipe, default_training_arguments(out, training))
    return results[-1].path


def variants_of(args: argparse.Namespace, label: str, source: str) -> tuple[dict, dict]:
    """The int8 exports to make of ``source``: (model folder, route, table) by row name; and what was done."""
    trimmed, trim_report = trimmed_model(args, source, label, None)
    wider, wider_report = trimmed_model(args, source, label, args.keep_first_ids)
    print(f"{label} trimmed: {trim_report}; with the first ids: {wider_report}", flush=True)
    first = f"corpus + first {args.keep_first_ids:,} ids"
    variants = {
        f"{label}: int8, dense, fp32 tables": (source, "dynamic", "fp32"),
        f"{label}: int8, dense, int8 tables": (source, "dynamic", "int8"),
        f"{label}: int8, dense, int4 table": (source, "dynamic", "int4"),
        f"{label}: int8, trimmed to corpus, int4 table": (trimmed, "dynamic", "int4"),
        f"{label}: int8, trimmed to {first}, int8 tables": (wider, "dynamic", "int8"),
        f"{label}: int8, trimmed to {first}, int4 table": (wider, "dynamic", "int4"),
    }
    factorizations = {}
    for rank in [int(r) for r in args.embedding_ranks.split(",") if r]:
        folder, factorizations[rank] = factorized_model(args, source, label, rank)
        variants[f"{label}: int8, factorized (rank {rank}), int8 table"] = (folder, "dynamic", "int8")
    return variants, {"trimming": trim_report, "trimming_first_ids": wider_report, "factorizations": factorizations}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    started = time.time()
    dense = fine_tuned_model(args)
    variants = {"teacher: ONNX fp32 (reference)": (dense, "none", "fp32")}
    done = {}
    teacher_variants, done["teacher"] = variants_of(args, "teacher", dense)
    variants.update(teacher_variants)
    if args.student_layers:
        student = distilled_student(args, dense)
        student_variants, done["student"] = variants_of(args, "student", student)
        variants.update(student_variants)
    folders, rows, tokenizers = {}, {}, {}
    for name, (model_dir, route, embeddings) in variants.items():
        folders[name] = os.path.join(args.work_dir, "".join(c if c.isalnum() else "-" for c in name).strip("-"))
        recipe = Recipe.from_dict({"data": data_block(args), "export": {"embeddings": embeddings}})
        report = export_folder(model_dir, folders[name], recipe=recipe, int8=route, overwrite=True)
        tokenizers[name] = AutoTokenizer.from_pretrained(folders[name])
        rows[name] = {
            "size_mb": report["size_mb"],
            "dev_f1": report["metrics"]["f1"],
            "pieces": len(tokenizers[name]),
            "layers": AutoConfig.from_pretrained(model_dir).num_hidden_layers,
            "embeddings": report.get("embeddings", "fp32"),
            "parity": report["parity"],
        }
        print(f"{name}: {report['size_mb']:.1f} MB, dev F1 {100 * report['metrics']['f1']:.2f}", flush=True)
    runners = {name: onnx_runner(folder, args.threads) for name, folder in folders.items()}
    latency = measure_latency(runners, tokenizers, dev_sentences(args, args.latency_sentences))
    reference = latency["teacher: ONNX fp32 (reference)"]
    for name, stats in latency.items():
        rows[name].update(stats)
        rows[name]["batch1_speedup"] = reference["batch1_median_ms"] / stats["batch1_median_ms"]
        rows[name]["batch32_speedup"] = stats["batch32_sentences_per_s"] / reference["batch32_sentences_per_s"]
    report = {
        "command": command_line("embeddings_conll.py", args),
        "model": dense,
        "threads": args.threads,
        "compression": done,
        "runs": rows,
        "total_seconds": time.time() - started,
    }
    table = markdown_table(
        [
            ("model", lambda name, r: name),
            ("layers", lambda name, r: str(r["layers"])),
            ("pieces", lambda name, r: f"{r['pieces']:,}"),
            ("ONNX MB", lambda name, r: f"{r['size_mb']:.1f}"),
            ("dev F1 (ONNX Runtime)", lambda name, r: f"{100 * r['dev_f1']:.2f}"),
            *LATENCY_COLUMNS,
            ("batch-1 speed-up", lambda name, r: f"{r['batch1_speedup']:.2f}x"),
            ("batch-32 speed-up", lambda name, r: f"{r['batch32_speedup']:.2f}x"),
        ],
        rows,
    )
    write_results(args.output_dir, "embeddings_conll", report, table)
    print(table)


if __name__ == "__main__":
    main()
