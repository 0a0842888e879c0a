"""Defects a new user met (issue 20), each as that user met it: through the real CLI and agent."""

from __future__ import annotations

from pathlib import Path

from tests.agent_cli import run_cli
from tests.fixtures.mosquitto import free_port


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"MODEL_CACHE_DIR": str(tmp_path / "cache"), "STATE_DIR": str(tmp_path / "state"), **extra}


# -- item 5: the broker's port is not a password ------------------------------------------------------


def test_mqtt_connection_error_shows_the_port(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there: connection refused
    result = run_cli("run", "--seconds", "4", env=_env(tmp_path, MQTT_HOST=f"127.0.0.1:{port}"), timeout=90)
    assert f"cannot connect to mqtt://127.0.0.1:{port}: " in result.stderr, result.stderr
    assert "127.0.0.1:***" not in result.stderr
