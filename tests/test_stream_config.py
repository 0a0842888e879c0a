"""One stream model, one set of validators, one JSON encoder, one exit-code mapping (pure logic)."""

from __future__ import annotations

import asyncio
import io
import json
import math

import numpy as np
import pytest
from pydantic import ValidationError

from edge_agent.agent.control_api import status_for
from edge_agent.agent.errors import (
    ConfigError,
    ModelLoadError,
    NoStreamLeftError,
    StopRequested,
    StreamExistsError,
    UnknownStreamError,
    exit_code_for,
)
from edge_agent.agent.settings import parse_streams, stream_from_env
from edge_agent.models.common.errors import (
    CacheLockTimeoutError,
    ExecutionProviderError,
    InvalidModelIdError,
    ModelDownloadError,
    ModelNotCachedError,
    ModelSettingsError,
)
from edge_agent.pipelines.errors import SourceConfigError
from edge_agent.pipelines.sinks.encoding import encode_json, to_json
from edge_agent.pipelines.sinks.errors import MqttConfigError
from edge_agent.pipelines.sinks.mqtt_config import BrokerAddress, parse_broker
from edge_agent.pipelines.sinks.stdout import StdoutSink
from edge_agent.pipelines.sources.options import SourceOptions
from edge_agent.pipelines.stream_config import STREAM_KEYS, StreamConfig

# -- the environment, the control API and the reader accept exactly the same values -------------

CASES = {
    "video_size": ["1x1", "00x00", "1280x720", "0x720", "1280*720", "640X480", " 320x240 "],
    "max_fps": ["5", "0.5", "0", "-1", "inf", "nan", "abc", "1e3"],
    "framerate": ["30", "7.5", "0", "-30", "inf"],
    "mode": ["live", "EVERY", "fast", ""],
    "loop": ["true", "yes", "0", "maybe", "2"],
    "rtsp_transport": ["tcp", "UDP", "http"],
    "input_format": ["mjpeg", "MJPEG", "mjpeg; rm -rf", "x"],
    "confidence": ["0", "1", "0.4", "1.01", "-0.1", "nan"],
}


def _accepted_by_env(key: str, raw: str) -> bool:
    try:
        stream_from_env("cam", "/dev/video0", {f"STREAM_CAM_{key.upper()}": raw})
    except ConfigError:
        return False
    return True


def _accepted_by_api(key: str, raw: str) -> bool:
    try:
        StreamConfig.model_validate({"name": "cam", "url": "/dev/video0", key: raw})
    except ValidationError:
        return False
    return True


def _accepted_by_reader(key: str, raw: str) -> bool:
    if key == "confidence":
        return _accepted_by_api(key, raw)  # not a reading option
    try:
        SourceOptions(**{key: raw})
    except SourceConfigError:
        return False
    return True


@pytest.mark.parametrize(("key", "raw"), [(k, v) for k, values in CASES.items() for v in values if v.strip()])
def test_one_set_of_validators(key: str, raw: str) -> None:
    verdicts = {_accepted_by_env(key, raw), _accepted_by_api(key, raw), _accepted_by_reader(key, raw)}
    assert len(verdicts) == 1, f"{key}={raw!r}: env/API/reader disagree"


def test_verdicts_that_used_to_disagree() -> None:
    assert _accepted_by_env("video_size", "1x1") and not _accepted_by_env("video_size", "00x00")
    assert _accepted_by_env("confidence", "0")  # like CONFIDENCE=0
    assert not _accepted_by_api("max_fps", "inf")


def test_json_bodies_are_as_strict_as_the_environment() -> None:
    base = {"name": "cam", "url": "rtsp://h/x"}
    for bad in ({"max_fps": True}, {"confidence": True}, {"loop": 2}, {"nope": 1}, {"name": "a b"}, {"url": " "}):
        with pytest.raises(ValidationError):
            StreamConfig.model_validate(base | bad)
    stream = StreamConfig.model_validate(base | {"max_fps": 5, "loop": False, "mode": "LIVE"})
    assert (stream.max_fps, stream.mode) == (5.0, "live")


def test_every_per_stream_key_is_an_env_variable_and_a_body_field() -> None:
    assert set(STREAM_KEYS) == {name.upper() for name in StreamConfig.model_fields} - {"NAME", "URL"}
    options = StreamConfig(name="c", url="/dev/video0", video_size="640x480", framerate=15).source_options(
        stall_timeout=3
    )
    assert (options.video_size, options.framerate, options.stall_timeout) == ("640x480", 15.0, 3.0)


# -- STREAMS with ';' in a password -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a=rtsp://u:pa;ss@h/x;b=/dev/video0", [("a", "rtsp://u:pa;ss@h/x"), ("b", "/dev/video0")]),
        ("a=rtsp://u:p;q=w@h/y", [("a", "rtsp://u:p;q=w@h/y")]),
        ("a=http://h/v?password=x;y;b=/dev/video1", [("a", "http://h/v?password=x;y"), ("b", "/dev/video1")]),
        ("a=http://h/v?password=x;b=/dev/video1", [("a", "http://h/v?password=x"), ("b", "/dev/video1")]),
    ],
)
def test_semicolons_inside_passwords(raw: str, expected: list[tuple[str, str]]) -> None:
    assert parse_streams(raw) == expected


def test_a_nameless_entry_is_not_quoted() -> None:
    with pytest.raises(ConfigError) as info:
        parse_streams("rtsp://admin:Secret99@h/x")
    assert "has no name" in str(info.value) and "Secret99" not in str(info.value)


# -- one JSON encoder ---------------------------------------------------------------------------


def test_stdout_and_mqtt_write_the_same_strict_json() -> None:
    payload = {"a": math.nan, "b": [math.inf, -math.inf, 1.5], "c": np.float32("nan"), "d": np.arange(3)}
    expected = {"a": None, "b": [None, None, 1.5], "c": None, "d": [0, 1, 2]}
    assert json.loads(encode_json(payload)) == expected
    assert encode_json(payload).decode() == to_json(payload)

    out = io.StringIO()

    async def scenario() -> None:
        sink = StdoutSink(out)
        await sink.start()
        sink.publish_prediction("s", payload)
        await sink.close(5)

    asyncio.run(scenario())
    line = out.getvalue().strip()
    assert "NaN" not in line and "Infinity" not in line
    assert line == to_json(payload) and json.loads(line) == expected


# -- MQTT_HOST ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("broker.local", BrokerAddress("broker.local")),
        ("10.0.0.2:1884", BrokerAddress("10.0.0.2", 1884)),
        ("mqtt://127.0.0.1:1883", BrokerAddress("127.0.0.1", 1883, False)),
        ("mqtts://broker.local", BrokerAddress("broker.local", None, True)),
        ("tcp://[::1]:1883/", BrokerAddress("::1", 1883, False)),
        ("::1", BrokerAddress("::1")),
    ],
)
def test_broker_addresses(text: str, expected: BrokerAddress) -> None:
    assert parse_broker(text) == expected


@pytest.mark.parametrize(
    "text", ["mqtt://mqtt://127.0.0.1:1883:1883", "ws://h", "mqtt://u:pw@h", "h/topic", "h:0", "h:x", "a b", ""]
)
def test_broker_addresses_refused(text: str) -> None:
    with pytest.raises(MqttConfigError) as info:
        parse_broker(text)
    assert "u:pw" not in str(info.value)


# -- exit codes and HTTP statuses come from types -------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ConfigError("x"), 2),
        (InvalidModelIdError("x"), 2),
        (ModelNotCachedError("x"), 2),
        (ExecutionProviderError("x"), 2),
        (ModelSettingsError("x"), 2),
        (SourceConfigError("x"), 2),
        (MqttConfigError("x"), 2),
        (NoStreamLeftError({"a": "unreadable"}), 2),
        (ModelLoadError("m", ["a"], ModelNotCachedError("offline")), 2),
        (ModelDownloadError("x"), 1),
        (CacheLockTimeoutError("x"), 1),
        (ModelLoadError("m", ["a"], ModelDownloadError("503")), 1),
        (RuntimeError("bug"), 1),
    ],
)
def test_exit_codes(exc: BaseException, code: int) -> None:
    assert exit_code_for(exc) == code


def test_http_statuses() -> None:
    assert status_for(StreamExistsError("a")) == 409
    assert status_for(UnknownStreamError("a", [])) == 404
    assert status_for(ConfigError("bad url")) == 400
    assert status_for(ModelLoadError("m", ["a"], InvalidModelIdError("x"))) == 400
    assert status_for(ModelLoadError("m", ["a"], ModelDownloadError("503"))) == 503
    assert status_for(StopRequested("loading m")) == 503
