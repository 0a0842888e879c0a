"""A deliberately slow ONNX detector of the YOLOv8 layout, for latest-frame-wins tests.

Its boxes are constant (one "thing" in the input's centre); its cost comes from a chain of real
3x3 convolutions whose result is multiplied by zero and added to the output, so onnxruntime has
to run them on every call.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.onnx_factory import letterbox_env, write_model_dir


def slow_detector(layers: int, channels: int = 16, height: int = 384, width: int = 640) -> bytes:
    rng = np.random.default_rng(0)
    preds = np.zeros((1, 5, 1), dtype=np.float32)
    preds[0, :, 0] = [width / 2, height / 2, width / 4, height / 4, 0.9]
    nodes, inits = [], [numpy_helper.from_array(preds, "preds"), numpy_helper.from_array(np.float32(0.0), "zero")]
    prev, c_in = "images", 3
    for i in range(layers):
        w = rng.normal(0, 0.1, (channels, c_in, 3, 3)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        prev, c_in = f"r{i}", channels
    nodes += [
        helper.make_node("ReduceMean", [prev], ["m"], axes=[1, 2, 3], keepdims=1),  # (B,1,1,1)
        helper.make_node("Mul", ["m", "zero"], ["z"]),
        helper.make_node("Squeeze", ["z", "ax3"], ["z3"]),  # (B,1,1)
        helper.make_node("Add", ["z3", "preds"], ["output0"]),  # (B,5,1)
    ]
    inits.append(numpy_helper.from_array(np.array([3], dtype=np.int64), "ax3"))
    graph = helper.make_graph(
        nodes,
        "slow_yolov8_layout",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, height, width])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 5, 1])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def write_slow_model(directory: Path, layers: int = 4) -> Path:
    return write_model_dir(
        directory, slow_detector(layers), ["thing"], environment=letterbox_env(640, 384), model_id="test/slow"
    )
