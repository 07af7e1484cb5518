"""The ``onnx`` step of an export: a PyTorch model to ``model.onnx`` + ``config.json``, by one of two exporters.

* ``optimum``: Optimum's exporter (``optimum.exporters.onnx``), where it is installed (the transformers 4.57 stack:
  ``optimum-onnx`` requires ``transformers<4.58``);
* ``torch``: ``torch.onnx.export`` driven by hf-compress, with what Optimum's config for an encoder task gives: the
  same inputs (``input_ids``, ``attention_mask``, and ``token_type_ids`` where the model has token types), the
  output ``logits``, the dynamic axes ``batch_size`` / ``sequence_length`` and opset 18. It uses the
  TorchScript-based exporter (``dynamo=False``, as Optimum does) with eager attention: on that graph ONNX Runtime's
  transformer optimizer fuses ``Attention`` and the int8 routes find the linears' ``MatMul`` nodes by module name;
  the ``torch.export``-based exporter and ``sdpa`` attention give graphs where attention does not fuse.

``export.exporter: auto`` (the default) takes Optimum where it can be imported, else torch. Both write the same
folder layout and graph names, so fusion, the int8 routes and the evaluation that follow are the same.
"""

from __future__ import annotations

import inspect
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..compat import optimum_available, require_optimum, use_eager_attention

__all__ = ["DEFAULT_OPSET", "ONNX_EXPORTERS", "ONNX_FILE", "export_onnx", "onnx_input_names", "resolve_exporter"]

#: The file name of the ONNX model in an export folder (``ORTModelFor...from_pretrained(folder)`` finds it).
ONNX_FILE = "model.onnx"
#: The report every export folder holds (what was exported, parity, metrics and how they were decoded).
REPORT_FILE = "export_report.json"
#: Optimum's default opset for encoders, used by the torch exporter too.
DEFAULT_OPSET = 18
#: ``export.exporter`` values besides ``auto``.
ONNX_EXPORTERS = ("optimum", "torch")


def resolve_exporter(name: str = "auto") -> str:
    """The exporter ``export.exporter: name`` means here: ``auto`` is ``optimum`` when installed, else ``torch``;
    ``optimum`` without Optimum installed raises :class:`~hf_compress.compat.OptimumNotInstalledError`."""
    if name == "auto":
        return "optimum" if optimum_available() else "torch"
    if name not in ONNX_EXPORTERS:
        raise ValueError(f"unknown ONNX exporter {name!r}; allowed: auto, {', '.join(ONNX_EXPORTERS)}")
    if name == "optimum":
        require_optimum("export.exporter: optimum")
    return name


def onnx_input_names(model: nn.Module) -> list[str]:
    """The graph inputs Optimum gives an encoder: ``input_ids``, ``attention_mask``, and ``token_type_ids`` when the
    model's forward takes them and it has more than one token type (BERT, ELECTRA, ALBERT; not RoBERTa-likes, whose
    single type Optimum leaves out, nor DeBERTa-v3 with ``type_vocab_size: 0``)."""
    accepted = inspect.signature(model.forward).parameters
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in accepted and getattr(model.config, "type_vocab_size", 0) > 1:
        names.append("token_type_ids")
    return names


def _dummy_inputs(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """Two sequences of 16 tokens, the second padded: the mask path is traced as data, never skipped."""
    generator = torch.Generator().manual_seed(0)
    vocab = int(getattr(model.config, "vocab_size", 100))
    inputs = {"input_ids": torch.randint(0, vocab, (2, 16), generator=generator)}
    inputs["attention_mask"] = torch.ones(2, 16, dtype=torch.long)
    inputs["attention_mask"][1, 12:] = 0
    if "token_type_ids" in names:
        inputs["token_type_ids"] = torch.zeros(2, 16, dtype=torch.long)
    return inputs


def _export_with_torch(model: nn.Module, folder: Path, pipeline_tag: str, opset: int) -> None:
    if hasattr(model, "config"):
        use_eager_attention(model)  # the attention ONNX Runtime's optimizer fuses (module docstring)
    names = onnx_input_names(model)
    axes = {0: "batch_size", 1: "sequence_length"}
    logits_axes = axes if pipeline_tag == "token-classification" else {0: "batch_size"}
    with warnings.catch_warnings():
        # the TorchScript path is chosen on purpose (module docstring); tracing notes on shape arithmetic are expected
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*advanced indexing.*")
        torch.onnx.export(
            model,
            (),
            str(folder / ONNX_FILE),
            kwargs={**_dummy_inputs(model, names), "return_dict": False},
            input_names=names,
            output_names=["logits"],
            dynamic_axes={**{name: axes for name in names}, "logits": logits_axes},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    model.config.save_pretrained(folder)


def export_onnx(
    model: nn.Module, folder: str | os.PathLike, pipeline_tag: str, opset: int | None = None, exporter: str = "auto"
) -> dict[str, Any]:
    """Write ``model`` (a plain transformers model in eval mode, on the CPU) as ``folder/model.onnx`` with its
    ``config.json``; return what the export report says of it (exporter, opset)."""
    name = resolve_exporter(exporter)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        if name == "optimum":
            from optimum.exporters.onnx import onnx_export_from_model

            onnx_export_from_model(model, folder, task=pipeline_tag, opset=opset, do_validation=False)
        else:
            with torch.no_grad():
                _export_with_torch(model, folder, pipeline_tag, opset or DEFAULT_OPSET)
    except (ValueError, KeyError, NotImplementedError, RuntimeError, torch.onnx.errors.OnnxExporterError) as error:
        raise ValueError(
            f"the {name} exporter cannot export {type(model).__name__} for {pipeline_tag}: {error}"
        ) from error
    import onnx

    written = onnx.load(str(folder / ONNX_FILE), load_external_data=False)
    used = next((o.version for o in written.opset_import if o.domain in ("", "ai.onnx")), opset)
    return {"exporter": "optimum" if name == "optimum" else f"torch.onnx {torch.__version__}", "opset": used}
