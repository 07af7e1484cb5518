"""Stop training cleanly on SIGTERM or SIGINT: finish the optimizer step, write a complete checkpoint, stop.

Spot VMs and job schedulers stop a job with SIGTERM (then SIGKILL after a grace period); a user presses Ctrl-C.
With :class:`StopOnSignal` among a Trainer's callbacks (``hf-compress train`` always has it;
``CompressionTrainer(stop_on_signal=True)`` adds it), the first such signal lets the current optimizer step finish,
saves a checkpoint of it as any periodic checkpoint is saved (weights, optimizer, scheduler, RNG, every callback's
state, the recipe), and raises :class:`TrainingStopped` out of ``train()``. The command line then exits with
:data:`STOPPED_EXIT_CODE`, and ``--resume_from_checkpoint`` goes on from that checkpoint as if nothing happened.

A second signal while that checkpoint is being written waits for it to be complete; a second signal before it
starts stops at once (``KeyboardInterrupt``), leaving the checkpoints already written. Outside ``train()`` the
process's own handlers are in place again. In a distributed run every process stops at the same step (the flag is
reduced across processes at each step).
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

logger = logging.get_logger(__name__)

__all__ = ["STOPPED_EXIT_CODE", "StopOnSignal", "TrainingStopped"]

#: The exit status of ``hf-compress train`` stopped by a signal with a complete checkpoint (EX_TEMPFAIL of
#: sysexits.h: a temporary failure, to be continued with ``--resume_from_checkpoint``).
STOPPED_EXIT_CODE = 75

#: The Trainer's training-loop function: a signal whose frame is not inside it arrived outside ``train()``.
_TRAINING_LOOP = "_inner_training_loop"


class TrainingStopped(Exception):
    """Training stopped on a signal after optimizer step ``step``; ``checkpoint`` holds it (None: none written)."""

    def __init__(self, signal_name: str, step: int, checkpoint: str | None):
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint
        if checkpoint is None:
            where = "no checkpoint of it was written (the save strategy kept none); resume from an earlier one"
        else:
            where = f"checkpoint {checkpoint} is complete: continue with --resume_from_checkpoint"
        super().__init__(f"stopped by {signal_name} after optimizer step {step}; {where}")


def _inside_training(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code.co_name == _TRAINING_LOOP:
            return True
        frame = frame.f_back
    return False


def _any_process(flag: bool, device: Any) -> bool:
    """``flag`` or-ed across the processes of a distributed run (itself otherwise)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


class StopOnSignal(TrainerCallback):
    """Finish the optimizer step, save a complete checkpoint and raise :class:`TrainingStopped` on a signal.

    Args:
        signals: the signals handled while ``train()`` runs (a signal the process ignores stays ignored).

    Attributes:
        received: the first signal received during this ``train()`` call, or None.
        stopped_step: the optimizer step it stopped after, once it did.
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)):
        self.signals = tuple(signals)
        self.received: int | None = None
        self.count = 0
        self.stopped_step: int | None = None
        self.checkpoint: str | None = None
        self._previous: dict[int, Any] = {}

    # ------------------------------------------------------------------------------------------ handlers
    def install(self) -> None:
        """Handle the signals (from the main thread only: elsewhere Python cannot, and a warning says so)."""
        if threading.current_thread() is not threading.main_thread():
            logger.warning("StopOnSignal: training runs outside the main thread, where signals cannot be handled")
            return
        for signum in self.signals:
            previous = signal.getsignal(signum)
            if previous is signal.SIG_IGN or signum in self._previous:
                continue
            self._previous[signum] = previous
            signal.signal(signum, self._handle)

    def restore(self) -> None:
        """Put the process's previous handlers back."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if not _inside_training(frame):  # train() ended by an exception: behave as the process would without us
            previous = self._previous.get(signum)
            self.restore()
            if callable(previous):
                previous(signum, frame)
            else:
                signal.raise_signal(signum)
            return
        self.count += 1
        if self.received is None:
            self.received = signum
            logger.warning(f"{name} received: finishing this optimizer step, then saving a checkpoint and stopping")
        elif self.stopped_step is not None:
            logger.warning(f"{name} received again: the checkpoint is being written; stopping once it is complete")
        else:
            logger.warning(f"{name} received again: stopping now, without a checkpoint of this step")
            self.restore()
            raise KeyboardInterrupt

    # ------------------------------------------------------------------------------------------ events
    def on_train_begin(self, args, state, control, **kwargs):
        self.received, self.count, self.stopped_step, self.checkpoint = None, 0, None, None
        self.install()

    def on_step_end(self, args, state, control, **kwargs):
        if _any_process(self.received is not None, args.device):
            if self.received is None:  # another process was signalled
                self.received = signal.SIGTERM
            self.stopped_step = state.global_step
            control.should_save = True
            control.should_training_stop = True

    def on_save(self, args, state, control, **kwargs):
        if self.stopped_step is not None and state.global_step == self.stopped_step:
            self.checkpoint = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.stopped_step is not None:  # the checkpoint is written: leave before evaluation and the end events
            self.restore()
            raise TrainingStopped(signal.Signals(self.received).name, self.stopped_step, self.checkpoint)

    def on_train_end(self, args, state, control, **kwargs):
        self.restore()
