"""Gradual hidden-width pruning: residual channels (and the heads that fit the width) masked on the cubic schedule
while the model trains, then removed (:func:`~hf_compress.pruning.width.prune_hidden_width`).

A masked channel is zero in the stream: zero in every embedding column, every writer row (and bias) and every
LayerNorm weight and bias on the stream, and every LayerNorm normalizes over the kept channels only
(:func:`~hf_compress.pruning.width.masked_layer_norm`, through a forward hook), so the masked model computes exactly
what the narrower model computes once the channels are sliced out. After ``s_t H`` channels are masked, each
layer keeps its ``ceil((H - s_t H) / d)`` best heads (``d`` the head size). Masks live beside the weights as
``<param>_channel_mask`` and ``<param>_head_mask`` buffers, apart from the ``<param>_mask`` of other blocks.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..architectures import describe, require
from ..structures import structures
from .config import PruningConfig
from .importance import ActivationTracker
from .width import masked_layer_norm, prune_hidden_width, residual_channels

__all__ = ["HiddenWidthPruner", "remove_dead_channels"]


def _keep_top(scores: torch.Tensor, count: int) -> torch.Tensor:
    keep = torch.zeros(scores.numel(), dtype=torch.bool)
    keep[torch.topk(scores.float().cpu(), count).indices] = True
    return keep


class HiddenWidthPruner:
    """The masks of a ``structure: hidden`` pruning block; the interface of
    :class:`~hf_compress.pruning.masks.MagnitudePruner`."""

    def __init__(self, model: nn.Module, config: PruningConfig):
        require(model, "width_pruning")
        self.model, self.config = model, config
        self.channels = residual_channels(model)
        self.width = self.channels.width
        self.head_size = describe(model).head_size(model.config)
        final = self.width - round(config.final_sparsity * self.width)
        if final % self.head_size or final == 0:
            steps = range(1, self.width // self.head_size)
            allowed = ", ".join(f"{1 - k * self.head_size / self.width:.4g}" for k in steps)
            raise ValueError(
                f"'final_sparsity': got {config.final_sparsity}; hidden-width pruning keeps a multiple of the head "
                f"size {self.head_size} of the {self.width} channels (allowed e.g. {allowed})"
            )
        self.heads = structures(model, "heads")
        self.sparsity = 0.0
        self.keep = torch.ones(self.width, dtype=torch.bool)
        self.head_keep = [torch.ones(g.count, dtype=torch.bool) for g in self.heads]
        modules = dict(model.named_modules())
        self.norms = [modules[name] for name in self.channels.norms]
        self._hooks = [norm.register_forward_hook(self._norm_hook) for norm in self.norms]
        self.activations = (
            ActivationTracker(model, self.heads, norms=self.norms) if config.importance == "activation" else None
        )

    def _norm_hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if bool(self.keep.all()):
            return None
        keep = self.keep.to(output.device)
        return masked_layer_norm(args[0], keep, module.weight, module.bias, module.eps)

    # ------------------------------------------------------------------------------------------ masks
    @torch.no_grad()
    def update(self, sparsity: float) -> None:
        """Mask ``round(sparsity * H)`` channels and the heads beyond ``ceil(kept / head size)``; apply."""
        self.sparsity = sparsity
        kept = self.width - round(sparsity * self.width)
        heads = math.ceil(kept / self.head_size)
        found = self.activations.scores() if self.activations is not None else None
        if found is None:
            channel_scores = self.channels.magnitude_scores()
            head_scores = [g.scores(2) for g in self.heads]
        else:
            head_scores, channel_scores = found[: len(self.heads)], self.activations.channel_scores()
            self.activations.reset()
        self.keep = _keep_top(channel_scores * self.keep, kept)  # masks only grow
        self.head_keep = [_keep_top(s * k, heads) for s, k in zip(head_scores, self.head_keep, strict=True)]
        self._set_masks()
        self.apply()

    def _set_masks(self) -> None:
        for s in self.channels.slices:
            if isinstance(s.owner, nn.Linear) and s.dim == 1:  # readers: the stream is zero there already
                continue
            tensor = getattr(s.owner, s.param)
            shape = [1] * tensor.dim()
            shape[s.dim] = self.width
            _buffer(s.owner, f"{s.param}_channel_mask", self.keep.to(tensor).view(shape).expand_as(tensor))
        for group, keep in zip(self.heads, self.head_keep, strict=True):
            for (owner, name), mask in group.masks(keep).items():
                _buffer(owner, f"{name}_head_mask", mask.to(getattr(owner, name)))

    def masked_parameters(self) -> list[tuple[nn.Module, str]]:
        found = {}
        for module in self.model.modules():
            for buffer, _ in module.named_buffers(recurse=False):
                for suffix in ("_channel_mask", "_head_mask"):
                    if buffer.endswith(suffix):
                        found[(id(module), buffer[: -len(suffix)])] = (module, buffer[: -len(suffix)])
        return list(found.values())

    def masked_modules(self) -> list[nn.Module]:
        return [m for m, name in self.masked_parameters() if name == "weight"]

    def _masks(self, module: nn.Module, name: str) -> list[torch.Tensor]:
        return [
            m for suffix in ("_channel_mask", "_head_mask") if (m := getattr(module, name + suffix, None)) is not None
        ]

    @torch.no_grad()
    def apply(self) -> None:
        for module, name in self.masked_parameters():
            for mask in self._masks(module, name):
                getattr(module, name).mul_(mask)

    @torch.no_grad()
    def mask_gradients(self) -> None:
        for module, name in self.masked_parameters():
            param = getattr(module, name)
            if param is not None and param.grad is not None:
                for mask in self._masks(module, name):
                    param.grad.mul_(mask)

    # ------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        state = {
            "sparsity": self.sparsity,
            "keep": self.keep.clone(),
            "head_keep": [k.clone() for k in self.head_keep],
        }
        if self.activations is not None:
            state["activations"] = self.activations.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.sparsity, self.keep = state["sparsity"], state["keep"].clone()
        self.head_keep = [k.clone() for k in state["head_keep"]]
        if self.activations is not None and "activations" in state:
            self.activations.load_state_dict(state["activations"])
        self._set_masks()
        self.apply()

    def masks_from_zeros(self) -> None:
        """Rebuild the masks from the exact zeros of the loaded weights (resuming without a pruning state)."""
        self.keep = _alive_channels(self.channels)
        self.head_keep = [g.scores(1) != 0 for g in self.heads]
        self._set_masks()

    def broadcast(self, src: int = 0) -> None:
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        for index, mask in enumerate([self.keep, *self.head_keep]):
            as_float = mask.float()
            torch.distributed.broadcast(as_float, src)
            if index == 0:
                self.keep = as_float.bool()
            else:
                self.head_keep[index - 1] = as_float.bool()
        self._set_masks()
        self.apply()

    def layer_sparsity(self) -> dict[str, float]:
        """The fraction of residual channels masked (one figure: every layer shares the stream)."""
        return {"hidden": 1.0 - float(self.keep.float().mean())}

    def remove_hooks(self) -> None:
        for handle in self._hooks:
            handle.remove()
        if self.activations is not None:
            self.activations.remove()


def _buffer(module: nn.Module, name: str, mask: torch.Tensor) -> None:
    if isinstance(getattr(module, name, None), torch.Tensor):
        getattr(module, name).copy_(mask)
    else:
        module.register_buffer(name, mask.clone(), persistent=False)


def _alive_channels(channels) -> torch.Tensor:
    """Channels that are not exactly zero in every LayerNorm weight and bias of the stream and every writer."""
    alive = torch.zeros(channels.width, dtype=torch.bool)
    for s in channels.slices:
        if isinstance(s.owner, nn.Linear) and s.dim == 1:
            continue
        tensor = getattr(s.owner, s.param).detach().movedim(s.dim, 0).reshape(channels.width, -1)
        alive |= (tensor != 0).any(1).cpu()
    return alive


@torch.no_grad()
def remove_dead_channels(model: nn.Module) -> dict | None:
    """Slice out the residual channels that gradual hidden-width pruning zeroed (with the heads it zeroed); None
    when there are none, or when the zeros do not make a loadable width (a multiple of the head size, with as many
    live heads per layer as that width holds: the masks of a finished ramp), or when the architecture has no
    hidden-width pruning."""
    if "width_pruning" in describe(model).refusals():
        return None
    try:
        channels = residual_channels(model)
    except ValueError:  # a model this cannot read (no transformer layers, an unknown tensor of the hidden width)
        return None
    alive = _alive_channels(channels)
    kept = int(alive.sum())
    head_size = describe(model).head_size(model.config)
    if kept == channels.width or kept == 0 or kept % head_size:
        return None
    live_heads = [g.scores(1) != 0 for g in structures(model, "heads")]
    if any(int(h.sum()) != kept // head_size for h in live_heads):
        return None
    return prune_hidden_width(model, kept, alive.float(), [h.float() for h in live_heads])
