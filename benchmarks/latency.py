"""Shared by the benchmarks: ONNX export through Optimum and side-by-side latency on real sentences."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np
import torch

from hf_compress.tasks import read_conll

Runner = Callable[[dict], object]


def sentences_from_conll(path: str, n: int) -> list[list[str]]:
    """The first ``n`` sentences of a CoNLL file, as word lists."""
    return read_conll(path)["tokens"][:n]


def export_onnx(model_dir: str, out_dir: str) -> str:
    """Export a token-classification model to ONNX fp32 with Optimum; returns the folder."""
    from optimum.onnxruntime import ORTModelForTokenClassification

    ORTModelForTokenClassification.from_pretrained(model_dir, export=True).save_pretrained(out_dir)
    return out_dir


def onnx_runner(folder: str, threads: int) -> Runner:
    """Runs ``folder/model.onnx`` with ONNX Runtime on ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # no spin-waiting after a run: idle sessions must not take the cores from the one being timed
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(os.path.join(folder, "model.onnx"), options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}

    def run(encoded: dict) -> object:
        return session.run(None, {k: np.asarray(v, dtype=np.int64) for k, v in encoded.items() if k in names})

    return run


def torch_runner(model: torch.nn.Module) -> Runner:
    """Runs a PyTorch model (eval mode, no grad) on numpy inputs."""
    model.eval()

    def run(encoded: dict) -> object:
        with torch.inference_mode():
            return model(**{k: torch.from_numpy(np.asarray(v, dtype=np.int64)) for k, v in encoded.items()})

    return run


def measure_latency(
    runners: dict[str, Runner], tokenizer, sentences: list[list[str]], batch_size: int = 32, warmup: int = 20
) -> dict[str, dict[str, float]]:
    """Batch-1 median / p90 latency (ms) and batch-``batch_size`` throughput (sentences/s) of each runner.

    Runners are timed interleaved, sentence by sentence and batch by batch, so that machine noise falls on all of
    them alike. ``tokenizer`` is one for all runners, or one per runner name (models with trimmed vocabularies).
    """
    tokenizers = tokenizer if isinstance(tokenizer, dict) else dict.fromkeys(runners, tokenizer)
    encoded_by = {}
    for name, tok in tokenizers.items():
        singles = [
            dict(tok(words, is_split_into_words=True, truncation=True, max_length=128, return_tensors="np"))
            for words in sentences
        ]
        batches = [
            dict(
                tok(
                    sentences[i : i + batch_size],
                    is_split_into_words=True,
                    truncation=True,
                    max_length=128,
                    padding=True,
                    return_tensors="np",
                )
            )
            for i in range(0, len(sentences), batch_size)
        ]
        encoded_by[name] = (singles, batches)
    for name, run in runners.items():
        for encoded in encoded_by[name][0][:warmup]:
            run(encoded)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for index in range(len(sentences)):
        for name, run in runners.items():
            encoded = encoded_by[name][0][index]
            start = time.perf_counter()
            run(encoded)
            times[name].append(time.perf_counter() - start)
    batch_seconds = dict.fromkeys(runners, 0.0)
    for index in range(len(encoded_by[next(iter(runners))][1])):
        for name, run in runners.items():
            encoded = encoded_by[name][1][index]
            start = time.perf_counter()
            run(encoded)
            batch_seconds[name] += time.perf_counter() - start
    return {
        name: {
            "batch1_median_ms": 1000 * float(np.median(times[name])),
            "batch1_p90_ms": 1000 * float(np.percentile(times[name], 90)),
            f"batch{batch_size}_sentences_per_s": len(sentences) / batch_seconds[name],
        }
        for name in runners
    }


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
