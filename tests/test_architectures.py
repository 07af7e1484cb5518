"""The architecture x capability matrix, on tiny random models of every described architecture.

Each row is an architecture of :mod:`hf_compress.architectures` (``tiny_encoders.ROWS``: a 4-layer encoder of
width 32, with an offline tokenizer of the kind it ships with); each test is a capability, through the public API,
with the number that shows it works: a student from teacher layers reloads equal to the trained one, the three
distillation terms are computed, pruned heads and neurons are removed physically with the reloaded and exported
models equal to the masked one, QAT exports as int8 computing what training simulated, dynamic and static int8 and
the int8/int4 embedding tables agree with PyTorch, low-rank layers reload and export, the export folder loads in
ONNX Runtime, and the vocabulary trims with every corpus sentence tokenized and computed as before. Where an
architecture refuses a capability, the test checks the refusal names it and why.

``HF_COMPRESS_MATRIX=path.json`` writes every cell's numbers there (what docs/architectures.md's tables show).
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict
from tiny_encoders import LABELS, ROWS, build_tokenizer, sentences, tiny_model
from transformers import AutoConfig, AutoModelForTokenClassification, DataCollatorForTokenClassification

from hf_compress import (
    DistillationCallback,
    DistillationConfig,
    ExportConfig,
    ExportData,
    LayerLossConfig,
    LowRankCallback,
    LowRankConfig,
    MagnitudePruner,
    PruningConfig,
    QATCallback,
    QuantizationConfig,
    Recipe,
    RecipeError,
    export_model,
    load_lowrank,
    remove_pruned_structures,
    student_from_teacher,
    trim_vocabulary,
)
from hf_compress.architectures import ARCHITECTURES, UnsupportedCapabilityError, architecture_of
from hf_compress.compat import optimum_available
from hf_compress.configs import CalibrationConfig, DataConfig
from hf_compress.export.evaluation import onnx_feeds, onnx_session
from hf_compress.export.graph import matmul_calls
from hf_compress.inference import OnnxTokenClassifier
from hf_compress.quantization import qat_modules, set_qat_phase
from hf_compress.tasks import get_task

ROW_IDS = list(ROWS)
RESULTS: dict[str, dict[str, dict]] = {}


def record(row: str, capability: str, **numbers) -> None:
    RESULTS.setdefault(row, {})[capability] = numbers


@pytest.fixture(scope="module", autouse=True)
def write_matrix():
    yield
    path = os.environ.get("HF_COMPRESS_MATRIX")
    if path:
        old = json.loads(Path(path).read_text()) if Path(path).is_file() else {}
        for row, cells in RESULTS.items():
            old.setdefault(row, {}).update(cells)
        Path(path).write_text(json.dumps(old, indent=1, default=float))


@dataclass
class Env:
    row: str
    tokenizer: object
    tokenizer_dir: Path
    teacher: torch.nn.Module
    data: DatasetDict
    collator: object
    batch: dict
    tmp: Path

    def model(self, **overrides):
        return tiny_model(self.row, self.tokenizer, **overrides)

    def export_data(self) -> ExportData:
        return ExportData(
            eval_dataset=self.data["validation"],
            data_collator=self.collator,
            calibration_dataset=self.data["train"],
            batch_size=8,
        )


@pytest.fixture(scope="module", params=ROW_IDS)
def env(request, tmp_path_factory) -> Env:
    row = request.param
    tmp = tmp_path_factory.mktemp(row)
    _, kind, token_types, _ = ROWS[row]
    tokenizer = build_tokenizer(kind, tmp / "tokenizer", token_types=token_types)
    words = sentences()
    rng = np.random.default_rng(0)
    tags = [[LABELS[i] for i in rng.integers(0, len(LABELS), len(w))] for w in words]
    raw = DatasetDict(
        train=Dataset.from_dict({"tokens": words[:16], "ner_tags": tags[:16]}),
        validation=Dataset.from_dict({"tokens": words[16:32], "ner_tags": tags[16:32]}),
    )
    teacher = tiny_model(row, tokenizer)
    data = get_task("ner").preprocess(
        raw, tokenizer, teacher.config.label2id, DataConfig(train_file="-", max_length=64)
    )
    collator = DataCollatorForTokenClassification(tokenizer)
    batch = collator([data["validation"][i] for i in range(4)])
    return Env(row, tokenizer, tmp / "tokenizer", teacher, data, collator, dict(batch), tmp)


def logits(model, batch) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


def onnx_logits(folder: Path, batch) -> np.ndarray:
    session = onnx_session(folder / "model.onnx")
    return session.run(["logits"], onnx_feeds([i.name for i in session.get_inputs()], batch))[0]


def max_diff(a, b, batch) -> float:
    """Max |a - b| over the real tokens of ``batch``."""
    mask = batch["attention_mask"].bool().numpy()
    a = a.numpy() if isinstance(a, torch.Tensor) else a
    b = b.numpy() if isinstance(b, torch.Tensor) else b
    return float(np.abs(a - b)[mask].max())


def reload(model, folder: Path):
    model.save_pretrained(folder)
    return AutoModelForTokenClassification.from_pretrained(folder).eval()


def train_a_little(model, batch, steps: int = 3) -> None:
    """A few SGD steps, so that the weights are no longer the ones the model was built with."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def refused(env: Env, capability: str) -> str | None:
    arch = architecture_of(env.teacher)
    return arch.refusals().get(capability) if arch else None


# ------------------------------------------------------------------------------------------------ the cells
def test_student_from_teacher_layers_reloads_as_trained(env):
    if refused(env, "student_layers"):
        with pytest.raises(UnsupportedCapabilityError, match=f"{architecture_of(env.teacher).name} does not support"):
            student_from_teacher(env.teacher, [1, 3])
        recipe = Recipe.from_dict({"model": {"teacher": "t", "student": {"from_teacher_layers": [1, 3]}}})
        with pytest.raises(RecipeError, match="model.student.from_teacher_layers.*does not support a student"):
            recipe.check_architecture(env.teacher.config)
        record(env.row, "student_layers", refused=refused(env, "student_layers"))
        return
    student = student_from_teacher(env.teacher, [1, 3])
    train_a_little(student, env.batch)
    trained = logits(student, env.batch)
    reloaded = reload(student, env.tmp / "student")
    diff = max_diff(logits(reloaded, env.batch), trained, env.batch)
    record(env.row, "student_layers", reload_max_diff=diff)
    assert reloaded.config.num_hidden_layers == 2 and diff < 1e-5


def test_distillation_logits_hidden_states_and_attention_maps(env):
    student = (
        student_from_teacher(env.teacher, [1, 3]) if not refused(env, "student_layers") else env.model(num_layers=2)
    )
    config = DistillationConfig(hidden_states=LayerLossConfig(), attentions=LayerLossConfig())
    callback = DistillationCallback(config, teacher=env.teacher)
    callback._prepare(student)
    student.train()
    outputs = student(**env.batch, **callback.forward_kwargs())
    loss, terms = callback.loss(env.batch, outputs, outputs.loss)
    loss.backward()
    values = {k: round(float(v), 4) for k, v in terms.items()}
    record(env.row, "distillation", **values)
    assert set(values) == {"task", "kd", "hidden", "attention"} and all(np.isfinite(list(values.values())))
    assert all(p.grad is not None for p in student.classifier.parameters())


@pytest.mark.parametrize("structure", ["neurons", "heads"])
def test_structured_pruning_removes_units_physically(env, structure):
    model = env.model()
    pruner = MagnitudePruner(model, PruningConfig(structure=structure, final_sparsity=0.5, start_step=0, end_step=1))
    pruner.update(0.5)
    masked = logits(model, env.batch)
    params = model.num_parameters()
    saved = copy.deepcopy(model)
    kept = remove_pruned_structures(saved, loadable=True)
    reloaded = reload(saved, env.tmp / f"pruned-{structure}")
    reload_diff = max_diff(logits(reloaded, env.batch), masked, env.batch)
    folder = env.tmp / f"onnx-pruned-{structure}"
    report = export_model(model, env.tokenizer, folder, ExportConfig(int8="none"), env.export_data())
    export_diff = max_diff(onnx_logits(folder, env.batch), masked, env.batch)
    removed = report["techniques"]["pruning"]["removed_structures"]
    units = removed["neurons_per_layer"] if structure == "neurons" else sum(map(len, removed["heads"].values()))
    record(
        env.row,
        f"{structure[:-1]}_pruning",
        removed=units,
        parameters_saved=params - report["parameters"],
        reloaded_parameters_saved=params - reloaded.num_parameters(),
        heads_kept_as_zeros_in_saved_model="heads_kept_as_zeros" in kept,
        reload_max_diff=reload_diff,
        export_max_diff=export_diff,
    )
    assert units > 0 and report["parameters"] < params
    assert reload_diff < 1e-5 and export_diff < 1e-4


def _masked_reference(model, report) -> torch.nn.Module:
    """The full-width model computing what the narrowed one should: the removed heads' output columns and the
    removed channels' writer rows zeroed, every LayerNorm of the stream normalizing over the kept channels only."""
    from hf_compress.pruning import masked_layer_norm, residual_channels
    from hf_compress.structures import structures

    model = copy.deepcopy(model)
    channels = residual_channels(model)
    keep = torch.zeros(channels.width, dtype=torch.bool)
    keep[report["channels"]] = True
    with torch.no_grad():
        for group in structures(model, "heads"):
            dropped = report["removed_heads"].get(group.layer, [])
            output = next(s for s in group.slices if s.dim == 1 and isinstance(s.owner, torch.nn.Linear))
            if dropped:
                output.owner.weight[:, output.index[dropped].flatten()] = 0
        for s in channels.slices:
            tensor = getattr(s.owner, s.param)
            if s.dim == 0 and not isinstance(s.owner, torch.nn.LayerNorm):
                tensor[~keep] = 0  # writers: the dropped channels stay zero in the stream
    modules = dict(model.named_modules())
    for name in channels.norms:
        norm = modules[name]
        norm.forward = lambda x, n=norm: masked_layer_norm(x, keep, n.weight, n.bias, n.eps)
    return model


def test_hidden_width_pruning_removes_channels(env):
    """The narrowed model (hidden 32 -> 16, 4 -> 2 heads, by activations) computes what the full-width model
    computes with those heads and channels masked out (LayerNorms over the kept channels), reloads with plain
    ``from_pretrained``, and exports (fp32, dynamic and static int8) agreeing with PyTorch."""
    from hf_compress.pruning import WidthConfig, calibration_batches, narrow_student

    reason = refused(env, "width_pruning")
    if reason is not None:
        with pytest.raises(UnsupportedCapabilityError, match="hidden-width pruning"):
            narrow_student(env.model(), WidthConfig(hidden_size=16, importance="magnitude"), None)
        record(env.row, "width_pruning", refused=reason)
        return
    model = env.model()
    train_a_little(model, env.batch)
    width = 24 if env.row == "electra" else 16  # (ELECTRA at its embedding_size 16 drops its projection: refused)
    batches = calibration_batches(env.tokenizer, sentences()[:16], 16, batch_size=8)
    full = copy.deepcopy(model)
    report = narrow_student(model, WidthConfig(hidden_size=width), batches)
    assert model.config.to_dict()[describe_hidden(model)] == width and report["heads_per_layer"]["after"] == width // 8
    reference_diff = max_diff(logits(model, env.batch), logits(_masked_reference(full, report), env.batch), env.batch)
    reloaded = reload(model, env.tmp / "narrow")
    reload_diff = max_diff(logits(reloaded, env.batch), logits(model, env.batch), env.batch)
    cell = {"width": f"32 -> {width}", "reference_max_diff": reference_diff, "reload_max_diff": reload_diff}
    for route in ("none", "dynamic", "static"):
        folder = env.tmp / f"onnx-narrow-{route}"
        config = ExportConfig(int8=route, calibration=CalibrationConfig(num_samples=16))
        exported = export_model(model, env.tokenizer, folder, config, env.export_data())
        cell[f"{route}_max_diff"] = max_diff(onnx_logits(folder, env.batch), logits(model, env.batch), env.batch)
        cell[f"{route}_argmax_agreement"] = exported["parity"]["argmax_agreement"]
    record(env.row, "width_pruning", **cell)
    assert reference_diff < 1e-5 and reload_diff < 1e-5 and cell["none_max_diff"] < 1e-4
    assert cell["dynamic_argmax_agreement"] >= 0.9 and cell["static_argmax_agreement"] >= 0.9


def describe_hidden(model) -> str:
    from hf_compress.architectures import describe

    return describe(model).hidden_size


def _qat_model(env):
    model = env.model()
    callback = QATCallback(QuantizationConfig(start_step=0, freeze_observers_step=2, averaging_constant=0.5))
    callback._prepare(model)
    set_qat_phase(model, "observing")
    model.train()
    torch.manual_seed(0)  # (dropout: the observed ranges, hence the numbers, the same on every run)
    with torch.no_grad():
        for start in range(0, 16, 4):
            batch = env.collator([env.data["train"][i] for i in range(start, start + 4)])
            model(**{k: v for k, v in batch.items() if k != "labels"})
    set_qat_phase(model, "frozen")
    return model.eval()


def input_quantization(path: Path, linears: list[str]) -> dict[str, list[tuple[float, int]]]:
    """The ``(scale, zero point)`` of the DequantizeLinear each call of each linear reads in the int8 graph."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(path).graph
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    return {
        name: [(float(values[producer[x].input[1]]), int(values[producer[x].input[2]])) for _, x in calls]
        for name, calls in matmul_calls(path, linears).items()
    }


def test_qat_exports_int8_computing_what_training_simulated(env):
    model = _qat_model(env)
    simulated = logits(model, env.batch)
    folder = env.tmp / "onnx-qat"
    report = export_model(model, env.tokenizer, folder, ExportConfig(int8="qat"), env.export_data())
    exported = onnx_logits(folder, env.batch)
    diff = max_diff(exported, simulated, env.batch)
    per_position = np.abs(exported - simulated.numpy()).max(-1)[env.batch["attention_mask"].bool().numpy()]
    parity = report["parity"]
    record(
        env.row,
        "qat_int8",
        max_diff=diff,
        median_position_diff=float(np.median(per_position)),
        argmax_agreement=parity["argmax_agreement"],
        quantized_matmuls=report["quantized_matmuls"],
        embeddings=report["embeddings"],
    )
    # every call of a fake-quant linear reads its input quantized with that layer's own range, as in training (a
    # tensor read by layers that observed different ranges, as DeBERTa-v2's q/k (also fed the relative-position
    # embeddings) and v, is quantized once per range)
    layers = qat_modules(model)
    for name, calls in input_quantization(folder / "model.onnx", list(layers)).items():
        scale, zero_point = layers[name].activation_qparams()
        assert all(s == pytest.approx(float(scale), rel=1e-6) and z == int(zero_point) for s, z in calls), name
    # the same arithmetic up to float rounding: a median ~5e-8, at most a level flipped at a rounding tie somewhere
    assert np.median(per_position) < 1e-6 and diff < 1e-4, (np.median(per_position), diff)
    assert parity["argmax_agreement"] >= 0.95


@pytest.fixture(scope="module")
def dynamic_export(env):
    folder = env.tmp / "onnx-dynamic"
    report = export_model(env.teacher, env.tokenizer, folder, ExportConfig(int8="dynamic"), env.export_data())
    return folder, report


def with_quantized_tables(model, word_format: str):
    """A copy of ``model`` whose embedding tables hold what the export stores: the word table in ``word_format``,
    the others int8 per row (quantize-dequantize), so that a comparison isolates the int8 MatMuls."""
    from hf_compress.quantization.embeddings import TABLE_FORMATS

    model = copy.deepcopy(model)
    word = model.get_input_embeddings()
    with torch.no_grad():
        for table in [m for m in model.modules() if isinstance(m, torch.nn.Embedding)]:
            table.weight.copy_(TABLE_FORMATS[word_format if table is word else "int8"].fake_quantize(table.weight))
    return model


def agreement(a, b, batch) -> float:
    mask = batch["attention_mask"].bool().numpy()
    return float((np.asarray(a).argmax(-1) == np.asarray(b).argmax(-1))[mask].mean())


def _int8_cell(env, folder, report, word_format: str) -> dict:
    """The ONNX model against PyTorch with the same quantized tables (the int8 MatMuls alone) and against the
    float model (everything)."""
    exported = onnx_logits(folder, env.batch)
    same_tables = logits(with_quantized_tables(env.teacher, word_format), env.batch)
    return {
        "max_diff": max_diff(exported, same_tables, env.batch),
        "argmax_agreement": agreement(exported, same_tables, env.batch),
        "float_max_diff": max_diff(exported, logits(env.teacher, env.batch), env.batch),
        "float_argmax_agreement": report["parity"]["argmax_agreement"],
        "embeddings": report["embeddings"],
    }


def test_dynamic_int8_with_int8_embeddings(env, dynamic_export):
    folder, report = dynamic_export
    cell = _int8_cell(env, folder, report, "int8")
    fused = report["fused_operators"]
    record(env.row, "dynamic_int8", **cell, fused=fused or report.get("fusion"))
    assert cell["argmax_agreement"] >= 0.95 and cell["max_diff"] < 0.1 and cell["float_argmax_agreement"] >= 0.9
    assert all(table.startswith("int8") for table in report["embeddings"].values())
    arch = architecture_of(env.teacher)
    if arch.fusion is True:  # (ALBERT's first layer reads the embedding projection, not a LayerNorm: unfused)
        assert fused.get("Attention", 0) >= env.teacher.config.num_hidden_layers - 1
    else:
        assert report["fusion"] == f"not fused: {arch.fusion}" and not fused


def test_static_int8_with_int4_embeddings(env):
    folder = env.tmp / "onnx-static"
    config = ExportConfig(int8="static", embeddings="int4", calibration=CalibrationConfig(num_samples=16))
    report = export_model(env.teacher, env.tokenizer, folder, config, env.export_data())
    cell = _int8_cell(env, folder, report, "int4")
    record(env.row, "static_int8", **cell)
    assert cell["argmax_agreement"] >= 0.95 and cell["max_diff"] < 0.1  # (4-bit tables cost more: float_...)
    assert next(iter(report["embeddings"].values())).startswith("int4")


def test_lowrank_layers_reload_and_export(env):
    model = env.model()
    LowRankCallback(LowRankConfig(rank=4))._prepare(model)
    factorized = logits(model, env.batch)
    model.save_pretrained(env.tmp / "lowrank")
    reloaded = load_lowrank(env.tmp / "lowrank", AutoModelForTokenClassification)
    reload_diff = max_diff(logits(reloaded, env.batch), factorized, env.batch)
    folder = env.tmp / "onnx-lowrank"
    report = export_model(model, env.tokenizer, folder, ExportConfig(int8="none"), env.export_data())
    export_diff = max_diff(onnx_logits(folder, env.batch), factorized, env.batch)
    record(
        env.row,
        "lowrank",
        factorized=len(model.config.lowrank_ranks),
        reload_max_diff=reload_diff,
        export_max_diff=export_diff,
        parameters=report["parameters"],
    )
    assert reload_diff < 1e-5 and export_diff < 1e-4


def test_onnx_runtime_loads_the_export(env, dynamic_export):
    folder, _ = dynamic_export
    words = sentences()[40]
    entities = OnnxTokenClassifier(folder)(" ".join(words))
    assert isinstance(entities, list)
    numbers = {"onnx_token_classifier": "ok"}
    if optimum_available():
        from optimum.onnxruntime import ORTModelForTokenClassification

        ort_model = ORTModelForTokenClassification.from_pretrained(folder)
        encoded = env.tokenizer(" ".join(words), return_tensors="pt")
        encoded = {k: v for k, v in encoded.items() if k in {i.name for i in ort_model.model.get_inputs()}}
        diff = float(np.abs(ort_model(**encoded).logits.numpy() - onnx_logits(folder, encoded)).max())
        numbers["ort_model_max_diff"] = diff
        assert diff < 1e-5
    record(env.row, "onnx_runtime", **numbers)


def test_vocabulary_trimming_keeps_every_corpus_sentence(env):
    corpus = sentences()[:30]
    model = env.model()
    before = [env.tokenizer(words, is_split_into_words=True)["input_ids"] for words in corpus]
    old_tokens = [env.tokenizer.convert_ids_to_tokens(ids) for ids in before]
    reference = [logits(model, {"input_ids": torch.tensor([ids])}) for ids in before[:10]]
    model, tokenizer, report = trim_vocabulary(model, env.tokenizer, corpus)
    after = [tokenizer(words, is_split_into_words=True)["input_ids"] for words in corpus]
    assert [tokenizer.convert_ids_to_tokens(ids) for ids in after] == old_tokens
    diff = max(
        float((logits(model, {"input_ids": torch.tensor([ids])}) - ref).abs().max())
        for ids, ref in zip(after[: len(reference)], reference, strict=True)
    )
    record(
        env.row,
        "vocabulary",
        tokenizer=ROWS[env.row][1],
        pieces=f"{report['pieces_before']} -> {report['pieces_after']}",
        max_diff=diff,
    )
    assert report["pieces_after"] < report["pieces_before"] and diff == 0.0


# ------------------------------------------------------------------------------------------------ the refusals
def test_a_refused_capability_is_named_when_the_recipe_is_checked(tmp_path, capsys):
    """``hf-compress train --check`` reads the teacher's config and refuses, before any training, what its
    architecture cannot do: naming the recipe key, the architecture and the reason."""
    import yaml

    from hf_compress.cli import main

    albert = tmp_path / "albert"
    AutoConfig.for_model("albert", num_hidden_layers=2, num_labels=len(LABELS)).save_pretrained(albert)
    recipe = {
        "model": {"teacher": str(albert), "student": {"from_teacher_layers": [0]}},
        "data": {"task": "ner", "train_file": str(tmp_path / "train.txt")},
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(SystemExit) as stop:
        main(["train", str(tmp_path / "recipe.yaml"), "--output_dir", str(tmp_path / "out"), "--check"])
    error = capsys.readouterr().err
    assert stop.value.code == 2
    assert (
        "model.student.from_teacher_layers" in error
        and "ALBERT does not support a student from teacher layers" in error
    )
    assert "share one set of layer weights" in error
    recipe["model"]["student"] = {"name_or_path": str(albert)}  # the other capabilities are fine on ALBERT
    recipe["pruning"] = {"structure": "heads", "start_step": 0, "end_step": 2}
    Recipe.from_dict(recipe).check_architecture(AutoConfig.from_pretrained(albert))


def test_the_documented_table_lists_every_architecture_and_refusal():
    section = (Path(__file__).resolve().parents[1] / "docs" / "architectures.md").read_text()
    words = " ".join(section.replace("\n  ", " ").split())  # (the prose wraps lines)
    for model_type, arch in ARCHITECTURES.items():
        assert f"(`{model_type}`) |" in section, model_type
        for capability, reason in arch.refusals().items():
            assert reason in words, (arch.name, capability)
        if arch.fusion is not True:
            assert arch.fusion in words, arch.name


def test_refusals_follow_from_the_description():
    from hf_compress.architectures import Architecture, Attention, FeedForward

    described = Architecture(
        "Shared", ("shared",), "layers", Attention("attn", "attn.o", qkv="attn.qkv"), (FeedForward("i", "o"),)
    )
    assert described.refusals() == {}
    described = Architecture(
        "Shared",
        ("shared",),
        "layers",
        Attention("attn", "attn.o", qkv="attn.qkv"),
        (FeedForward("i", "o"),),
        shared_layers=True,
        attention_maps=False,
        refused={"lowrank": "a reason"},
    )
    assert described.refusals() == {
        "lowrank": "a reason",
        "student_layers": "its depths share one set of layer weights",
        "attention_distillation": "its attention does not return attention maps",
    }
