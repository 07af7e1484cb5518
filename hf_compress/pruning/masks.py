"""Gradual magnitude pruning: the cubic schedule and the masks (unstructured, FFN neurons, attention heads).

Zhu & Gupta (2017), "To prune, or not to prune": ``s_t = s_f + (s_i - s_f) * (1 - (t - t_0) / (t_end - t_0))^3``.

Masks live beside the weights, as non-persistent buffers ``<parameter>_mask`` (``weight_mask``, ``bias_mask``)
of each pruned module (so checkpoints keep the plain parameter names and load with ``from_pretrained``); the pruned
weights themselves are exact zeros. Structured pruning finds the heads and FFN neurons of every layer from the
architecture description (:mod:`~hf_compress.pruning.structures`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..architectures import require, weight_layers
from ..structures import Units, structures
from ..targets import match_linears
from .config import PruningConfig
from .importance import ActivationTracker

__all__ = ["MagnitudePruner", "cubic_sparsity"]


def cubic_sparsity(step: float, initial: float, final: float, start: float, end: float) -> float:
    """Target sparsity at ``step``: ``final + (initial - final) * (1 - (step - start) / (end - start))^3``.

    Flat at ``initial`` before ``start`` and at ``final`` from ``end`` on (Zhu & Gupta, 2017).
    """
    if step <= start:
        return initial
    if step >= end:
        return final
    return final + (initial - final) * (1.0 - (step - start) / (end - start)) ** 3


def _set_mask(module: nn.Linear, name: str, mask: torch.Tensor) -> None:
    if hasattr(module, name) and isinstance(getattr(module, name), torch.Tensor):
        getattr(module, name).copy_(mask)
    else:
        module.register_buffer(name, mask, persistent=False)


def _keep_largest(scores: torch.Tensor, num_pruned: int) -> torch.Tensor:
    """A boolean mask of ``scores``' shape keeping all but the ``num_pruned`` smallest entries."""
    keep = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    if num_pruned > 0:
        keep[torch.topk(scores.flatten(), num_pruned, largest=False).indices] = False
    return keep.view_as(scores)


class MagnitudePruner:
    """Computes and applies magnitude masks on a model, as a pure function of the target sparsity.

    ``update(sparsity)`` recomputes the masks so that the given fraction of weights (or units) is pruned;
    ``apply()`` zeroes the pruned weights; ``mask_gradients()`` zeroes their gradients. Already pruned weights are
    exact zeros and so rank lowest: masks only grow.
    """

    def __init__(self, model: nn.Module, config: PruningConfig):
        self.model, self.config = model, config
        self.sparsity = 0.0
        if config.structure == "unstructured":
            self.targets = self._unstructured_targets(model, config.targets)
            self.groups: list[Units] = []
        else:
            require(model, f"{config.structure[:-1]}_pruning")
            self.groups = structures(model, config.structure)
            self.targets = {}
        self.unit_masks: list[torch.Tensor] = []  # per group of units: the heads of a layer, the neurons of an FFN
        self.activations = ActivationTracker(model, self.groups) if config.importance == "activation" else None

    @staticmethod
    def _unstructured_targets(model: nn.Module, patterns: list[str] | None) -> dict[str, nn.Linear]:
        return match_linears(model, patterns)

    # ----------------------------------------------------------------------------------------- masks
    @torch.no_grad()
    def update(self, sparsity: float) -> None:
        """Recompute the masks so that ``sparsity`` of the weights (unstructured) or units is pruned, and apply."""
        self.sparsity = sparsity
        if self.config.structure == "unstructured":
            self._update_unstructured(sparsity)
        else:
            scores = self.activations.scores() if self.activations is not None else None
            if scores is None:  # magnitudes (or no training batch seen yet)
                scores = [g.scores(1 if self.config.norm == "l1" else 2) for g in self.groups]
            else:  # a pruned unit stays pruned whatever it did before its mask grew
                scores = [s.to(m.device) * m for s, m in zip(scores, self._kept(), strict=True)]
                self.activations.reset()
            if self.config.scope == "global":
                self.unit_masks = self._global_unit_masks(scores, sparsity)
            else:
                self.unit_masks = [_keep_largest(s, round(sparsity * s.numel())) for s in scores]
            self._expand_unit_masks()
        self.apply()

    def _kept(self) -> list[torch.Tensor]:
        return [m.float() for m in self.unit_masks] if self.unit_masks else [torch.ones(g.count) for g in self.groups]

    def _update_unstructured(self, sparsity: float) -> None:
        if self.config.scope == "global":
            weights = [m.weight.detach().abs().flatten() for m in self.targets.values()]
            keep = _keep_largest(torch.cat(weights), round(sparsity * sum(w.numel() for w in weights)))
            for module, part in zip(self.targets.values(), keep.split([w.numel() for w in weights]), strict=True):
                _set_mask(module, "weight_mask", part.view_as(module.weight))
        else:
            for module in self.targets.values():
                score = module.weight.detach().abs()
                _set_mask(module, "weight_mask", _keep_largest(score, round(sparsity * score.numel())))

    @staticmethod
    def _global_unit_masks(scores: list[torch.Tensor], sparsity: float) -> list[torch.Tensor]:
        """One ranking across layers; every layer keeps its best unit (a layer with no head cannot run)."""
        flat = torch.cat(scores).clone()
        offsets = [0]
        for s in scores:
            offsets.append(offsets[-1] + s.numel())
        for i, s in enumerate(scores):  # protect each layer's best unit
            flat[offsets[i] + int(s.argmax())] = math.inf
        keep = _keep_largest(flat, min(round(sparsity * flat.numel()), flat.numel() - len(scores)))
        return [keep[offsets[i] : offsets[i + 1]] for i in range(len(scores))]

    def _expand_unit_masks(self) -> None:
        for group, units in zip(self.groups, self.unit_masks, strict=True):
            for (owner, name), mask in group.masks(units).items():
                _set_mask(owner, f"{name}_mask", mask.to(getattr(owner, name).dtype))

    def masked_parameters(self) -> list[tuple[nn.Module, str]]:
        """The (module, parameter name) pairs that carry a mask."""
        if self.targets:
            return [(m, "weight") for m in self.targets.values()]
        found: dict[tuple[int, str], tuple[nn.Module, str]] = {}
        for group in self.groups:
            for s in group.slices:
                for name, _ in s.tensors():
                    found[(id(s.owner), name)] = (s.owner, name)
        return list(found.values())

    def masked_modules(self) -> list[nn.Module]:
        """The modules that carry a mask on their weight."""
        return [m for m, name in self.masked_parameters() if name == "weight"]

    @torch.no_grad()
    def apply(self) -> None:
        """Zero the pruned weights (after every optimizer step, so optimizer state cannot revive them)."""
        for module, name in self.masked_parameters():
            mask = getattr(module, f"{name}_mask", None)
            if mask is not None:
                getattr(module, name).mul_(mask)

    @torch.no_grad()
    def mask_gradients(self) -> None:
        """Zero the gradients of pruned weights (before the optimizer step)."""
        for module, name in self.masked_parameters():
            mask, param = getattr(module, f"{name}_mask", None), getattr(module, name)
            if mask is not None and param is not None and param.grad is not None:
                param.grad.mul_(mask)

    # ----------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        masks = {}
        for name, module in self.model.named_modules():
            for kind, mask in module.named_buffers(recurse=False):
                if kind.endswith("_mask") and isinstance(getattr(module, kind[: -len("_mask")], None), torch.Tensor):
                    masks[f"{name}.{kind}"] = mask.to(torch.bool).cpu()
        state = {"sparsity": self.sparsity, "masks": masks, "unit_masks": [m.cpu() for m in self.unit_masks]}
        if self.activations is not None:
            state["activations"] = self.activations.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.sparsity = state["sparsity"]
        if self.activations is not None and "activations" in state:
            self.activations.load_state_dict(state["activations"])
        device = next(self.model.parameters()).device
        self.unit_masks = [m.to(device) for m in state["unit_masks"]]
        modules = dict(self.model.named_modules())
        for key, mask in state["masks"].items():
            name, kind = key.rsplit(".", 1)
            module = modules[name]
            _set_mask(module, kind, mask.to(device=device, dtype=getattr(module, kind[: -len("_mask")]).dtype))
        self.apply()

    def masks_from_zeros(self) -> None:
        """Rebuild masks from the exact zeros of the weights (resuming without a saved pruning state)."""
        if self.groups:
            self.unit_masks = [g.scores(1) != 0 for g in self.groups]
            self._expand_unit_masks()
            return
        for module in self.masked_modules():
            _set_mask(module, "weight_mask", (module.weight != 0).to(module.weight.dtype))

    def broadcast(self, src: int = 0) -> None:
        """Make every process hold the masks of process ``src`` (under torch.distributed)."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        for module, name in self.masked_parameters():
            mask = getattr(module, f"{name}_mask", None)
            if mask is not None:
                torch.distributed.broadcast(mask, src)
        for units in self.unit_masks:
            as_float = units.float()
            torch.distributed.broadcast(as_float, src)
            units.copy_(as_float.bool())
        self.apply()

    # ----------------------------------------------------------------------------------------- reporting
    def layer_sparsity(self) -> dict[str, float]:
        """Achieved sparsity (fraction of zero weights) of each transformer layer's pruned linears (keyed by the
        layer's index; a target outside the layers by its name)."""
        per_layer: dict[str, list[int]] = {}
        layers = [(name + ".", str(i)) for i, (name, _) in enumerate(weight_layers(self.model))]
        names = {id(m): n for n, m in self.model.named_modules()}
        for module in self.masked_modules():
            name = names[id(module)]
            layer = next((index for prefix, index in layers if name.startswith(prefix)), name)
            zeros, total = per_layer.setdefault(layer, [0, 0])
            per_layer[layer] = [zeros + int((module.weight == 0).sum()), total + module.weight.numel()]
        return {layer: zeros / total for layer, (zeros, total) in per_layer.items()}
