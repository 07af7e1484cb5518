"""Benchmark: int8 by QAT vs post-training quantization, on CoNLL-2003 dev, every number from the exported model.

Side by side in one run, from one fine-tuned fp32 model (``--teacher``, or trained here from ``--encoder``):

* PyTorch fp32 (the model as given);
* ONNX fp32 (Optimum export);
* Optimum dynamic int8 and static int8 (calibrated on ``--calibration_samples`` training sentences);
* QAT int8: the fp32 model fine-tuned further with fake quantization (and distillation from itself) for
  ``--qat_epochs``, exported with the ranges it learned.

Dev F1 of each ONNX model is computed from ONNX Runtime's own outputs; latency is measured interleaved (batch 1
median and p90 over real dev sentences, batch-32 throughput) with 2 threads. Writes ``quantize_conll.{json,md}``.

    python benchmarks/quantize_conll.py --train_file ../shared/data/conll2003/train.txt \\
        --validation_file ../shared/data/conll2003/valid.txt --teacher ../shared/models/minilm-l6-conll2003-teacher
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from common import add_data_arguments, add_run_arguments, command_line, data_block, dev_sentences, fine_tuned_model
from latency import LATENCY_COLUMNS, markdown_table, measure_latency, onnx_runner, torch_runner, write_results
from transformers import AutoModelForTokenClassification, AutoTokenizer

from hf_compress import Recipe, run_recipe
from hf_compress.export import export as export_folder
from hf_compress.pipeline import default_training_arguments


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    parser.add_argument("--qat_epochs", type=float, default=1.0)
    parser.add_argument("--qat_learning_rate", type=float, default=2e-5)
    parser.add_argument("--freeze_fraction", type=float, default=0.8, help="observers freeze at this part of QAT")
    parser.add_argument("--calibration_samples", type=int, default=128)
    parser.add_argument("--calibration_method", default="minmax", choices=["minmax", "percentile", "entropy"])
    parser.add_argument(
        "--latency_only",
        action="store_true",
        help="re-time the models of an earlier run (its JSON in output_dir, its models in work_dir), keeping its F1",
    )
    add_run_arguments(parser, "quantize_conll")
    return parser.parse_args()


FOLDERS = {  # model name -> folder under work_dir
    "ONNX fp32": "onnx-none",
    "ONNX int8 dynamic": "onnx-dynamic",
    "ONNX int8 static": "onnx-static",
    "ONNX int8 QAT": os.path.join("qat", "onnx-int8-qat"),
}


def time_models(args: argparse.Namespace, fp32: str, rows: dict[str, dict]) -> None:
    """Interleaved latency of PyTorch fp32 and the four ONNX models, written into ``rows`` with the speed-ups."""
    tokenizer = AutoTokenizer.from_pretrained(fp32)
    model = AutoModelForTokenClassification.from_pretrained(fp32)
    runners = {"PyTorch fp32": torch_runner(model)}
    runners.update({name: onnx_runner(os.path.join(args.work_dir, f), args.threads) for name, f in FOLDERS.items()})
    latency = measure_latency(runners, tokenizer, dev_sentences(args, args.latency_sentences))
    for name, stats in latency.items():
        rows[name].update(stats)
    onnx_fp32 = rows["ONNX fp32"]["batch1_median_ms"]
    for row in rows.values():
        row["batch1_speedup_vs_onnx_fp32"] = onnx_fp32 / row["batch1_median_ms"]


def write_table(args: argparse.Namespace, report: dict) -> None:
    table = markdown_table(
        [
            ("model", lambda name, r: name),
            ("size MB", lambda name, r: f"{r['size_mb']:.1f}"),
            ("dev F1", lambda name, r: f"{100 * r['dev_f1']:.2f}"),
            *LATENCY_COLUMNS,
            ("batch-1 speed-up vs ONNX fp32", lambda name, r: f"{r['batch1_speedup_vs_onnx_fp32']:.2f}x"),
        ],
        report["runs"],
    )
    write_results(args.output_dir, "quantize_conll", report, table)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.latency_only:
        with open(os.path.join(args.output_dir, "quantize_conll.json")) as handle:
            report = json.load(handle)
        report["latency_command"] = command_line("quantize_conll.py", args)
        time_models(args, args.teacher or report["fp32_model"], report["runs"])
        write_table(args, report)
        return
    started = time.time()
    fp32 = fine_tuned_model(args)
    data_only = Recipe.from_dict(
        {
            "data": data_block(args),
            "export": {"calibration": {"method": args.calibration_method, "num_samples": args.calibration_samples}},
        }
    )
    folders, reports = {}, {}
    for route in ("none", "dynamic", "static"):
        name = {"none": "ONNX fp32", "dynamic": "ONNX int8 dynamic", "static": "ONNX int8 static"}[route]
        folders[name] = os.path.join(args.work_dir, FOLDERS[name])
        reports[name] = export_folder(fp32, folders[name], recipe=data_only, int8=route)
        print(f"{name}: dev F1 {100 * reports[name]['metrics']['f1']:.2f}")
    # QAT: fine-tune the fp32 model with fake quantization, distilling from itself, then export with its ranges
    qat_dir = os.path.join(args.work_dir, "qat")
    training = {
        "num_train_epochs": args.qat_epochs,
        "learning_rate": args.qat_learning_rate,
        "warmup_ratio": 0.0,
        "per_device_train_batch_size": 32,
        "per_device_eval_batch_size": 64,
        "seed": 42,
        "save_strategy": "no",
        "eval_strategy": "no",
        "logging_steps": 50,
    }
    recipe = Recipe.from_dict(
        {
            "model": {"teacher": fp32, "student": fp32},
            "data": data_block(args),
            "distillation": {"temperature": 2.0, "alpha": 0.5},
            "quantization": {"start_epoch": 0.0, "freeze_observers_epoch": args.freeze_fraction * args.qat_epochs},
            "export": {"int8": "qat"},
            "training": training,
        }
    )
    qat_started = time.time()
    results = run_recipe(recipe, default_training_arguments(qat_dir, training))
    qat_seconds = time.time() - qat_started
    folders["ONNX int8 QAT"] = os.path.join(qat_dir, "onnx-int8-qat")
    with open(os.path.join(folders["ONNX int8 QAT"], "export_report.json")) as handle:
        reports["ONNX int8 QAT"] = json.load(handle)
    print(f"ONNX int8 QAT: dev F1 {100 * reports['ONNX int8 QAT']['metrics']['f1']:.2f}")

    weights = os.path.join(fp32, "model.safetensors")
    rows = {
        "PyTorch fp32": {
            "size_mb": os.path.getsize(weights) / 1e6,
            "dev_f1": reports["ONNX fp32"]["pytorch_metrics"]["f1"],
        }
    }
    for name, report in reports.items():
        rows[name] = {"size_mb": report["size_mb"], "dev_f1": report["metrics"]["f1"], "parity": report["parity"]}
    rows["ONNX int8 QAT"]["qat_pytorch_fake_quant_f1"] = reports["ONNX int8 QAT"]["pytorch_metrics"]["f1"]
    for name in ("ONNX int8 dynamic", "ONNX int8 static", "ONNX int8 QAT"):
        rows[name].update({k: reports[name].get(k) for k in ("int8_kernel", "reduce_range", "weight_levels")})
    time_models(args, fp32, rows)
    command = command_line("quantize_conll.py", args)
    report = {
        "command": command,
        "fp32_model": fp32,
        "threads": args.threads,
        "qat_train_seconds": qat_seconds,
        "qat_student_dev_f1_pytorch": results[-2].metrics.get("f1") if len(results) > 1 else None,
        "total_seconds": time.time() - started,
        "runs": rows,
    }
    write_table(args, report)


if __name__ == "__main__":
    main()
