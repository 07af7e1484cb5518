"""Shared by the benchmarks: ONNX export through Optimum and side-by-side ONNX Runtime latency on real sentences."""

from __future__ import annotations

import os
import time

import numpy as np

from hf_compress.tasks import read_conll


def sentences_from_conll(path: str, n: int) -> list[list[str]]:
    """The first ``n`` sentences of a CoNLL file, as word lists."""
    return read_conll(path)["tokens"][:n]


def export_onnx(model_dir: str, out_dir: str) -> str:
    """Export a token-classification model to ONNX fp32 with Optimum; returns the folder."""
    from optimum.onnxruntime import ORTModelForTokenClassification

    ORTModelForTokenClassification.from_pretrained(model_dir, export=True).save_pretrained(out_dir)
    return out_dir


def _session(folder: str, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(os.path.join(folder, "model.onnx"), options, providers=["CPUExecutionProvider"])


def _feeds(session, encoded: dict) -> dict:
    names = {i.name for i in session.get_inputs()}
    return {k: np.asarray(v, dtype=np.int64) for k, v in encoded.items() if k in names}


def onnx_latency(
    models: dict[str, str],
    tokenizer,
    sentences: list[list[str]],
    threads: int = 2,
    batch_size: int = 32,
    warmup: int = 20,
) -> dict[str, dict[str, float]]:
    """Batch-1 median / p90 latency (ms) and batch-``batch_size`` throughput (sentences/s) of each ONNX model.

    Models are timed interleaved, sentence by sentence, so that machine noise falls on all of them alike.
    """
    sessions = {name: _session(folder, threads) for name, folder in models.items()}
    singles = [
        tokenizer(words, is_split_into_words=True, truncation=True, max_length=128, return_tensors="np")
        for words in sentences
    ]
    batches = [
        tokenizer(
            sentences[i : i + batch_size],
            is_split_into_words=True,
            truncation=True,
            max_length=128,
            padding=True,
            return_tensors="np",
        )
        for i in range(0, len(sentences), batch_size)
    ]
    for session in sessions.values():
        for encoded in singles[:warmup]:
            session.run(None, _feeds(session, encoded))
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for encoded in singles:
        for name, session in sessions.items():
            feeds = _feeds(session, encoded)
            start = time.perf_counter()
            session.run(None, feeds)
            times[name].append(time.perf_counter() - start)
    batch_seconds = {name: 0.0 for name in sessions}
    for encoded in batches:
        for name, session in sessions.items():
            feeds = _feeds(session, encoded)
            start = time.perf_counter()
            session.run(None, feeds)
            batch_seconds[name] += time.perf_counter() - start
    return {
        name: {
            "batch1_median_ms": 1000 * float(np.median(times[name])),
            "batch1_p90_ms": 1000 * float(np.percentile(times[name], 90)),
            f"batch{batch_size}_sentences_per_s": len(sentences) / batch_seconds[name],
        }
        for name in sessions
    }
