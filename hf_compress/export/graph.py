"""Surgery on exported ONNX graphs that the int8 routes need: finding the MatMul nodes of the linears, folding
the Identity nodes of reused weights, ordering nodes (subgraphs included), and pointing the readers that were not
quantized in training back at float tensors."""

from __future__ import annotations

import copy
import os
import re

__all__ = ["dequantize_only_for", "fold_weight_identities", "matmul_calls", "matmul_nodes", "sort_topologically"]


def _scope_pattern(module_name: str) -> re.Pattern:
    """The MatMul node names torch.onnx gives the calls of a linear: its module scope with ``/`` for ``.``
    (``layer.0`` kept whole) and a ``_N`` suffix on a scope called more than once (ALBERT's shared layer, a
    projection DeBERTa also applies to its relative embeddings)."""
    parts: list[str] = []
    for part in module_name.split("."):
        if part.isdigit() and parts:
            parts[-1] += "." + part
        else:
            parts.append(part)
    return re.compile("/" + "/".join(re.escape(p) + r"(?:_\d+)?" for p in parts) + "/MatMul")


def matmul_calls(
    onnx_path: str | os.PathLike, module_names: list[str], fused: bool = False
) -> dict[str, list[tuple[str, str]]]:
    """Map module names to the ``(MatMul node name, input tensor name)`` of every call of the linear in a graph
    exported by torch.onnx (first call first).

    The exporter names a linear's MatMul after its module scope: ``bert.encoder.layer.0.output.dense`` becomes
    ``/bert/encoder/layer.0/output/dense/MatMul``; a module called again gets ``_1``, ``_2`` ... In a ``fused``
    graph (:mod:`~hf_compress.export.fusion`) the attention projections live in ``Attention`` nodes: linears without a
    MatMul are then skipped, and every ``Attention`` node is listed under its own name.
    """
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    matmuls = [node for node in graph.node if node.op_type == "MatMul"]
    found, missing = {}, []
    for name in module_names:
        pattern = _scope_pattern(name)
        calls = [(node.name, node.input[0]) for node in matmuls if pattern.fullmatch(node.name)]
        if not calls:
            missing.append(name)
        else:
            found[name] = sorted(calls, key=lambda call: (len(call[0]), call[0]))
    if fused:
        found.update({n.name: [(n.name, n.input[0])] for n in graph.node if n.op_type == "Attention"})
        missing = []
    if missing:
        raise ValueError(f"no MatMul node found in {onnx_path} for the linear layers {missing[:4]}")
    return found


def matmul_nodes(
    onnx_path: str | os.PathLike, module_names: list[str], fused: bool = False
) -> dict[str, tuple[str, str]]:
    """Map module names to ``(MatMul node name, input tensor name)`` of the linear's first call
    (:func:`matmul_calls` has them all)."""
    return {name: calls[0] for name, calls in matmul_calls(onnx_path, module_names, fused).items()}


def dequantize_only_for(model, targets: set[str]):
    """Make only the ``targets`` nodes read dequantized activations; return the new model and how many inputs moved.

    ONNX Runtime's QDQ quantizer inserts ``x -> QuantizeLinear -> DequantizeLinear -> x'`` and points *every*
    reader of ``x`` at ``x'``: in a BERT layer the LayerNorm output feeding q/k/v (or ``intermediate.dense``) is
    also the residual input of the next ``Add`` (and the input of ``Shape``), which would then be rounded to uint8
    and clipped to the observed range, although training fake-quantized only what the linears read. Here each
    reader of ``x'`` that is not in ``targets`` is pointed back at ``x``; a QuantizeLinear/DequantizeLinear pair
    left without readers (e.g. one on a MatMul output) is removed with its scale and zero point. Weight
    DequantizeLinear nodes (fed by an initializer) are not touched. ``model`` is not modified.
    """
    import onnx

    model = copy.deepcopy(model)
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    graph_outputs = {o.name for o in graph.output}
    float_of = {}  # x' -> x for every activation QuantizeLinear -> DequantizeLinear pair
    for node in graph.node:
        source = producer.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if source is not None and source.op_type == "QuantizeLinear" and node.output[0] not in graph_outputs:
            float_of[node.output[0]] = source.input[0]
    moved = 0
    for node in graph.node:
        if node.name in targets or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for i, name in enumerate(node.input):
            if name in float_of:
                node.input[i] = float_of[name]
                moved += 1
    # drop pairs nobody reads any more (the QuantizeLinear first needs its DequantizeLinear gone)
    for op_type in ("DequantizeLinear", "QuantizeLinear"):
        read = {name for node in graph.node for name in node.input} | graph_outputs
        dead = [n for n in graph.node if n.op_type == op_type and not any(out in read for out in n.output)]
        for node in dead:
            graph.node.remove(node)
    read = {name for node in graph.node for name in node.input} | graph_outputs
    for tensor in [t for t in graph.initializer if t.name not in read]:
        if tensor.name.endswith(("_scale", "_zero_point")):
            graph.initializer.remove(tensor)
    sort_topologically(graph)
    onnx.checker.check_model(model)
    return model, moved


def fold_weight_identities(path: str | os.PathLike) -> int:
    """Point the readers of ``Identity(initializer)`` at the initializer, in the ONNX model at ``path`` (in place);
    return how many. torch.onnx writes a weight that a module uses twice (ALBERT's shared layer, DeBERTa's
    projections of the relative embeddings) once, and its other uses through Identity nodes, which the quantizers
    take for activations."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    weights = {t.name for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    alias = {
        node.output[0]: node.input[0]
        for node in graph.node
        if node.op_type == "Identity" and node.input[0] in weights and node.output[0] not in outputs
    }
    if not alias:
        return 0
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
    kept = [n for n in graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    del graph.node[:]
    graph.node.extend(kept)
    onnx.save(model, str(path))
    return len(alias)


def _outer_reads(node) -> list[str]:
    """The tensors ``node`` reads: its inputs, and the outer-scope tensors its subgraphs (``If`` branches,
    ``Loop`` bodies) read, which must be computed before it too."""
    from onnx import AttributeProto

    names = list(node.input)
    for attribute in node.attribute:
        graphs = [attribute.g] if attribute.type == AttributeProto.GRAPH else []
        graphs += list(attribute.graphs) if attribute.type == AttributeProto.GRAPHS else []
        for graph in graphs:
            local = {*(t.name for t in graph.initializer), *(i.name for i in graph.input)}
            local.update(out for inner in graph.node for out in inner.output)
            names += [name for inner in graph.node for name in _outer_reads(inner) if name not in local]
    return names


def sort_topologically(graph) -> None:
    """Order ``graph.node`` so that every node comes after the producers of what it reads, its subgraphs' reads
    from the outer graph included (stable otherwise)."""
    known = {"", *(t.name for t in graph.initializer), *(i.name for i in graph.input)}
    nodes = list(graph.node)  # (protobuf hands out new wrappers on each access: index, do not use id())
    reads = [_outer_reads(n) for n in nodes]
    pending, ordered = list(range(len(nodes))), []
    while pending:
        ready = [i for i in pending if all(name in known for name in reads[i])]
        if not ready:
            raise ValueError(f"the graph has a cycle or a missing input at {nodes[pending[0]].name}")
        for i in ready:
            known.update(nodes[i].output)
        ordered += [nodes[i] for i in ready]
        done = set(ready)
        pending = [i for i in pending if i not in done]
    copies = [type(n)() for n in ordered]
    for copy_, node in zip(copies, ordered, strict=True):
        copy_.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)
