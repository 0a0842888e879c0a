"""``edge-agent models quantize`` as a real subprocess: copies beside the fp32 weights, the guard, the lock.

The built-in shapes detector is the model throughout (it is small, and trained, so INT8 against
fp32 means something); as a cached model it is served by the test's own HTTP model server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from edge_agent.models.artifacts import cache
from edge_agent.models.common.errors import Int8CopyMissingError
from edge_agent.models.identity.ids import BUILTIN_ROOT, parse_model_id
from edge_agent.models.speed.precision import quantized_dir
from tools import synthworld as sw

ROOT = Path(__file__).resolve().parent.parent
BUILTIN = BUILTIN_ROOT / "shapes-v1"


def _cli(*args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.agent.cli", *args],
        cwd=ROOT,
        env={**os.environ, **env},  # the model_env fixture's MODEL_CACHE_DIR, API_BASE_URL, ...
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _digests(directory: Path) -> dict[str, str]:
    return {p.name: cache.md5_of(p) for p in sorted(directory.iterdir()) if p.is_file()}


def _scene_folder(path: Path, n: int, seed: int, blank: set[int] | None = None) -> Path:
    """``n`` synthetic scenes as PNGs, sorted by name; indices in ``blank`` are black frames."""
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        image = sw.render_frame(rng, 960, 540, n_objects=5)[0]
        if blank is not None and i in blank:
            image = np.zeros_like(image)
        cv2.imwrite(str(path / f"{i:03d}.png"), image)
    return path


def _local_copy(tmp_path: Path) -> Path:
    """The built-in model as a local directory (no INT8 copy shipped inside)."""
    target = tmp_path / "door-model"
    target.mkdir()
    for name in ("weights.onnx", "environment.json", "class_names.txt", "model_type.json"):
        shutil.copy(BUILTIN / name, target / name)
    return target


def _boxes(model_id: str, image: np.ndarray) -> list[tuple[str, tuple[float, ...]]]:
    from edge_agent.models import get_model

    prediction = get_model(model_id).predict(image)[0]
    return [
        (prediction.class_names[int(c)], tuple(float(v) for v in box))
        for box, c in zip(prediction.boxes, prediction.class_ids, strict=True)
    ]


def _same_detections(a: list, b: list, tolerance_px: float = 4.0) -> bool:
    if sorted(c for c, _ in a) != sorted(c for c, _ in b):
        return False
    for cls, box in a:
        if not any(
            c == cls and max(abs(x - y) for x, y in zip(box, other, strict=True)) <= tolerance_px for c, other in b
        ):
            return False
    return True


def test_quantize_builtin_goes_to_the_cache_and_wins_over_the_shipped_copy(model_env) -> None:
    shipped = _digests(BUILTIN)
    done = _cli("models", "quantize", "builtin/shapes-v1", "--frames", "32", "--json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    derived = quantized_dir(model_env.cache_dir.absolute(), "builtin/shapes-v1")
    assert sorted(p.name for p in derived.iterdir()) == ["weights.int8.json", "weights.int8.onnx"]
    assert json.loads((derived / "weights.int8.json").read_text()) == record
    assert _digests(BUILTIN) == shipped  # the package directory is read in place, never written
    assert record["source"] == {
        "file": "weights.onnx",
        "size": (BUILTIN / "weights.onnx").stat().st_size,
        "md5": shipped["weights.onnx"],
    }
    assert record["int8"]["md5"] == cache.md5_of(derived / "weights.int8.onnx")
    assert record["calibration"]["source"].startswith("the bundled sample clip (32 frames")
    assert (record["calibration"]["calibration_frames"], record["calibration"]["held_out_frames"]) == (24, 8)
    assert "letterbox (pad 114) to 640x384" in record["calibration"]["preprocessing"]
    assert record["quantization"]["format"] == "QDQ" and "per output channel" in record["quantization"]["weights"]
    excluded = record["quantization"]["excluded_nodes"]
    assert any("Softmax" in n for n in excluded) and not any("Conv" in n for n in excluded), excluded
    # The DFL softmax of the fp32 tail is spelled out (models/quantization/softmax_rewrite.py), still fp32.
    assert record["quantization"]["decomposed_softmax"] == ["/Softmax"]
    assert {"/Softmax/max", "/Softmax/exp", "/Softmax/div"} <= set(excluded)
    ops = {node.op_type for node in onnx.load(str(derived / "weights.int8.onnx")).graph.node}
    assert "Softmax" not in ops and {"ReduceMax", "Exp", "ReduceSum"} <= ops
    acc = record["accuracy"]
    assert acc["passed"] and acc["map50"] >= 0.98 and acc["truth_detections"] > 0 and record["active"]
    assert "mAP@0.5" in done.stderr and "held-out frames" in done.stderr

    from edge_agent.models import get_model

    model = get_model("builtin/shapes-v1@int8")
    assert model.precision == "int8" and model.engine.weights_path == derived / "weights.int8.onnx"
    image = sw.render_frame(np.random.default_rng(42), 1280, 720, n_objects=4)[0]
    assert _same_detections(_boxes("builtin/shapes-v1@int8", image), _boxes("builtin/shapes-v1@fp32", image))


def test_quantize_a_cached_model_beside_its_weights_under_its_lock(model_server, model_env, tmp_path: Path) -> None:
    environment = json.loads((BUILTIN / "environment.json").read_text())
    model_server.add_model(
        "shapes",
        "1",
        (BUILTIN / "weights.onnx").read_bytes(),
        environment=environment,
        classes=["circle", "square", "triangle"],
    )
    model_env.set(API_BASE_URL=model_server.base_url)
    frames = _scene_folder(tmp_path / "cal", 32, seed=3)
    done = _cli("models", "quantize", "shapes/1", "--calibration", str(frames), "--frames", "32")
    assert done.returncode == 0, done.stderr
    directory = model_env.cache_dir / "shapes" / "1"
    files = _digests(directory)
    assert {"weights.onnx", "weights.int8.onnx", "weights.int8.json", ".edge-agent.json"} <= set(files)
    assert files["weights.onnx"] == cache.md5_of(BUILTIN / "weights.onnx")  # fp32 untouched
    manifest = json.loads((directory / ".edge-agent.json").read_text())
    assert list(manifest["files"]) == ["weights.onnx"]  # the download's bookkeeping is not rewritten
    record = json.loads((directory / "weights.int8.json").read_text())
    assert record["calibration"]["source"] == f"{frames} (32 images)" and record["accuracy"]["passed"]
    assert not list(directory.glob("*.tmp"))
    listed = json.loads(_cli("models", "list", "--json").stdout)
    assert listed["model_id"] == "shapes/1" and listed["complete"]
    assert model_server.count("/artifacts/shapes/1/weights.onnx") == 1

    image = tmp_path / "scene.jpg"
    cv2.imwrite(str(image), sw.render_frame(np.random.default_rng(8), 1280, 720, n_objects=4)[0])
    as_int8 = json.loads(_cli("infer", str(image), "--model", "shapes/1@int8").stdout)
    as_fp32 = json.loads(_cli("infer", str(image), "--model", "shapes/1@fp32").stdout)
    assert len(as_fp32["predictions"]) >= 3
    assert sorted(p["class"] for p in as_int8["predictions"]) == sorted(p["class"] for p in as_fp32["predictions"])

    # Another process holds the model's lock (a download or a clear): quantize waits, then gives up
    # without writing anything.
    before = _digests(directory)
    with cache.model_lock(parse_model_id("shapes/1")):
        blocked = _cli(
            "models",
            "quantize",
            "shapes/1",
            "--calibration",
            str(frames),
            "--frames",
            "16",
            MODEL_CACHE_LOCK_TIMEOUT="1",
        )
    assert blocked.returncode == 1 and "cache lock of shapes/1" in blocked.stderr, blocked.stderr
    assert _digests(directory) == before


def test_guard_refuses_a_copy_calibrated_on_the_wrong_frames(model_env, tmp_path: Path) -> None:
    from edge_agent.models import get_model

    local = _local_copy(tmp_path)
    # Calibration sees only black frames; the held-out frames (every 4th: 3, 7, ...) are scenes, so
    # the INT8 ranges are far too narrow for them.
    bad = _scene_folder(tmp_path / "bad", 24, seed=5, blank={i for i in range(24) if i % 4 != 3})
    refused = _cli("models", "quantize", str(local), "--calibration", str(bad), "--frames", "24")
    assert refused.returncode == 1
    assert "it was not activated" in refused.stderr and "--force" in refused.stderr, refused.stderr
    derived = quantized_dir(model_env.cache_dir.absolute(), str(local))
    record = json.loads((derived / "weights.int8.json").read_text())
    assert not record["active"] and not record["accuracy"]["passed"] and record["accuracy"]["map50"] < 0.98
    assert sorted(p.name for p in local.iterdir()) == [
        "class_names.txt",
        "environment.json",
        "model_type.json",
        "weights.onnx",
    ]  # a local directory is never written

    with pytest.raises(Int8CopyMissingError, match="failed its accuracy check"):
        get_model(f"{local}@int8")
    assert get_model(str(local)).precision == "fp32"  # auto skips it

    forced = _cli("models", "quantize", str(local), "--calibration", str(bad), "--frames", "24", "--force")
    assert forced.returncode == 0, forced.stderr
    record = json.loads((derived / "weights.int8.json").read_text())
    assert record["active"] and record["forced"] and record["accuracy"]["map50"] < 0.98
    assert get_model(f"{local}@int8").precision == "int8"

    # A later failing run does not replace the active copy.
    again = _cli("models", "quantize", str(local), "--calibration", str(bad), "--frames", "24")
    assert again.returncode == 1 and "the active INT8 copy already there was kept" in again.stderr
    assert json.loads((derived / "weights.int8.json").read_text()) == record

    # New fp32 weights (a retrained model in the same directory): the copy is stale.
    model = onnx.load(str(local / "weights.onnx"))
    model.doc_string = "retrained"
    onnx.save(model, str(local / "weights.onnx"))
    with pytest.raises(Int8CopyMissingError, match="stale"):
        get_model(f"{local}@int8")
    auto = get_model(str(local))
    assert auto.precision == "fp32" and "stale" in auto.engine.precision_reason


def test_nothing_to_compare_is_refused(model_env, tmp_path: Path) -> None:
    black = _scene_folder(tmp_path / "black", 8, seed=1, blank=set(range(8)))
    refused = _cli("models", "quantize", str(_local_copy(tmp_path)), "--calibration", str(black), "--frames", "8")
    assert refused.returncode == 1
    assert "could not be measured" in refused.stderr and "found nothing on the held-out frames" in refused.stderr


def test_bad_arguments_are_named(model_env, tmp_path: Path) -> None:
    missing = _cli("models", "quantize", "builtin/shapes-v1", "--calibration", str(tmp_path / "nope.mp4"))
    assert missing.returncode == 1
    assert f"--calibration {str(tmp_path / 'nope.mp4')!r} does not exist; accepted: a video file" in missing.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    no_images = _cli("models", "quantize", "builtin/shapes-v1", "--calibration", str(empty))
    assert no_images.returncode == 1 and "holds no images" in no_images.stderr
    few = _cli("models", "quantize", "builtin/shapes-v1", "--frames", "3")
    assert few.returncode == 1 and "--frames must be at least 8" in few.stderr
    threshold = _cli("models", "quantize", "builtin/shapes-v1", "--min-map50", "1.5")
    assert threshold.returncode == 1 and "--min-map50 must be in (0, 1]" in threshold.stderr
    quantized = _local_copy(tmp_path)
    shutil.copy(BUILTIN / "weights.int8.onnx", quantized / "weights.onnx")
    twice = _cli("models", "quantize", str(quantized), "--frames", "8")
    assert twice.returncode == 1 and "is already quantized" in twice.stderr, twice.stderr
    assert "Traceback" not in missing.stderr + no_images.stderr + few.stderr + threshold.stderr + twice.stderr


def test_the_shipped_int8_copy_matches_the_shipped_weights() -> None:
    from edge_agent.models.speed.precision import Int8Record, find_int8_copy

    record = Int8Record.model_validate_json((BUILTIN / "weights.int8.json").read_text())
    assert record.source.md5 == cache.md5_of(BUILTIN / "weights.onnx"), "run python -m tools.quantize_builtin"
    assert record.int8.md5 == cache.md5_of(BUILTIN / "weights.int8.onnx")
    assert record.active and not record.forced and record.accuracy.passed
    assert record.quantization.decomposed_softmax == ["/Softmax"], "run python -m tools.quantize_builtin"
    assert record.accuracy.map50 is not None and record.accuracy.map50 >= 0.98
    assert record.calibration.held_out_frames >= 40 and record.accuracy.truth_detections >= 100
    lookup = find_int8_copy("builtin/shapes-v1", BUILTIN / "weights.onnx", [BUILTIN])
    assert lookup.copy is not None and lookup.copy.weights_path == BUILTIN / "weights.int8.onnx"


def test_calibrate_on_a_live_rtsp_stream_without_leaking_its_password(
    model_env,
    tmp_path: Path,
    rtsp_server_factory,  # type: ignore[no-untyped-def]
) -> None:
    clip = tmp_path / "scene.mp4"
    sw.write_clip(clip, seconds=3, width=960, height=540, seed=12, n_objects=4)
    server = rtsp_server_factory({"cam": clip})
    url = server.url("cam").replace("rtsp://", "rtsp://viewer:s3cret-pw@")
    done = _cli("models", "quantize", str(_local_copy(tmp_path)), "--calibration", url, "--frames", "12", "--json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    shown = url.replace("viewer:s3cret-pw@", "***@")
    assert record["calibration"]["source"] == f"{shown} (12 frames, one per 0.2 s)"
    assert record["calibration"]["calibration_frames"] == 9 and record["accuracy"]["held_out_frames"] == 3
    assert "s3cret-pw" not in done.stdout + done.stderr


def test_a_copy_that_does_not_load_falls_back_or_says_how_to_remake_it(model_env, tmp_path: Path) -> None:
    from edge_agent.models import get_model

    local = _local_copy(tmp_path)
    for name in ("weights.int8.onnx", "weights.int8.json"):  # made from these very fp32 weights
        shutil.copy(BUILTIN / name, local / name)
    assert get_model(f"{local}@int8").precision == "int8"
    size = (local / "weights.int8.onnx").stat().st_size
    (local / "weights.int8.onnx").write_bytes(b"\x08" + b"\xff" * (size - 1))  # same size, not a model
    auto = get_model(str(local))
    assert auto.precision == "fp32" and "does not load" in auto.engine.precision_reason
    with pytest.raises(Int8CopyMissingError, match=rf"does not load.*`edge-agent models quantize {local}`"):
        get_model(f"{local}@int8")
    assert cache.md5_of(local / "weights.onnx") == cache.md5_of(BUILTIN / "weights.onnx")  # nothing refetched
