"""Real ONNX models of the YOLOv8 output layout, built with onnx.helper, with outputs we control.

* ``constant_detector``: every image gets the same ``(4 + nc, N)`` prediction tensor you pass in,
  so decoding, NMS and box mapping can be checked against hand-computed values.
* ``colour_detector``: fixed boxes, but class c's score at anchor j is ``mean(channel c of the RGB
  input) * weight[c, j]`` — different images give different scores, which proves the batch path
  keeps images apart and in order, and that inputs are RGB in [0, 1].

``batch=None`` makes the batch axis dynamic; an int makes it static.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # what onnxruntime >= 1.16 accepts


def _model(
    nodes: list, initializers: list, height: int | None, width: int | None, rows: int, anchors: int, batch: int | None
):
    b: Any = batch if batch is not None else "batch"
    h: Any = height if height is not None else "height"
    w: Any = width if width is not None else "width"
    graph = helper.make_graph(
        nodes,
        "yolov8_layout_test",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [b, 3, h, w])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [b, rows, anchors])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edge-agent-tests")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _batch_zero_nodes() -> tuple[list, list]:
    """A (B, 1, 1) tensor of zeros that carries the batch size of "images"."""
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean_all"], axes=[1, 2, 3], keepdims=0),  # (B,)
        helper.make_node("Mul", ["mean_all", "zero"], ["zeros_b"]),
        helper.make_node("Reshape", ["zeros_b", "shape_b11"], ["zeros_b11"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
        numpy_helper.from_array(np.array([-1, 1, 1], dtype=np.int64), "shape_b11"),
    ]
    return nodes, inits


def constant_detector(predictions: np.ndarray, height: int = 320, width: int = 320, batch: int | None = None) -> bytes:
    """Every image's output is ``predictions`` (shape (4 + nc, N), input-pixel cx, cy, w, h)."""
    predictions = np.asarray(predictions, dtype=np.float32)
    rows, anchors = predictions.shape
    nodes, inits = _batch_zero_nodes()
    nodes.append(helper.make_node("Add", ["zeros_b11", "pred"], ["output0"]))
    inits.append(numpy_helper.from_array(predictions[None], "pred"))
    return _model(nodes, inits, height, width, rows, anchors, batch)


def colour_detector(
    boxes: np.ndarray,
    weights: np.ndarray,
    height: int | None = 320,
    width: int | None = 320,
    batch: int | None = None,
) -> bytes:
    """Boxes ``(4, N)`` fixed; scores ``(3, N)`` = per-channel RGB mean of the input * ``weights``.

    ``height``/``width`` None leave those axes dynamic (the size then comes from environment.json).
    """
    boxes = np.asarray(boxes, dtype=np.float32)
    weights = np.asarray(weights, dtype=np.float32)
    anchors = boxes.shape[1]
    nodes, inits = _batch_zero_nodes()
    nodes += [
        helper.make_node("Add", ["zeros_b11", "boxes"], ["boxes_b"]),  # (B, 4, N)
        helper.make_node("ReduceMean", ["images"], ["chan_mean"], axes=[2, 3], keepdims=0),  # (B, 3)
        helper.make_node("Unsqueeze", ["chan_mean", "axis2"], ["chan_mean3"]),  # (B, 3, 1)
        helper.make_node("Mul", ["chan_mean3", "weights"], ["scores"]),  # (B, 3, N)
        helper.make_node("Concat", ["boxes_b", "scores"], ["output0"], axis=1),
    ]
    inits += [
        numpy_helper.from_array(boxes[None], "boxes"),
        numpy_helper.from_array(weights[None], "weights"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
    ]
    return _model(nodes, inits, height, width, 4 + 3, anchors, batch)


def letterbox_env(width: int = 320, height: int = 320, fmt: str = "Fit (grey edges) in", **steps: Any) -> dict:
    pre: dict[str, Any] = {"resize": {"enabled": True, "width": width, "height": height, "format": fmt}}
    pre.update({k.replace("_", "-"): v for k, v in steps.items()})
    return {"PREPROCESSING": pre}


def write_model_dir(
    directory: Path,
    onnx_bytes: bytes,
    classes: list[str],
    environment: dict | None = None,
    model_type: tuple[str, str] | None = ("object-detection", "yolov8n"),
    model_id: str | None = None,
    preprocessing_as_string: bool = False,
    weights_file: str = "weights.onnx",
) -> Path:
    """A model directory in the Roboflow cache layout."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / weights_file).write_bytes(onnx_bytes)
    env = dict(environment if environment is not None else letterbox_env())
    if preprocessing_as_string and isinstance(env.get("PREPROCESSING"), dict):
        env["PREPROCESSING"] = json.dumps(env["PREPROCESSING"])
    (directory / "environment.json").write_text(json.dumps(env))
    (directory / "class_names.txt").write_text("".join(f"{c}\n" for c in classes))
    if model_type is not None:
        content = {"project_task_type": model_type[0], "model_type": model_type[1]}
        if model_id:
            content["model_id"] = model_id
        (directory / "model_type.json").write_text(json.dumps(content))
    return directory


def constant_outputs(
    outputs: dict[str, np.ndarray], height: int = 320, width: int = 320, batch: int | None = None
) -> bytes:
    """Every image gets the same outputs: ``{name: array}`` -> outputs of shape (B, *array.shape),
    in the given order. For decoders of any layout (YOLOv5, end-to-end, YOLO-NAS, RF-DETR) and
    segmentation prototypes (B, 32, h, w)."""
    nodes, inits = _batch_zero_nodes()
    b: Any = batch if batch is not None else "batch"
    infos = []
    ranks: set[int] = set()
    for name, value in outputs.items():
        value = np.asarray(value, dtype=np.float32)
        zeros = "zeros_b11"
        if value.ndim != 2:
            # A batch of zeros with as many trailing unit axes as the constant has, to broadcast.
            zeros = f"zeros_rank{value.ndim}"
            if value.ndim not in ranks:
                ranks.add(value.ndim)
                nodes.append(helper.make_node("Reshape", ["zeros_b", f"shape_rank{value.ndim}"], [zeros]))
                shape = np.array([-1] + [1] * value.ndim, np.int64)
                inits.append(numpy_helper.from_array(shape, f"shape_rank{value.ndim}"))
        nodes.append(helper.make_node("Add", [zeros, f"const_{name}"], [name]))
        inits.append(numpy_helper.from_array(value[None], f"const_{name}"))
        infos.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [b, *value.shape]))
    graph = helper.make_graph(
        nodes,
        "constant_outputs",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [b, 3, height, width])],
        infos,
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edge-agent-tests")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model.SerializeToString()
