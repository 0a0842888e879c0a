"""MQTT sink pieces that need no broker: topics, configuration, encoding, the outbox."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from edge_agent.models.common.errors import EdgeAgentError
from edge_agent.pipelines.sinks.errors import MqttConfigError, MqttPayloadError
from edge_agent.pipelines.sinks.mqtt import MqttConfig, MqttSink, encode_json
from edge_agent.pipelines.sinks.mqtt_discovery import stream_discovery
from edge_agent.pipelines.sinks.mqtt_outbox import Outbox, OutMessage
from edge_agent.pipelines.sinks.mqtt_topics import Topics, ha_object_id, sanitize_level, validate_prefix


def cfg(**overrides: object) -> MqttConfig:
    values: dict[str, object] = {"host": "broker.local", "agent_id": "box-1"}
    values.update(overrides)
    return MqttConfig(**values)  # type: ignore[arg-type]


# -- topics ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("door", "door"),
        ("front door", "front door"),
        ("cam/1", "cam_1"),
        ("a+b#c", "a_b_c"),
        ("../x", ".._x"),
        ("$SYS", "_SYS"),
        ("", "_"),
        ("tab\there\x00nul", "tab_here_nul"),
        ("caméra-é", "caméra-é"),
    ],
)
def test_sanitize_level(name: str, expected: str) -> None:
    assert sanitize_level(name) == expected


def test_topics_layout_and_no_injection() -> None:
    topics = Topics("site-3/edge-agent", "box-1")
    assert topics.status == "site-3/edge-agent/box-1/status"
    assert topics.stats == "site-3/edge-agent/box-1/stats"
    assert topics.predictions("door") == "site-3/edge-agent/box-1/door/predictions"
    assert topics.predictions_filter() == "site-3/edge-agent/box-1/+/predictions"
    for hostile in ("a/b/c", "#", "+", "x/#", "/", "//"):
        topic = topics.predictions(hostile)
        assert topic.count("/") == 4, topic
        assert "+" not in topic and "#" not in topic


@pytest.mark.parametrize("prefix", ["", "a//b", "/edge", "edge/", "ed+ge", "edge/#", "$SYS/x", "a\x00b"])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(MqttConfigError):
        validate_prefix(prefix)


def test_ha_object_ids_are_safe_and_distinct() -> None:
    assert ha_object_id("edge_agent", "box-1", "door") == "edge_agent_box-1_door"
    spaced = ha_object_id("front door")
    assert spaced != ha_object_id("front_door")
    assert all(c.isalnum() or c in "_-" for c in spaced)


# -- configuration --------------------------------------------------------------------------------


def test_config_defaults() -> None:
    config = cfg()
    assert config.effective_port == 1883
    assert cfg(tls=True).effective_port == 8883
    assert cfg(port=1999, tls=True).effective_port == 1999
    assert config.qos == 1 and config.protocol == "5" and config.topic_prefix == "edge-agent"
    assert config.effective_client_id == "edge-agent-box-1" == cfg().effective_client_id
    assert cfg(client_id="mine").effective_client_id == "mine"
    assert cfg(protocol="3.1.1").protocol == "3.1.1"
    assert cfg(protocol="311").protocol == "3.1.1"
    assert cfg(message_expiry_s=0).message_expiry_s is None
    assert config.describe() == "mqtt://broker.local:1883"


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"host": ""}, ["host"]),
        ({"agent_id": ""}, ["agent_id"]),
        ({"agent_id": "a/b"}, ["agent_id", "'/'"]),
        ({"agent_id": "x#"}, ["agent_id"]),
        ({"port": 0}, ["port", "65535"]),
        ({"qos": 3}, ["qos", "0, 1 or 2"]),
        ({"protocol": "4"}, ["protocol", "'5' or '3.1.1'"]),
        ({"keepalive": 0}, ["keepalive"]),
        ({"queue_size": 0}, ["queue_size"]),
        ({"max_inflight": 0}, ["max_inflight"]),
        ({"message_expiry_s": -1}, ["message_expiry_s"]),
        ({"reconnect_min_s": 5, "reconnect_max_s": 1}, ["reconnect_max_s"]),
        ({"password": "x"}, ["username"]),
        ({"username": "u", "password": "x", "password_file": "/etc/hostname"}, ["not both"]),
        ({"username": "u", "password_file": "/nonexistent/pw"}, ["password_file", "does not exist"]),
        ({"tls_ca": "/etc/hostname"}, ["tls is off"]),
        ({"tls": True, "tls_key": "/etc/hostname"}, ["tls_cert"]),
        ({"tls": True, "tls_ca": "/nonexistent/ca.pem"}, ["tls_ca", "does not exist"]),
        ({"topic_prefix": "edge/"}, ["topic_prefix"]),
    ],
)
def test_config_errors_name_the_setting(overrides: dict[str, object], words: list[str]) -> None:
    with pytest.raises(MqttConfigError) as caught:
        cfg(**overrides)
    assert isinstance(caught.value, EdgeAgentError)
    for word in words:
        assert word in str(caught.value)


def test_password_file_like_a_systemd_credential(tmp_path: Path) -> None:
    secret = tmp_path / "mqtt-password"
    secret.write_text("pa ss\n")
    assert cfg(username="u", password_file=str(secret)).resolve_password() == "pa ss"
    assert cfg(username="u", password="inline").resolve_password() == "inline"
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(MqttConfigError, match="empty"):
        MqttSink(cfg(username="u", password_file=str(empty)))


def test_bad_tls_files_fail_when_the_sink_is_built(tmp_path: Path) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(MqttConfigError, match="tls_ca"):
        MqttSink(cfg(tls=True, tls_ca=str(junk)))


# -- encoding -------------------------------------------------------------------------------------


def test_encode_json_is_compact_utf8_and_tolerant() -> None:
    data = encode_json({"class": "chaise", "label": "café", "score": np.float32(0.5), "ids": np.arange(3)})
    assert data == '{"class":"chaise","label":"café","score":0.5,"ids":[0,1,2]}'.encode()
    assert json.loads(encode_json({"fps": math.nan, "x": [math.inf, 1.0]})) == {"fps": None, "x": [None, 1.0]}
    with pytest.raises(MqttPayloadError):
        encode_json({"x": object()})


def test_discovery_reads_existing_topics() -> None:
    config = cfg(ha_discovery=True)
    docs = dict(stream_discovery(config, "front door"))
    assert len(docs) == 2
    for topic, doc in docs.items():
        assert topic.startswith("homeassistant/sensor/") and topic.endswith("/config")
        assert doc["availability_topic"] == "edge-agent/box-1/status"
        assert doc["unique_id"] in topic
    states = sorted(doc["state_topic"] for doc in docs.values())
    assert states == ["edge-agent/box-1/front door/predictions", "edge-agent/box-1/stats"]


# -- outbox ---------------------------------------------------------------------------------------


def _msg(i: int) -> OutMessage:
    return OutMessage("t", str(i).encode(), 1, False, expires=True)


def test_outbox_drops_oldest_and_counts() -> None:
    box = Outbox(3)
    dropped = [box.put(_msg(i)) for i in range(5)]
    assert dropped == [0, 0, 0, 1, 1]
    assert box.dropped == 2
    assert [m.payload for m in box.drain()] == [b"2", b"3", b"4"]


def test_outbox_requeue_restores_order_at_the_head() -> None:
    box = Outbox(10)
    sent = [_msg(i) for i in range(4)]
    for m in sent:
        box.put(m)
    popped = [box.pop(), box.pop(), box.pop()]
    assert all(m is not None for m in popped)
    box.put(_msg(4))
    box.requeue(reversed([m for m in popped if m is not None]))  # acks and takes come back in any order
    assert [m.payload for m in box.drain()] == [b"0", b"1", b"2", b"3", b"4"]
