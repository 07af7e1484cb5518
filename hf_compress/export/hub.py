"""The model card of an export folder, and its upload to the Hugging Face Hub.

The card (``README.md``) carries Hub metadata (``library_name: optimum``, the pipeline tag, ``onnx``/``int8`` tags
and each technique's, the base model when it is a hub id) and the export report: size, parity with PyTorch, the
task metric computed through ONNX Runtime, each technique's section and the recipe. :func:`push_to_hub` uploads
the folder so that ``ORTModelFor...from_pretrained(repo_id)`` works for whoever downloads it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml
from transformers.utils import logging

from ..files import TOKENIZER_FILES, atomic_write_text
from ..int8_routes import Int8Route, resolve_int8_route
from ..tables import markdown_table
from ..tasks import get_task
from ..technique import get_technique

logger = logging.get_logger(__name__)

__all__ = ["EXPORT_FILES", "model_card", "push_to_hub", "write_model_card"]

#: Everything an export folder may hold; ``push_to_hub`` uploads these and nothing else (no training state, no
#: pickles, no tokens or dotfiles).
EXPORT_FILES = frozenset(
    {
        "model.onnx",
        "model.onnx_data",
        "config.json",
        "ort_config.json",
        "export_report.json",
        "export_report.md",
        "recipe.yaml",
        "README.md",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.txt",
        "vocab.json",
        "merges.txt",
        "spiece.model",
        "sentencepiece.bpe.model",
        "tokenizer.model",
    }
)


def _is_hub_id(name: str | None) -> bool:
    """``user/model`` or ``model``, not a path that exists here or looks like one."""
    if not name or os.path.exists(name) or name.startswith((".", "/", "~")) or name.startswith("package:"):
        return False
    return name.count("/") <= 1 and " " not in name


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _techniques_of(report: dict[str, Any]) -> list[tuple[type, dict[str, Any]]]:
    """The techniques of an export report (``report["techniques"]``) with their entries; one not registered in
    this process (a plugin not installed here) adds nothing to the card."""
    used = []
    for name, entry in (report.get("techniques") or {}).items():
        technique = get_technique(name)
        if technique is None:
            logger.warning(f"the export report names the technique '{name}', unknown here: the card omits it")
        else:
            used.append((technique, entry or {}))
    return used


def model_card(
    report: dict[str, Any],
    *,
    repo_id: str | None = None,
    license: str = "apache-2.0",
    route: Int8Route | None = None,
) -> str:
    """The text of a Hub model card (``README.md``) for an export folder described by ``report``. ``route``: the
    int8 route the export ran (default: the one the report names, for a card written from a saved folder)."""
    from huggingface_hub import ModelCardData

    task = report["task"]
    if route is None and report.get("int8"):
        route = resolve_int8_route(report["int8"])
    tags = ["onnx", "optimum", "hf-compress", task]
    if route is not None:
        tags += route.card_tags
    used = _techniques_of(report)
    for technique, entry in used:
        tags += technique.export_side.card_tags(entry)
    base_model = report.get("base_model")
    data = ModelCardData(
        library_name="optimum",
        license=license,
        pipeline_tag=task,
        tags=tags,
        base_model=base_model if _is_hub_id(base_model) else None,
    )
    where = repo_id or "path/to/this/folder"
    ort_class, onnx_class = get_task(task).ort_model_class, get_task(task).inference_class
    kind = route.description if route is not None else "fp32"
    lines = [
        f"# {report.get('model_type', 'transformer')} for {task}, ONNX {kind}",
        "",
        f"An ONNX model ({kind}) exported by hf-compress ({report.get('exporter', 'ONNX exporter')}), with its "
        "tokenizer and config. The figures below were measured on the exported model itself, through ONNX Runtime.",
        "",
        "## How to use",
        "",
        "With Optimum (`pip install optimum-onnx[onnxruntime]`, transformers 4.57):",
        "",
        "```python",
        f"from optimum.onnxruntime import {ort_class}",
        "from transformers import AutoTokenizer, pipeline",
        "",
        f'model = {ort_class}.from_pretrained("{where}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{where}")',
        f'classifier = pipeline("{task}", model=model, tokenizer=tokenizer)',
        'print(classifier("George Washington went to Washington."))',
        "```",
        "",
        "With ONNX Runtime alone (any transformers, `pip install hf-compress`):",
        "",
        "```python",
        f"from hf_compress.inference import {onnx_class}",
        "",
        f'classifier = {onnx_class}("{where}")',
        'print(classifier("George Washington went to Washington."))',
        "```",
        "",
        "## Export report",
        "",
    ]
    parity = report.get("parity") or {}
    agreement = parity.get("argmax_agreement")
    diff = parity.get("max_abs_logit_diff")
    row = (
        report.get("onnx_file", "model.onnx"),
        f"{report['size_mb']:.1f}",
        f"{report.get('parameters', 0) / 1e6:.1f}M",
        "-" if diff is None else f"{diff:.3g}",
        "-" if agreement is None else f"{100 * agreement:.2f}%",
    )
    header = ("file", "size (MB)", "parameters", "max abs logit diff vs PyTorch", "argmax agreement")
    lines.append(markdown_table(header, [row]))
    metrics, torch_metrics = report.get("metrics") or {}, report.get("pytorch_metrics") or {}
    if metrics:
        lines += [
            "",
            f"On {report.get('eval_examples', '?')} evaluation examples "
            f"(reference: {parity.get('reference', 'PyTorch')}):",
            "",
            markdown_table(
                ("metric", "ONNX Runtime", "PyTorch"),
                [(k, _percent(v), _percent(torch_metrics.get(k))) for k, v in metrics.items()],
            ),
        ]
    for technique, entry in used:
        section = technique.export_side.card_section(entry)
        if section:
            lines += ["", *section]
    if report.get("recipe"):
        lines += ["", "## Recipe", "", "```yaml", yaml.safe_dump(report["recipe"], sort_keys=False).rstrip(), "```"]
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"


def write_model_card(folder: str | os.PathLike, report: dict[str, Any] | None = None, **kwargs: Any) -> Path:
    """Write ``README.md`` in an export folder from ``report`` (default: its ``export_report.json``)."""
    folder = Path(folder)
    if report is None:
        path = folder / "export_report.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no export report to write a model card from (run an export first)")
        report = json.loads(path.read_text())
    return atomic_write_text(folder / "README.md", model_card(report, **kwargs))


def push_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    commit_message: str | None = None,
    revision: str | None = None,
) -> str:
    """Upload an export folder to the Hub model repository ``repo_id`` (created if needed); return the commit URL."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such export folder")
    names = {p.name for p in folder.iterdir()}
    if "README.md" not in names and "export_report.json" in names:
        write_model_card(folder, repo_id=repo_id)
        names.add("README.md")
    missing = []
    if not any(name.endswith(".onnx") for name in names):
        missing.append("an .onnx model")
    if "config.json" not in names:
        missing.append("config.json")
    if not names.intersection(TOKENIZER_FILES):
        missing.append("a tokenizer (tokenizer.json or vocab.txt)")
    if "README.md" not in names:
        missing.append("README.md (the model card; export_report.json would let it be written)")
    if missing:
        raise ValueError(f"{folder} is not a complete export folder: missing {', '.join(missing)}")
    upload = sorted(name for name in names if name in EXPORT_FILES and (folder / name).is_file())
    skipped = sorted(names - set(upload))
    if skipped:
        logger.warning(f"not uploading what is not part of an export: {', '.join(skipped)}")
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    logger.warning(f"uploading {folder} ({', '.join(upload)}) to {repo_id}")
    commit = api.upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        repo_type="model",
        commit_message=commit_message or "Upload compressed ONNX model (hf-compress)",
        revision=revision,
        allow_patterns=upload,
    )
    return getattr(commit, "commit_url", None) or f"https://huggingface.co/{repo_id}"
