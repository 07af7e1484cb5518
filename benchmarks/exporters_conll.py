"""Benchmark: the two ONNX exporters side by side, CoNLL-2003 dev: Optimum's and hf-compress's torch.onnx export.

The same fine-tuned model (``--teacher``, or trained here from ``--encoder``) is exported by every exporter this
stack has (both on the Optimum stack, torch.onnx alone without Optimum), each as ONNX fp32 and as fused + dynamic
int8 (``export.int8: dynamic``, ``fuse: true``, fp32 embedding tables so that only the graph differs). For each:
ONNX Runtime's fused operators (the export report's ``fused_operators``), parity with PyTorch, and, through
``hf-compress bench`` in one run, dev F1 from each model's own outputs, MB, batch-1 median/p90 and batch-32
throughput measured interleaved. Writes ``exporters_conll-transformers<version>.{json,md}``.

    python benchmarks/exporters_conll.py --train_file ../shared/data/conll2003/train.txt \\
        --validation_file ../shared/data/conll2003/valid.txt --teacher ../shared/models/minilm-l6-conll2003-teacher
"""

from __future__ import annotations

import argparse
import os

import transformers
from common import add_data_arguments, add_run_arguments, command_line, data_block, fine_tuned_model
from latency import LATENCY_COLUMNS, markdown_table, write_results
from transformers import AutoModelForTokenClassification, AutoTokenizer

from hf_compress import ExportConfig, export_model
from hf_compress.bench import BenchModel, run_bench
from hf_compress.compat import optimum_available
from hf_compress.recipe import DataConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    add_run_arguments(parser, "exporters_conll")
    args = parser.parse_args()
    model_path = fine_tuned_model(args)
    model = AutoModelForTokenClassification.from_pretrained(model_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    exporters = ["optimum", "torch"] if optimum_available() else ["torch"]
    candidates, exports = [], {}
    for exporter in exporters:
        for int8 in ("none", "dynamic"):
            name = f"{exporter} {'fp32' if int8 == 'none' else 'fused + dynamic int8'}"
            folder = os.path.join(args.work_dir, f"{exporter}-{int8}")
            config = ExportConfig(exporter=exporter, int8=int8, fuse=True, embeddings="fp32")
            report = export_model(model, tokenizer, folder, config, overwrite=True)
            exports[name] = {k: report.get(k) or {} for k in ("exporter", "opset", "fused_operators", "parity")}
            candidates.append(BenchModel(name, folder))
    data = DataConfig(**data_block(args))
    bench = run_bench(
        candidates,
        data,
        os.path.join(args.work_dir, "bench"),
        threads=args.threads,
        latency_sentences=args.latency_sentences,
    )
    rows = {name: {**facts, **bench["models"][name]} for name, facts in exports.items()}
    columns = [
        ("export", lambda name, r: name),
        ("exporter", lambda name, r: r["exporter"]),
        ("opset", lambda name, r: str(r["opset"])),
        ("fused operators", lambda name, r: ", ".join(f"{op} {n}" for op, n in sorted(r["fused_operators"].items()))),
        ("dev f1", lambda name, r: f"{100 * r['metric']:.2f}"),
        ("MB", lambda name, r: f"{r['size_mb']:.1f}"),
        *LATENCY_COLUMNS,
    ]
    report = {
        "command": command_line("exporters_conll.py", args),
        "transformers": transformers.__version__,
        "models": rows,
    }
    stem = f"exporters_conll-transformers{transformers.__version__}"
    write_results(args.output_dir, stem, report, markdown_table(columns, rows))


if __name__ == "__main__":
    main()
