"""The technique callbacks, in one place: each is a ``transformers.TrainerCallback`` (a
:class:`~hf_compress.technique.Technique`) that works with the plain ``Trainer`` or
:class:`~hf_compress.trainer.CompressionTrainer`::

    from hf_compress.callbacks import GradualPruningCallback, QATCallback

    trainer = Trainer(..., callbacks=[GradualPruningCallback(final_sparsity=0.5, start_epoch=0, end_epoch=2)])

Each lives in its technique's package (``hf_compress/pruning/``, ...), with its config; a technique from a plugin
is imported from its own package.
"""

from .distillation import DistillationCallback
from .lowrank import LowRankCallback
from .pruning import GradualPruningCallback
from .quantization import QATCallback
from .stopping import StopOnSignal
from .technique import Technique

__all__ = [
    "DistillationCallback",
    "GradualPruningCallback",
    "LowRankCallback",
    "QATCallback",
    "StopOnSignal",
    "Technique",
]
