"""Softmax over an inner axis, spelled out as ReduceMax, Sub, Exp, ReduceSum and Div.

YOLOv8-style heads read box edges with a softmax over the 16 DFL bins, an inner axis of a
(1, 4, 16, H, W) or (1, 16, 4, N) tensor. onnxruntime runs a non-last-axis Softmax through
transposes: on the 2-core CI box 2.3 ms for (1, 4, 16, 80, 80) with onnxruntime 1.32 (0.92 ms
with 1.24), against 0.19 ms for the same maths as five element-wise and reduction nodes, so in
an INT8 copy the fp32 softmax of the tail cost 12% of the whole run. Only INT8 copies are
rewritten (``models/quantization/quantize.py``): the fp32 weights a user brings run as they are, so their
outputs stay the ones Roboflow's stack gives. Results differ from onnxruntime's Softmax by float
rounding only (a few 1e-7).

From opset 13 Softmax normalises along one axis; before that it flattens the trailing axes, a
different operation, so older graphs are left alone.
"""

from __future__ import annotations

from typing import Any

FIRST_SINGLE_AXIS_OPSET = 13
REDUCE_MAX_AXES_INPUT_OPSET = 18  # ReduceMax takes axes as an input from opset 18, an attribute before


def _opset(model: Any) -> int:
    return next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 0)


def _axis(node: Any) -> int:
    return next((attr.i for attr in node.attribute if attr.name == "axis"), -1)  # opset 13+ default: last


def _ranks(model: Any) -> dict[str, int]:
    """Rank of every tensor shape inference can tell (a hint: unknown means "maybe the last axis")."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        return {}
    values = list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    return {v.name: len(v.type.tensor_type.shape.dim) for v in values if v.type.tensor_type.HasField("shape")}


def inner_axis_softmaxes(model: Any, among: set[str] | None = None) -> list[Any]:
    """The Softmax nodes (opset >= 13) whose axis is not the last one, optionally only those named in ``among``."""
    if _opset(model) < FIRST_SINGLE_AXIS_OPSET:
        return []
    found = []
    ranks: dict[str, int] | None = None
    for node in model.graph.node:
        if node.op_type != "Softmax" or node.domain not in ("", "ai.onnx"):
            continue
        if among is not None and node.name not in among:
            continue
        axis = _axis(node)
        if axis == -1:
            continue
        if axis >= 0:
            ranks = _ranks(model) if ranks is None else ranks
            if ranks.get(node.input[0]) == axis + 1:
                continue
        found.append(node)
    return found


def decompose_softmax(model: Any, among: set[str] | None = None) -> dict[str, list[str]]:
    """Replace each inner-axis Softmax by max-subtracted Exp over ReduceSum, in place.

    Returns {replaced softmax name: names of the nodes that now compute it}; the last of them
    writes the softmax's own output tensor, so nothing downstream changes.
    """
    from onnx import TensorProto, helper

    targets = inner_axis_softmaxes(model, among)
    if not targets:
        return {}
    opset = _opset(model)
    graph = model.graph
    replaced: dict[str, list[str]] = {}
    nodes = list(graph.node)
    for softmax in targets:
        axis = _axis(softmax)
        name = softmax.name or f"Softmax_{nodes.index(softmax)}"
        x, y = softmax.input[0], softmax.output[0]
        axes = f"{name}/axes"
        graph.initializer.append(helper.make_tensor(axes, TensorProto.INT64, [1], [axis]))
        peak = f"{name}/max_output"
        if opset >= REDUCE_MAX_AXES_INPUT_OPSET:
            reduce_max = helper.make_node("ReduceMax", [x, axes], [peak], name=f"{name}/max", keepdims=1)
        else:
            reduce_max = helper.make_node("ReduceMax", [x], [peak], name=f"{name}/max", axes=[axis], keepdims=1)
        spelled = [
            reduce_max,
            helper.make_node("Sub", [x, peak], [f"{name}/shifted"], name=f"{name}/sub"),
            helper.make_node("Exp", [f"{name}/shifted"], [f"{name}/exp_output"], name=f"{name}/exp"),
            helper.make_node(
                "ReduceSum", [f"{name}/exp_output", axes], [f"{name}/sum_output"], name=f"{name}/sum", keepdims=1
            ),
            helper.make_node("Div", [f"{name}/exp_output", f"{name}/sum_output"], [y], name=f"{name}/div"),
        ]
        at = nodes.index(softmax)
        nodes[at : at + 1] = spelled  # same place in the topological order
        replaced[name] = [node.name for node in spelled]
    del graph.node[:]
    graph.node.extend(nodes)
    return replaced
