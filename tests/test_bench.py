"""``hf-compress bench``: the Pareto frontier with exact numbers, and one end-to-end run on a tiny model."""

import json

import pytest
import torch
from conftest import tiny_bert_config
from transformers import BertForTokenClassification

from hf_compress.bench import candidates_from_arguments, pareto_frontier
from hf_compress.cli import main
from hf_compress.compat import optimum_available


def test_pareto_frontier_keeps_the_points_nothing_beats_on_both():
    points = [(2.0, 0.90), (1.0, 0.85), (1.5, 0.85), (3.0, 0.91), (1.0, 0.80), (3.0, 0.90)]
    # (1.5, .85) loses to (1.0, .85); (1.0, .80) to (1.0, .85); (3.0, .90) to (2.0, .90)
    assert pareto_frontier(points) == [1, 0, 3]
    assert pareto_frontier([(1.0, 0.5), (1.0, 0.5)]) == [0, 1]  # ties beat nothing
    with pytest.raises(ValueError, match="share a name"):
        candidates_from_arguments(["a/model", "b/model"])
    assert [(m.name, m.path) for m in candidates_from_arguments(["small=x/y", "x/z"])] == [
        ("small", "x/y"),
        ("z", "x/z"),
    ]


def _conll(path, words, n, seed):
    import random

    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        lines += [f"{rng.choice(words)} NN O {rng.choice(['O', 'B-PER', 'B-LOC'])}" for _ in range(5)]
        lines.append("")
    path.write_text("\n".join(lines))


def test_bench_measures_candidates_and_the_references(tokenizer, tmp_path, capsys):
    from conftest import WORDS

    from hf_compress import ExportConfig, export_model

    labels = ["O", "B-LOC", "B-PER", "I-PER"]
    torch.manual_seed(0)
    model = BertForTokenClassification(tiny_bert_config(len(tokenizer), labels, num_hidden_layers=2)).eval()
    model.save_pretrained(tmp_path / "teacher")
    tokenizer.save_pretrained(tmp_path / "teacher")
    export_model(model, tokenizer, tmp_path / "int8", ExportConfig(int8="dynamic", embeddings="int4"))
    _conll(tmp_path / "train.txt", WORDS, 20, seed=0)
    _conll(tmp_path / "valid.txt", WORDS, 12, seed=1)
    out = tmp_path / "bench"
    argv = ["bench", f"ours={tmp_path / 'int8'}", f"pytorch={tmp_path / 'teacher'}", "--output_dir", str(out)]
    argv += ["--teacher", str(tmp_path / "teacher"), "--train_file", str(tmp_path / "train.txt")]
    argv += ["--validation_file", str(tmp_path / "valid.txt"), "--latency_sentences", "8", "--threads", "1"]
    with pytest.raises(SystemExit) as exit_code:
        main(argv)
    assert exit_code.value.code == 0
    report = json.loads((out / "bench.json").read_text())
    prefix = "Optimum" if optimum_available() else "ONNX Runtime"  # who made the references of the teacher
    names = [f"{prefix}: ONNX fp32", f"{prefix}: dynamic int8", f"{prefix}: O2 + dynamic int8", "ours", "pytorch"]
    assert list(report["models"]) == names and report["metric"] == "f1" and report["latency_sentences"] == 8
    models = report["models"]
    # the same weights give the same F1 through PyTorch and Optimum's fp32 export; int8 is close
    assert models["pytorch"]["metric"] == pytest.approx(models[names[0]]["metric"], abs=1e-9)
    assert abs(models["ours"]["metric"] - models["pytorch"]["metric"]) < 0.1
    assert models[names[1]]["size_mb"] < models[names[0]]["size_mb"]
    assert models["ours"]["size_mb"] < models["pytorch"]["size_mb"]
    for r in models.values():
        assert r["batch1_median_ms"] > 0 and r["batch1_p90_ms"] >= r["batch1_median_ms"]
        assert r["batch32_sentences_per_s"] > 0 and set(r["speedup"]) == set(names[:3])
    reference = models[names[0]]
    assert reference["speedup"][names[0]] == {"batch1": 1.0, "batch32": 1.0}
    ratio = models["ours"]["speedup"][names[0]]["batch1"]
    assert ratio == pytest.approx(reference["batch1_median_ms"] / models["ours"]["batch1_median_ms"])
    points = [(r["batch1_median_ms"], r["metric"]) for r in models.values()]
    assert report["pareto_frontier"] == [names[i] for i in pareto_frontier(points)]
    table = (out / "bench.md").read_text()
    assert table.startswith("Tags decoded by argmax for every row") and report["decoding"] == "argmax"
    assert table.count("\n") == 2 + 2 + len(names) and f"batch-1 vs {names[2]}" in table
    assert (out / "bench.png").stat().st_size > 10_000
    assert "| ours |" in capsys.readouterr().out


def test_quantize_dynamic_advice_is_hidden_and_other_warnings_are_not(caplog):
    import logging

    from hf_compress.export.int8 import quiet_quantization_advice

    with caplog.at_level(logging.WARNING), quiet_quantization_advice():
        logging.warning("Please consider to run pre-processing before quantization. Refer to example: ...")
        logging.warning("something else")
    assert [r.getMessage() for r in caplog.records] == ["something else"]
    logging.warning("Please consider to run pre-processing before quantization.")  # outside: shown again
    assert len(caplog.records) == 2
