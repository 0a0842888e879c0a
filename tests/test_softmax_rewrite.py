"""Inner-axis Softmax spelled out for INT8 copies (models/quantization/softmax_rewrite.py): onnx.helper graphs
run by onnxruntime, checked against softmax computed by hand with numpy."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from edge_agent.models.quantization.softmax_rewrite import decompose_softmax, inner_axis_softmaxes
from tests.onnx_factory import IR_VERSION


def _graph(shape: list[int], axes: list[int | None], opset: int) -> onnx.ModelProto:
    """x -> Softmax(axis) for each entry of ``axes`` (None: no axis attribute), outputs y0, y1..."""
    nodes = []
    outputs = []
    for index, axis in enumerate(axes):
        kwargs = {} if axis is None else {"axis": axis}
        nodes.append(helper.make_node("Softmax", ["x"], [f"y{index}"], name=f"/head/Softmax_{index}", **kwargs))
        outputs.append(helper.make_tensor_value_info(f"y{index}", TensorProto.FLOAT, shape))
    graph = helper.make_graph(nodes, "softmax", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)], outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = IR_VERSION
    return model


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def _by_hand(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x.astype(np.float64) - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("opset", [13, 17, 18, 19])
def test_dfl_shaped_softmax_is_spelled_out_with_the_same_values(opset: int) -> None:
    shape = [1, 4, 16, 3, 5]  # YOLOv8's DFL: 4 box edges x 16 bins per cell
    x = np.random.default_rng(0).normal(0.0, 4.0, shape).astype(np.float32)
    x[0, 1, :, 0, 0] = np.arange(16) * 60.0  # logits up to 900: exp would overflow without the shift
    model = _graph(shape, [2], opset)
    replaced = decompose_softmax(model)
    assert replaced == {"/head/Softmax_0": [f"/head/Softmax_0/{step}" for step in ("max", "sub", "exp", "sum", "div")]}
    assert [n.op_type for n in model.graph.node] == ["ReduceMax", "Sub", "Exp", "ReduceSum", "Div"]
    (y,) = _run(model, x)
    np.testing.assert_allclose(y, _by_hand(x, 2), rtol=0, atol=1e-6)
    assert y[0, 1, 15, 0, 0] == pytest.approx(1.0) and np.isfinite(y).all()
    np.testing.assert_allclose(y.sum(axis=2), 1.0, atol=1e-6)


def test_negative_inner_axis_is_spelled_out_too() -> None:
    shape = [1, 16, 4, 7]  # Ultralytics' own export: softmax over axis 1 of (b, 16, 4, anchors)
    x = np.random.default_rng(1).normal(0.0, 2.0, shape).astype(np.float32)
    model = _graph(shape, [-3], 17)
    assert list(decompose_softmax(model)) == ["/head/Softmax_0"]
    np.testing.assert_allclose(_run(model, x)[0], _by_hand(x, 1), rtol=0, atol=1e-6)


def test_last_axis_default_axis_and_old_opsets_are_left_alone() -> None:
    shape = [2, 3, 5]
    for model in (_graph(shape, [2, -1, None], 17), _graph(shape, [1], 12), _graph(shape, [0], 11)):
        before = model.SerializeToString()
        assert inner_axis_softmaxes(model) == [] and decompose_softmax(model) == {}
        assert model.SerializeToString() == before
    # Opset 12 flattens the trailing axes: axis 1 there means "over the last two", not one axis.
    x = np.random.default_rng(2).normal(size=shape).astype(np.float32)
    flat = _run(_graph(shape, [1], 12), x)[0].reshape(2, -1)
    np.testing.assert_allclose(flat, _by_hand(x.reshape(2, -1), 1), atol=1e-6)


def test_only_the_named_softmaxes_change() -> None:
    shape = [1, 4, 16, 6]
    x = np.random.default_rng(3).normal(size=shape).astype(np.float32)
    model = _graph(shape, [2, 1], 17)
    assert list(decompose_softmax(model, among={"/head/Softmax_1"})) == ["/head/Softmax_1"]
    assert [n.op_type for n in model.graph.node] == ["Softmax", "ReduceMax", "Sub", "Exp", "ReduceSum", "Div"]
    kept, spelled = _run(model, x)
    np.testing.assert_allclose(kept, _by_hand(x, 2), atol=1e-6)
    np.testing.assert_allclose(spelled, _by_hand(x, 1), atol=1e-6)
