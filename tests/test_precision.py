"""Pure logic of INT8 copies: id suffixes, the record, finding a usable copy, choosing, the decode tail, mAP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_agent.models.artifacts import cache
from edge_agent.models.common.errors import Int8CopyMissingError
from edge_agent.models.quantization.calibration import redact_url
from edge_agent.models.quantization.quantize import compare_detections, decode_tail
from edge_agent.models.speed.precision import (
    Int8Copy,
    Int8Lookup,
    Int8Record,
    canonical_key,
    check_precision,
    choose_precision,
    find_int8_copy,
    int8_file_names,
    split_precision,
    with_precision,
)

CPU, CUDA, OPENVINO = "CPUExecutionProvider", "CUDAExecutionProvider", "OpenVINOExecutionProvider"


def test_split_and_join_precision_suffix(tmp_path: Path) -> None:
    assert split_precision("coco/3@int8") == ("coco/3", "int8")
    assert split_precision("builtin/shapes-v1@FP32") == ("builtin/shapes-v1", "fp32")
    assert split_precision("yolov8n-640@auto") == ("yolov8n-640", "auto")
    assert split_precision("coco/3") == ("coco/3", None)
    assert split_precision("coco/3@int4") == ("coco/3@int4", None)  # not a precision: parse_model_id rejects it
    odd = tmp_path / "door@int8"
    odd.mkdir()
    assert split_precision(str(odd)) == (str(odd), None)  # a real directory keeps its name
    assert with_precision("coco/3@fp32", "int8") == "coco/3@int8"
    assert with_precision("coco/3", None) == "coco/3"
    assert canonical_key("yolov8n-640@int8") == "coco/3@int8"
    assert canonical_key("ws/proj/2") == "proj/2"


def test_check_precision_names_the_variable() -> None:
    assert check_precision(" INT8 ", "X") == "int8"
    with pytest.raises(ValueError, match=r"STREAM_A_MODEL_PRECISION='int4' is invalid; accepted: fp32, int8, auto"):
        check_precision("int4", "STREAM_A_MODEL_PRECISION")


def test_int8_file_names_follow_the_family_weights_name() -> None:
    assert int8_file_names("weights.onnx") == ("weights.int8.onnx", "weights.int8.json")
    assert int8_file_names("yolov5s_weights.onnx") == ("yolov5s_weights.int8.onnx", "yolov5s_weights.int8.json")


def test_redact_url() -> None:
    assert redact_url("rtsp://admin:secret@192.0.2.1:554/live") == "rtsp://***@192.0.2.1:554/live"
    assert redact_url("/data/clip.mp4") == "/data/clip.mp4"


# --- records and lookup -----------------------------------------------------------------------


def _record(fp32: Path, int8: Path, *, active: bool = True, speed: dict | None = None) -> dict:
    return {
        "model_id": "p/1",
        "created_at": 1.0,
        "duration_s": 2.0,
        "source": {"file": fp32.name, "size": fp32.stat().st_size, "md5": cache.md5_of(fp32)},
        "int8": {"file": int8.name, "size": int8.stat().st_size, "md5": cache.md5_of(int8)},
        "quantization": {
            "activations": "uint8",
            "weights": "int8",
            "calibration_method": "MinMax",
            "reduce_range": False,
            "excluded_nodes": [],
            "tool": {},
        },
        "calibration": {"source": "x", "frames": 8, "calibration_frames": 6, "held_out_frames": 2, "preprocessing": ""},
        "accuracy": {
            "metric": "m",
            "map50": 0.99 if active else 0.5,
            "map50_95": 0.9,
            "threshold": 0.98,
            "truth_confidence": 0.4,
            "truth_detections": 10,
            "int8_detections": 11,
            "held_out_frames": 2,
            "passed": active,
        },
        "speed": speed,
        "active": active,
    }


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    d = tmp_path / "m"
    d.mkdir()
    (d / "weights.onnx").write_bytes(b"\x08fp32 weights")
    (d / "weights.int8.onnx").write_bytes(b"\x08int8")
    return d


def _write_record(d: Path, **kwargs: object) -> None:
    (d / "weights.int8.json").write_text(json.dumps(_record(d / "weights.onnx", d / "weights.int8.onnx", **kwargs)))


def test_find_copy_checks_record_source_and_activation(model_dir: Path, tmp_path: Path) -> None:
    fp32 = model_dir / "weights.onnx"
    empty = tmp_path / "empty"
    assert find_int8_copy("p/1", fp32, [empty]) == Int8Lookup(None, (), (empty,))  # nothing there
    assert "weights.int8.json is missing or unreadable" in find_int8_copy("p/1", fp32, [model_dir]).problems[0]
    _write_record(model_dir)
    found = find_int8_copy("p/1", fp32, [tmp_path / "elsewhere", model_dir])
    assert found.copy is not None and found.copy.weights_path == model_dir / "weights.int8.onnx"

    _write_record(model_dir, active=False)
    lookup = find_int8_copy("p/1", fp32, [model_dir])
    assert lookup.copy is None
    assert "failed its accuracy check (mAP@0.5 against fp32 0.5000, threshold 0.98)" in lookup.problems[0]

    _write_record(model_dir)
    fp32.write_bytes(b"\x08fp32 weightz")  # same size, other contents: a new version of the model
    assert "stale" in find_int8_copy("p/1", fp32, [model_dir]).problems[0]

    _write_record(model_dir)
    (model_dir / "weights.int8.onnx").write_bytes(b"\x08int8 but longer")
    assert "not the size its record says" in find_int8_copy("p/1", fp32, [model_dir]).problems[0]

    (model_dir / "weights.int8.json").write_text('{"model_id": "p/1"}')
    assert "unreadable" in find_int8_copy("p/1", fp32, [model_dir]).problems[0]


def test_the_record_forbids_unknown_fields(model_dir: Path) -> None:
    content = _record(model_dir / "weights.onnx", model_dir / "weights.int8.onnx")
    Int8Record.model_validate(content)
    with pytest.raises(ValueError):
        Int8Record.model_validate({**content, "surprise": 1})


# --- choosing -------------------------------------------------------------------------------------


def _lookup(model_dir: Path, **kwargs: object) -> Int8Lookup:
    _write_record(model_dir, **kwargs)
    record = Int8Record.model_validate_json((model_dir / "weights.int8.json").read_text())
    return Int8Lookup(Int8Copy(model_dir / "weights.int8.onnx", record), (), (model_dir,))


def test_choice_table(model_dir: Path) -> None:
    fp32 = model_dir / "weights.onnx"
    int8 = model_dir / "weights.int8.onnx"
    none = Int8Lookup(None, (), (model_dir,))
    have = _lookup(model_dir)

    assert choose_precision("p/1", "fp32", fp32, have, CPU, "cpu A").weights_path == fp32
    assert choose_precision("p/1", "int8", fp32, have, CUDA, "cpu A").weights_path == int8  # int8 is obeyed
    auto_missing = choose_precision("p/1", "auto", fp32, none, CPU, "cpu A")
    assert auto_missing.precision == "fp32" and "`edge-agent models quantize p/1` makes one" in auto_missing.reason
    assert choose_precision("p/1", "auto", fp32, have, CPU, "cpu A").precision == "int8"
    assert choose_precision("p/1", "auto", fp32, have, OPENVINO, "cpu A").precision == "int8"
    cuda = choose_precision("p/1", "auto", fp32, have, CUDA, "cpu A")
    assert cuda.precision == "fp32" and "gains nothing" in cuda.reason

    slow = _lookup(model_dir, speed={"provider": CPU, "cpu": "cpu A", "fp32_ms": 10.0, "int8_ms": 10.0})
    measured = choose_precision("p/1", "auto", fp32, slow, CPU, "cpu A")
    assert measured.precision == "fp32" and "ran only 1.00x" in measured.reason
    assert choose_precision("p/1", "auto", fp32, slow, CPU, "cpu B").precision == "int8"  # other CPU: the table
    fast = _lookup(model_dir, speed={"provider": CUDA, "cpu": "cpu A", "fp32_ms": 10.0, "int8_ms": 5.0})
    assert choose_precision("p/1", "auto", fp32, fast, CUDA, "cpu A").precision == "int8"  # measured wins


def test_int8_without_a_copy_names_the_command(model_dir: Path) -> None:
    lookup = Int8Lookup(None, ("x.int8.onnx was made from other fp32 weights (stale)",), (model_dir,))
    with pytest.raises(Int8CopyMissingError) as caught:
        choose_precision("coco/3", "int8", model_dir / "weights.onnx", lookup, CPU, "cpu")
    message = str(caught.value)
    assert "`edge-agent models quantize coco/3`" in message and "stale" in message and "MODEL_PRECISION=fp32" in message


# --- the decode tail --------------------------------------------------------------------------------


def _graph_with_dfl_head() -> onnx.ModelProto:
    """input -> conv_a -> relu -> {conv_box -> reshape -> softmax -> reshape -> conv_dfl -> mul,
    conv_cls -> sigmoid} -> concat -> output."""
    rng = np.random.default_rng(0)

    def w(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    inits = [
        w("wa", 8, 3, 3, 3),
        w("wbox", 16, 8, 1, 1),
        w("wcls", 2, 8, 1, 1),
        numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(1, 16, 1, 1), "bins"),
        numpy_helper.from_array(np.array([1, 16, 1, 64], np.int64), "s1"),
        numpy_helper.from_array(np.array([1, 16, 8, 8], np.int64), "s2"),
        numpy_helper.from_array(np.array([1, 1, 64], np.int64), "s3"),
        numpy_helper.from_array(np.array([1, 2, 64], np.int64), "s4"),
        numpy_helper.from_array(np.array(8.0, np.float32), "stride"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "wbox"], ["box"], name="conv_box"),
        helper.make_node("Reshape", ["box", "s1"], ["box_r"], name="reshape_1"),
        helper.make_node("Softmax", ["box_r"], ["p"], name="softmax", axis=1),
        helper.make_node("Reshape", ["p", "s2"], ["p_r"], name="reshape_2"),
        helper.make_node("Conv", ["p_r", "bins"], ["d"], name="conv_dfl"),
        helper.make_node("Mul", ["d", "stride"], ["d_px"], name="mul_stride"),
        helper.make_node("Reshape", ["d_px", "s3"], ["d_flat"], name="reshape_3"),
        helper.make_node("Conv", ["r", "wcls"], ["cls"], name="conv_cls"),
        helper.make_node("Sigmoid", ["cls"], ["score"], name="sigmoid"),
        helper.make_node("Reshape", ["score", "s4"], ["score_flat"], name="reshape_4"),
        helper.make_node("Concat", ["d_flat", "score_flat"], ["out"], name="concat", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "dfl_head",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 64])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def test_decode_tail_stops_at_learned_layers_and_keeps_dfl_fp32() -> None:
    tail = decode_tail(_graph_with_dfl_head())
    assert tail == [
        "reshape_1",
        "softmax",
        "reshape_2",
        "conv_dfl",
        "mul_stride",
        "reshape_3",
        "sigmoid",
        "reshape_4",
        "concat",
    ]


# --- the accuracy figure ------------------------------------------------------------------------


def _dets(*rows: tuple[float, ...]) -> np.ndarray:
    return np.array(rows, np.float64).reshape(-1, 6)


def test_compare_detections_hand_computed() -> None:
    truth = [_dets((0, 0, 10, 10, 0.9, 0), (20, 20, 40, 40, 0.8, 1))]
    same = compare_detections(truth, [_dets((0, 0, 10, 10, 0.7, 0), (20, 20, 40, 40, 0.6, 1))], 2)
    assert (same.map50, same.map50_95, same.truth_detections, same.int8_detections) == (1.0, 1.0, 2, 2)
    # Class 1 missed entirely: AP 1 for class 0, 0 for class 1.
    half = compare_detections(truth, [_dets((0, 0, 10, 10, 0.7, 0))], 2)
    assert half.map50 == pytest.approx(0.5)
    # One of two class-0 truths found: precision 1 up to recall 0.5 -> 51 of 101 recall points.
    two = [_dets((0, 0, 10, 10, 0.9, 0), (50, 50, 60, 60, 0.9, 0))]
    assert compare_detections(two, [_dets((0, 0, 10, 10, 0.5, 0))], 1).map50 == pytest.approx(51 / 101)
    # IoU 77/123 = 0.626 (a box 10 wide shifted by 2.3): a match at 0.5, 0.55, 0.6, not from 0.65 up.
    shifted = compare_detections([_dets((0, 0, 10, 10, 0.9, 0))], [_dets((2.3, 0, 12.3, 10, 0.5, 0))], 1)
    assert shifted.map50 == 1.0 and shifted.map50_95 == pytest.approx(0.3)
    nothing = compare_detections([_dets()], [_dets((0, 0, 1, 1, 0.5, 0))], 1)
    assert nothing.map50 is None and nothing.truth_detections == 0
