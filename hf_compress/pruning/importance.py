"""Activation importance (Muralidharan et al., 2024, "Compact Language Models via Pruning and Knowledge
Distillation"): residual channels, attention heads and FFN neurons ranked by how strongly they fire on calibration
batches, and transformer layers by their block influence.

For every example, a unit's activation magnitude is averaged over the example's real tokens; the per-example values
are then aggregated over the batch by their L2 norm:

- channel ``c``: ``|LN(x)_c|`` at every LayerNorm of the residual stream (L2 over examples and LayerNorms);
- head ``h``: ``||attn_h(x)||_2``, the L2 norm of the head's output (the input of the attention output projection);
- neuron ``j``: ``|act(x W_1)_j|``, the neuron's activation (the input of the FFN output projection);
- layer ``l`` (block influence, Men et al., 2024, "ShortGPT"): ``1 - cos(x_l, x_{l+1})`` between the layer's input
  and output hidden states, averaged over real tokens and examples.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from ..architectures import weight_layers
from ..structures import structures

__all__ = [
    "ActivationImportance",
    "ActivationTracker",
    "batch_l2",
    "block_influence",
    "collect_importance",
    "token_mean",
]


def token_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``values`` ``(batch, seq, K)`` averaged over the positions where ``mask`` ``(batch, seq)`` is 1:
    ``(batch, K)``."""
    m = mask.to(values.dtype).unsqueeze(-1)
    return (values * m).sum(1) / m.sum(1).clamp_min(1.0)


def batch_l2(per_example: torch.Tensor) -> torch.Tensor:
    """The L2 norm over examples of ``(batch, K)`` values: ``(K,)``."""
    return per_example.double().pow(2).sum(0).sqrt()


def block_influence(inputs: torch.Tensor, outputs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per example, ``1 - cos(input, output)`` of a layer's hidden states averaged over real tokens: ``(batch,)``."""
    cos = torch.nn.functional.cosine_similarity(inputs.double(), outputs.double(), dim=-1)
    return token_mean((1.0 - cos).unsqueeze(-1), mask).squeeze(-1)


@dataclass
class ActivationImportance:
    """Accumulated activation statistics: sums of squares of per-example means (channels; heads per layer; neurons
    per FFN block, in :func:`~hf_compress.structures.structures` order) and the sum of per-example block influences
    per layer, over ``examples`` examples."""

    examples: int = 0
    channels: torch.Tensor | None = None
    heads: dict[int, torch.Tensor] = field(default_factory=dict)
    neurons: dict[int, torch.Tensor] = field(default_factory=dict)
    influence: dict[int, float] = field(default_factory=dict)

    def channel_scores(self) -> torch.Tensor:
        return self.channels.sqrt()

    def head_scores(self) -> list[torch.Tensor]:
        return [self.heads[i].sqrt() for i in sorted(self.heads)]

    def neuron_scores(self) -> list[torch.Tensor]:
        return [self.neurons[i].sqrt() for i in sorted(self.neurons)]

    def layer_influence(self) -> list[float]:
        return [self.influence[i] / max(self.examples, 1) for i in sorted(self.influence)]


def _add(store: dict, key, value: torch.Tensor) -> None:
    store[key] = store[key] + value if key in store else value


def _first_tensor(value):
    return value[0] if isinstance(value, tuple | list) else value


def _hidden_input(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


@torch.no_grad()
def collect_importance(
    model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]], *, norms: list[str] | None = None
) -> ActivationImportance:
    """Run ``model`` (evaluation mode) on ``batches`` (model inputs with an ``attention_mask``) and gather
    :class:`ActivationImportance`: channels at the LayerNorms named ``norms`` (default: none), heads and neurons of
    every layer, block influence of every layer."""
    found = ActivationImportance()
    state: dict[str, torch.Tensor] = {}
    handles = []

    def norm_hook(module, args, output):
        value = batch_l2(token_mean(output.abs(), state["mask"])).pow(2)
        found.channels = value if found.channels is None else found.channels + value

    def head_hook(layer: int, count: int):
        def hook(module, args):
            x = args[0]
            per_head = x.view(*x.shape[:-1], count, -1).norm(dim=-1)
            _add(found.heads, layer, batch_l2(token_mean(per_head, state["mask"])).pow(2))

        return hook

    def neuron_hook(group_index: int):
        def hook(module, args):
            _add(found.neurons, group_index, batch_l2(token_mean(args[0].abs(), state["mask"])).pow(2))

        return hook

    def layer_hook(layer: int):
        def hook(module, args, kwargs, output):
            bi = block_influence(_hidden_input(args, kwargs), _first_tensor(output), state["mask"]).sum()
            found.influence[layer] = found.influence.get(layer, 0.0) + float(bi)

        return hook

    modules = dict(model.named_modules())
    for name in norms or []:
        handles.append(modules[name].register_forward_hook(norm_hook))
    for group in structures(model, "heads"):
        output = next(s.owner for s in group.slices if s.dim == 1 and isinstance(s.owner, nn.Linear))
        handles.append(output.register_forward_pre_hook(head_hook(group.layer, group.count)))
    for index, group in enumerate(structures(model, "neurons")):
        output = next(s.owner for s in group.slices if s.dim == 1)
        handles.append(output.register_forward_pre_hook(neuron_hook(index)))
    for index, (_, layer) in enumerate(weight_layers(model)):
        handles.append(layer.register_forward_hook(layer_hook(index), with_kwargs=True))
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            state["mask"] = batch["attention_mask"]
            model(**batch)
            found.examples += int(batch["attention_mask"].shape[0])
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return found


class ActivationTracker:
    """Activation importance of heads or FFN neurons measured on the training batches themselves (forward hooks),
    for gradual pruning: :meth:`scores` ranks the units by what they did since the last :meth:`reset`.

    Only forward passes in training mode count; padding does not (the attention mask is read from the model's
    forward arguments). The sums are part of the pruning state, so a resumed run ranks as the uninterrupted one.
    """

    def __init__(self, model: nn.Module, groups: list, norms: list[nn.Module] | None = None) -> None:
        self.examples = 0
        self.sums: list[torch.Tensor | None] = [None] * len(groups)
        self.channels: torch.Tensor | None = None  # residual channels, at the LayerNorms ``norms``
        self._mask: torch.Tensor | None = None
        self._handles = [model.register_forward_pre_hook(self._read_mask, with_kwargs=True)]
        for index, group in enumerate(groups):
            output = next(s.owner for s in group.slices if s.dim == 1 and isinstance(s.owner, nn.Linear))
            self._handles.append(output.register_forward_pre_hook(self._unit_hook(index, group)))
        self._handles += [norm.register_forward_hook(self._norm_hook) for norm in norms or []]

    def _read_mask(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if module.training:
            self._mask = kwargs.get("attention_mask")
            ids = kwargs.get("input_ids", args[0] if args else None)
            if self._mask is None and ids is not None:
                self._mask = torch.ones(ids.shape[:2], device=ids.device)
            self.examples += 0 if self._mask is None else int(self._mask.shape[0])

    def _unit_hook(self, index: int, group):
        heads = group.kind == "heads"

        @torch.no_grad()
        def hook(module: nn.Module, args: tuple) -> None:
            if not module.training or self._mask is None:
                return
            x = args[0].detach()
            values = x.view(*x.shape[:-1], group.count, -1).norm(dim=-1) if heads else x.abs()
            square = batch_l2(token_mean(values, self._mask)).pow(2).cpu()
            self.sums[index] = square if self.sums[index] is None else self.sums[index] + square

        return hook

    @torch.no_grad()
    def _norm_hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if module.training and self._mask is not None:
            square = batch_l2(token_mean(output.detach().abs(), self._mask)).pow(2).cpu()
            self.channels = square if self.channels is None else self.channels + square

    def channel_scores(self) -> torch.Tensor | None:
        """Each residual channel's L2 (over examples and LayerNorms) of its mean |LayerNorm output|."""
        return None if self.channels is None else self.channels.sqrt().float()

    def scores(self) -> list[torch.Tensor] | None:
        """Per group, each unit's L2 (over examples) of its mean activation magnitude; None before any batch."""
        if any(s is None for s in self.sums):
            return None
        return [s.sqrt().float() for s in self.sums]

    def reset(self) -> None:
        self.examples, self.sums, self.channels = 0, [None] * len(self.sums), None

    def state_dict(self) -> dict:
        return {"examples": self.examples, "sums": list(self.sums), "channels": self.channels}

    def load_state_dict(self, state: dict) -> None:
        self.examples, self.sums, self.channels = state["examples"], list(state["sums"]), state.get("channels")

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
