"""Choosing fp32 or INT8 in the running agent: MODEL_PRECISION, per stream, in stats; clear errors.

``edge-agent run`` as a subprocess, predictions and stats through a real mosquitto.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest

from edge_agent.agent.errors import ConfigError
from edge_agent.agent.settings import SAMPLE_CLIP, load_config
from edge_agent.models.identity.ids import BUILTIN_ROOT
from edge_agent.models.speed.concurrency import usable_cores
from tests.agent_process import AgentProcess
from tests.test_e2e_agent import SCHEMA, by_stream, match_ground_truth
from tools.synthworld import write_clip

AGENT = "precision-agent"


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple]]:
    path = tmp_path_factory.mktemp("clips") / "scene.mp4"
    gts = write_clip(path, seconds=2, width=960, height=540, seed=204, max_speed=0, noise_sigma=3.0, n_objects=4)
    return path, gts[0]


def _env(broker, tmp_path: Path, **extra: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(broker.port),
        "AGENT_ID": AGENT,
        "STATS_INTERVAL": "0.2",
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "OFFLINE_MODE": "true",
        "ONNXRUNTIME_EXECUTION_PROVIDERS": "cpu",
        **extra,
    }


def test_global_int8_with_one_stream_on_fp32(
    tmp_path: Path,
    scene,
    mosquitto,
    mqtt_subscriber_factory,  # type: ignore[no-untyped-def]
) -> None:
    clip, gts = scene
    sub = mqtt_subscriber_factory(mosquitto, [f"edge-agent/{AGENT}/#"], qos=1)
    env = _env(
        mosquitto,
        tmp_path,
        STREAMS=f"a={clip};b={clip}",
        STREAM_A_MODE="every",
        STREAM_B_MODE="every",
        MODEL_PRECISION="int8",
        STREAM_A_MODEL_PRECISION="fp32",
    )
    with AgentProcess(env, tmp_path) as agent:
        rc = agent.wait(timeout=180)
    assert rc == 0, agent.stderr()
    log = agent.stderr_path.read_text()
    assert "model builtin/shapes-v1: precision fp32 (fp32 requested)" in log
    assert "model builtin/shapes-v1: precision int8 (int8 requested" in log

    got = by_stream(sub)
    assert set(got) == {"a", "b"} and len(got["a"]) == len(got["b"]) == 60  # every frame of both
    for stream, model_id in (("a", "builtin/shapes-v1@fp32"), ("b", "builtin/shapes-v1")):
        matched = total = 0
        for message in got[stream]:
            jsonschema.validate(message, SCHEMA)
            assert message["model_id"] == model_id
            m, n, _ = match_ground_truth(message, gts)
            matched, total = matched + m, total + n
        assert matched >= 0.9 * total, (stream, matched, total)

    stats = [m.json() for m in sub.messages if m.topic.endswith("/stats")]
    assert stats, "no stats message"
    last = stats[-1]
    assert last["streams"]["a"]["model_precision"] == "fp32"
    assert last["streams"]["b"]["model_precision"] == "int8"
    assert last["models"]["builtin/shapes-v1@fp32"]["precision"] == "fp32"
    int8 = last["models"]["builtin/shapes-v1"]
    assert {k: int8[k] for k in ("precision", "precision_reason", "providers")} == {
        "precision": "int8",
        "precision_reason": "int8 requested",
        "providers": ["CPUExecutionProvider"],
    }
    assert int8["streams"] == ["b"] and int8["frames"] > 0
    # The run plan is shown too: two single-threaded runs in flight on a 2+ core CPU box.
    assert int8["concurrency"] == (2 if usable_cores() >= 2 else 1), int8
    assert int8["concurrency_reason"].startswith("auto")


def test_auto_runs_the_shipped_int8_copy_on_cpu(
    tmp_path: Path,
    scene,
    mosquitto,
    mqtt_subscriber_factory,  # type: ignore[no-untyped-def]
) -> None:
    clip, _ = scene
    sub = mqtt_subscriber_factory(mosquitto, [f"edge-agent/{AGENT}/#"], qos=1)
    # Live pace (2 s of clip) with stats every 0.2 s: stats are published while the stream runs.
    env = _env(mosquitto, tmp_path, STREAMS=f"a={clip}")
    with AgentProcess(env, tmp_path) as agent:
        rc = agent.wait(timeout=180)
    assert rc == 0, agent.stderr()
    info = [m.json() for m in sub.messages if m.topic.endswith("/stats")][-1]["models"]["builtin/shapes-v1"]
    assert info["precision"] == "int8" and info["precision_reason"].startswith("auto: ")


def test_int8_without_a_copy_exits_2_naming_the_command(tmp_path: Path, scene) -> None:
    clip, _ = scene
    local = tmp_path / "door-model"
    local.mkdir()
    for name in ("weights.onnx", "environment.json", "class_names.txt", "model_type.json"):
        shutil.copy(BUILTIN_ROOT / "shapes-v1" / name, local / name)
    env = {
        "STREAMS": f"door={clip}",
        "MODEL_ID": str(local),
        "MODEL_PRECISION": "int8",
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "STDOUT_SINK": "true",
    }
    with AgentProcess(env, tmp_path) as agent:
        rc = agent.wait(timeout=60)
    stderr = agent.stderr_path.read_text()
    assert rc == 2, stderr
    assert f"`edge-agent models quantize {local}`" in stderr and "has no usable INT8 copy" in stderr
    assert "Traceback" not in stderr


def test_per_stream_precision_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STREAMS", f"a={SAMPLE_CLIP};b={SAMPLE_CLIP};c={SAMPLE_CLIP}")
    monkeypatch.setenv("MODEL_ID", "yolov8n-640")
    monkeypatch.setenv("STREAM_A_MODEL_PRECISION", "INT8")
    monkeypatch.setenv("STREAM_B_MODEL_ID", "coco/5@fp32")
    config = load_config()
    assert [config.model_of(s) for s in config.streams] == ["yolov8n-640@int8", "coco/5@fp32", "yolov8n-640"]

    monkeypatch.setenv("STREAM_B_MODEL_PRECISION", "int8")
    with pytest.raises(ConfigError, match=r"STREAM_B: model_precision 'int8' contradicts the @fp32"):
        load_config()
    monkeypatch.delenv("STREAM_B_MODEL_PRECISION")
    monkeypatch.setenv("STREAM_C_MODEL_PRECISION", "int4")
    with pytest.raises(
        ConfigError, match=r"STREAM_C_MODEL_PRECISION='int4' is invalid: must be 'fp32' or 'int8' or 'auto'"
    ):
        load_config()
    monkeypatch.delenv("STREAM_C_MODEL_PRECISION")
    monkeypatch.setenv("MODEL_PRECISION", "half")
    with pytest.raises(ConfigError, match=r"MODEL_PRECISION='half' is invalid"):
        load_config()


def test_config_prints_the_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_PRECISION", "fp32")
    from edge_agent.agent.settings import redacted

    dumped = json.dumps(redacted(load_config()), default=str)
    assert '"MODEL_PRECISION": "fp32"' in dumped
