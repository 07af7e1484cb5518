"""The encoder architectures hf-compress knows, described in one place.

Each :class:`Architecture` says, for its model types, where the transformer layers are (from the base model), the
attention projections and how their rows split into heads, the FFN blocks of a layer, what a layer derives from
its index at construction, whether ONNX Runtime fuses its graph, and which capabilities it refuses and why (the
word embeddings are found alike for all, by transformers' ``get_input_embeddings``). Students, structured pruning,
distillation, low-rank defaults, QAT and int8 targets and the export read this description; no technique branches
on a model type. Adding an architecture is one :func:`register_architecture` entry (and its row in the matrix
tests, ``tests/test_architectures.py``).

A model type not described here is read as BERT-style (``attention.self.query``, ``intermediate.dense``, ...) with
its layer list found by name (``layer``, ``layers``, ``h``, ``block``): what fits works, what does not is refused
naming the model type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .modules import SettingError, locate_layer_list

__all__ = [
    "ARCHITECTURES",
    "CAPABILITIES",
    "Architecture",
    "Attention",
    "FeedForward",
    "UnsupportedCapabilityError",
    "architecture_of",
    "describe",
    "display_name",
    "layer_list",
    "register_architecture",
    "require",
    "weight_layers",
]

#: What a recipe can ask of an architecture, by the names refusals use, with the words errors and the docs use.
CAPABILITIES: dict[str, str] = {
    "student_layers": "a student from teacher layers",
    "distillation": "logit distillation",
    "hidden_distillation": "hidden-state distillation",
    "attention_distillation": "attention-map distillation",
    "neuron_pruning": "FFN-neuron pruning",
    "head_pruning": "attention-head pruning",
    "width_pruning": "hidden-width pruning",
    "qat": "quantization-aware training",
    "lowrank": "low-rank layers",
    "export": "ONNX export and int8",
}


class UnsupportedCapabilityError(SettingError):
    """An architecture cannot do what a recipe asks: names the architecture, the capability and the reason."""

    def __init__(self, architecture: str, capability: str, reason: str, setting: str | None = None):
        self.architecture, self.capability, self.reason = architecture, capability, reason
        words = CAPABILITIES.get(capability, capability)
        super().__init__(setting or capability, architecture, f"{architecture} does not support {words}: {reason}")
        self.args = (f"{architecture} does not support {words}: {reason}",)


def _hidden_over_heads(config: Any) -> int:
    return int(config.hidden_size) // int(config.num_attention_heads)


@dataclass(frozen=True)
class Attention:
    """The self-attention of a layer (paths relative to the layer).

    Attributes:
        module: the attention module, which holds the head count (``head_count_attributes``) and width
            (``width_attributes``, heads x head size) that slicing heads out updates where the class keeps them.
        output: the output projection; its input columns are the heads, ``head_size`` each.
        query / key / value: separate projections, rows grouped by head; or
        qkv: one fused projection, rows ``[q; k; v]`` (each grouped by head), or with ``qkv_per_head`` rows
            ``[q_h; k_h; v_h]`` head after head (DeBERTa's ``in_proj``).
        head_vectors: parameters of ``module`` with one entry per query row (DeBERTa's ``q_bias``, ``v_bias``).
        optional: projections of ``module`` with rows grouped by head that some configs have (relative positions).
        per_head_inputs: arguments of ``module``'s forward with one entry per head on dimension 1, computed outside
            the layer (MPNet's relative ``position_bias``, shared by all layers): sliced to the kept heads once heads
            are removed from the layer.
        head_mixers: modules of ``module`` that mix the heads when a config has them (DeBERTa's talking heads):
            heads cannot be pruned then.
    """

    module: str
    output: str
    query: str | None = None
    key: str | None = None
    value: str | None = None
    qkv: str | None = None
    qkv_per_head: bool = False
    head_vectors: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    per_head_inputs: tuple[str, ...] = ()
    head_mixers: tuple[str, ...] = ()
    head_count_attributes: tuple[str, ...] = ("num_attention_heads",)
    width_attributes: tuple[str, ...] = ("all_head_size",)


@dataclass(frozen=True)
class FeedForward:
    """An FFN block of a layer: ``input`` (hidden -> neurons) and ``output`` (neurons -> hidden) linears, paths
    relative to the layer; ``{}`` in them stands for 0, 1, ... (as many blocks as the layer has). ``gated``: the
    input's rows are ``[value; gate]`` (GLU), so neuron ``j`` is its rows ``j`` and ``I + j``."""

    input: str
    output: str
    gated: bool = False


@dataclass(frozen=True)
class Architecture:
    """What hf-compress needs to know of an encoder architecture.

    Attributes:
        name: how errors and the documentation name it.
        model_types: the ``config.model_type`` values it covers.
        layers: the path of the transformer layer list from the base model (``encoder.layer``); ``*`` stands for
            every index (ALBERT's ``encoder.albert_layer_groups.*.albert_layers``: the layers with weights).
        attention / feed_forwards: the parts of a layer (:class:`Attention`, :class:`FeedForward`).
        intermediate_size: the config key every FFN block's width comes from (lowered by neuron removal).
        hidden_size / num_heads: the config keys of the residual width and of the head count (lowered by
            hidden-width pruning).
        per_head_tables: parameters of the base model with one column per head, shared by all layers (MPNet's
            relative attention bias): hidden-width pruning keeps the same heads in every layer and cuts them.
        head_size: the attention head size from the config.
        layers_from_index: a layer derives part of itself from its index at construction (ModernBERT: attention
            window, RoPE base, first-layer norm); a layer copied to another index is rebuilt as that index builds it.
        shared_layers: the same layer weights run at several depths (ALBERT): no student from teacher layers.
        attention_maps: its attention returns the attention maps (with eager attention), which attention-map
            distillation needs.
        native_head_pruning: the model class implements ``prune_heads`` (recorded in ``config.pruned_heads``) where
            transformers has it (4.x).
        fusion: ONNX Runtime's transformer optimizer fuses its graph (as ``bert``), else the reason it does not.
        refused: capability -> why it cannot be done (checked when a recipe is checked, before training), beside
            what ``shared_layers`` and ``attention_maps`` imply (:meth:`refusals`).
    """

    name: str
    model_types: tuple[str, ...]
    layers: str
    attention: Attention
    feed_forwards: tuple[FeedForward, ...]
    intermediate_size: str = "intermediate_size"
    hidden_size: str = "hidden_size"
    num_heads: str = "num_attention_heads"
    per_head_tables: tuple[str, ...] = ()
    head_size: Callable[[Any], int] = _hidden_over_heads
    layers_from_index: bool = False
    shared_layers: bool = False
    attention_maps: bool = True
    native_head_pruning: bool = True
    fusion: bool | str = True
    refused: Mapping[str, str] = field(default_factory=dict)

    def refusals(self) -> dict[str, str]:
        """Every capability this architecture refuses, with the reason."""
        found = dict(self.refused)
        if self.shared_layers:
            found.setdefault("student_layers", "its depths share one set of layer weights")
        if not self.attention_maps:
            found.setdefault("attention_distillation", "its attention does not return attention maps")
        return found


#: The described architectures by model type.
ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(architecture: Architecture) -> Architecture:
    """Describe an architecture for its model types (replacing an earlier description of them)."""
    for model_type in architecture.model_types:
        ARCHITECTURES[model_type] = architecture
    return architecture


def _config_of(model_or_config: Any) -> Any:
    return getattr(model_or_config, "config", model_or_config)


def architecture_of(model_or_config: Any) -> Architecture | None:
    """The description of a model's (or config's) model type, or None when it is not described."""
    return ARCHITECTURES.get(getattr(_config_of(model_or_config), "model_type", None))


def display_name(model_or_config: Any) -> str:
    """The architecture's name, or ``model type 'x' (read as BERT-style)`` for an undescribed one."""
    found = architecture_of(model_or_config)
    if found is not None:
        return found.name
    return f"model type {getattr(_config_of(model_or_config), 'model_type', None)!r} (read as BERT-style)"


def require(model_or_config: Any, capability: str, setting: str | None = None) -> None:
    """Raise :class:`UnsupportedCapabilityError` when the architecture refuses ``capability``."""
    found = architecture_of(model_or_config)
    refusals = found.refusals() if found is not None else {}
    if capability in refusals:
        raise UnsupportedCapabilityError(found.name, capability, refusals[capability], setting)


def _base(model: nn.Module) -> nn.Module:
    return getattr(model, "base_model", model)


def _expand(root: nn.Module, path: str) -> list[nn.Module]:
    """The modules at ``path`` under ``root``, ``*`` standing for every child."""
    found = [root]
    for part in path.split("."):
        if part == "*":
            found = [child for module in found for child in module.children()]
        else:
            found = [getattr(module, part) for module in found if hasattr(module, part)]
    return found


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every transformer layer that has its own weights, with its name in ``model`` (ALBERT: the shared ones).

    ``ValueError`` naming the model type when none is found.
    """
    found = architecture_of(model)
    names = {id(m): n for n, m in model.named_modules()}
    if found is not None:
        lists = _expand(_base(model), found.layers)
        layers = [layer for modules in lists for layer in modules]
        if layers and all(id(layer) in names for layer in layers):
            return [(names[id(layer)], layer) for layer in layers]
    located = locate_layer_list(model)
    if located is None:
        count = getattr(getattr(model, "config", None), "num_hidden_layers", "?")
        raise ValueError(f"could not find the list of {count} transformer layers in {type(model).__name__}")
    return [(f"{located[0]}.{i}", layer) for i, layer in enumerate(located[1])]


def layer_list(model: nn.Module, capability: str | None = None) -> tuple[str, nn.ModuleList]:
    """The ``nn.ModuleList`` of the transformer layers, one per depth, and its name in ``model``.

    An architecture whose depths share weights (ALBERT) has no such list: :class:`UnsupportedCapabilityError`
    naming ``capability`` (default: a student from teacher layers).
    """
    require(model, "student_layers" if capability is None else capability)
    layers = weight_layers(model)
    parent_name = layers[0][0].rpartition(".")[0]
    parent = model.get_submodule(parent_name)
    if not isinstance(parent, nn.ModuleList):
        raise ValueError(f"the transformer layers of {type(model).__name__} are not in one nn.ModuleList")
    return parent_name, parent


def describe(model_or_config: Any) -> Architecture:
    """The model's description, or the BERT-style reading of an undescribed model type."""
    return architecture_of(model_or_config) or _BERT_STYLE


# --------------------------------------------------------------------------------------------- the entries
_BERT_ATTENTION = Attention(
    module="attention.self",
    query="attention.self.query",
    key="attention.self.key",
    value="attention.self.value",
    output="attention.output.dense",
)
_BERT_FFN = (FeedForward("intermediate.dense", "output.dense"),)
_BERT_STYLE = Architecture("BERT-style", (), "encoder.layer", _BERT_ATTENTION, _BERT_FFN)

register_architecture(Architecture("BERT", ("bert",), "encoder.layer", _BERT_ATTENTION, _BERT_FFN))
register_architecture(
    Architecture(
        "RoBERTa / XLM-R / CamemBERT",
        ("roberta", "xlm-roberta", "camembert"),
        "encoder.layer",
        _BERT_ATTENTION,
        _BERT_FFN,
    )
)
register_architecture(Architecture("ELECTRA", ("electra",), "encoder.layer", _BERT_ATTENTION, _BERT_FFN))
register_architecture(
    Architecture(
        "DistilBERT",
        ("distilbert",),
        "transformer.layer",
        Attention(
            module="attention",
            query="attention.q_lin",
            key="attention.k_lin",
            value="attention.v_lin",
            output="attention.out_lin",
            head_count_attributes=("n_heads",),
            width_attributes=("dim",),
        ),
        (FeedForward("ffn.lin1", "ffn.lin2"),),
        intermediate_size="hidden_dim",
        hidden_size="dim",
        num_heads="n_heads",
    )
)
_DEBERTA_NO_FUSION = "ONNX Runtime's optimizer has no fusion for disentangled attention"
_DEBERTA_NO_WIDTH = (
    "its relative position embeddings (rel_embeddings, with their own LayerNorm) are hidden-wide and projected by "
    "every layer's query and key: they are not on the residual stream, and cutting their channels would change "
    "what their LayerNorm computes"
)
register_architecture(
    Architecture(
        "DeBERTa",
        ("deberta",),
        "encoder.layer",
        Attention(
            module="attention.self",
            qkv="attention.self.in_proj",
            qkv_per_head=True,
            head_vectors=("q_bias", "v_bias"),
            optional=("pos_proj", "pos_q_proj"),
            head_mixers=("head_logits_proj", "head_weights_proj"),
            output="attention.output.dense",
        ),
        _BERT_FFN,
        native_head_pruning=False,
        fusion=_DEBERTA_NO_FUSION,
        refused={"width_pruning": _DEBERTA_NO_WIDTH},
    )
)
register_architecture(
    Architecture(
        "DeBERTa-v2/v3",
        ("deberta-v2",),
        "encoder.layer",
        Attention(
            module="attention.self",
            query="attention.self.query_proj",
            key="attention.self.key_proj",
            value="attention.self.value_proj",
            optional=("pos_key_proj", "pos_query_proj"),
            output="attention.output.dense",
        ),
        _BERT_FFN,
        head_size=lambda c: getattr(c, "attention_head_size", None) or _hidden_over_heads(c),
        native_head_pruning=False,
        fusion=_DEBERTA_NO_FUSION,
        refused={"width_pruning": _DEBERTA_NO_WIDTH},
    )
)
register_architecture(
    Architecture(
        "ModernBERT",
        ("modernbert",),
        "layers",
        Attention(module="attn", qkv="attn.Wqkv", output="attn.Wo", head_count_attributes=("num_heads",)),
        (FeedForward("mlp.Wi", "mlp.Wo", gated=True),),
        layers_from_index=True,
        native_head_pruning=False,
        fusion="ONNX Runtime's optimizer does not match its fused QKV projection with rotary embeddings",
    )
)
register_architecture(
    Architecture(
        "MPNet",
        ("mpnet",),
        "encoder.layer",
        Attention(
            module="attention.attn",
            query="attention.attn.q",
            key="attention.attn.k",
            value="attention.attn.v",
            output="attention.attn.o",
            per_head_inputs=("position_bias",),
        ),
        _BERT_FFN,
        per_head_tables=("encoder.relative_attention_bias",),
        native_head_pruning=False,  # (transformers 4's MPNet prune_heads leaves the shared position bias full width)
        fusion="ONNX Runtime's attention fusion does not match its relative position bias",
    )
)
register_architecture(
    Architecture(
        "MobileBERT",
        ("mobilebert",),
        "encoder.layer",
        _BERT_ATTENTION,
        (*_BERT_FFN, FeedForward("ffn.{}.intermediate.dense", "ffn.{}.output.dense")),
        head_size=lambda c: int(c.true_hidden_size) // int(c.num_attention_heads),
        fusion="its NoNorm layers (no LayerNorm) and bottlenecks do not match ONNX Runtime's BERT fusions",
        refused={
            "width_pruning": "its layers read and write the hidden width through bottlenecks (true_hidden_size, "
            "intra_bottleneck_size) and normalize with NoNorm: the stream between layers is not one set of "
            "channels every tensor shares",
        },
    )
)
register_architecture(
    Architecture(
        "ALBERT",
        ("albert",),
        "encoder.albert_layer_groups.*.albert_layers",
        Attention(
            module="attention",
            query="attention.query",
            key="attention.key",
            value="attention.value",
            output="attention.dense",
        ),
        (FeedForward("ffn", "ffn_output"),),
        shared_layers=True,
        refused={
            "student_layers": "its depths share one set of layer weights (albert_layer_groups): there are no "
            "per-layer weights to choose a student's layers from",
            "width_pruning": "its embeddings are factorized (embedding_size, then a projection to hidden_size) "
            "and one layer's weights serve every depth: not supported",
        },
    )
)
