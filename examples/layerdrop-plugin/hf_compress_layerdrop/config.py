"""The ``layerdrop`` recipe block."""

from __future__ import annotations

from dataclasses import dataclass, field

from hf_compress.checks import MAX_EPOCHS, checked, count, number
from hf_compress.configs import RecipeError, check_schedule

__all__ = ["LayerDropConfig"]


@checked
@dataclass
class LayerDropConfig:
    """LayerDrop (Fan et al., 2019): in training, each transformer layer is skipped (its input passed on unchanged)
    with probability ``p``, drawn anew at every optimizer step; evaluation and the export run every layer.

    ``p`` ramps linearly from 0 at ``start`` to ``drop_rate`` at ``end`` and stays there (without a schedule,
    ``p = drop_rate`` from the first step). The draws depend only on ``seed`` and the optimizer step: a resumed run
    skips the layers an uninterrupted one does, and every process of a distributed run skips the same ones.

    Attributes:
        drop_rate: the probability a layer is skipped once the ramp is over, in [0, 0.9] (the paper trains with
            0.1 to 0.5).
        start_epoch / end_epoch: the ramp in epochs (floats); or ``start_step`` / ``end_step`` in optimizer steps.
            ``end`` needs ``start``.
        layers: the 0-based indices of the layers that may be skipped (default: every layer); e.g. every other
            layer, the ones the paper removes to make a shallower model at inference.
        seed: the seed of the draws (the same seed, the same layers skipped at each step).
    """

    drop_rate: float = field(default=0.2, metadata=number(0.0, 0.9))
    start_epoch: float | None = field(default=None, metadata=number(0.0, MAX_EPOCHS))
    end_epoch: float | None = field(default=None, metadata=number(0.0, MAX_EPOCHS))
    start_step: int | None = field(default=None, metadata=count(0))
    end_step: int | None = field(default=None, metadata=count(0))
    layers: list[int] | None = field(default=None, metadata=count(0))
    seed: int = field(default=0, metadata=count(0))

    def __post_init__(self) -> None:
        check_schedule(self, ("start", "end"), required=False)
        if self.layers is not None and (not self.layers or len(set(self.layers)) != len(self.layers)):
            raise RecipeError("layers", self.layers, "allowed: a non-empty list of distinct layer indices")
