"""The bad inputs of issue 11, exactly as a user gave them: exit code, and one line of error that
names the culprit. ``config`` and ``run`` share one validation step, so both are checked.

(Items 1, 2, 3 and 8 need a running agent: tests/test_secrets_e2e.py, tests/test_file_streams.py,
tests/test_stopping.py.)
"""

from __future__ import annotations

import itertools
import json
import socket
from pathlib import Path

import onnxruntime as ort
import pytest

from tests.agent_cli import assert_refused, run_cli
from tests.fixtures.mosquitto import MqttSubscriber, free_port

BUILTIN = Path(__file__).resolve().parent.parent / "models" / "builtin" / "shapes-v1"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"MODEL_CACHE_DIR": str(tmp_path / "cache"), **extra}


# -- item 5: `config` refuses what `run` refuses ----------------------------------------------------


@pytest.mark.parametrize(
    ("env", "culprits"),
    [
        ({"STREAMS": "x=ftp://x"}, ["STREAMS", "'x'", "ftp"]),
        ({"MODEL_ID": "../../etc/passwd"}, ["MODEL_ID", "../../etc/passwd", "relative path component"]),
        ({"STREAM_STALL_TIMEOUT": "inf"}, ["STREAM_STALL_TIMEOUT", "finite"]),
        ({"ONNXRUNTIME_EXECUTION_PROVIDERS": "NoSuchExecutionProvider"}, ["ONNXRUNTIME_EXECUTION_PROVIDERS", "NoSuch"]),
        ({"ONNXRUNTIME_EXECUTION_PROVIDERS": "cuda,gpu"}, ["ONNXRUNTIME_EXECUTION_PROVIDERS", "gpu"]),
    ],
)
def test_config_exits_2_for_what_run_refuses(tmp_path: Path, env: dict[str, str], culprits: list[str]) -> None:
    env = _env(tmp_path, **env)
    line = assert_refused(run_cli("config", env=env), *culprits)
    run_line = assert_refused(run_cli("run", "--seconds", "20", env=env), *culprits)
    assert run_line == line


# -- item 4: the health server's address ------------------------------------------------------------


def test_health_port_in_use_is_refused_before_any_model_loads(tmp_path: Path, model_server) -> None:  # type: ignore[no-untyped-def]
    model_server.add_model("someproj", "1", (BUILTIN / "weights.onnx").read_bytes())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = _env(tmp_path, HEALTH_PORT=str(port), MODEL_ID="someproj/1", API_BASE_URL=model_server.base_url)
        assert run_cli("config", env=env).returncode == 0  # the port is free or not at run time only
        assert_refused(run_cli("run", "--seconds", "20", env=env), f"HEALTH_PORT={port}", "in use")
    assert model_server.count() == 0, f"the model was asked for before the port was checked: {model_server.paths()}"


@pytest.mark.parametrize("host", ["192.0.2.1", "no-such-host.invalid"])
def test_health_host_not_on_this_machine(tmp_path: Path, host: str) -> None:
    env = _env(tmp_path, HEALTH_PORT=str(free_port()), HEALTH_HOST=host)
    line = assert_refused(run_cli("config", env=env), f"HEALTH_HOST={host!r}")
    assert assert_refused(run_cli("run", "--seconds", "20", env=env), "HEALTH_HOST") == line


# -- item 6: permanent model errors exit 2 ----------------------------------------------------------


def _model_dir(tmp_path: Path, name: str) -> Path:
    directory = tmp_path / name
    directory.mkdir()
    for file in BUILTIN.iterdir():
        (directory / file.name).write_bytes(file.read_bytes())
    return directory


def test_garbage_weights_in_a_local_directory_exit_2(tmp_path: Path) -> None:
    directory = _model_dir(tmp_path, "garbage")
    (directory / "weights.onnx").write_bytes(b"this is not an onnx file\n")
    assert_refused(run_cli("run", "--seconds", "20", env=_env(tmp_path, MODEL_ID=str(directory))), str(directory))


def test_local_directory_without_class_names_exit_2(tmp_path: Path) -> None:
    directory = _model_dir(tmp_path, "nameless")
    (directory / "class_names.txt").unlink()
    environment = json.loads((directory / "environment.json").read_text())
    environment.pop("CLASS_MAP", None)
    (directory / "environment.json").write_text(json.dumps(environment))
    result = run_cli("run", "--seconds", "20", env=_env(tmp_path, MODEL_ID=str(directory)))
    assert "class" in assert_refused(result, str(directory))


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="this box has CUDA")
def test_cuda_on_a_box_without_cuda_exit_2(tmp_path: Path) -> None:
    env = _env(tmp_path, ONNXRUNTIME_EXECUTION_PROVIDERS="cuda")
    line = assert_refused(run_cli("config", env=env), "ONNXRUNTIME_EXECUTION_PROVIDERS", "CUDAExecutionProvider")
    assert assert_refused(run_cli("run", "--seconds", "20", env=env)) == line


# -- item 7: MQTT_HOST with a scheme ----------------------------------------------------------------


def test_mqtt_host_as_url_is_parsed(tmp_path: Path, mosquitto) -> None:  # type: ignore[no-untyped-def]
    subscriber = MqttSubscriber(mosquitto, "edge-agent/url-agent/#", qos=1).connect()
    try:
        env = _env(tmp_path, MQTT_HOST=f"mqtt://127.0.0.1:{mosquitto.port}", AGENT_ID="url-agent")
        config = json.loads(run_cli("config", env=env).stdout)
        assert config["mqtt_broker"] == f"mqtt://127.0.0.1:{mosquitto.port}"
        result = run_cli("run", "--seconds", "6", env=env)
        assert result.returncode == 0, result.stderr
        assert subscriber.wait_for_count("/predictions", 3, timeout=5), result.stderr
    finally:
        subscriber.close()


@pytest.mark.parametrize(
    ("env", "culprits"),
    [
        ({"MQTT_HOST": "mqtt://mqtt://127.0.0.1:1883:1883"}, ["MQTT_HOST"]),
        ({"MQTT_HOST": "ws://127.0.0.1:9001"}, ["MQTT_HOST", "ws://"]),
        ({"MQTT_HOST": "mqtts://127.0.0.1"}, ["MQTT_HOST", "MQTT_TLS"]),
        ({"MQTT_HOST": "mqtt://127.0.0.1:1883", "MQTT_PORT": "1884"}, ["MQTT_HOST", "MQTT_PORT"]),
        ({"MQTT_HOST": "mqtt://edge:hunter2@127.0.0.1"}, ["MQTT_HOST", "MQTT_USERNAME"]),
    ],
)
def test_mqtt_host_urls_that_cannot_work(tmp_path: Path, env: dict[str, str], culprits: list[str]) -> None:
    result = run_cli("config", env=_env(tmp_path, **env))
    line = assert_refused(result, *culprits)
    assert "hunter2" not in result.stderr + result.stdout
    assert "mqtt://mqtt://" not in line or "1883:1883" not in line


# -- item 9 -----------------------------------------------------------------------------------------


def test_empty_model_cache_dir_is_refused(tmp_path: Path) -> None:
    env = {"MODEL_CACHE_DIR": ""}
    assert_refused(run_cli("config", env=env), "MODEL_CACHE_DIR=''", "empty")
    assert_refused(run_cli("run", "--seconds", "20", env=env), "MODEL_CACHE_DIR")


@pytest.mark.skipif("TensorrtExecutionProvider" in ort.get_available_providers(), reason="this box has TensorRT")
def test_tensorrt_enabled_without_tensorrt_is_refused(tmp_path: Path) -> None:
    env = _env(tmp_path, TENSORRT_ENABLED="true")
    assert_refused(run_cli("config", env=env), "TENSORRT_ENABLED=true", "TensorrtExecutionProvider")
    assert_refused(run_cli("run", "--seconds", "20", env=env), "TENSORRT_ENABLED")


def test_sample_stream_takes_its_overrides(tmp_path: Path) -> None:
    env = _env(tmp_path, STREAM_SAMPLE_MAX_FPS="2", STREAM_SAMPLE_CONFIDENCE="0.9", STDOUT_SINK="true")
    (sample,) = json.loads(run_cli("config", env=env).stdout)["streams"]
    assert (sample["name"], sample["max_fps"], sample["confidence"], sample["loop"]) == ("sample", 2.0, 0.9, True)
    result = run_cli("run", "--seconds", "5", env=env)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    messages = [m for m in lines if "predictions" in m]  # the sample is tracked: its events print too
    # 30 fps capped at 2: about two frames a second, half a second apart
    times = [m["frame_time"] for m in messages]
    assert 2 <= len(times) <= 12, len(times)
    assert all(b - a >= 0.35 for a, b in itertools.pairwise(times)), times
    assert all(p["confidence"] >= 0.9 for m in messages for p in m["predictions"])
    # and a typo in its overrides is refused like for any stream
    assert_refused(run_cli("config", env=_env(tmp_path, STREAM_SAMPLE_MAXFPS="2")), "STREAM_SAMPLE_MAXFPS")


def test_stream_confidence_zero_is_accepted_like_confidence_zero(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes((BUILTIN.parent / "sample.mp4").read_bytes())
    env = _env(tmp_path, CONFIDENCE="0", STREAMS=f"door={clip}", STREAM_DOOR_CONFIDENCE="0")
    result = run_cli("config", env=env)
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert config["models"]["CONFIDENCE"] == 0.0 and config["streams"][0]["confidence"] == 0.0
    for bad in ("-0.1", "1.5", "nan"):
        assert_refused(run_cli("config", env={**env, "STREAM_DOOR_CONFIDENCE": bad}), "STREAM_DOOR_CONFIDENCE")
        assert_refused(run_cli("config", env={**env, "CONFIDENCE": bad}), "CONFIDENCE")
