"""Hidden-width pruning: the residual stream's channels, found in every tensor that reads or writes it, and their
physical removal (Muralidharan et al., 2024, "Compact Language Models via Pruning and Knowledge Distillation").

A residual channel ``c`` is one position along the hidden dimension ``H``, shared by: column ``c`` of the word,
position and token-type embeddings (or row ``c`` of an embedding projection), entry ``c`` of every LayerNorm on the
stream, column ``c`` of every linear that reads the stream (query/key/value, the FFN input, a head's dense layer,
the classifier) and row ``c`` of every linear that writes it (the attention output, the FFN output, a head's dense
layer). Removing the same channels everywhere keeps the model a model of its architecture with ``hidden_size``
``H'``; the LayerNorms then normalize over the ``H'`` kept channels.

A config derives the attention head size from ``hidden_size / num_attention_heads``, so a narrower model keeps its
head size ``d`` with ``H' / d`` heads per layer: the heads are pruned with the channels (the least important ones
of each layer; for an architecture whose per-head inputs are shared by all layers, the same heads in every layer).
Every parameter dimension of size ``H`` must be one of the above: an architecture with another (DeBERTa's relative
embeddings, MobileBERT's bottlenecks, ALBERT's factorized shared layers) is refused, naming the tensor.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ..architectures import _base, describe, display_name, require, weight_layers
from ..modules import replace_module
from ..structures import Units, slice_linear, structures

__all__ = ["ResidualChannels", "masked_layer_norm", "prune_hidden_width", "residual_channels"]


def masked_layer_norm(
    x: torch.Tensor, keep: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float
) -> torch.Tensor:
    """LayerNorm over the channels where ``keep`` (bool, ``(H,)``) is true, zero on the others: what a LayerNorm of
    the ``H'`` kept channels computes, laid out at full width. ``mu = sum_k x_k / H'``,
    ``var = sum_k (x_k - mu)^2 / H'``, ``y_k = (x_k - mu) / sqrt(var + eps) * w_k + b_k``."""
    m = keep.to(x.dtype)
    n = m.sum()
    mean = (x * m).sum(-1, keepdim=True) / n
    centered = (x - mean) * m
    var = centered.pow(2).sum(-1, keepdim=True) / n
    y = centered / torch.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y * m


@dataclass
class ChannelSlice:
    """Residual channel ``c`` is position ``c`` along ``dim`` of ``owner.param`` (``path``: ``owner``'s name)."""

    path: str
    owner: nn.Module
    param: str
    dim: int


@dataclass
class ResidualChannels:
    """The ``width`` channels of a model's residual stream: where they sit and which LayerNorms normalize them."""

    width: int
    slices: list[ChannelSlice]
    norms: list[str]

    def magnitude_scores(self, power: int = 2) -> torch.Tensor:
        """The L``power`` norm of each channel's weights across every tensor it owns: shape ``(width,)``."""
        total = torch.zeros(self.width, dtype=torch.float64)
        for s in self.slices:
            tensor = getattr(s.owner, s.param).detach().abs().pow(power).movedim(s.dim, 0)
            total += tensor.reshape(self.width, -1).sum(1).double().cpu()
        return total.pow(1.0 / power).float()


def _is_norm(module: nn.Module, width: int) -> bool:
    return isinstance(module, nn.LayerNorm) and tuple(module.normalized_shape) == (width,)


def _known_head_dims(units: list[Units]) -> set[tuple[int, str, int]]:
    """(module id, parameter, dim) of the head and neuron positions: dimensions of size H that are not channels."""
    known = set()
    for group in units:
        for s in group.slices:
            for name, dim in s.tensors():
                known.add((id(s.owner), name, dim))
    return known


def residual_channels(model: nn.Module) -> ResidualChannels:
    """Every tensor dimension that holds the residual stream of ``model``, or a ``ValueError`` naming a tensor with
    the hidden width that is not known to be on it (or not known to be off it)."""
    require(model, "width_pruning")
    arch = describe(model)
    width = int(getattr(model.config, arch.hidden_size))
    layers = weight_layers(model)
    heads, neurons = structures(model, "heads"), structures(model, "neurons")
    off_stream = _known_head_dims(heads + neurons)
    for table in _shared_head_tables(model):  # (buckets, heads): never the stream
        off_stream |= {(id(table), name, dim) for name, p in table.named_parameters() for dim in range(p.dim())}
    readers = {id(s.owner) for g in heads for s in g.slices if s.dim == 0}  # q/k/v (qkv): they read the stream
    readers |= {id(s.owner) for g in neurons for s in g.slices if s.dim == 0}  # FFN input
    writers = {id(s.owner) for g in heads for s in g.slices if s.dim == 1 and isinstance(s.owner, nn.Linear)}
    writers |= {id(s.owner) for g in neurons for s in g.slices if s.dim == 1}  # FFN output
    in_layers = tuple(name + "." for name, _ in layers)

    slices: list[ChannelSlice] = []
    norms: list[str] = []
    for name, module in model.named_modules():
        inside = name.startswith(in_layers)
        if _is_norm(module, width):
            norms.append(name)
            slices += [ChannelSlice(name, module, p, 0) for p in ("weight", "bias") if getattr(module, p) is not None]
        elif isinstance(module, nn.Embedding) and module.embedding_dim == width and not inside:
            slices.append(ChannelSlice(name, module, "weight", 1))
        elif isinstance(module, nn.Linear):
            reads = module.in_features == width and (id(module) in readers or not inside)
            writes = module.out_features == width and (id(module) in writers or not inside)
            if reads:
                slices.append(ChannelSlice(name, module, "weight", 1))
            if writes:
                slices.append(ChannelSlice(name, module, "weight", 0))
                if module.bias is not None:
                    slices.append(ChannelSlice(name, module, "bias", 0))
    covered = {(id(s.owner), s.param, s.dim) for s in slices}
    modules = dict(model.named_modules())
    for name, param in model.named_parameters():
        owner_name, _, pname = name.rpartition(".")
        owner = modules[owner_name]
        for dim, size in enumerate(param.shape):
            key = (id(owner), pname, dim)
            if size == width and key not in covered and key not in off_stream:
                raise ValueError(
                    f"hidden-width pruning of {display_name(model)} ({type(model).__name__}): {name} "
                    f"{tuple(param.shape)} has the hidden width {width} on dimension {dim}, but is not a known reader "
                    "or writer of the residual stream"
                )
    return ResidualChannels(width, slices, norms)


def _rebuilt_shapes(model: nn.Module, **settings: int) -> dict[str, tuple[int, ...]]:
    """The parameter shapes ``type(model)`` builds from ``model``'s config with ``settings`` changed (on the meta
    device: nothing is allocated)."""
    config = copy.deepcopy(model.config)
    for key, value in settings.items():
        setattr(config, key, value)
    with torch.device("meta"):
        rebuilt = type(model)(config)
    return {n: tuple(p.shape) for n, p in rebuilt.named_parameters()}


def _mismatch(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]]) -> str | None:
    names = sorted(set(expected) ^ set(found)) or sorted(n for n in found if found[n] != expected[n])
    if not names:
        return None
    name = names[0]
    return f"{name} is {found.get(name, 'absent')} in the model, {expected.get(name, 'absent')} from its config"


def _slice_norm(norm: nn.LayerNorm, keep: torch.Tensor) -> nn.LayerNorm:
    new = nn.LayerNorm(
        len(keep),
        eps=norm.eps,
        elementwise_affine=norm.elementwise_affine,
        bias=norm.bias is not None,
        device=keep.device,
        dtype=norm.weight.dtype if norm.weight is not None else None,
    )
    with torch.no_grad():
        if norm.weight is not None:
            new.weight.copy_(norm.weight.index_select(0, keep))
        if norm.bias is not None:
            new.bias.copy_(norm.bias.index_select(0, keep))
    return new


def _slice_embedding(embedding: nn.Embedding, keep: torch.Tensor) -> nn.Embedding:
    weight = embedding.weight.detach().index_select(1, keep)
    new = nn.Embedding(weight.shape[0], weight.shape[1], padding_idx=embedding.padding_idx, device=weight.device)
    new.weight.data = weight.clone()
    return new


def _shared_head_tables(model: nn.Module) -> list[nn.Module]:
    return [_base(model).get_submodule(path) for path in describe(model).per_head_tables]


@torch.no_grad()
def _prune_heads_to(model: nn.Module, heads: int, head_scores: list[torch.Tensor]) -> dict[int, list[int]]:
    """Keep the ``heads`` best-scoring heads of every layer (the same ones in every layer when the architecture
    shares per-head inputs across layers); update the config's head count. Returns the removed heads by layer."""
    groups = structures(model, "heads")
    arch = describe(model)
    shared = bool(arch.attention.per_head_inputs)
    if shared:
        total = torch.stack([s.float() for s in head_scores]).sum(0)
        head_scores = [total] * len(groups)
    removed = {}
    for group, scores in zip(groups, head_scores, strict=True):
        keep = set(torch.topk(scores.float(), heads).indices.tolist())
        removed[group.layer] = [h for h in range(group.count) if h not in keep]
    if shared:
        kept = torch.tensor(sorted(set(range(groups[0].count)) - set(removed[0])))
        for table in _shared_head_tables(model):
            replace_module(model, _name_of(model, table), _slice_head_columns(table, kept))
    for group in groups:
        if removed[group.layer]:
            group.remove(removed[group.layer])
    setattr(model.config, arch.num_heads, heads)
    return removed


def _name_of(model: nn.Module, module: nn.Module) -> str:
    return next(name for name, m in model.named_modules() if m is module)


def _slice_head_columns(table: nn.Embedding, kept_heads: torch.Tensor) -> nn.Embedding:
    """A table with one column per head (MPNet's relative position bias), cut to the kept heads."""
    new = nn.Embedding(table.num_embeddings, len(kept_heads), device=table.weight.device, dtype=table.weight.dtype)
    new.weight.data = table.weight.detach().index_select(1, kept_heads.to(table.weight.device)).clone()
    return new


@torch.no_grad()
def prune_hidden_width(
    model: nn.Module,
    hidden_size: int,
    channel_scores: torch.Tensor | None = None,
    head_scores: list[torch.Tensor] | None = None,
) -> dict[str, object]:
    """Remove channels of the residual stream so that ``model`` is ``hidden_size`` wide, in place.

    ``channel_scores`` ``(H,)`` rank the channels (default: their weights' L2 norm), ``head_scores`` (one ``(heads,)``
    tensor per layer) the heads (default: their weights' L2 norm); the best ``hidden_size`` channels and the best
    ``hidden_size / head_size`` heads of each layer are kept. The model's config says the new width and head
    count, so ``save_pretrained`` / ``from_pretrained`` rebuild it. ``model.kept_hidden_channels`` (not saved)
    lists, for each remaining channel, the channel of the model it was made from (hidden-state distillation with
    ``across_widths: kept_channels`` reads the teacher there). Returns what was kept: ``channels`` (the indices
    of the kept channels in the original order), ``removed_heads`` per layer and the widths.
    """
    arch = describe(model)
    channels = residual_channels(model)
    width = channels.width
    head_size = arch.head_size(model.config)
    if not 0 < hidden_size <= width or hidden_size % head_size:
        raise ValueError(
            f"hidden_size {hidden_size}: allowed a multiple of the attention head size {head_size} between "
            f"{head_size} and {width} (a config derives the head size from hidden_size / num_attention_heads)"
        )
    heads = hidden_size // head_size
    heads_before = structures(model, "heads")[0].count
    narrow = {arch.hidden_size: hidden_size, arch.num_heads: heads}
    problem = _mismatch(
        {n: () for n in _rebuilt_shapes(model, **narrow)}, {n: () for n, _ in model.named_parameters()}
    )
    if problem:  # e.g. ELECTRA at hidden_size == embedding_size: its embedding projection would not be built
        raise ValueError(
            f"hidden_size {hidden_size}: {type(model).__name__} built at this width has other parameters: {problem}"
        )
    if head_scores is None:
        head_scores = [g.scores(2) for g in structures(model, "heads")]
    scores = channels.magnitude_scores() if channel_scores is None else channel_scores.float().cpu()
    keep = torch.topk(scores, hidden_size).indices.sort().values
    removed_heads = _prune_heads_to(model, heads, head_scores) if heads < heads_before else {}
    channels = residual_channels(model)  # the head removal replaced the attention projections
    device = next(model.parameters()).device
    keep = keep.to(device)
    done: set[int] = set()
    for s in channels.slices:
        if id(s.owner) in done:
            continue
        if isinstance(s.owner, nn.LayerNorm):
            replace_module(model, s.path, _slice_norm(s.owner, keep))
        elif isinstance(s.owner, nn.Embedding):
            replace_module(model, s.path, _slice_embedding(s.owner, keep))
        else:
            own = [x for x in channels.slices if x.owner is s.owner]
            linear = s.owner
            for x in own:
                if x.param == "weight":
                    linear = slice_linear(linear, keep, x.dim)
            replace_module(model, s.path, linear)
        done.add(id(s.owner))
    setattr(model.config, arch.hidden_size, hidden_size)
    earlier = getattr(model, "kept_hidden_channels", None)  # narrowed before: channels of the first model
    model.kept_hidden_channels = [earlier[c] if earlier else c for c in keep.cpu().tolist()]
    problem = _mismatch(_rebuilt_shapes(model), {n: tuple(p.shape) for n, p in model.named_parameters()})
    if problem:
        raise RuntimeError(f"hidden-width pruning left {type(model).__name__} unloadable: {problem}")
    return {
        "hidden_size": {"before": width, "after": hidden_size},
        "heads_per_layer": {"before": heads_before, "after": heads},
        "removed_heads": removed_heads,
        "channels": keep.cpu().tolist(),
    }
