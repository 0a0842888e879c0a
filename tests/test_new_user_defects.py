"""Defects a new user met (issue 20), each as that user met it: through the real CLI and agent."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.agent_cli import assert_refused, run_cli
from tests.fixtures.mosquitto import free_port
from tests.onnx_factory import constant_detector, write_model_dir

BUILTIN = Path(__file__).resolve().parent.parent / "models" / "builtin" / "shapes-v1"
SAMPLE = BUILTIN.parent / "sample.mp4"


def _predictions(stdout: str) -> list[dict]:
    """Prediction lines only: a tracked stream's events are printed on stdout too."""
    return [m for m in (json.loads(line) for line in stdout.splitlines() if line.startswith("{")) if "predictions" in m]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"MODEL_CACHE_DIR": str(tmp_path / "cache"), "STATE_DIR": str(tmp_path / "state"), **extra}


# -- item 5: the broker's port is not a password ------------------------------------------------------


def test_mqtt_connection_error_shows_the_port(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there: connection refused
    result = run_cli("run", "--seconds", "4", env=_env(tmp_path, MQTT_HOST=f"127.0.0.1:{port}"), timeout=90)
    assert f"cannot connect to mqtt://127.0.0.1:{port}: " in result.stderr, result.stderr
    assert "127.0.0.1:***" not in result.stderr


# -- item 11: a fine-tuned id without an API key is refused at once ----------------------------------


def test_fine_tuned_id_without_a_key_is_refused_at_once(tmp_path: Path) -> None:
    """Against Roboflow's own API (the default API_BASE_URL) the key is known to be needed: no request
    is made, `config` refuses what `run` would, and `models pull` says so at once."""
    env = _env(tmp_path, MODEL_ID="someproj/1")
    line = assert_refused(run_cli("config", env=env), "MODEL_ID", "someproj/1", "ROBOFLOW_API_KEY")
    assert "fine-tuned" in line
    pulled = run_cli("models", "pull", "someproj/3", env=_env(tmp_path))
    assert pulled.returncode == 2 and "someproj/3 is a fine-tuned model" in pulled.stderr, pulled.stderr
    assert "ROBOFLOW_API_KEY (or API_KEY)" in pulled.stderr and "network" not in pulled.stderr
    # a key, a public alias, a cached model or another API: nothing to refuse before asking
    assert run_cli("config", env={**env, "ROBOFLOW_API_KEY": "k"}).returncode == 0
    assert run_cli("config", env=_env(tmp_path, MODEL_ID="yolov8n-640")).returncode == 0
    assert run_cli("config", env={**env, "API_BASE_URL": "http://127.0.0.1:9"}).returncode == 0
    cached = tmp_path / "cache" / "someproj" / "1"
    write_model_dir(cached, (BUILTIN / "weights.onnx").read_bytes(), ["a"])
    assert run_cli("config", env=env).returncode == 0


def test_the_401_message_reads_as_one_sentence(model_server, model_env) -> None:  # type: ignore[no-untyped-def]
    from edge_agent.models import get_model
    from edge_agent.models.common.errors import ApiAuthError

    model_server.add_model("someproj", "1", (BUILTIN / "weights.onnx").read_bytes())
    model_server.require_api_key = "right"
    model_env.set(API_BASE_URL=model_server.base_url)
    with pytest.raises(ApiAuthError) as info:
        get_model("someproj/1")
    message = str(info.value)
    assert "revoked). Set ROBOFLOW_API_KEY (or API_KEY)" in message and ".." not in message, message
    assert "pass api_key" not in message


# -- items 7 and 8: `infer` reads MODEL_ID, answers every readable image, stamps its responses -------


def _detector_dir(tmp_path: Path) -> Path:
    pred = np.zeros((7, 1), np.float32)
    pred[:, 0] = (160, 160, 64, 48, 0.9, 0, 0)  # 320x320 input: a door at the centre of any image
    return write_model_dir(tmp_path / "door-model", constant_detector(pred), ["door", "window", "wall"])


def test_infer_uses_model_id_and_answers_every_readable_image(tmp_path: Path) -> None:
    model_dir = _detector_dir(tmp_path)
    good, other = tmp_path / "good.png", tmp_path / "other.png"
    cv2.imwrite(str(good), np.zeros((480, 640, 3), np.uint8))
    cv2.imwrite(str(other), np.zeros((240, 320, 3), np.uint8))
    missing, text = tmp_path / "missing.png", tmp_path / "notes.txt"
    text.write_text("not a picture\n")
    env = _env(tmp_path, MODEL_ID=str(model_dir))

    result = run_cli("infer", str(good), str(missing), str(text), str(other), env=env)
    assert result.returncode == 2, result.stderr
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first["image"] == {"width": 640, "height": 480} and second["image"] == {"width": 320, "height": 240}
    assert [(p["class"], p["x"], p["y"]) for p in first["predictions"]] == [("door", 320, 240)]  # MODEL_ID's model
    for response in (first, second):
        assert str(uuid.UUID(response["inference_id"])) == response["inference_id"]
        assert isinstance(response["time"], float) and 0 < response["time"] < 60
    assert first["inference_id"] != second["inference_id"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3 and str(missing) in errors[0] and str(text) in errors[1], result.stderr
    assert "2 of 4 images could not be read" in errors[2]

    everything_read = run_cli("infer", str(good), env=env)
    assert everything_read.returncode == 0 and len(everything_read.stdout.splitlines()) == 1
    # --model overrides MODEL_ID; a MODEL_ID that names no model is refused as `run` refuses it
    builtin = run_cli("infer", str(good), "--model", "builtin/shapes-v1", env=env)
    assert builtin.returncode == 0 and "door" not in builtin.stdout, builtin.stderr
    nope = run_cli("infer", str(good), env=_env(tmp_path, MODEL_ID="builtin/nope"))
    assert nope.returncode == 2 and "builtin/nope" in nope.stderr and nope.stdout == "", nope.stderr


# -- item 12: INT8 copies of built-in models are listed and can be cleared ----------------------------


def test_int8_copies_are_listed_and_cleared_never_the_built_in(tmp_path: Path) -> None:
    from edge_agent.models.speed.precision import quantized_dir

    env = _env(tmp_path)
    cache_dir = Path(env["MODEL_CACHE_DIR"])
    # what `models quantize builtin/shapes-v1` leaves (tests/test_quantize.py): the copy and its record
    copies = quantized_dir(cache_dir, "builtin/shapes-v1")
    copies.mkdir(parents=True)
    for name in ("weights.int8.onnx", "weights.int8.json"):
        shutil.copy(BUILTIN / name, copies / name)
    shipped = sorted(p.name for p in BUILTIN.iterdir())

    listed = run_cli("models", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    _header, row = listed.stdout.splitlines()
    assert row.split()[0] == "builtin/shapes-v1" and row.split()[-3:] == ["object-detection", "yolov8n", "int8-copy"]
    record = json.loads(run_cli("models", "list", "--json", env=env).stdout)
    assert (record["model_id"], record["layout"], record["complete"]) == ("builtin/shapes-v1", "int8-copy", True)
    assert record["size_bytes"] == sum(p.stat().st_size for p in copies.iterdir())

    cleared = run_cli("models", "clear", "builtin/shapes-v1", env=env)
    assert cleared.returncode == 0 and "cleared the INT8 copy of builtin/shapes-v1" in cleared.stderr, cleared.stderr
    assert not copies.exists() and sorted(p.name for p in BUILTIN.iterdir()) == shipped
    assert run_cli("models", "list", "--json", env=env).stdout == ""
    again = run_cli("models", "clear", "builtin/shapes-v1", env=env)
    assert again.returncode == 2 and "never deleted" in again.stderr and "no INT8 copy" in again.stderr


# -- item 15: `config` refuses int8 on a model without a copy, as `run` does --------------------------


def test_config_refuses_int8_without_a_copy_as_run_does(tmp_path: Path) -> None:
    local = tmp_path / "door-model"
    local.mkdir()
    for name in ("weights.onnx", "environment.json", "class_names.txt", "model_type.json"):
        shutil.copy(BUILTIN / name, local / name)
    env = _env(tmp_path, STREAMS=f"door={SAMPLE}", MODEL_ID=str(local), MODEL_PRECISION="int8")
    line = assert_refused(
        run_cli("config", env=env), "door", "no usable INT8 copy", f"edge-agent models quantize {local}"
    )
    run_line = assert_refused(run_cli("run", "--seconds", "20", env=env), "door", "no usable INT8 copy")
    assert f"edge-agent models quantize {local}" in run_line and line
    # per stream too; fp32 and auto need no copy; the built-in model ships one
    per_stream = {
        **_env(tmp_path, STREAMS=f"door={SAMPLE}", MODEL_ID=str(local)),
        "STREAM_DOOR_MODEL_PRECISION": "int8",
    }
    assert_refused(run_cli("config", env=per_stream), "door", "no usable INT8 copy")
    assert run_cli("config", env={**env, "MODEL_PRECISION": "auto"}).returncode == 0
    assert run_cli("config", env=_env(tmp_path, MODEL_PRECISION="int8")).returncode == 0


# -- item 14: misspelled variables are named with the closest known one ------------------------------


def test_misspelled_variables_are_named_with_the_closest_known_one(tmp_path: Path) -> None:
    env = _env(tmp_path, MQTT_HOTS="broker.local", CONFIDENSE="0.5", mqtt_pasword="hunter2-secret")
    # the rest of a normal environment is not ours and is left alone
    env.update(HTTP_PROXY="http://127.0.0.1:9", LOGNAME="edge", HOSTNAME="box", ROBOFLOW_REGION="eu")
    config = run_cli("config", env=env)
    assert config.returncode == 0, config.stderr
    warnings = [line for line in config.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: CONFIDENSE is not a variable edge-agent reads (ignored); did you mean CONFIDENCE?",
        "warning: MQTT_HOTS is not a variable edge-agent reads (ignored); did you mean MQTT_HOST?",
        "warning: mqtt_pasword is not a variable edge-agent reads (ignored); did you mean MQTT_PASSWORD?",
    ], config.stderr
    assert "hunter2" not in config.stderr + config.stdout and "broker.local" not in config.stderr
    run = run_cli("run", "--seconds", "2", env=env, timeout=90)
    assert run.returncode == 0, run.stderr
    assert "MQTT_HOTS is not a variable edge-agent reads (ignored); did you mean MQTT_HOST?" in run.stderr
    assert "HTTP_PROXY" not in run.stderr and "LOGNAME" not in run.stderr and "ROBOFLOW_REGION" not in run.stderr
    assert "warning" not in run_cli("config", env=_env(tmp_path, MQTT_HOST="127.0.0.1")).stderr.lower()


# -- item 9: one log line says where the HTTP port serves what ----------------------------------------


def test_the_http_port_is_announced_with_its_urls(tmp_path: Path) -> None:
    port = free_port()
    token = "s3cret-http-token-123"
    env = _env(tmp_path, HEALTH_PORT=str(port), CONTROL_API="true", HTTP_TOKEN=token)
    result = run_cli("run", "--seconds", "3", env=env, timeout=90)
    assert result.returncode == 0, result.stderr
    base = f"http://127.0.0.1:{port}"
    expected = (
        f"HTTP port: live view {base}/, metrics {base}/metrics, control API {base}/streams, "
        f"probes {base}/healthz, {base}/readyz; HTTP_TOKEN needed on all but the probes"
    )
    assert expected in result.stderr, result.stderr
    assert token not in result.stderr


def test_listening_line_for_every_interface_and_ipv6() -> None:
    import socket

    from edge_agent.agent.health import listening_line

    name = socket.gethostname()
    line = listening_line("0.0.0.0", 8090, control_api=False, token=False)
    assert line == (
        f"HTTP port (listening on every interface): live view http://{name}:8090/, metrics http://{name}:8090/metrics, "
        f"probes http://{name}:8090/healthz, http://{name}:8090/readyz; no token needed"
    )
    assert listening_line("::1", 80, control_api=True, token=False).startswith("HTTP port: live view http://[::1]:80/")


# -- item 13: frame_id numbers decoded frames, as documented -------------------------------------------


def test_frame_id_counts_decoded_frames_with_a_rate_cap(tmp_path: Path) -> None:
    from tests.fixtures.media import make_clip

    clip = make_clip(tmp_path / "clip.mp4", seconds=2.0, fps=30)  # 60 frames
    env = _env(tmp_path, STREAMS=f"cam={clip}", STREAM_CAM_MODE="every", STREAM_CAM_MAX_FPS="10", STDOUT_SINK="true")
    result = run_cli("run", "--seconds", "60", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    ids = [m["frame_id"] for m in _predictions(result.stdout)]
    # 30 fps capped at 10: every third decoded frame is processed; its id is its index in the file
    assert ids == list(range(0, 60, 3)), ids


# -- item 6: URLs with white space are refused; FFmpeg's codes are said in words ----------------------


@pytest.mark.parametrize(
    ("url", "culprits"),
    [
        ("rtsp://admin:pw@192.0 .2.10/s", ["'door'", "a space (character 22)", "its host"]),
        ("rtsp://admin:p w@192.0.2.10/s", ["'door'", "a space", "user name or password", "%20"]),
        ("http://192.0.2.10/live\tstream.m3u8", ["'door'", "a tab", "path or query", "%09"]),
    ],
)
def test_stream_urls_with_white_space_are_refused(tmp_path: Path, url: str, culprits: list[str]) -> None:
    env = _env(tmp_path, STREAMS=f"door={url}")
    line = assert_refused(run_cli("config", env=env), "STREAMS", *culprits)
    assert "p w" not in line and ":pw@" not in line  # the password stays masked
    assert assert_refused(run_cli("run", "--seconds", "20", env=env), *culprits) == line


def test_ffmpeg_errors_are_said_in_words(tmp_path: Path) -> None:
    import av

    from edge_agent.pipelines.sources.av_errors import describe_error

    def error_of(url: str) -> BaseException:
        try:
            av.open(url, timeout=5).close()
        except Exception as exc:
            return exc
        raise AssertionError(f"{url} opened")

    text = tmp_path / "notes.bin"
    text.write_bytes(b"\x00not a video" * 100)
    refused = describe_error(error_of(f"rtsp://127.0.0.1:{free_port()}/live"))
    invalid = describe_error(error_of(str(text)))
    missing = describe_error(error_of(str(tmp_path / "nothing.mp4")))
    assert refused.startswith("Connection refused (nothing listens on that host and port")
    assert invalid.startswith("invalid data: what came back is not a video FFmpeg can read")
    assert missing.startswith("No such file or directory (is the path right")
    for said in (refused, invalid, missing):
        assert "Errno" not in said and "1094995529" not in said and "127.0.0.1" not in said

    import http.server
    import threading

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # /401/x.m3u8 answers 401, /404/... 404
            self.send_response(int(self.path.split("/")[1]))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        unauthorized = describe_error(error_of(f"{base}/401/live.m3u8"))
        not_found = describe_error(error_of(f"{base}/404/live.m3u8"))
    finally:
        server.shutdown()
        server.server_close()
    assert unauthorized.startswith("HTTP 401 unauthorized: the server refused the credentials")
    assert not_found.startswith("HTTP 404 not found: the server has no such stream")


# -- item 2: a text file is not a video --------------------------------------------------------------


def _notes(tmp_path: Path) -> Path:
    notes = tmp_path / "notes.txt"  # long enough for FFmpeg's tty demuxer to take it
    notes.write_text("".join(f"Line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(200)))
    return notes


def test_a_text_file_alone_is_refused_with_exit_2(tmp_path: Path) -> None:
    env = _env(tmp_path, STREAMS=f"bad={_notes(tmp_path)}", STDOUT_SINK="true")
    result = run_cli("run", "--seconds", "30", env=env, timeout=90)
    line = assert_refused(result, "no stream can produce frames", "bad: not a video", "text rendered into pictures")
    assert "container tty" in line and result.stdout == ""  # nothing published from the text's "frames"
    assert "retrying" not in result.stderr  # the same file would say the same again


def test_a_text_file_beside_a_good_stream_fails_alone(tmp_path: Path) -> None:
    from tests.fixtures.media import make_clip

    good = make_clip(tmp_path / "good.mp4", seconds=1.0, fps=10)
    env = _env(tmp_path, STREAMS=f"bad={_notes(tmp_path)};good={good}", STREAM_GOOD_MODE="every", STDOUT_SINK="true")
    result = run_cli("run", "--seconds", "60", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    ids = [(m["stream"], m["frame_id"]) for m in _predictions(result.stdout)]
    assert ids == [("good", i) for i in range(10)], ids  # every frame of the good clip, nothing of the text
    assert "edge_agent.stream.bad: failed: not a video: FFmpeg reads it as text rendered into pictures" in result.stderr


# -- item 3: a model whose declared output shape is wrong runs as Roboflow runs it ---------------------


def _declared_wrong(predictions: np.ndarray) -> bytes:
    """A YOLOv8-layout graph computing (1, rows, anchors) whose output is declared (rows, anchors):
    ONNX Runtime warns "Error merging shape info" and reports the output's shape as []."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rows, anchors = predictions.shape
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean_all"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["mean_all", "zero"], ["zeros_b"]),
        helper.make_node("Reshape", ["zeros_b", "shape_b11"], ["zeros_b11"]),
        helper.make_node("Add", ["zeros_b11", "pred"], ["output0"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "shape_b11"),
        numpy_helper.from_array(predictions[None].astype(np.float32), "pred"),
    ]
    graph = helper.make_graph(
        nodes,
        "declared_wrong",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 320, 320])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [rows, anchors])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def test_a_wrongly_declared_output_shape_is_checked_on_the_real_output(tmp_path: Path) -> None:
    import onnxruntime as ort

    from edge_agent.models import get_model
    from edge_agent.models.common.errors import ModelLayoutError
    from tests.onnx_factory import letterbox_env

    pred = np.zeros((7, 16), np.float32)  # 4 box rows + 3 classes, 16 anchors
    pred[:, 3] = (160, 160, 64, 48, 0.05, 0.9, 0.1)  # anchor 3: class 1, centred, 64x48 in the 320 input
    pred[:, 9] = (40, 200, 20, 30, 0.7, 0.0, 0.0)  # anchor 9: class 0
    weights = _declared_wrong(pred)
    session = ort.InferenceSession(weights, providers=["CPUExecutionProvider"])
    assert session.get_outputs()[0].shape == []  # what the layout check used to refuse
    model_dir = write_model_dir(tmp_path / "m", weights, ["door", "window", "wall"], letterbox_env())

    (response,) = get_model(str(model_dir)).infer(np.zeros((480, 640, 3), np.uint8))
    got = sorted((p["class"], p["x"], p["y"], p["width"], p["height"]) for p in response.model_dump()["predictions"])
    # 640x480 letterboxed into 320x320: scale 0.5, 40 px of padding above and below (80 in the input)
    # anchor 3: centre (160, 160 - 40) / 0.5, size (64, 48) / 0.5; anchor 9: (40, 200 - 40) / 0.5, (20, 30) / 0.5
    assert got == [("door", 80.0, 320.0, 40.0, 60.0), ("window", 320.0, 240.0, 128.0, 96.0)]

    # outputs that really do not fit are refused as clearly as declared ones
    bad_dir = write_model_dir(tmp_path / "bad", _declared_wrong(np.zeros((9, 16), np.float32)), ["a", "b", "c"])
    with pytest.raises(ModelLayoutError, match=r"output0 \[1, 9, 16\]. The output has 5 class rows but 3 class names"):
        get_model(str(bad_dir))
