"""Defects a new user met (issue 20), each as that user met it: through the real CLI and agent."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.agent_cli import assert_refused, run_cli
from tests.fixtures.mosquitto import free_port
from tests.onnx_factory import write_model_dir

BUILTIN = Path(__file__).resolve().parent.parent / "models" / "builtin" / "shapes-v1"


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
    started = time.monotonic()
    line = assert_refused(run_cli("config", env=env), "MODEL_ID", "someproj/1", "ROBOFLOW_API_KEY")
    assert "fine-tuned" in line
    pulled = run_cli("models", "pull", "someproj/3", env=_env(tmp_path))
    assert pulled.returncode == 2 and "someproj/3 is a fine-tuned model" in pulled.stderr, pulled.stderr
    assert "ROBOFLOW_API_KEY (or API_KEY)" in pulled.stderr and "network" not in pulled.stderr
    assert time.monotonic() - started < 30  # no retries against an unreachable network
    # a key, a public alias, a cached model or another API: nothing to refuse before asking
    assert run_cli("config", env={**env, "ROBOFLOW_API_KEY": "k"}).returncode == 0
    assert run_cli("config", env=_env(tmp_path, MODEL_ID="yolov8n-640")).returncode == 0
    assert run_cli("config", env={**env, "API_BASE_URL": "http://127.0.0.1:9"}).returncode == 0
    cached = tmp_path / "cache" / "someproj" / "1"
    write_model_dir(cached, (BUILTIN / "weights.onnx").read_bytes(), ["a"])
    assert run_cli("config", env=env).returncode == 0


def test_the_401_message_reads_as_one_sentence(model_server, model_env) -> None:  # type: ignore[no-untyped-def]
    from edge_agent.models import get_model
    from edge_agent.models.errors import ApiAuthError

    model_server.add_model("someproj", "1", (BUILTIN / "weights.onnx").read_bytes())
    model_server.require_api_key = "right"
    model_env.set(API_BASE_URL=model_server.base_url)
    with pytest.raises(ApiAuthError) as info:
        get_model("someproj/1")
    message = str(info.value)
    assert "revoked). Set ROBOFLOW_API_KEY (or API_KEY)" in message and ".." not in message, message
    assert "pass api_key" not in message
