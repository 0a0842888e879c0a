"""Shared pytest fixtures: real services on 127.0.0.1, each in its own module under fixtures/."""

pytest_plugins = [
    "tests.fixtures.model_server",
    "tests.fixtures.mosquitto",
    "tests.fixtures.rtsp",
    "tests.fixtures.media",
    "tests.fixtures.chromium",
]
