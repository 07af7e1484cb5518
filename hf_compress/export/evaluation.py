"""Run an exported ONNX model through ONNX Runtime on labelled data, beside the PyTorch model it came from."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from transformers import EvalPrediction
from transformers.utils import logging

logger = logging.get_logger(__name__)

__all__ = ["compare_with_pytorch", "onnx_feeds", "onnx_session"]


def onnx_session(path: str | os.PathLike, threads: int | None = None):
    """An ONNX Runtime CPU session (``threads``: intra-op threads, default ORT's choice)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_feeds(input_names, encoded) -> dict[str, np.ndarray]:
    """The graph inputs ``input_names`` from a tokenizer's (or collator's) output, as int64 arrays: what the graph
    does not read is left out (DeBERTa-v3's tokenizer gives token types its graph has none of), a missing
    ``token_type_ids`` is all zeros (the model's default: segment 0)."""
    feeds = {}
    for name in input_names:
        if name in encoded:
            value = encoded[name]
            feeds[name] = (value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)).astype(np.int64)
        elif name == "token_type_ids":
            feeds[name] = np.zeros_like(np.asarray(encoded["input_ids"]), dtype=np.int64)
        else:
            raise ValueError(f"the ONNX graph reads {name!r}, which the inputs do not have ({sorted(encoded)})")
    return feeds


def _concat_padded(arrays: list[np.ndarray], fill: float) -> np.ndarray:
    """Concatenate per-batch arrays of shape (B, L, ...) along B, padding L to the longest with ``fill``."""
    length = max(a.shape[1] for a in arrays)
    widths = [[(0, 0), (0, length - a.shape[1]), *[(0, 0)] * (a.ndim - 2)] for a in arrays]
    return np.concatenate([np.pad(a, w, constant_values=fill) for a, w in zip(arrays, widths, strict=True)])


def compare_with_pytorch(
    model: nn.Module,
    onnx_path: str | os.PathLike,
    dataset,
    data_collator: Callable,
    compute_metrics: Callable | None,
    task: str,
    batch_size: int = 32,
    threads: int | None = None,
    reference: str = "PyTorch",
) -> dict[str, Any]:
    """Parity of an exported model with ``model`` and the task metric of each, on a tokenized labelled dataset.

    ``reference`` names what ``model`` computes in the report (e.g. PyTorch with fake quantization).

    Positions compared: tokens with a label (``labels != -100``) for token classification, every example for
    sequence classification. Returns ``parity`` (max |logit diff|, argmax agreement, positions), ``metrics``
    (``compute_metrics`` on ONNX Runtime's logits) and ``pytorch_metrics`` (the same on PyTorch's).
    """
    from tqdm.auto import tqdm

    session = onnx_session(onnx_path, threads)
    input_names = {i.name for i in session.get_inputs()}
    columns = [c for c in dataset.column_names if c in input_names or c == "labels"]
    loader = DataLoader(dataset.select_columns(columns), batch_size=batch_size, collate_fn=data_collator)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    onnx_logits, torch_logits, labels = [], [], []
    max_diff, agree, positions = 0.0, 0, 0
    try:
        for batch in tqdm(loader, desc="ONNX Runtime vs PyTorch", leave=False):
            feeds = onnx_feeds(input_names, batch)
            ort_out = session.run(["logits"], feeds)[0]
            with torch.no_grad():
                inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
                pt_out = model(**inputs).logits.float().cpu().numpy()
            label = batch["labels"].numpy()
            keep = label != -100 if task == "token-classification" else np.ones(label.shape, dtype=bool)
            diff = np.abs(ort_out - pt_out)[keep]
            max_diff = max(max_diff, float(diff.max())) if diff.size else max_diff
            agree += int((ort_out.argmax(-1) == pt_out.argmax(-1))[keep].sum())
            positions += int(keep.sum())
            onnx_logits.append(ort_out)
            torch_logits.append(pt_out)
            labels.append(label)
    finally:
        model.train(was_training)
    report: dict[str, Any] = {
        "parity": {
            "reference": reference,
            "max_abs_logit_diff": max_diff,
            "argmax_agreement": agree / max(positions, 1),
            "num_positions": positions,
        },
        "eval_examples": len(dataset),
    }
    if compute_metrics is not None:
        per_token = task == "token-classification"
        label_ids = _concat_padded(labels, -100) if per_token else np.concatenate(labels)
        for key, logits in (("metrics", onnx_logits), ("pytorch_metrics", torch_logits)):
            predictions = _concat_padded(logits, 0.0) if per_token else np.concatenate(logits)
            metrics = compute_metrics(EvalPrediction(predictions=predictions, label_ids=label_ids))
            report[key] = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
    return report
