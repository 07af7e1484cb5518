"""What one optimizer step and one evaluation batch of a recipe cost, measured on a slice of its data.

Runs a recipe as ``hf-compress train`` does (:func:`hf_compress.run_recipe`, stopping cleanly on SIGTERM), with a
clock on every optimizer step and every evaluation batch (wall and CPU seconds of the process), and writes
``<output_dir>/step_costs.json``: the seconds per step (the first step apart: it warms up), per evaluation batch,
the process's peak resident memory, and an estimate of a full epoch from the mean word-piece length of the slice's
sentences against the full training set's. Recipe keys are overridden as on the command line:

    nice -n 19 python benchmarks/train_step_costs.py recipes/conll2003-mpnet-base-teacher.yaml \\
        --output_dir out/mpnet-costs --model.teacher models/all-mpnet-base-v2 \\
        --data.train_file train.txt --data.validation_file valid.txt \\
        --data.max_train_samples 320 --data.max_eval_samples 96 --training.num_train_epochs 1

On a shared machine the wall seconds depend on the load; the CPU seconds much less.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import resource
import statistics
import sys
import time
from pathlib import Path

from transformers import AutoTokenizer, TrainerCallback

from hf_compress import Recipe, run_recipe
from hf_compress.cli import parse_overrides
from hf_compress.model_sources import resolve_model_path
from hf_compress.pipeline import default_training_arguments
from hf_compress.stopping import STOPPED_EXIT_CODE, TrainingStopped
from hf_compress.tasks import get_task


class StepClock(TrainerCallback):
    """Wall and CPU seconds of each optimizer step and each evaluation batch."""

    def __init__(self):
        self.steps: list[tuple[float, float]] = []
        self.eval_batches: list[tuple[float, float]] = []
        self._step = self._batch = None

    @staticmethod
    def _now() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    def on_step_begin(self, args, state, control, **kwargs):
        self._step = self._now()

    def on_step_end(self, args, state, control, **kwargs):
        wall, cpu = self._now()
        self.steps.append((wall - self._step[0], cpu - self._step[1]))
        self._batch = None

    def on_prediction_step(self, args, state, control, **kwargs):
        now = self._now()
        if self._batch is not None:
            self.eval_batches.append((now[0] - self._batch[0], now[1] - self._batch[1]))
        self._batch = now

    def on_evaluate(self, args, state, control, **kwargs):
        self._batch = None


def summary(samples: list[tuple[float, float]]) -> dict[str, float] | None:
    if not samples:
        return None
    wall, cpu = zip(*samples, strict=True)
    return {"count": len(samples), "wall_median_s": statistics.median(wall), "cpu_median_s": statistics.median(cpu)}


def mean_pieces(recipe: Recipe, sentences: list) -> float:
    """The mean word-piece length of ``sentences`` (special tokens included, cut at ``data.max_length``)."""
    tokenizer = AutoTokenizer.from_pretrained(
        resolve_model_path(recipe.model.teacher or recipe.model.student.name_or_path)
    )
    split = isinstance(sentences[0], list)  # NER: word lists
    pieces = tokenizer(sentences, is_split_into_words=split)["input_ids"]
    return sum(min(len(ids), recipe.data.max_length) for ids in pieces) / len(pieces)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--resume_from_checkpoint", nargs="?", const=True, default=None)
    args, extra = parser.parse_known_args()
    overrides = parse_overrides(extra)
    recipe = Recipe.from_yaml(args.recipe, overrides)
    training_args = default_training_arguments(args.output_dir, recipe.training)
    clock = StepClock()
    started = time.perf_counter()
    stopped = None
    try:
        run_recipe(recipe, training_args, args.resume_from_checkpoint, [clock], stop_on_signal=True)
    except TrainingStopped as error:
        stopped = str(error)
    task = get_task(recipe.data.task)
    full_data = dataclasses.replace(recipe.data, max_train_samples=None, max_eval_samples=None)
    sentences = task.texts(task.load_raw(full_data)["train"], full_data)
    limit = recipe.data.max_train_samples or len(sentences)
    slice_length, full_length = mean_pieces(recipe, sentences[:limit]), mean_pieces(recipe, sentences)
    steps = summary(clock.steps[1:])
    steps_per_epoch = math.ceil(len(sentences) / training_args.per_device_train_batch_size)
    report = {
        "command": " ".join(["python", *sys.argv]),
        "stopped": stopped,
        "wall_s": time.perf_counter() - started,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "first_step": summary(clock.steps[:1]),
        "optimizer_step": steps,
        "eval_batch": summary(clock.eval_batches),
        "mean_pieces_slice": slice_length,
        "mean_pieces_full": full_length,
        "full_train_sentences": len(sentences),
        "steps_per_epoch": steps_per_epoch,
    }
    if steps:
        scale = steps_per_epoch * full_length / slice_length
        report["epoch_estimate_wall_h"] = scale * steps["wall_median_s"] / 3600
        report["epoch_estimate_cpu_h"] = scale * steps["cpu_median_s"] / 3600
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.output_dir) / "step_costs.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return STOPPED_EXIT_CODE if stopped else 0


if __name__ == "__main__":
    sys.exit(main())
