"""The architecture x capability tables of docs/architectures.md, from the numbers the matrix tests write on each
stack.

On each stack (its own python), with ``HF_COMPRESS_MATRIX`` naming where the numbers go::

    HF_COMPRESS_MATRIX=benchmarks/results/architectures-transformers-5.json pytest tests/test_architectures.py
    HF_COMPRESS_MATRIX=benchmarks/results/architectures-transformers-4.json pytest tests/test_architectures.py
    python benchmarks/architecture_matrix.py benchmarks/results/architectures-transformers-*.json

Each cell shows the worse of the stacks given: the largest |logit difference|, the smallest argmax agreement.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from tiny_encoders import ROWS  # noqa: E402

from hf_compress.architectures import architecture_of  # noqa: E402
from hf_compress.tables import markdown_table  # noqa: E402


def _worst(runs: list[dict], row: str, cell: str, key: str, best=max):
    values = [run[row][cell][key] for run in runs if key in run.get(row, {}).get(cell, {})]
    return best(values) if values else None


def _diff(value) -> str:
    return "-" if value is None else ("0" if value == 0 else f"{value:.0e}")


#: How the documentation names each row.
NAMES = {
    "bert": "BERT",
    "distilbert": "DistilBERT",
    "roberta": "RoBERTa",
    "xlm-roberta": "XLM-R",
    "camembert": "CamemBERT",
    "electra": "ELECTRA",
    "deberta": "DeBERTa",
    "deberta-v3": "DeBERTa-v3",
    "modernbert": "ModernBERT",
    "mpnet": "MPNet",
    "mobilebert": "MobileBERT",
    "albert": "ALBERT",
}


def tables(runs: list[dict]) -> str:
    from transformers import AutoConfig

    train_rows, export_rows, width_rows = [], [], []
    for row, (model_type, kind, _, _) in ROWS.items():
        arch = architecture_of(AutoConfig.for_model(model_type))
        name = f"{NAMES[row]} (`{model_type}`)"

        def diff(cell, key="max_diff", row=row):
            return _diff(_worst(runs, row, cell, key))

        def agree(cell, key="argmax_agreement", row=row):
            value = _worst(runs, row, cell, key, min)
            return "-" if value is None else f"{100 * value:.1f}%"

        first = runs[0][row]
        student = first["student_layers"]
        student = "refused (below)" if "refused" in student else diff("student_layers", "reload_max_diff")
        neurons, heads = first["neuron_pruning"], first["head_pruning"]
        layers = 1 if arch.shared_layers else 4
        train_rows.append(
            (
                name,
                student,
                "ok" if {"kd", "hidden", "attention"} <= set(first["distillation"]) else "-",
                f"{neurons['removed']} of 64 per block: {diff('neuron_pruning', 'reload_max_diff')} / "
                f"{diff('neuron_pruning', 'export_max_diff')}",
                f"{heads['removed']} of {4 * layers}: {diff('head_pruning', 'reload_max_diff')} / "
                f"{diff('head_pruning', 'export_max_diff')}",
                f"{diff('lowrank', 'reload_max_diff')} / {diff('lowrank', 'export_max_diff')}",
            )
        )
        width = next((run[row]["width_pruning"] for run in runs if "width_pruning" in run.get(row, {})), {})
        if "refused" in width:
            width_rows.append((name, "refused (below)", "", "", ""))
        elif width:
            width_rows.append(
                (
                    name,
                    width["width"],
                    f"{diff('width_pruning', 'reference_max_diff')} / {diff('width_pruning', 'reload_max_diff')}",
                    diff("width_pruning", "none_max_diff"),
                    f"{agree('width_pruning', 'dynamic_argmax_agreement')} / "
                    f"{agree('width_pruning', 'static_argmax_agreement')}",
                )
            )
        fused = first["dynamic_int8"]["fused"]
        fusion = f"{fused.get('Attention', 0)} of 4 attentions" if isinstance(fused, dict) else "no (below)"
        ort = "ok" + (", ORTModel" if any("ort_model_max_diff" in r[row]["onnx_runtime"] for r in runs) else "")
        export_rows.append(
            (
                name,
                f"{diff('qat_int8')}, {agree('qat_int8')}",
                f"{diff('dynamic_int8')}, {agree('dynamic_int8')}",
                f"{diff('static_int8')}, {agree('static_int8')}",
                f"{agree('dynamic_int8', 'float_argmax_agreement')} / "
                f"{agree('static_int8', 'float_argmax_agreement')}",
                fusion,
                ort,
                f"{kind}: {first['vocabulary']['pieces']}, {diff('vocabulary')}",
            )
        )
    train = markdown_table(
        (
            "architecture",
            "student from teacher layers: reload",
            "distillation: logits, hidden states, attention maps",
            "FFN neurons removed: reload / export",
            "heads removed: reload / export",
            "low-rank: reload / export",
        ),
        train_rows,
    )
    export = markdown_table(
        (
            "architecture",
            "QAT -> qat int8",
            "dynamic int8, int8 tables",
            "static int8, int4 word table",
            "argmax vs the float model: dynamic / static",
            "fused",
            "ONNX Runtime",
            "vocabulary trimming: pieces, corpus",
        ),
        export_rows,
    )
    width = markdown_table(
        (
            "architecture",
            "hidden width",
            "vs the masked model / reload",
            "ONNX fp32",
            "argmax vs PyTorch: dynamic / static int8",
        ),
        width_rows,
    )
    return train + "\n\n" + export + "\n\n" + width


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", help="the JSON files the matrix tests wrote")
    args = parser.parse_args()
    print(tables([json.loads(Path(path).read_text()) for path in args.results]))


if __name__ == "__main__":
    main()
