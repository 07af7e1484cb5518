"""Kill ``hf-compress train`` with SIGKILL mid-run, or stop it with SIGTERM / SIGINT, resume it from the command line,
get the uninterrupted result.

One recipe (tiny BERT, pruning ramp then QAT, a checkpoint every step) is run three ways: uninterrupted; killed
in the middle of the pruning ramp, then resumed with ``--resume_from_checkpoint``; killed while the QAT observers
are still observing, then resumed, in place and also from the checkpoint's path into a new output_dir. The resumed
students must equal the uninterrupted one exactly on CPU: weights, pruning masks (the zeros of the weights, and the
masks saved in the last checkpoint), QAT ranges and the loss of every step.

The killed run is the real command line, with one addition so that the kill lands at a chosen step whatever the
machine's speed: once every file of the checkpoint of that step is written, the process announces it in a marker
file and waits there; the test then kills it with SIGKILL.

The stopped runs save no periodic checkpoints: SIGTERM arrives at the start of a chosen optimizer step (in the
pruning ramp, then while the QAT observers observe), the run finishes that step, writes the only checkpoint of it
and exits with status 75; a SIGINT (Ctrl-C) while that checkpoint is written waits for it. Each stop's checkpoint
equals the uninterrupted run's checkpoint of that step tensor for tensor (weights, optimizer, scheduler, technique
states) with the same losses, and the run resumed after both stops ends exactly where the uninterrupted run ends.
While the first stopped run is paused, a second ``hf-compress train`` into its folder is refused at once, naming
it. SIGINT as the first signal is the in-process test at the end (``CompressionTrainer(stop_on_signal=True)``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import NER_LABELS, WORDS, tiny_bert_config
from safetensors.torch import load_file
from transformers import BertForTokenClassification, BertTokenizerFast

from hf_compress import GradualPruningCallback, QATCallback
from hf_compress.checkpoints import SAVING_MARKER
from hf_compress.cli import main as cli_main
from hf_compress.files import LOCK_FILE
from hf_compress.stopping import STOPPED_EXIT_CODE

# 40 sentences, batch 4: 10 optimizer steps an epoch; the resumed runs cross into (or restart inside) epoch 2.
TRAIN_SENTENCES, BATCH_SIZE, MAX_STEPS = 40, 4, 18
PRUNE_START, PRUNE_END = 2, 8  # the cubic ramp to 50% unstructured sparsity, masks updated every step
QAT_START, QAT_FREEZE = 11, 16  # observers on at step 11, frozen from step 16
KILL_STEPS = {"pruning ramp": 5, "QAT observing": 13}
TIMEOUT = 180  # seconds: generous, for a busy machine; a run takes a few seconds

CHILD_ENV = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}

# Run as ``python -c PAUSE_AT_STEP train ...``: the CLI, stopped for good right after the checkpoint of a step.
PAUSE_AT_STEP = """
import os, runpy, time
from transformers.trainer_callback import CallbackHandler

step, marker = int(os.environ["PAUSE_AT_STEP"]), os.environ["PAUSE_MARKER"]
on_save = CallbackHandler.on_save


def pausing_on_save(self, args, state, control):
    control = on_save(self, args, state, control)  # the Trainer's files and every callback's state are written
    if state.global_step == step:
        with open(marker + ".tmp", "w") as handle:
            handle.write(str(step))
        os.replace(marker + ".tmp", marker)
        while True:
            time.sleep(60)
    return control


CallbackHandler.on_save = pausing_on_save
runpy.run_module("hf_compress", run_name="__main__", alter_sys=True)
"""


def write_conll(path: Path, sentences: int, seed: int) -> None:
    rng = random.Random(seed)
    lines = ["-DOCSTART- -X- -X- O", ""]
    for _ in range(sentences):
        tag = "O"
        for _ in range(rng.randint(4, 10)):  # IOB2: an I- tag only continues an entity of its type
            tag = rng.choice(
                ["O", "O", f"I-{tag[2:]}" if tag != "O" else "O", *(t for t in NER_LABELS if t[0] == "B")]
            )
            lines.append(f"{rng.choice(WORDS)} NN O {tag}")
        lines.append("")
    path.write_text("\n".join(lines))


@pytest.fixture(scope="module")
def recipe(tmp_path_factory, tokenizer_dir) -> Path:
    """A tiny NER student on disk, tiny CoNLL files, and a recipe: pruning ramp, then QAT, a checkpoint a step."""
    folder = tmp_path_factory.mktemp("kill-resume")
    tokenizer = BertTokenizerFast.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS)).save_pretrained(folder / "student")
    tokenizer.save_pretrained(folder / "student")
    write_conll(folder / "train.txt", TRAIN_SENTENCES, seed=0)
    write_conll(folder / "valid.txt", 8, seed=1)
    recipe = {
        "model": {"student": {"name_or_path": str(folder / "student")}},
        "data": {"task": "ner", "train_file": "train.txt", "validation_file": "valid.txt", "max_length": 32},
        "pruning": {
            "structure": "unstructured",
            "final_sparsity": 0.5,
            "start_step": PRUNE_START,
            "end_step": PRUNE_END,
            "update_every": 1,
        },
        "quantization": {"start_step": QAT_START, "freeze_observers_step": QAT_FREEZE, "averaging_constant": 0.1},
        "training": {
            "max_steps": MAX_STEPS,
            "per_device_train_batch_size": BATCH_SIZE,
            "learning_rate": 1e-3,
            "seed": 7,
            "eval_strategy": "no",
            "save_strategy": "steps",
            "save_steps": 1,
            "save_total_limit": None,
            "logging_steps": 1,
            "use_cpu": True,
            "disable_tqdm": True,
            "report_to": "none",
        },
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def train_command(recipe: Path, output_dir: Path, *extra: str, module: bool = True) -> list[str]:
    head = ["-m", "hf_compress"] if module else ["-c", PAUSE_AT_STEP]
    return [sys.executable, *head, "train", str(recipe), "--output_dir", str(output_dir), *extra]


def run_to_the_end(command: list[str], cwd: Path) -> None:
    done = subprocess.run(
        command, cwd=cwd, env={**os.environ, **CHILD_ENV}, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]


def run_and_kill(recipe: Path, output_dir: Path, step: int) -> None:
    """Train into ``output_dir``, wait until the checkpoint of ``step`` is complete, then SIGKILL the process."""
    marker, log = output_dir.with_name(output_dir.name + ".paused"), output_dir.with_name(output_dir.name + ".log")
    marker.unlink(missing_ok=True)
    env = {**os.environ, **CHILD_ENV, "PAUSE_AT_STEP": str(step), "PAUSE_MARKER": str(marker)}
    command = train_command(recipe, output_dir, module=False)
    with open(log, "w") as handle:
        process = subprocess.Popen(command, cwd=recipe.parent, env=env, stdout=handle, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not marker.exists():
            if process.poll() is not None:
                pytest.fail(
                    f"the run ended (code {process.returncode}) before step {step}:\n{log.read_text()[-3000:]}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"no checkpoint of step {step} after {TIMEOUT} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def uninterrupted(recipe) -> Path:
    output_dir = recipe.parent / "uninterrupted"
    run_to_the_end(train_command(recipe, output_dir), recipe.parent)
    return output_dir


def load_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def pruned_weights(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The weights of the linears inside the transformer layers (what the recipe prunes)."""
    return {k: v for k, v in weights.items() if ".encoder.layer." in k and k.endswith(".weight") and v.dim() == 2}


def loss_history(output_dir: Path) -> list[tuple[int, float]]:
    state = json.loads((output_dir / f"checkpoint-{MAX_STEPS}" / "trainer_state.json").read_text())
    return [(log["step"], log["loss"]) for log in state["log_history"] if "loss" in log]


def assert_same_result(output_dir: Path, uninterrupted: Path) -> None:
    """The student, pruning masks, QAT ranges and losses of a resumed run are those of the uninterrupted run."""
    assert (output_dir / f"checkpoint-{MAX_STEPS}").is_dir()
    # weights: every tensor of the saved students is equal
    expected, resumed = load_file(uninterrupted / "model.safetensors"), load_file(output_dir / "model.safetensors")
    assert expected.keys() == resumed.keys()
    for name in expected:
        assert torch.equal(expected[name], resumed[name]), name
    # pruning masks: the zeros of the final weights and the masks of the last checkpoint
    for name, weight in pruned_weights(resumed).items():
        assert (weight == 0).float().mean().item() == pytest.approx(0.5, abs=0.01), name
    expected_masks = load_state(uninterrupted / f"checkpoint-{MAX_STEPS}" / GradualPruningCallback.state_file)
    resumed_masks = load_state(output_dir / f"checkpoint-{MAX_STEPS}" / GradualPruningCallback.state_file)
    assert expected_masks["sparsity"] == resumed_masks["sparsity"] == 0.5
    assert expected_masks["masks"].keys() == resumed_masks["masks"].keys() and expected_masks["masks"]
    for name, mask in expected_masks["masks"].items():
        assert torch.equal(mask, resumed_masks["masks"][name]), name
        assert torch.equal(mask, resumed[name.removesuffix("_mask")] != 0), name
    # QAT: the observers' ranges saved beside the final model (the int8 export's scales)
    expected_ranges = load_state(uninterrupted / QATCallback.state_file)
    resumed_ranges = load_state(output_dir / QATCallback.state_file)
    assert expected_ranges.keys() == resumed_ranges.keys() and expected_ranges
    for name, ranges in expected_ranges.items():
        assert bool(ranges["observed"]) and bool(resumed_ranges[name]["observed"]), name
        assert torch.equal(ranges["min"], resumed_ranges[name]["min"]), name
        assert torch.equal(ranges["max"], resumed_ranges[name]["max"]), name
    # and the same losses, step by step, before and after the kill
    assert loss_history(output_dir) == loss_history(uninterrupted)


@pytest.mark.parametrize("phase", list(KILL_STEPS))
def test_sigkill_then_resume_from_the_command_line_equals_the_uninterrupted_run(phase, recipe, uninterrupted):
    step = KILL_STEPS[phase]
    output_dir = recipe.parent / f"killed-at-{step}"
    run_and_kill(recipe, output_dir, step)

    # the process died at the chosen step, inside the phase, with nothing of the end of training written
    checkpoints = sorted(int(p.name.split("-")[1]) for p in output_dir.glob("checkpoint-*"))
    assert checkpoints[-1] == step and not (output_dir / "model.safetensors").exists()
    killed_at = output_dir / f"checkpoint-{step}"
    assert json.loads((killed_at / "trainer_state.json").read_text())["global_step"] == step
    pruning = load_state(killed_at / GradualPruningCallback.state_file)
    observers = load_state(killed_at / QATCallback.state_file)
    if phase == "pruning ramp":
        assert PRUNE_START < step < PRUNE_END and 0.0 < pruning["sparsity"] < 0.5
        assert step < QAT_START and not any(bool(o["observed"]) for o in observers.values())
    else:
        assert QAT_START < step < QAT_FREEZE and all(bool(o["observed"]) for o in observers.values())
        assert pruning["sparsity"] == 0.5

    written = {p.name: p.stat().st_mtime_ns for p in killed_at.iterdir()}
    if phase == "QAT observing":
        # the checkpoint's own folder, into a new output_dir: the observers come from that folder too
        elsewhere = recipe.parent / f"resumed-from-checkpoint-{step}"
        run_to_the_end(train_command(recipe, elsewhere, "--resume_from_checkpoint", str(killed_at)), recipe.parent)
        assert_same_result(elsewhere, uninterrupted)
    run_to_the_end(train_command(recipe, output_dir, "--resume_from_checkpoint"), recipe.parent)
    # it went on from that checkpoint (an earlier start would have saved the checkpoint of this step again)
    assert {p.name: p.stat().st_mtime_ns for p in killed_at.iterdir()} == written
    assert_same_result(output_dir, uninterrupted)


# ------------------------------------------------------------------------------------------------ SIGTERM / SIGINT
# Run as ``python -c SIGNAL_AT_STEP train ...``: the CLI, waiting at the start of optimizer step SIGNAL_AT_STEP until
# the test's signal has been handled; with SIGNAL_AGAIN_WHILE_SAVING, it waits again in the middle of writing that
# step's checkpoint (the Trainer's files written, the techniques' not yet) for a second signal.
SIGNAL_AT_STEP = """
import os, runpy, signal, time
from transformers.trainer_callback import CallbackHandler
import hf_compress.technique as technique
from hf_compress.stopping import StopOnSignal

signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, whatever the test runner ignores
step, marker = int(os.environ["SIGNAL_AT_STEP"]), os.environ["SIGNAL_MARKER"]
deadline, stoppers = time.monotonic() + 300, []


def announce(text):
    with open(marker + ".tmp", "w") as handle:
        handle.write(text)
    os.replace(marker + ".tmp", marker)


def wait_for_signals(count):
    while stoppers[0].count < count:
        if time.monotonic() > deadline:
            raise SystemExit("no signal came")
        time.sleep(0.01)


on_step_begin = CallbackHandler.on_step_begin


def pausing_on_step_begin(self, args, state, control):
    if state.global_step == step - 1 and not stoppers:  # optimizer step `step` begins
        stoppers.append(next(cb for cb in self.callbacks if isinstance(cb, StopOnSignal)))
        announce("step")
        wait_for_signals(1)
    return on_step_begin(self, args, state, control)


save_torch_state = technique.save_torch_state


def pausing_save(payload, path):
    if f"checkpoint-{step}" in str(path) and stoppers and stoppers[0].count == 1:
        announce("saving")
        wait_for_signals(2)
    return save_torch_state(payload, path)


CallbackHandler.on_step_begin = pausing_on_step_begin
if os.environ.get("SIGNAL_AGAIN_WHILE_SAVING"):
    technique.save_torch_state = pausing_save
runpy.run_module("hf_compress", run_name="__main__", alter_sys=True)
"""


def wait_for_marker(marker: Path, text: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not (marker.exists() and marker.read_text() == text):
        if process.poll() is not None:
            pytest.fail(f"the run ended (code {process.returncode}) before '{text}':\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no '{text}' after {TIMEOUT} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def run_and_signal(
    recipe: Path, output_dir: Path, step: int, signum: int, *extra: str, again: int | None = None, while_paused=None
):
    """Train into ``output_dir``, send ``signum`` as optimizer step ``step`` begins (and the signal ``again`` while
    its checkpoint is written); return the exit status and the output."""
    marker, log = output_dir.with_name(output_dir.name + ".paused"), output_dir.with_name(output_dir.name + ".log")
    marker.unlink(missing_ok=True)
    env = {**os.environ, **CHILD_ENV, "SIGNAL_AT_STEP": str(step), "SIGNAL_MARKER": str(marker)}
    if again:
        env["SIGNAL_AGAIN_WHILE_SAVING"] = "1"
    command = [sys.executable, "-c", SIGNAL_AT_STEP, "train", str(recipe), "--output_dir", str(output_dir), *extra]
    with open(log, "w") as handle:
        process = subprocess.Popen(command, cwd=recipe.parent, env=env, stdout=handle, stderr=subprocess.STDOUT)
    try:
        wait_for_marker(marker, "step", process, log)
        if while_paused is not None:
            while_paused(process.pid)
        os.kill(process.pid, signum)
        if again:
            wait_for_marker(marker, "saving", process, log)
            os.kill(process.pid, again)
        code = process.wait(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return code, log.read_text()


def assert_equal_state(expected, actual, where: str) -> None:
    """Nested state (dicts, lists, tensors, numbers) equal, tensors by ``torch.equal``."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor) and torch.equal(expected, actual), where
    elif isinstance(expected, dict):
        assert expected.keys() == actual.keys(), where
        for key in expected:
            assert_equal_state(expected[key], actual[key], f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(expected) == len(actual), where
        for index, (a, b) in enumerate(zip(expected, actual, strict=True)):
            assert_equal_state(a, b, f"{where}[{index}]")
    else:
        assert expected == actual, where


def assert_same_checkpoint(stopped: Path, reference: Path) -> int:
    """Every tensor of the stopped run's checkpoint and every logged loss equal the uninterrupted run's; returns
    how many tensors were compared."""
    assert not (stopped / SAVING_MARKER).exists()
    expected, actual = load_file(reference / "model.safetensors"), load_file(stopped / "model.safetensors")
    assert_equal_state(expected, actual, "model")
    compared = len(expected)
    for name in ("optimizer.pt", "scheduler.pt", GradualPruningCallback.state_file, QATCallback.state_file):
        expected, actual = load_state(reference / name), load_state(stopped / name)
        assert_equal_state(expected, actual, name)
        compared += sum(isinstance(v, torch.Tensor) for v in _leaves(expected))
    logs = [json.loads((c / "trainer_state.json").read_text())["log_history"] for c in (reference, stopped)]
    assert [(e["step"], e["loss"]) for e in logs[0] if "loss" in e] == [
        (e["step"], e["loss"]) for e in logs[1] if "loss" in e
    ]
    return compared


def _leaves(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def test_sigterm_and_sigint_stop_with_a_complete_checkpoint_and_resume_exactly(recipe, uninterrupted, capsys):
    stop_recipe = recipe.with_name("recipe-stop.yaml")
    settings = yaml.safe_load(recipe.read_text())
    settings["training"]["save_steps"] = 1000  # no periodic checkpoint: each one below is written by a stop
    stop_recipe.write_text(yaml.safe_dump(settings))
    output_dir = recipe.parent / "stopped"
    checkpoints = lambda: sorted(int(p.name.split("-")[1]) for p in output_dir.glob("checkpoint-*"))  # noqa: E731
    refused = []

    def second_run_into_the_same_folder(pid: int) -> None:
        started = time.monotonic()
        with pytest.raises(SystemExit) as stop:
            cli_main(["train", str(stop_recipe), "--output_dir", str(output_dir)])
        refused.append((stop.value.code, capsys.readouterr().err, time.monotonic() - started))

    # 1. SIGTERM in the pruning ramp; meanwhile a second run into the folder is refused, naming the first
    code, log = run_and_signal(
        stop_recipe, output_dir, 5, signal.SIGTERM, while_paused=second_run_into_the_same_folder
    )
    assert code == STOPPED_EXIT_CODE, log[-3000:]
    assert f"stopped by SIGTERM after optimizer step 5; checkpoint {output_dir / 'checkpoint-5'} is complete" in log
    ((status, err, seconds),) = refused
    assert status == 2 and err.count("\n") == 1 and "is in use by another run: pid " in err and seconds < 30
    assert checkpoints() == [5] and not (output_dir / "model.safetensors").exists()
    assert not (output_dir / LOCK_FILE).exists()  # released on the way out
    assert 0.0 < load_state(output_dir / "checkpoint-5" / GradualPruningCallback.state_file)["sparsity"] < 0.5
    compared = assert_same_checkpoint(output_dir / "checkpoint-5", uninterrupted / "checkpoint-5")

    # 2. resumed, then SIGTERM while the QAT observers observe, and Ctrl-C while its checkpoint is written: the
    # checkpoint is completed first
    args = (stop_recipe, output_dir, 13, signal.SIGTERM, "--resume_from_checkpoint")
    code, log = run_and_signal(*args, again=signal.SIGINT)
    assert code == STOPPED_EXIT_CODE, log[-3000:]
    assert "SIGINT received again: the checkpoint is being written; stopping once it is complete" in log
    assert "stopped by SIGTERM after optimizer step 13" in log and checkpoints() == [5, 13]
    observers = load_state(output_dir / "checkpoint-13" / QATCallback.state_file)
    assert QAT_START < 13 < QAT_FREEZE and all(bool(o["observed"]) for o in observers.values())
    compared += assert_same_checkpoint(output_dir / "checkpoint-13", uninterrupted / "checkpoint-13")

    # 3. resumed to the end: the uninterrupted run's student, masks, ranges and losses
    run_to_the_end(train_command(stop_recipe, output_dir, "--resume_from_checkpoint"), recipe.parent)
    assert_same_result(output_dir, uninterrupted)
    print(f"\nSIGTERM/SIGINT: 2 stops, {compared} checkpoint tensors equal, then the uninterrupted result")


def test_compression_trainer_stops_on_ctrl_c_when_asked(tokenizer, tmp_path):
    """The Python API: ``stop_on_signal=True``; on SIGINT ``train()`` raises TrainingStopped with the complete
    checkpoint of the step, Python's own handler is back afterwards, and resuming goes on to the end."""
    from test_trainer import args_for, ner_dataset
    from transformers import DataCollatorForTokenClassification, TrainerCallback

    from hf_compress import CompressionTrainer
    from hf_compress.stopping import TrainingStopped

    class CtrlCAtStep3(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 2:  # optimizer step 3 begins
                signal.raise_signal(signal.SIGINT)

    def make(*callbacks) -> CompressionTrainer:
        torch.manual_seed(0)
        return CompressionTrainer(
            model=BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS, num_hidden_layers=1)),
            recipe={"pruning": {"final_sparsity": 0.5, "start_step": 0, "end_step": 6, "update_every": 1}},
            args=args_for(tmp_path, max_steps=6, save_strategy="no"),
            train_dataset=ner_dataset(tokenizer, n=32),
            data_collator=DataCollatorForTokenClassification(tokenizer),
            callbacks=list(callbacks),
            stop_on_signal=True,
        )

    # Python's handler (KeyboardInterrupt), as in a terminal or a notebook, whatever the test runner set
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(TrainingStopped) as stopped:
            make(CtrlCAtStep3()).train()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)
    checkpoint = tmp_path / "checkpoint-3"
    assert str(stopped.value) == (
        f"stopped by SIGINT after optimizer step 3; checkpoint {checkpoint} is complete: continue with "
        "--resume_from_checkpoint"
    )
    assert stopped.value.step == 3 and stopped.value.checkpoint == str(checkpoint)
    assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "pruning_state.pt", "recipe.yaml"} <= {
        p.name for p in checkpoint.iterdir()
    } and not (checkpoint / SAVING_MARKER).exists()
    resumed = make()
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 6


def test_a_teacher_fine_tuned_alone_stops_on_sigterm_and_resumes_exactly(tmp_path, tokenizer_dir):
    """A recipe without a student fine-tunes the teacher alone (a new NER head on a pretrained encoder) into
    ``output_dir/teacher``. SIGTERM in that stage stops it with a complete checkpoint (status 75), and the run
    resumed from it ends with the uninterrupted run's teacher and losses: the new head is drawn from the recipe's
    seed, so both runs start from the same model."""
    from transformers import BertModel

    tokenizer = BertTokenizerFast.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    BertModel(tiny_bert_config(len(tokenizer), ["LABEL_0", "LABEL_1"])).save_pretrained(tmp_path / "encoder")
    tokenizer.save_pretrained(tmp_path / "encoder")
    write_conll(tmp_path / "train.txt", TRAIN_SENTENCES, seed=0)
    write_conll(tmp_path / "valid.txt", 8, seed=1)
    steps = 8
    recipe = tmp_path / "teacher.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "model": {"teacher": str(tmp_path / "encoder"), "train_teacher": True},
                "data": {"task": "ner", "train_file": "train.txt", "validation_file": "valid.txt", "max_length": 32},
                "training": {
                    "max_steps": steps,
                    "per_device_train_batch_size": BATCH_SIZE,
                    "learning_rate": 1e-3,
                    "warmup_ratio": 0.25,
                    "seed": 7,
                    "group_by_length": True,
                    "eval_strategy": "no",
                    "save_strategy": "steps",
                    "save_steps": 1000,  # the only checkpoints: the stop's and the last step's
                    "logging_steps": 1,
                    "use_cpu": True,
                    "disable_tqdm": True,
                    "report_to": "none",
                },
            }
        )
    )
    uninterrupted, stopped = tmp_path / "uninterrupted", tmp_path / "stopped"
    run_to_the_end(train_command(recipe, uninterrupted), tmp_path)
    code, log = run_and_signal(recipe, stopped, 3, signal.SIGTERM)
    assert code == STOPPED_EXIT_CODE, log[-3000:]
    checkpoint = stopped / "teacher" / "checkpoint-3"
    assert f"stopped by SIGTERM after optimizer step 3; checkpoint {checkpoint} is complete" in log
    assert not (stopped / "teacher" / "model.safetensors").exists()
    run_to_the_end(train_command(recipe, stopped, "--resume_from_checkpoint"), tmp_path)

    expected = load_file(uninterrupted / "teacher" / "model.safetensors")
    resumed = load_file(stopped / "teacher" / "model.safetensors")
    assert expected.keys() == resumed.keys() and "classifier.weight" in expected
    for name in expected:
        assert torch.equal(expected[name], resumed[name]), name
    losses = [
        [
            (e["step"], e["loss"])
            for e in json.loads((run / "teacher" / f"checkpoint-{steps}" / "trainer_state.json").read_text())[
                "log_history"
            ]
            if "loss" in e
        ]
        for run in (uninterrupted, stopped)
    ]
    assert len(losses[0]) == steps and losses[0] == losses[1]
    # the teacher alone: one row, no student saved
    rows = json.loads((stopped / "results.json").read_text())
    assert [r["name"] for r in rows] == ["teacher"] and not (stopped / "model.safetensors").exists()
