"""Latency of models on real sentences: batch-1 median / p90 and batched throughput, timed side by side."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np
import torch

__all__ = ["Runner", "measure_latency", "onnx_runner", "torch_runner"]

#: Runs a model on one tokenized batch (numpy arrays by input name).
Runner = Callable[[dict], object]


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
        feeds = {k: np.asarray(v, dtype=np.int64) for k, v in encoded.items() if k in names}
        if "token_type_ids" in names and "token_type_ids" not in feeds:  # the model's default: segment 0
            feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
        return session.run(None, feeds)

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
    them alike. ``sentences`` are word lists (token classification) or strings. ``tokenizer`` is one for all
    runners, or one per runner name (models with trimmed vocabularies).
    """
    from tqdm.auto import tqdm

    tokenizers = tokenizer if isinstance(tokenizer, dict) else dict.fromkeys(runners, tokenizer)
    split = bool(sentences) and not isinstance(sentences[0], str)
    encoded_by = {}
    for name, tok in tokenizers.items():
        singles = [
            dict(tok(words, is_split_into_words=split, truncation=True, max_length=128, return_tensors="np"))
            for words in sentences
        ]
        batches = [
            dict(
                tok(
                    sentences[i : i + batch_size],
                    is_split_into_words=split,
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
    for index in tqdm(range(len(sentences)), desc="batch-1 latency", leave=False):
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
