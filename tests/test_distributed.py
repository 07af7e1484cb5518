"""Two CPU processes under ``accelerate launch`` (gloo): every process ends with the same masks, weights and
QAT scales.

On a machine without GPUs, ``accelerate launch --multi_gpu --num_processes 2`` starts two torchrun processes
that train on the CPU with the gloo backend (``--cpu --num_processes 2`` would need an MPI launcher).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parent / "distributed" / "prune_two_processes.py"
TECHNIQUES_SCRIPT = Path(__file__).parent / "distributed" / "techniques_two_processes.py"


def needs_accelerate(test):
    """Mark a two-process test: ``distributed``, skipped without the accelerate CLI beside this Python."""
    missing = shutil.which("accelerate") is None and not os.path.exists(
        os.path.join(os.path.dirname(sys.executable), "accelerate")
    )
    return pytest.mark.distributed(pytest.mark.skipif(missing, reason="accelerate CLI not installed")(test))


def _accelerate_launch(*args: str) -> subprocess.CompletedProcess:
    """``accelerate launch --multi_gpu --num_processes 2 ARGS``: two CPU processes on a machine without GPUs."""
    launcher = os.path.join(os.path.dirname(sys.executable), "accelerate")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    flags = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    return subprocess.run(
        [launcher, "launch", *flags, "--dynamo_backend", "no", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@needs_accelerate
def test_two_processes_hold_identical_masks(tmp_path):
    done = _accelerate_launch(str(SCRIPT), str(tmp_path))
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["world_size"] == ranks[1]["world_size"] == 2
    masks0, masks1 = ranks[0]["masks"], ranks[1]["masks"]
    assert masks0 and masks0.keys() == masks1.keys()
    zeros = sum(int((~m).sum()) for m in masks0.values())
    assert zeros == round(0.7 * sum(m.numel() for m in masks0.values()))
    for key in masks0:
        assert torch.equal(masks0[key], masks1[key]), key
    assert len(ranks[0]["qat_ranges"]) == 2 * 6 and ranks[0]["qat_ranges"] == ranks[1]["qat_ranges"]
    for part in ("weights", "projections"):
        assert ranks[0][part]
        for key, value in ranks[0][part].items():
            assert torch.equal(value, ranks[1][part][key]), key


def _assert_equal_states(a, b, where: str) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_equal_states(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_equal_states(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


@needs_accelerate
def test_every_technique_agrees_across_two_processes(tmp_path):
    """The contract's 'two processes agree', for every registered technique; and the teacher of those that take
    one is prepared by Accelerate in evaluation mode: not DDP-wrapped (the student is), not in the optimizer."""
    from hf_compress import registered_techniques

    done = _accelerate_launch(str(TECHNIQUES_SCRIPT), str(tmp_path))
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["world_size"] == ranks[1]["world_size"] == 2
    for technique in registered_techniques():
        first, second = ranks[0][technique.name], ranks[1][technique.name]
        assert first["weights"] and first["wrapped"] == "DistributedDataParallel", technique.name
        _assert_equal_states(first["weights"], second["weights"], f"{technique.name} weights")
        _assert_equal_states(first["state"], second["state"], f"{technique.name} state")
        if "teacher" in technique.resources:
            assert first["teacher_type"] == "BertForTokenClassification"  # not DistributedDataParallel
            assert first["teacher_in_optimizer"] is False and first["teacher_training"] is False


def _launch_cli(output_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    """`accelerate launch ... -m hf_compress train` on the quickstart recipe, shortened."""
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "quickstart-ner.yaml"
    return _accelerate_launch(
        "-m",
        "hf_compress",
        "train",
        str(recipe),
        "--output_dir",
        str(output_dir),
        "--data.max_train_samples",
        "64",
        "--data.max_eval_samples",
        "32",
        "--training.per_device_train_batch_size",
        "8",
        "--export.int8",
        "none",
        "--export.onnx",
        "false",
        *extra,
    )


@pytest.mark.distributed
def test_cli_under_accelerate_launch_trains_once_across_two_processes(tmp_path):
    """`accelerate launch -m hf_compress train` on a CPU machine: one DDP run (one results table), not two."""
    done = _launch_cli(tmp_path / "out", "--training.max_steps", "2", "--training.save_strategy", "no")
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.count("| model | layers |") == 1
    assert "parallel_mode != ParallelMode.DISTRIBUTED" not in done.stderr
    assert (tmp_path / "out" / "results.json").is_file()


@pytest.mark.distributed
def test_resume_under_accelerate_launch_on_the_cpu(tmp_path):
    """Resuming a two-process CPU run loads its optimizer (the Trainer maps it onto ``cpu:0``, which torch alone
    cannot restore) and continues from the checkpoint."""
    out = tmp_path / "out"
    steps = ["--training.save_strategy", "steps", "--training.save_steps", "1"]
    done = _launch_cli(out, "--training.max_steps", "1", *steps)
    assert done.returncode == 0, done.stderr[-4000:]
    done = _launch_cli(out, "--training.max_steps", "2", *steps, "--resume_from_checkpoint")
    assert done.returncode == 0, done.stderr[-4000:]
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and (out / "checkpoint-1").is_dir()


@needs_accelerate
def test_the_teacher_cache_is_shared_by_two_processes(tmp_path):
    """The quickstart recipe (``cache_teacher: true``) for 2 epochs in two processes: each writes its own shard in
    epoch 1, and in epoch 2 every batch of either process is read from the shards of both."""
    out = tmp_path / "out"
    done = _launch_cli(out, "--training.num_train_epochs", "2", "--training.save_strategy", "no")
    assert done.returncode == 0, done.stderr[-4000:]
    (cache,) = (out / "teacher_cache").iterdir()
    assert sorted(p.name for p in cache.glob("shard-*.bin")) == ["shard-0.bin", "shard-1.bin"]
    entries = [json.loads(p.read_text()) for p in sorted(cache.glob("shard-*.index.json"))]
    assert sum(len(e) for e in entries) == 64 and not set(entries[0]) & set(entries[1])  # each example once
    report = json.loads((out / "distillation_report.json").read_text())["teacher_cache"]
    assert (report["hits"], report["misses"]) == (4, 4)  # process 0: 4 batches an epoch, all of epoch 2 read
    assert report["examples"] == 64 and report["dtype"] == "float16"  # both shards readable by process 0
    assert report["bytes"] == sum(p.stat().st_size for p in cache.glob("shard-*.bin"))
