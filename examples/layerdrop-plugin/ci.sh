#!/usr/bin/env bash
# The LayerDrop plugin as a user runs it, once installed (pip install -e examples/layerdrop-plugin) in a venv with
# hf-compress[dev]: a new process knows the `layerdrop:` block from the plugin's entry point alone. It trains with
# LayerDrop, FFN-neuron pruning and QAT and exports; exports the trained folder again from its saved recipe; runs
# hf-compress's contract tests on the technique and the plugin's own tests; and trains in two processes under
# accelerate launch. On a machine without GPUs, `--multi_gpu --num_processes 2` starts two CPU processes (gloo),
# as tests/test_distributed.py does (`--cpu` with two processes would need an MPI launcher).
set -euo pipefail
cd "$(dirname "$0")"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
export HF_HUB_OFFLINE=1

hf-compress train recipe-ner.yaml --output_dir "$out/run" || exit
hf-compress export "$out/run" --int8 qat --output_dir "$out/export" || exit
python - "$out" <<'PY' || exit
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
assert "layerdrop" in (out / "run" / "recipe.yaml").read_text()
report = json.loads((out / "run" / "layerdrop_report.json").read_text())
assert report["steps"] == 4 and len(report["layers"]) == 6, report
for folder in ("run/onnx-int8-qat", "export"):
    export = json.loads((out / folder / "export_report.json").read_text())
    assert export["int8"] == "qat" and export["metrics"]["f1"] >= 0, folder
    expected = {"drop_rate": 0.3, "layers": 6, "layers_trained_with_layerdrop": 6}
    assert export["techniques"]["layerdrop"] == expected, (folder, export["techniques"])
    assert list(export["techniques"]) == ["layerdrop", "pruning", "quantization"], folder  # the run's techniques
removed = json.loads((out / "run/onnx-int8-qat/export_report.json").read_text())["techniques"]["pruning"]
assert removed["removed_structures"]["neurons_per_layer"] == 768  # (the saved folder is already smaller)
print("layerdrop plugin: train and export checked")
PY

hf-compress test-technique layerdrop || exit
python -m pytest -q tests || exit

OMP_NUM_THREADS=1 accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no \
    --dynamo_backend no -m hf_compress train recipe-ner.yaml --output_dir "$out/ddp" --export.int8 none --export.onnx false || exit
python -c "import json, sys; r = json.load(open(sys.argv[1])); assert r['steps'] == 4, r" \
    "$out/ddp/layerdrop_report.json" || exit
echo "layerdrop plugin: CI passed"
