"""Shared pytest fixtures: real services on 127.0.0.1, each in its own module under fixtures/."""

import pytest

pytest_plugins = [
    "tests.fixtures.model_server",
    "tests.fixtures.mosquitto",
    "tests.fixtures.rtsp",
    "tests.fixtures.media",
    "tests.fixtures.chromium",
]


@pytest.fixture(autouse=True)
def _private_state_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test (nor an agent it starts) may touch ~/.local/state: each gets its own STATE_DIR."""
    monkeypatch.setenv("STATE_DIR", str(tmp_path_factory.mktemp("state")))
