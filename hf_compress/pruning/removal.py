"""Physical removal of pruned heads and FFN neurons, and the sparsity report."""

from __future__ import annotations

import torch
from torch import nn

from ..architectures import describe, weight_layers
from ..compat import native_head_pruning
from ..modules import mark_unloadable
from ..structures import Units, find_structures
from ..tables import markdown_table

__all__ = ["remove_pruned_structures", "sparsity_report", "sparsity_table"]


def _remove_neurons(model: nn.Module, groups: list[Units]) -> int:
    """Slice out as many all-zero neurons from every FFN block as the least pruned block has; return how many."""
    dead = [g.dead() for g in groups]
    n_remove = min(len(d) for d in dead)
    if n_remove:
        for group, neurons in zip(groups, dead, strict=True):
            group.remove(neurons[:n_remove])
        setattr(model.config, describe(model).intermediate_size, groups[0].count - n_remove)
    return n_remove


@torch.no_grad()
def remove_pruned_structures(model: nn.Module, *, loadable: bool = True) -> dict[str, object]:
    """Slice out FFN neurons and attention heads whose weights are all exactly zero; return what was removed.

    Neurons: a config has one FFN width (``intermediate_size``), so every FFN block keeps the same number; when
    blocks have different numbers of zero neurons, only as many as the least pruned block has are removed from each
    (the others stay as zeros). Heads: with ``loadable`` (a model about to be saved), through the model's own
    ``prune_heads`` where transformers has it (4.x, for the architectures that implement it: recorded in
    ``config.pruned_heads``, so ``from_pretrained`` rebuilds the smaller layers), else kept as zeros (a config
    cannot say that a layer has fewer heads); with ``loadable=False`` (the export copy) sliced out of the modules,
    and the model is marked so that hf-compress refuses to save it (:func:`~hf_compress.modules.check_loadable`: a
    checkpoint plain ``from_pretrained`` could not load). The outputs are unchanged. Heads or neurons whose layers
    are not plain linears (e.g. factorized ones) are left as they are.
    """
    removed: dict[str, object] = {"heads": {}, "neurons_per_layer": 0}
    neurons, _ = find_structures(model, "neurons")
    if neurons:
        removed["neurons_per_layer"] = _remove_neurons(model, neurons)
    heads_found, _ = find_structures(model, "heads")
    if neurons is None and heads_found is None:
        return {}
    groups = heads_found or []
    dead = {g.layer: g.dead() for g in groups}
    heads = {layer: d for layer, d in dead.items() if d and len(d) < groups[layer].count}
    if heads and loadable and describe(model).native_head_pruning and native_head_pruning(model):
        model.prune_heads(heads)
        removed["heads"] = heads
    elif heads and not loadable:
        for layer, dropped in heads.items():
            groups[layer].remove(dropped)
        removed["heads"] = heads
        mark_unloadable(model, f"attention heads were sliced out of layers {sorted(heads)} (loadable=False)")
    elif heads:
        removed["heads_kept_as_zeros"] = heads
    return removed


def sparsity_report(model: nn.Module) -> dict:
    """Per transformer layer: parameters, zeros and sparsity of its linears, heads and FFN width; and totals."""
    layers = weight_layers(model)
    heads, _ = find_structures(model, "heads")
    neurons, _ = find_structures(model, "neurons")
    rows = []
    for index, (name, layer) in enumerate(layers):
        linears = [m for m in layer.modules() if isinstance(m, nn.Linear)]
        params = sum(m.weight.numel() for m in linears)
        zeros = sum(int((m.weight == 0).sum()) for m in linears)
        row = {"layer": name, "parameters": params, "zeros": zeros, "sparsity": zeros / max(params, 1)}
        if heads is not None:
            row["heads"] = heads[index].count - len(heads[index].dead())
        if neurons is not None:
            row["ffn_neurons"] = sum(g.count - len(g.dead()) for g in neurons if g.layer == index)
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
