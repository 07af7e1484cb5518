"""``hf-compress bench``: compressed models beside what a user gets from their teacher without hf-compress.

Each candidate (a PyTorch model folder, or an ONNX export folder with ``model.onnx``) and each reference built from
``--teacher`` (ONNX fp32; dynamic int8; O2 fusions + dynamic int8: Optimum's own where Optimum is installed, the same
ONNX Runtime calls otherwise, :func:`reference_models`) is measured the same way, each with its own tokenizer and
labels: the task metric computed from the model's own outputs on the eval set, the file size, batch-1 median / p90
latency and batch-32 throughput (timed interleaved, sentence by sentence, so that machine noise falls on every model
alike; ONNX Runtime without spin-waiting), and the ratios to each reference. Writes ``bench.json``, ``bench.md``
and, with matplotlib installed (``pip install hf-compress[plot]``), ``bench.png``: latency against the metric,
marker area proportional to MB, the Pareto frontier drawn and the references marked."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import AutoConfig, AutoTokenizer, EvalPrediction
from transformers.utils import logging

from .compat import optimum_available
from .configs import DataConfig
from .export.int8 import quiet_quantization_advice
from .export.to_onnx import ONNX_FILE, export_onnx
from .files import atomic_write_json, atomic_write_text
from .latency import Runner, measure_latency, onnx_runner, torch_runner
from .tables import markdown_table
from .tasks import get_task, task_of_model_class

logger = logging.get_logger(__name__)

__all__ = ["BenchModel", "pareto_frontier", "reference_models", "run_bench"]


@dataclass
class BenchModel:
    """A model to measure: ``path`` is a PyTorch model folder (or hub id) or an ONNX export folder."""

    name: str
    path: str
    reference: bool = False
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def is_onnx(self) -> bool:
        return os.path.isfile(os.path.join(self.path, ONNX_FILE))

    def size_mb(self) -> float:
        if self.is_onnx:
            return os.path.getsize(os.path.join(self.path, ONNX_FILE)) / 1e6
        weights = [p for p in Path(self.path).glob("*.safetensors")] or list(Path(self.path).glob("*.bin"))
        return sum(p.stat().st_size for p in weights) / 1e6

    def runner(self, threads: int) -> tuple[Runner, Any]:
        """A runner of the model on numpy inputs, and a function from its outputs to the logits."""
        if self.is_onnx:
            return onnx_runner(self.path, threads), lambda out: out[0]
        from transformers import AutoModel

        config = AutoConfig.from_pretrained(self.path)
        task = task_of_model_class(config.architectures[0])
        model = task.auto_model_class.from_pretrained(self.path) if task else AutoModel.from_pretrained(self.path)
        return torch_runner(model), lambda out: out.logits.numpy()


def pareto_frontier(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points ``(latency, metric)`` that no other point beats on both (lower latency and higher
    metric, one of them strictly), sorted by latency."""
    frontier = []
    for i, (latency, metric) in enumerate(points):
        dominated = any(
            (other_latency <= latency and other_metric >= metric)
            and (other_latency < latency or other_metric > metric)
            for j, (other_latency, other_metric) in enumerate(points)
            if j != i
        )
        if not dominated:
            frontier.append(i)
    return sorted(frontier, key=lambda i: points[i][0])


def _reference_dynamic_int8(source: Path, target: Path) -> None:
    """Dynamic int8 of every operator ONNX Runtime's dynamic quantizer handles (the MatMuls, fused attention and the
    embedding Gathers), int8 symmetric weights per channel, full range: what Optimum's
    ``AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True)`` asks of it. ``DefaultTensorType`` lets
    the quantizer type the operators of a fused graph."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet_quantization_advice():
        quantize_dynamic(
            source,
            target,
            per_channel=True,
            weight_type=QuantType.QInt8,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "WeightSymmetric": True},
        )


def _reference_o2(source: Path, target: Path, config) -> None:
    """ONNX Runtime's transformer optimizer as ``ORTOptimizer`` runs it at ``optimization_level=2`` (every fusion of
    the BERT family, graph optimization level 2)."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        str(source),
        "bert",
        config.num_attention_heads,
        config.hidden_size,
        opt_level=2,
        optimization_options=FusionOptions("bert"),
    )
    optimized.save_model_to_file(str(target))


def _copy_beside(source: Path, target: Path) -> None:
    """The config and tokenizer files of the export ``source`` into ``target`` (not the ONNX file)."""
    for path in source.iterdir():
        if path.is_file() and path.suffix != ".onnx":
            shutil.copy(path, target / path.name)


def reference_models(teacher: str, work_dir: str | os.PathLike, task) -> list[BenchModel]:
    """What a user gets from ``teacher`` without hf-compress: ONNX fp32, dynamic int8, and O2 fusions + dynamic int8.

    With Optimum installed these are Optimum's own (``ORTModelFor...(export=True)``, ``ORTQuantizer``,
    ``ORTOptimizer``); without it, the same ONNX Runtime calls those make, on the teacher exported by torch.onnx
    (:mod:`~hf_compress.export.to_onnx`). The names say which. The O2 graph is quantized by ONNX Runtime in both
    cases (Optimum's quantizer cannot type the fused graph).
    """
    work = Path(work_dir)
    with_optimum = optimum_available()
    prefix = "Optimum" if with_optimum else "ONNX Runtime"
    fp32 = work / ("optimum-fp32" if with_optimum else "ort-fp32")
    if not (fp32 / ONNX_FILE).is_file():
        if with_optimum:
            import optimum.onnxruntime as ort_models

            getattr(ort_models, task.ort_model_class).from_pretrained(teacher, export=True).save_pretrained(fp32)
        else:
            model = task.auto_model_class.from_pretrained(teacher).eval()
            export_onnx(model, fp32, task.pipeline_tag, exporter="torch")
        AutoTokenizer.from_pretrained(teacher).save_pretrained(fp32)
    dynamic = work / ("optimum-dynamic-int8" if with_optimum else "ort-dynamic-int8")
    if not (dynamic / ONNX_FILE).is_file():
        dynamic.mkdir(parents=True, exist_ok=True)
        if with_optimum:
            from optimum.onnxruntime import ORTQuantizer
            from optimum.onnxruntime.configuration import AutoQuantizationConfig

            quantizer = ORTQuantizer.from_pretrained(fp32, file_name=ONNX_FILE)
            quantizer.quantize(AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True), dynamic)
            (dynamic / "model_quantized.onnx").replace(dynamic / ONNX_FILE)
        else:
            _reference_dynamic_int8(fp32 / ONNX_FILE, dynamic / ONNX_FILE)
        _copy_beside(fp32, dynamic)
    fused = work / ("optimum-o2-dynamic-int8" if with_optimum else "ort-o2-dynamic-int8")
    if not (fused / ONNX_FILE).is_file():
        optimized = work / ("optimum-o2" if with_optimum else "ort-o2")
        optimized.mkdir(parents=True, exist_ok=True)
        if with_optimum:
            from optimum.onnxruntime import ORTOptimizer
            from optimum.onnxruntime.configuration import OptimizationConfig

            ORTOptimizer.from_pretrained(fp32, file_names=[ONNX_FILE]).optimize(
                OptimizationConfig(optimization_level=2), optimized
            )
        else:
            _reference_o2(fp32 / ONNX_FILE, optimized / "model_optimized.onnx", AutoConfig.from_pretrained(fp32))
        fused.mkdir(parents=True, exist_ok=True)
        _reference_dynamic_int8(optimized / "model_optimized.onnx", fused / ONNX_FILE)
        _copy_beside(fp32, fused)
        shutil.rmtree(optimized, ignore_errors=True)
    return [
        BenchModel(f"{prefix}: ONNX fp32", str(fp32), reference=True),
        BenchModel(f"{prefix}: dynamic int8", str(dynamic), reference=True),
        BenchModel(f"{prefix}: O2 + dynamic int8", str(fused), reference=True),
    ]


def _task_metric(model: BenchModel, raw, data: DataConfig, threads: int, batch_size: int = 32) -> dict[str, float]:
    """The task metrics of ``model`` on the raw validation split, from the model's own outputs."""
    from datasets import DatasetDict
    from tqdm.auto import tqdm

    config = AutoConfig.from_pretrained(model.path)
    task = get_task(data.task)
    tokenizer = AutoTokenizer.from_pretrained(model.path)
    split = task.preprocess(DatasetDict({"train": raw["validation"]}), tokenizer, config.label2id, data)["train"]
    run, to_logits = model.runner(threads)
    collator = task.data_collator(tokenizer)
    logits, labels = [], []
    for batch in tqdm(DataLoader(split, batch_size=batch_size, collate_fn=collator), desc=model.name, leave=False):
        label = batch.pop("labels").numpy()
        feeds = {k: v.numpy() for k, v in batch.items()}
        out = to_logits(run(feeds))
        if out.ndim == 3:  # pad every batch to max_length so that they concatenate
            out = np.pad(out, [(0, 0), (0, data.max_length - out.shape[1]), (0, 0)])
            label = np.pad(label, [(0, 0), (0, data.max_length - label.shape[1])], constant_values=-100)
        logits.append(out)
        labels.append(label)
    compute = task.compute_metrics(config.id2label, data.decoding)  # the same decoding for every row
    metrics = compute(EvalPrediction(np.concatenate(logits), np.concatenate(labels)))
    return {k: float(v) for k, v in metrics.items()}


def run_bench(
    candidates: Sequence[BenchModel],
    data: DataConfig,
    output_dir: str | os.PathLike,
    teacher: str | None = None,
    threads: int = 2,
    latency_sentences: int = 300,
) -> dict[str, Any]:
    """Measure ``candidates`` and the references made from ``teacher`` (:func:`reference_models`); write the
    results."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(threads)
    task = get_task(data.task)
    models = list(candidates)
    if teacher is not None:
        models = reference_models(teacher, output_dir / "references", task) + models
    raw = task.load_raw(data)
    if "validation" not in raw:
        raise ValueError("hf-compress bench needs an eval set: a validation split or file")
    for model in models:
        metrics = _task_metric(model, raw, data, threads)
        model.results = {"path": model.path, "reference": model.reference, "size_mb": model.size_mb()}
        model.results.update({"metric": metrics[task.metric_name], "metrics": metrics})
        logger.info(f"{model.name}: {task.metric_name} {metrics[task.metric_name]:.4f}")
    texts = task.texts(raw["validation"], data)[:latency_sentences]
    runners = {m.name: m.runner(threads)[0] for m in models}
    tokenizers = {m.name: AutoTokenizer.from_pretrained(m.path) for m in models}
    for name, stats in measure_latency(runners, tokenizers, texts).items():
        next(m for m in models if m.name == name).results.update(stats)
    for model in models:
        for reference in (m for m in models if m.reference):
            model.results.setdefault("speedup", {})[reference.name] = {
                "batch1": reference.results["batch1_median_ms"] / model.results["batch1_median_ms"],
                "batch32": model.results["batch32_sentences_per_s"] / reference.results["batch32_sentences_per_s"],
            }
    points = [(m.results["batch1_median_ms"], m.results["metric"]) for m in models]
    frontier = [models[i].name for i in pareto_frontier(points)]
    report = {
        "metric": task.metric_name,
        "decoding": data.decoding if task.name == "ner" else None,
        "threads": threads,
        "latency_sentences": len(texts),
        "models": {m.name: m.results for m in models},
        "pareto_frontier": frontier,
    }
    atomic_write_json(output_dir / "bench.json", report)
    atomic_write_text(output_dir / "bench.md", bench_markdown(report))
    plot_bench(report, output_dir / "bench.png")
    return report


def bench_markdown(report: dict[str, Any]) -> str:
    """The bench table: one row per model, numbered as in the plot, ratios to the fastest reference (the last one
    measured)."""
    models = report["models"]
    references = [name for name, r in models.items() if r["reference"]]
    fastest = references[-1] if references else None
    header = ["#", "model", report["metric"], "MB", "batch-1 median ms", "batch-1 p90 ms", "batch-32 sentences/s"]
    if fastest:
        header += [f"batch-1 vs {fastest}", f"batch-32 vs {fastest}"]
    header.append("Pareto")
    rows = []
    for number, (name, r) in enumerate(models.items(), 1):
        row = [
            str(number),
            name,
            f"{100 * r['metric']:.2f}",
            f"{r['size_mb']:.1f}",
            f"{r['batch1_median_ms']:.2f}",
            f"{r['batch1_p90_ms']:.2f}",
            f"{r['batch32_sentences_per_s']:.0f}",
        ]
        if fastest:
            ratio = r["speedup"][fastest]
            row += [f"{ratio['batch1']:.2f}x", f"{ratio['batch32']:.2f}x"]
        row.append("yes" if name in report["pareto_frontier"] else "")
        rows.append(row)
    decoding = report.get("decoding")
    note = f"Tags decoded by {decoding} for every row ({_DECODING_NOTES[decoding]}).\n\n" if decoding else ""
    return note + markdown_table(header, rows) + "\n"


_DECODING_NOTES = {
    "argmax": "the best label of each token alone",
    "constrained": "Viterbi over legal IOB2 transitions at the first sub-token of each word",
}


def plot_bench(report: dict[str, Any], path: str | os.PathLike) -> bool:
    """Latency against the metric, marker area proportional to MB, the Pareto frontier and the references; points
    are numbered as the table's rows, with the key beside the axes. Return whether the plot was written
    (matplotlib is an optional extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed (pip install hf-compress[plot]): no bench.png")
        return False
    models = report["models"]
    figure, axes = plt.subplots(figsize=(11, 5.5))
    for number, r in enumerate(models.values(), 1):
        axes.scatter(
            r["batch1_median_ms"],
            100 * r["metric"],
            s=8 * r["size_mb"],
            marker="s" if r["reference"] else "o",
            alpha=0.6,
            color="tab:gray" if r["reference"] else "tab:blue",
        )
        axes.annotate(
            str(number),
            (r["batch1_median_ms"], 100 * r["metric"]),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    frontier = [models[name] for name in report["pareto_frontier"]]
    axes.plot(
        [r["batch1_median_ms"] for r in frontier],
        [100 * r["metric"] for r in frontier],
        "--",
        color="tab:red",
        label="Pareto frontier",
    )
    axes.set_xlabel(f"batch-1 median latency, ms ({report['threads']} threads)")
    axes.set_ylabel(f"{report['metric']} (x100)")
    axes.set_title("squares: references made from the teacher without hf-compress; marker area: file MB")
    axes.legend(loc="lower right")
    key = "\n".join(f"{number:>2}  {name}" for number, name in enumerate(models, 1))
    figure.text(0.66, 0.5, key, fontsize=7, family="monospace", va="center")
    figure.tight_layout(rect=(0, 0, 0.65, 1))
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def candidates_from_arguments(values: Sequence[str]) -> list[BenchModel]:
    """``name=path`` or ``path`` (named after its folder) -> :class:`BenchModel`."""
    models = []
    for value in values:
        name, _, path = value.rpartition("=") if "=" in value else ("", "", value)
        models.append(BenchModel(name or Path(path).name, path))
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"two candidates share a name: {names}; give name=path")
    return models
