"""Shared by the benchmarks: ONNX export through Optimum and side-by-side latency on real sentences."""

from __future__ import annotations

import os
from collections.abc import Callable

from hf_compress.latency import Runner, measure_latency, onnx_runner, torch_runner
from hf_compress.tasks import read_conll

__all__ = ["Runner", "measure_latency", "onnx_runner", "torch_runner"]


def sentences_from_conll(path: str, n: int) -> list[list[str]]:
    """The first ``n`` sentences of a CoNLL file, as word lists."""
    return read_conll(path)["tokens"][:n]


def export_onnx(model_dir: str, out_dir: str) -> str:
    """Export a token-classification model to ONNX fp32 with Optimum; returns the folder."""
    from optimum.onnxruntime import ORTModelForTokenClassification

    ORTModelForTokenClassification.from_pretrained(model_dir, export=True).save_pretrained(out_dir)
    return out_dir


def onnx_latency(
    models: dict[str, str],
    tokenizer,
    sentences: list[list[str]],
    threads: int = 2,
    batch_size: int = 32,
    warmup: int = 20,
) -> dict[str, dict[str, float]]:
    """:func:`measure_latency` of ONNX folders."""
    runners = {name: onnx_runner(folder, threads) for name, folder in models.items()}
    return measure_latency(runners, tokenizer, sentences, batch_size, warmup)


#: The latency columns of the benchmark tables (the keys :func:`measure_latency` reports).
LATENCY_COLUMNS: list[tuple[str, Callable[[str, dict], str]]] = [
    ("batch-1 median ms", lambda name, r: f"{r['batch1_median_ms']:.2f}"),
    ("batch-1 p90 ms", lambda name, r: f"{r['batch1_p90_ms']:.2f}"),
    ("batch-32 sentences/s", lambda name, r: f"{r['batch32_sentences_per_s']:.0f}"),
]


def markdown_table(columns: list[tuple[str, Callable[[str, dict], str]]], rows: dict[str, dict]) -> str:
    """A Markdown table: one row per ``rows`` entry, each column a header and a ``(name, row) -> cell`` function."""
    lines = ["| " + " | ".join(header for header, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(name, row) for _, cell in columns) + " |" for name, row in rows.items()]
    return "\n".join(lines)


def write_results(output_dir: str, stem: str, report: dict, table: str) -> None:
    """``stem.json`` (the whole report) and ``stem.md`` (the table and the command) in ``output_dir``."""
    import json

    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, f"{stem}.json"), "w") as handle:
        json.dump(report, handle, indent=2)
    with open(os.path.join(output_dir, f"{stem}.md"), "w") as handle:
        handle.write(f"{table}\n\nCommand: `{report['command']}`\n")
    print(table)
