"""Attention heads and FFN neurons: where each unit's weights sit in a layer, read from the architecture description
(:mod:`hf_compress.architectures`), their scores, masks and physical removal.

A unit owns positions along one dimension of some parameters: a head of a BERT layer owns ``head_size`` rows of
``query``, ``key`` and ``value`` (weights and biases) and as many columns of the attention output; a head of a
fused ``[q; k; v]`` projection owns three row ranges of it; an FFN neuron owns a row of the FFN input (two rows of
a gated one) and a column of its output. Everything below works on those positions, whatever the architecture.
"""

from __future__ import annotations

import inspect
import itertools
from dataclasses import dataclass, field

import torch
from torch import nn

from .architectures import CAPABILITIES, Architecture, FeedForward, describe, display_name, weight_layers
from .modules import replace_module

__all__ = ["Slice", "Units", "find_structures", "slice_linear", "structures"]


@dataclass
class Slice:
    """Unit ``u`` owns the positions ``index[u]`` along ``dim`` of ``owner``'s parameter ``param`` (and of its bias,
    when ``owner`` is an ``nn.Linear`` sliced by rows). ``path``: ``owner``'s path in the layer."""

    path: str
    owner: nn.Module
    param: str
    dim: int
    index: torch.Tensor

    def __post_init__(self) -> None:
        self.index = self.index.to(getattr(self.owner, self.param).device)

    def tensors(self) -> list[tuple[str, int]]:
        """The (parameter name, dimension) pairs this slice covers."""
        covered = [(self.param, self.dim)]
        if isinstance(self.owner, nn.Linear) and self.dim == 0 and self.owner.bias is not None:
            covered.append(("bias", 0))
        return covered


@dataclass
class Units:
    """The heads (or the neurons of one FFN block) of a layer: ``count`` units, the slices they own."""

    kind: str
    layer: int
    layer_module: nn.Module
    count: int
    slices: list[Slice]
    attention: nn.Module | None = None
    head_size: int = 0
    architecture: Architecture | None = field(default=None, repr=False)

    def _per_unit(self, transform) -> torch.Tensor:
        """``transform`` of each parameter entry, summed per unit: shape ``(count,)``."""
        total = torch.zeros(self.count, dtype=torch.float64, device=self.slices[0].index.device)
        for s in self.slices:
            for name, dim in s.tensors():
                values = transform(getattr(s.owner, name).detach()).index_select(dim, s.index.flatten())
                values = values.movedim(dim, 0).reshape(self.count, -1)
                total += values.sum(1).double()
        return total

    def scores(self, power: int) -> torch.Tensor:
        """The L``power`` norm of each unit's weights."""
        return self._per_unit(lambda t: t.abs().pow(power)).pow(1.0 / power).float()

    def dead(self) -> list[int]:
        """The units whose weights are all exactly zero."""
        return (self._per_unit(torch.abs) == 0).nonzero().flatten().tolist()

    def masks(self, keep: torch.Tensor) -> dict[tuple[nn.Module, str], torch.Tensor]:
        """The mask of each covered parameter that zeroes the units where ``keep`` is false."""
        masks: dict[tuple[nn.Module, str], torch.Tensor] = {}
        for s in self.slices:
            dropped = s.index[~keep.to(s.index.device)].flatten()
            for name, dim in s.tensors():
                tensor = getattr(s.owner, name)
                mask = masks.get((s.owner, name))
                if mask is None:
                    mask = masks[(s.owner, name)] = torch.ones_like(tensor.detach())
                mask.index_fill_(dim, dropped, 0.0)
        return masks

    @torch.no_grad()
    def remove(self, units: list[int]) -> None:
        """Slice ``units`` out of the layer's modules (and update the attention's head count)."""
        drop = set(units)
        for s in self.slices:
            gone = set(s.index[list(drop)].flatten().tolist()) if drop else set()
            size = getattr(s.owner, s.param).shape[s.dim]
            keep = torch.tensor([i for i in range(size) if i not in gone], device=s.index.device)
            if isinstance(s.owner, nn.Linear):
                replace_module(self.layer_module, s.path, slice_linear(s.owner, keep, s.dim))
            else:
                sliced = getattr(s.owner, s.param).detach().index_select(s.dim, keep)
                setattr(s.owner, s.param, nn.Parameter(sliced))
        if self.kind == "heads" and self.attention is not None:
            names = self.architecture.attention.per_head_inputs
            if names and drop:
                kept = torch.tensor([h for h in range(self.count) if h not in drop])
                self.attention.register_forward_pre_hook(_kept_heads_of(names, kept, self.count), with_kwargs=True)
            heads = self.count - len(drop)
            for name in self.architecture.attention.head_count_attributes:
                if hasattr(self.attention, name):
                    setattr(self.attention, name, heads)
            for name in self.architecture.attention.width_attributes:
                if hasattr(self.attention, name):
                    setattr(self.attention, name, heads * self.head_size)


def _kept_heads_of(names: tuple[str, ...], kept: torch.Tensor, heads: int):
    """A forward pre-hook that keeps the ``kept`` heads (dimension 1) of the arguments ``names`` of ``heads``."""

    def hook(module: nn.Module, args: tuple, kwargs: dict):
        bound = inspect.signature(module.forward).bind_partial(*args, **kwargs)
        for name in names:
            value = bound.arguments.get(name)
            if isinstance(value, torch.Tensor) and value.dim() > 1 and value.shape[1] == heads:
                bound.arguments[name] = value.index_select(1, kept.to(value.device))
        return bound.args, bound.kwargs

    return hook


def slice_linear(linear: nn.Linear, keep: torch.Tensor, dim: int) -> nn.Linear:
    """A copy of ``linear`` keeping the rows (``dim`` 0, with their biases) or columns (``dim`` 1) ``keep``."""
    weight = linear.weight.detach().index_select(dim, keep)
    new = nn.Linear(
        weight.shape[1], weight.shape[0], bias=linear.bias is not None, device=weight.device, dtype=weight.dtype
    )
    new.weight.data.copy_(weight)
    if linear.bias is not None:
        new.bias.data.copy_(linear.bias.detach() if dim == 1 else linear.bias.detach().index_select(0, keep))
    return new


def _linear(layer: nn.Module, path: str) -> nn.Linear | str:
    try:
        module = layer.get_submodule(path)
    except AttributeError:
        return f"it has no {path}"
    if not isinstance(module, nn.Linear):
        return f"{path} is a {type(module).__name__}, not an nn.Linear (factorized?)"
    return module


def _blocks(units: int, size: int, offset: int = 0) -> torch.Tensor:
    """``(units, size)`` positions: unit ``u`` owns ``offset + u * size ... + size - 1``."""
    return offset + torch.arange(units * size).view(units, size)


def _heads(layer: nn.Module, index: int, arch: Architecture, head_size: int) -> Units | str:
    a = arch.attention
    output = _linear(layer, a.output)
    if isinstance(output, str):
        return output
    slices = []
    if a.qkv is not None:
        qkv = _linear(layer, a.qkv)
        if isinstance(qkv, str):
            return qkv
        heads = qkv.out_features // (3 * head_size)
        if a.qkv_per_head:
            rows = _blocks(heads, 3 * head_size)
        else:
            width = heads * head_size
            rows = torch.cat([_blocks(heads, head_size, k * width) for k in range(3)], dim=1)
        slices.append(Slice(a.qkv, qkv, "weight", 0, rows))
    else:
        projections = [(p, _linear(layer, p)) for p in (a.query, a.key, a.value)]
        bad = next((found for _, found in projections if isinstance(found, str)), None)
        if bad is not None:
            return bad
        heads = projections[0][1].out_features // head_size
        slices += [Slice(p, linear, "weight", 0, _blocks(heads, head_size)) for p, linear in projections]
    attention = layer.get_submodule(a.module)
    mixers = [name for name in a.head_mixers if getattr(attention, name, None) is not None]
    if mixers:
        return f"{a.module}.{mixers[0]} mixes its heads (talking heads)"
    for name in a.head_vectors:
        slices.append(Slice(a.module, attention, name, 0, _blocks(heads, head_size)))
    for name in a.optional:
        extra = getattr(attention, name, None)
        if isinstance(extra, nn.Linear):
            slices.append(Slice(f"{a.module}.{name}", extra, "weight", 0, _blocks(heads, head_size)))
    slices.append(Slice(a.output, output, "weight", 1, _blocks(heads, head_size)))
    return Units("heads", index, layer, heads, slices, attention, head_size, arch)


def _block_paths(layer: nn.Module, block: FeedForward) -> list[tuple[str, str]]:
    """The (input, output) paths of an FFN block; a repeated block (``{}``) gives one pair per index present."""
    if "{}" not in block.input:
        return [(block.input, block.output)]
    pairs = []
    for i in itertools.count():
        try:
            layer.get_submodule(block.input.format(i))
        except AttributeError:
            return pairs
        pairs.append((block.input.format(i), block.output.format(i)))
    return pairs


def _neurons(layer: nn.Module, index: int, arch: Architecture) -> list[Units] | str:
    groups = []
    for block in arch.feed_forwards:
        for input_path, output_path in _block_paths(layer, block):
            first, second = _linear(layer, input_path), _linear(layer, output_path)
            for found in (first, second):
                if isinstance(found, str):
                    return found
            count = second.in_features
            rows = torch.arange(count).view(count, 1)
            if block.gated:
                rows = torch.cat([rows, rows + count], dim=1)
            slices = [
                Slice(input_path, first, "weight", 0, rows),
                Slice(output_path, second, "weight", 1, rows[:, :1]),
            ]
            groups.append(Units("neurons", index, layer, count, slices, architecture=arch))
    return groups


def find_structures(model: nn.Module, kind: str) -> tuple[list[Units] | None, str]:
    """The ``kind`` (``heads`` or ``neurons``) units of every layer with weights, or None and the reason."""
    arch = describe(model)
    try:
        layers = weight_layers(model)
    except ValueError as error:
        return None, str(error)
    groups: list[Units] = []
    if kind == "heads":
        try:
            head_size = arch.head_size(model.config)
        except AttributeError:
            return None, f"its config ({type(model.config).__name__}) gives no attention head size"
    for index, (_, layer) in enumerate(layers):
        if kind == "heads":
            found = _heads(layer, index, arch, head_size)
            found = [found] if isinstance(found, Units) else found
        else:
            found = _neurons(layer, index, arch)
        if isinstance(found, str):
            return None, f"layer {index} ({type(layer).__name__}): {found}"
        groups += found
    return groups, ""


def structures(model: nn.Module, kind: str) -> list[Units]:
    """:func:`find_structures`, with a ``ValueError`` naming the architecture and what is missing."""
    found, reason = find_structures(model, kind)
    if found is None:
        words = CAPABILITIES[f"{kind[:-1]}_pruning"]
        raise ValueError(
            f"{words} needs the {kind} of every layer as rows and columns of nn.Linear; "
            f"{display_name(model)} ({type(model).__name__}): {reason}"
        )
    return found
