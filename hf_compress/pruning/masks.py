"""Gradual magnitude pruning: the cubic schedule, masks (unstructured, FFN neurons, attention heads), physical
removal of pruned structures, and a sparsity report.

Zhu & Gupta (2017), "To prune, or not to prune": ``s_t = s_f + (s_i - s_f) * (1 - (t - t_0) / (t_end - t_0))^3``.

Masks live beside the weights, as non-persistent buffers ``weight_mask`` / ``bias_mask`` of each pruned
``nn.Linear`` (so checkpoints keep the plain parameter names and load with ``from_pretrained``); the pruned
weights themselves are exact zeros. Structured pruning works on BERT-style layers (BERT, RoBERTa, ELECTRA,
MiniLM...): ``attention.self.{query,key,value}``, ``attention.output.dense``, ``intermediate.dense``,
``output.dense``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..modules import find_layer_list, locate_layer_list, match_linears
from ..tables import markdown_table
from .config import PruningConfig

__all__ = [
    "MagnitudePruner",
    "cubic_sparsity",
    "remove_pruned_structures",
    "sparsity_report",
    "sparsity_table",
    "structured_layers",
]


def cubic_sparsity(step: float, initial: float, final: float, start: float, end: float) -> float:
    """Target sparsity at ``step``: ``final + (initial - final) * (1 - (step - start) / (end - start))^3``.

    Flat at ``initial`` before ``start`` and at ``final`` from ``end`` on (Zhu & Gupta, 2017).
    """
    if step <= start:
        return initial
    if step >= end:
        return final
    return final + (initial - final) * (1.0 - (step - start) / (end - start)) ** 3


@dataclass
class _Structures:
    """The prunable linears of one BERT-style transformer layer."""

    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    attention_output: nn.Linear
    intermediate: nn.Linear
    output: nn.Linear
    num_heads: int

    @classmethod
    def find(cls, layer: nn.Module) -> tuple[_Structures | None, str]:
        """The structures of ``layer``, or None and the reason it is not a BERT-style layer of ``nn.Linear``."""
        paths = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense")
        paths += ("intermediate.dense", "output.dense")
        parts = []
        for path in paths:
            try:
                part = layer.get_submodule(path)
            except AttributeError:
                return None, f"it has no {path}"
            if not isinstance(part, nn.Linear):
                return None, "a projection is not an nn.Linear (factorized?)"
            parts.append(part)
        heads = getattr(layer.attention.self, "num_attention_heads", None)
        if heads is None:
            return None, "it has no attention.self.num_attention_heads"
        return cls(*parts, heads), ""

    @classmethod
    def of(cls, layer: nn.Module, index: int) -> _Structures:
        """The structures of layer ``index``; ``ValueError`` naming what is missing when it has none."""
        structures, reason = cls.find(layer)
        if structures is None:
            raise ValueError(
                f"structured pruning needs BERT-style layers (attention.self.query, intermediate.dense,"
                f" ... as nn.Linear); layer {index} is a {type(layer).__name__}: {reason}"
            )
        return structures

    @property
    def head_size(self) -> int:
        return self.query.out_features // self.num_heads


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
            self.layers: list[_Structures] = []
        else:
            _, layer_list = find_layer_list(model)
            self.layers = [_Structures.of(layer, i) for i, layer in enumerate(layer_list)]
            self.targets = {}
        self.unit_masks: list[torch.Tensor] = []  # per layer, for neurons / heads

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
            scores = [self._unit_scores(s) for s in self.layers]
            if self.config.scope == "global":
                self.unit_masks = self._global_unit_masks(scores, sparsity)
            else:
                self.unit_masks = [_keep_largest(s, round(sparsity * s.numel())) for s in scores]
            self._expand_unit_masks()
        self.apply()

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

    def _unit_scores(self, s: _Structures) -> torch.Tensor:
        power = 1 if self.config.norm == "l1" else 2
        if self.config.structure == "neurons":
            parts = [s.intermediate.weight.abs().pow(power).sum(1), s.output.weight.abs().pow(power).sum(0)]
            if s.intermediate.bias is not None:
                parts.append(s.intermediate.bias.abs().pow(power))
        else:
            heads, size = s.num_heads, s.head_size
            parts = []
            for linear in (s.query, s.key, s.value):
                parts.append(linear.weight.abs().pow(power).view(heads, size, -1).sum((1, 2)))
                if linear.bias is not None:
                    parts.append(linear.bias.abs().pow(power).view(heads, size).sum(1))
            parts.append(s.attention_output.weight.abs().pow(power).view(-1, heads, size).sum((0, 2)))
        return torch.stack(parts).sum(0).pow(1.0 / power)

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
        for s, units in zip(self.layers, self.unit_masks, strict=True):
            if self.config.structure == "neurons":
                rows = units.to(s.intermediate.weight.dtype)
                _set_mask(s.intermediate, "weight_mask", rows[:, None].expand_as(s.intermediate.weight).clone())
                _set_mask(s.intermediate, "bias_mask", rows.clone())
                _set_mask(s.output, "weight_mask", rows[None, :].expand_as(s.output.weight).clone())
            else:
                rows = units.repeat_interleave(s.head_size).to(s.query.weight.dtype)
                for linear in (s.query, s.key, s.value):
                    _set_mask(linear, "weight_mask", rows[:, None].expand_as(linear.weight).clone())
                    _set_mask(linear, "bias_mask", rows.clone())
                _set_mask(
                    s.attention_output, "weight_mask", rows[None, :].expand_as(s.attention_output.weight).clone()
                )

    def masked_modules(self) -> list[nn.Linear]:
        if self.targets:
            return list(self.targets.values())
        return [
            m for s in self.layers for m in (s.query, s.key, s.value, s.attention_output, s.intermediate, s.output)
        ]

    @torch.no_grad()
    def apply(self) -> None:
        """Zero the pruned weights (after every optimizer step, so optimizer state cannot revive them)."""
        for module in self.masked_modules():
            for name in ("weight", "bias"):
                mask = getattr(module, f"{name}_mask", None)
                if mask is not None:
                    getattr(module, name).mul_(mask)

    @torch.no_grad()
    def mask_gradients(self) -> None:
        """Zero the gradients of pruned weights (before the optimizer step)."""
        for module in self.masked_modules():
            for name in ("weight", "bias"):
                mask, param = getattr(module, f"{name}_mask", None), getattr(module, name)
                if mask is not None and param is not None and param.grad is not None:
                    param.grad.mul_(mask)

    # ----------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        masks = {}
        for name, module in self.model.named_modules():
            for kind in ("weight_mask", "bias_mask"):
                if isinstance(getattr(module, kind, None), torch.Tensor):
                    masks[f"{name}.{kind}"] = getattr(module, kind).to(torch.bool).cpu()
        return {"sparsity": self.sparsity, "masks": masks, "unit_masks": [m.cpu() for m in self.unit_masks]}

    def load_state_dict(self, state: dict) -> None:
        self.sparsity = state["sparsity"]
        device = next(self.model.parameters()).device
        self.unit_masks = [m.to(device) for m in state["unit_masks"]]
        modules = dict(self.model.named_modules())
        for key, mask in state["masks"].items():
            name, kind = key.rsplit(".", 1)
            module = modules[name]
            _set_mask(module, kind, mask.to(device=device, dtype=module.weight.dtype))
        self.apply()

    def masks_from_zeros(self) -> None:
        """Rebuild masks from the exact zeros of the weights (resuming without a saved pruning state)."""
        for module in self.masked_modules():
            _set_mask(module, "weight_mask", (module.weight != 0).to(module.weight.dtype))
        if self.layers:
            self.unit_masks = [self._unit_scores(s) != 0 for s in self.layers]

    def broadcast(self, src: int = 0) -> None:
        """Make every process hold the masks of process ``src`` (under torch.distributed)."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        for module in self.masked_modules():
            for kind in ("weight_mask", "bias_mask"):
                mask = getattr(module, kind, None)
                if mask is not None:
                    torch.distributed.broadcast(mask, src)
        for units in self.unit_masks:
            as_float = units.float()
            torch.distributed.broadcast(as_float, src)
            units.copy_(as_float.bool())
        self.apply()

    # ----------------------------------------------------------------------------------------- reporting
    def layer_sparsity(self) -> dict[str, float]:
        """Achieved sparsity (fraction of zero weights) of each transformer layer's pruned linears."""
        per_layer: dict[str, list[int]] = {}
        layer_list_name, _ = find_layer_list(self.model)
        names = {id(m): n for n, m in self.model.named_modules()}
        for module in self.masked_modules():
            name = names[id(module)]
            layer = name[len(layer_list_name) + 1 :].split(".", 1)[0]
            zeros, total = per_layer.setdefault(layer, [0, 0])
            per_layer[layer] = [zeros + int((module.weight == 0).sum()), total + module.weight.numel()]
        return {layer: zeros / total for layer, (zeros, total) in per_layer.items()}


# --------------------------------------------------------------------------------------------- removal
def _zero_units(s: _Structures) -> tuple[list[int], list[int]]:
    """Indices of the exactly-zero FFN neurons and attention heads of a layer."""

    def dead(*tensors: torch.Tensor) -> torch.Tensor:
        return torch.stack([t.abs().sum(1) for t in tensors]).sum(0) == 0

    neuron_parts = [s.intermediate.weight, s.output.weight.t()]
    if s.intermediate.bias is not None:
        neuron_parts.append(s.intermediate.bias[:, None])
    neurons = dead(*neuron_parts).nonzero().flatten().tolist()
    heads, size = s.num_heads, s.head_size
    head_parts = []
    for linear in (s.query, s.key, s.value):
        head_parts.append(linear.weight.reshape(heads, -1))
        if linear.bias is not None:
            head_parts.append(linear.bias.reshape(heads, size))
    head_parts.append(s.attention_output.weight.t().reshape(heads, -1))
    dead_heads = dead(*head_parts).nonzero().flatten().tolist()
    return neurons, dead_heads


def _slice_linear(linear: nn.Linear, keep: torch.Tensor, dim: int) -> nn.Linear:
    weight = linear.weight.detach().index_select(dim, keep)
    new = nn.Linear(
        weight.shape[1], weight.shape[0], bias=linear.bias is not None, device=weight.device, dtype=weight.dtype
    )
    new.weight.data.copy_(weight)
    if linear.bias is not None:
        new.bias.data.copy_(linear.bias.detach() if dim == 1 else linear.bias.detach().index_select(0, keep))
    return new


def structured_layers(model: nn.Module) -> list[_Structures] | None:
    """The structures of every transformer layer, or None when the model has no BERT-style layers of linears."""
    located = locate_layer_list(model)
    if located is None:
        return None
    found = [_Structures.find(layer)[0] for layer in located[1]]
    return None if any(s is None for s in found) else found


def _slice_heads(layer: nn.Module, s: _Structures, heads: list[int]) -> None:
    """Remove ``heads`` from one BERT-style layer: their rows of q, k, v and columns of the attention output."""
    drop, size = set(heads), s.head_size
    keep = torch.tensor(
        [h * size + j for h in range(s.num_heads) if h not in drop for j in range(size)], device=s.query.weight.device
    )
    attention = layer.attention.self
    for name in ("query", "key", "value"):
        setattr(attention, name, _slice_linear(getattr(attention, name), keep, 0))
    layer.attention.output.dense = _slice_linear(s.attention_output, keep, 1)
    attention.num_attention_heads = s.num_heads - len(drop)
    attention.all_head_size = attention.num_attention_heads * size


@torch.no_grad()
def remove_pruned_structures(model: nn.Module, *, loadable: bool = False) -> dict[str, object]:
    """Slice out FFN neurons and attention heads whose weights are all exactly zero; return what was removed.

    Neurons: a BERT config has one ``intermediate_size``, so every layer keeps the same number; when layers have
    different numbers of zero neurons, only as many as the least pruned layer has are removed from each (the others
    stay as zeros). Heads: on transformers 4.x through the model's own ``prune_heads`` (recorded in
    ``config.pruned_heads``, so ``from_pretrained`` rebuilds the smaller layers); transformers 5 has neither, so
    heads are sliced out of the modules directly, which a saved model cannot record: with ``loadable`` (a model about
    to be saved) they then stay as zeros, and the export (which traces the modules) removes them. The outputs are
    unchanged. A model without BERT-style layers of ``nn.Linear`` (e.g. factorized ones) is left as it is (``{}``).
    """
    layers = structured_layers(model)
    if layers is None:
        return {}
    layer_list = find_layer_list(model)[1]
    zero = [_zero_units(s) for s in layers]
    removed: dict[str, object] = {"heads": {}, "neurons_per_layer": 0}
    heads = {i: h for i, (_, h) in enumerate(zero) if h and len(h) < layers[i].num_heads}
    n_remove = min(len(n) for n, _ in zero)
    if n_remove:
        for layer, s, (neurons, _) in zip(layer_list, layers, zero, strict=True):
            drop = set(neurons[:n_remove])
            keep = torch.tensor(
                [j for j in range(s.intermediate.out_features) if j not in drop], device=s.intermediate.weight.device
            )
            layer.intermediate.dense = _slice_linear(s.intermediate, keep, 0)
            layer.output.dense = _slice_linear(s.output, keep, 1)
        model.config.intermediate_size = layers[0].intermediate.out_features - n_remove
        removed["neurons_per_layer"] = n_remove
    if heads and hasattr(model, "prune_heads"):
        model.prune_heads(heads)
        removed["heads"] = heads
    elif heads and not loadable:
        for index, dropped in heads.items():
            _slice_heads(layer_list[index], layers[index], dropped)
        removed["heads"] = heads
    elif heads:
        removed["heads_kept_as_zeros"] = heads
    return removed


def sparsity_report(model: nn.Module) -> dict:
    """Per transformer layer: parameters, zeros and sparsity of its linears, heads and FFN width; and totals."""
    layer_list_name, layer_list = find_layer_list(model)
    rows = []
    for index, layer in enumerate(layer_list):
        linears = [m for m in layer.modules() if isinstance(m, nn.Linear)]
        params = sum(m.weight.numel() for m in linears)
        zeros = sum(int((m.weight == 0).sum()) for m in linears)
        row = {
            "layer": f"{layer_list_name}.{index}",
            "parameters": params,
            "zeros": zeros,
            "sparsity": zeros / max(params, 1),
        }
        s, _ = _Structures.find(layer)
        if s is not None:  # a BERT-style layer: count its structures
            dead_neurons, dead_heads = _zero_units(s)
            row["heads"] = s.num_heads - len(dead_heads)
            row["ffn_neurons"] = s.intermediate.out_features - len(dead_neurons)
        rows.append(row)
    total_params = sum(p.numel() for p in model.parameters())
    linear_params = sum(r["parameters"] for r in rows)
    linear_zeros = sum(r["zeros"] for r in rows)
    return {
        "layers": rows,
        "total": {
            "parameters": total_params,
            "encoder_linear_parameters": linear_params,
            "zeros": linear_zeros,
            "sparsity": linear_zeros / max(linear_params, 1),
            "model_sparsity": linear_zeros / max(total_params, 1),
        },
    }


def sparsity_table(report: dict) -> str:
    """The report as a Markdown table."""
    rows = [
        (
            r["layer"],
            f"{r['parameters']:,}",
            f"{r['zeros']:,}",
            f"{100 * r['sparsity']:.1f}%",
            r.get("heads", "-"),
            r.get("ffn_neurons", "-"),
        )
        for r in report["layers"]
    ]
    t = report["total"]
    rows.append(
        (
            "total (encoder linears)",
            f"{t['encoder_linear_parameters']:,}",
            f"{t['zeros']:,}",
            f"{100 * t['sparsity']:.1f}%",
            "",
            "",
        )
    )
    return markdown_table(("layer", "linear params", "zeros", "sparsity", "heads", "FFN neurons"), rows)
