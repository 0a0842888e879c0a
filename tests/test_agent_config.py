"""Environment configuration: parsing, per-stream overrides, and errors a user can act on."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from edge_agent.agent.errors import ConfigError
from edge_agent.agent.settings import load_config, parse_streams


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("STREAM", "MQTT_", "MODEL_ID"))}
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.agent.cli", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in list(os.environ):
        if key.startswith(("STREAM", "MQTT_", "MODEL_ID", "AGENT_ID", "STDOUT_SINK")):
            monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_parse_streams_names_and_urls() -> None:
    pairs = parse_streams("door=rtsp://u:p@10.0.0.5/live?x=1;yard=/dev/video0\nclip = /data/a.mp4 ;")
    assert pairs == [("door", "rtsp://u:p@10.0.0.5/live?x=1"), ("yard", "/dev/video0"), ("clip", "/data/a.mp4")]


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ("rtsp://cam/live", "has no name"),
        ("bad name=rtsp://cam", "stream name 'bad name' is invalid"),
        ("a=rtsp://x;A=rtsp://y", "used twice"),
        ("door=", "has no URL"),
        (" ; ", "names no stream"),
    ],
)
def test_parse_streams_errors(raw: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_streams(raw)


def test_defaults_play_the_sample(clean_env: pytest.MonkeyPatch) -> None:
    config = load_config()
    assert config.using_sample
    assert [s.name for s in config.streams] == ["sample"]
    assert config.streams[0].loop and config.streams[0].model_id == "builtin/shapes-v1"
    assert config.stdout_enabled


def test_per_stream_overrides(clean_env: pytest.MonkeyPatch, tmp_path) -> None:
    clip_file = tmp_path / "x.mp4"
    clip_file.write_bytes(b"x")
    clean_env.setenv("STREAMS", f"front-door=rtsp://cam/a;clip={clip_file}")
    clean_env.setenv("MODEL_ID", "yolov8n-640")
    clean_env.setenv("STREAM_FRONT_DOOR_MAX_FPS", "5")
    clean_env.setenv("STREAM_FRONT_DOOR_RTSP_TRANSPORT", "UDP")
    clean_env.setenv("STREAM_CLIP_MODE", "every")
    clean_env.setenv("STREAM_CLIP_MODEL_ID", "someproj/3")
    clean_env.setenv("ROBOFLOW_API_KEY", "k")  # a fine-tuned id needs one (issue 20.11)
    clean_env.setenv("STREAM_CLIP_CONFIDENCE", "0.6")
    clean_env.setenv("MQTT_HOST", "127.0.0.1")
    config = load_config()
    door, clip = config.streams
    assert (door.model_id, door.max_fps, door.rtsp_transport, door.mode) == ("yolov8n-640", 5.0, "udp", "live")
    assert (clip.model_id, clip.mode, clip.confidence) == ("someproj/3", "every", 0.6)
    assert not config.stdout_enabled  # MQTT replaces stdout unless asked for


@pytest.mark.parametrize(
    ("env", "needles"),
    [
        ({"MQTT_QOS": "3"}, ["MQTT_QOS=3", "0, 1 or 2"]),
        ({"MQTT_TLS": "maybe"}, ["MQTT_TLS", "'maybe'", "true/false"]),
        ({"LOG_LEVEL": "loud"}, ["LOG_LEVEL", "DEBUG", "INFO"]),
        ({"STREAMS": "a=rtsp://x", "STREAM_A_MODE": "fast"}, ["STREAM_A_MODE", "'fast'", "'live' or 'every'"]),
        ({"STREAMS": "a=rtsp://x", "STREAM_A_CONFIDENCE": "2"}, ["STREAM_A_CONFIDENCE", "between 0 and 1"]),
        ({"STREAMS": "a=rtsp://x", "STREAM_B_MODE": "live"}, ["STREAM_B_MODE", "does not match any stream"]),
        ({"MQTT_PORT": "http"}, ["MQTT_PORT", "'http'", "integer"]),
        ({"STREAM_STALL_TIMEOUT": "-1"}, ["STREAM_STALL_TIMEOUT", "greater than 0"]),
    ],
)
def test_bad_values_exit_2_naming_the_variable(env: dict[str, str], needles: list[str]) -> None:
    result = run_cli("config", env=env)
    assert result.returncode == 2, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_config_prints_resolved_values_with_secrets_redacted(tmp_path) -> None:
    secret_file = tmp_path / "pw"
    secret_file.write_text("hunter2-file")
    env = {
        "STREAMS": "door=rtsp://admin:hunter2@127.0.0.1:8554/live",
        "MQTT_HOST": "127.0.0.1",
        "MQTT_USERNAME": "edge",
        "MQTT_PASSWORD": "hunter2",
        "ROBOFLOW_API_KEY": "hunter2-key",
        "AGENT_ID": "box-1",
    }
    result = run_cli("config", env=env)
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout
    data = json.loads(result.stdout)
    assert data["agent"]["AGENT_ID"] == "box-1"
    assert data["agent"]["MQTT_PASSWORD"] == "***"
    assert data["streams"][0]["url"] == "rtsp://admin:***@127.0.0.1:8554/live"
    assert data["sinks"] == ["mqtt"]


@pytest.mark.parametrize(
    ("model_id", "needle"),
    [
        ("../../etc/passwd", "relative path component"),
        ("someproj/3", "not in the model cache"),
    ],
)
def test_run_with_an_unusable_model_exits_2_naming_model_and_stream(tmp_path, model_id: str, needle: str) -> None:
    env = {
        "STREAMS": "door=rtsp://127.0.0.1:9/x",
        "MODEL_ID": model_id,
        "OFFLINE_MODE": "true",
        "MODEL_CACHE_DIR": str(tmp_path),
    }
    result = run_cli("run", "--seconds", "5", env=env)
    assert result.returncode == 2, result.stderr
    assert model_id in result.stderr and "door" in result.stderr and needle in result.stderr
