"""The MQTT sink against a real mosquitto on 127.0.0.1: availability, outages, bounds, close."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from tests.fixtures.mosquitto import Mosquitto, MqttSubscriber, Received, SinkRunner

REPO = Path(__file__).resolve().parents[1]
AGENT = "box-1"
STATUS = f"edge-agent/{AGENT}/status"


def predictions(sub: MqttSubscriber) -> list[Received]:
    return [m for m in list(sub.messages) if m.topic.endswith("/predictions")]


def check_all_delivered(sub: MqttSubscriber, expected: dict[str, int], timeout: float = 15.0) -> int:
    """Every stream got ids 0..n-1, first copies in order; returns the number of duplicates."""
    total = sum(expected.values())

    def unique(ms: list[Received]) -> int:
        return len({(m.topic, m.json()["id"]) for m in ms if m.topic.endswith("/predictions")})

    assert sub.wait_for(lambda ms: unique(ms) >= total, timeout), f"got {unique(sub.messages)} of {total}"
    first_seen: dict[str, list[int]] = defaultdict(list)
    seen: set[tuple[str, int]] = set()
    duplicates = 0
    for m in predictions(sub):
        key = (m.topic, m.json()["id"])
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        first_seen[m.topic.split("/")[2]].append(key[1])
    assert {s: ids for s, ids in first_seen.items()} == {s: list(range(n)) for s, n in expected.items()}
    return duplicates


def publish_numbered(runner: SinkRunner, streams: list[str], start: int, stop: int) -> None:
    for i in range(start, stop):
        stream = streams[i % len(streams)]
        runner.sink.publish_prediction(stream, {"id": i // len(streams), "stream": stream, "predictions": []})


# -- availability ---------------------------------------------------------------------------------


def test_online_retained_on_connect_offline_on_close(
    mosquitto: Mosquitto, mqtt_subscriber_factory, mqtt_sink_factory
) -> None:
    runner = mqtt_sink_factory(mosquitto)
    runner.wait(lambda c: c["connected"])
    # "connected" comes before "online" reaches the broker; a subscriber that is already there
    # gets it as a live message (retain flag cleared), so only one that comes after can show
    # that it was retained.
    first = mqtt_subscriber_factory(mosquitto, STATUS)
    assert first.wait_for(lambda ms: any(m.payload == b"online" for m in ms), 5)
    late = mqtt_subscriber_factory(mosquitto, STATUS)
    assert late.wait_for(lambda ms: any(m.payload == b"online" and m.retain for m in ms), 5)

    sub = mqtt_subscriber_factory(mosquitto, f"edge-agent/{AGENT}/#")
    runner.sink.publish_prediction("door", {"predictions": [], "seq": 0})
    assert sub.wait_for_count("/predictions", 1, 5)
    message = predictions(sub)[0]
    assert message.topic == f"edge-agent/{AGENT}/door/predictions"
    assert message.payload == b'{"predictions":[],"seq":0}'
    assert message.qos == 0 or message.qos == 1
    assert 0 < message.properties["MessageExpiryInterval"] <= 300
    assert message.properties["ContentType"] == "application/json"
    assert message.properties["PayloadFormatIndicator"] == 1

    elapsed = runner.close(5.0)
    assert elapsed < 2.0
    assert sub.wait_for_payload(STATUS, "offline", 5)
    after = mqtt_subscriber_factory(mosquitto, STATUS)
    assert after.wait_for(lambda ms: [m.payload for m in ms] == [b"offline"], 5)
    assert after.messages[0].retain
    counters = runner.sink.counters()
    assert counters["connected"] is False and counters["acked"] == 1 and counters["queued"] == 0


def test_online_is_republished_on_every_reconnect(
    mosquitto: Mosquitto, mqtt_subscriber_factory, mqtt_sink_factory
) -> None:
    runner = mqtt_sink_factory(mosquitto)
    runner.wait(lambda c: c["connects"] == 1)
    mosquitto.restart()  # no persistence: the retained "online" is gone with the old broker
    runner.wait(lambda c: c["connects"] == 2 and c["connected"])
    assert runner.sink.counters()["disconnects"] == 1
    first = mqtt_subscriber_factory(mosquitto, STATUS)  # see the availability test: why two
    assert first.wait_for(lambda ms: any(m.payload == b"online" for m in ms), 5)
    sub = mqtt_subscriber_factory(mosquitto, STATUS)
    assert sub.wait_for(lambda ms: any(m.payload == b"online" and m.retain for m in ms), 5)


_WILL_SCRIPT = """
import asyncio, sys
from edge_agent.pipelines.sinks.mqtt import MqttConfig, MqttSink

async def main():
    sink = MqttSink(MqttConfig(host="127.0.0.1", port=int(sys.argv[1]), agent_id=sys.argv[2]))
    await sink.start()
    await asyncio.sleep(60)

asyncio.run(main())
"""


def test_last_will_offline_when_the_process_dies(mosquitto: Mosquitto, mqtt_subscriber_factory) -> None:
    agent = "will-box"
    status = f"edge-agent/{agent}/status"
    sub = mqtt_subscriber_factory(mosquitto, status)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _WILL_SCRIPT, str(mosquitto.port), agent], cwd=REPO, env=env)
    try:
        assert sub.wait_for_payload(status, "online", 15), "agent subprocess never came online"
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        assert sub.wait_for_payload(status, "offline", 5), "no Last Will after SIGKILL"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    fresh = mqtt_subscriber_factory(mosquitto, status)
    assert fresh.wait_for(lambda ms: [m.payload for m in ms] == [b"offline"], 5)
    assert fresh.messages[0].retain


# -- outages --------------------------------------------------------------------------------------


def test_outage_from_start_loses_no_qos1_message(mosquitto_factory, mqtt_subscriber_factory, mqtt_sink_factory) -> None:
    broker = mosquitto_factory(persistence=True)
    sub = mqtt_subscriber_factory(broker, f"edge-agent/{AGENT}/+/predictions", persistent=True, client_id="keeper")
    broker.stop()  # saves the subscriber's session; it reconnects on its own later

    runner = mqtt_sink_factory(broker)
    streams = ["door", "yard", "cam/3"]
    publish_numbered(runner, streams, 0, 600)
    time.sleep(0.3)  # a few failed connection attempts
    counters = runner.sink.counters()
    assert counters["queued"] == 600 and counters["connected"] is False and counters["connect_failures"] >= 1

    broker.start()
    runner.wait(lambda c: c["acked"] == 600 and c["queued"] == 0 and c["in_flight"] == 0, 15)
    duplicates = check_all_delivered(sub, {"door": 200, "yard": 200, "cam_3": 200})
    assert duplicates == 0  # nothing was in flight when the broker came back
    assert runner.sink.counters()["dropped_overflow"] == 0


def test_broker_killed_mid_stream_loses_no_qos1_message(
    mosquitto_factory, mqtt_subscriber_factory, mqtt_sink_factory
) -> None:
    broker = mosquitto_factory(persistence=True)
    # QoS 0 subscription: the subscriber never sends acknowledgements, so the killed broker's
    # socket to it closes cleanly (no RST discarding data already written to it).
    sub = mqtt_subscriber_factory(broker, f"edge-agent/{AGENT}/+/predictions", persistent=True, client_id="keeper")
    broker.save()
    runner = mqtt_sink_factory(broker, reconnect_min_s=0.2)
    runner.wait(lambda c: c["connected"])
    streams = ["door", "yard"]

    publish_numbered(runner, streams, 0, 400)  # delivered before the crash
    runner.wait(lambda c: c["acked"] == 400)
    broker.pause()  # hung broker: what goes on the wire now stays unacknowledged
    publish_numbered(runner, streams, 400, 800)
    frozen = runner.wait(lambda c: c["in_flight"] == 20 and c["queued"] == 380, 5)
    time.sleep(0.2)  # let the kernel hand the subscriber what the broker wrote before the freeze
    broker.kill()  # crash with 20 messages in flight and 380 queued
    publish_numbered(runner, streams, 800, 1000)  # published while the broker is gone
    runner.wait(lambda c: c["disconnects"] == 1 and not c["connected"])
    broker.start()

    done = runner.wait(lambda c: c["acked"] == 1000 and c["queued"] == 0 and c["in_flight"] == 0, 20)
    assert done["resent"] >= frozen["in_flight"] > 0
    assert done["dropped_overflow"] == 0 and done["connects"] == 2
    duplicates = check_all_delivered(sub, {"door": 500, "yard": 500})
    assert duplicates <= done["resent"]


def test_overflow_drops_the_oldest_and_counts(
    mosquitto: Mosquitto, mqtt_subscriber_factory, mqtt_sink_factory, caplog
) -> None:
    sub = mqtt_subscriber_factory(mosquitto, f"edge-agent/{AGENT}/+/predictions")
    runner = mqtt_sink_factory(mosquitto, start=False, queue_size=100)
    with caplog.at_level(logging.WARNING, logger="edge_agent.mqtt"):
        publish_numbered(runner, ["door"], 0, 250)  # before start(): nothing can be sent yet
    assert runner.sink.counters()["dropped_overflow"] == 150
    assert runner.sink.counters()["queued"] == 100
    assert sum("outbox full" in r.getMessage() for r in caplog.records) == 1  # rate-limited
    runner.start()
    runner.wait(lambda c: c["acked"] == 100 and c["queued"] == 0)
    assert sub.wait_for_count("/predictions", 100, 5)
    time.sleep(0.1)
    assert [m.json()["id"] for m in predictions(sub)] == list(range(150, 250))


def test_publish_never_blocks_while_the_broker_is_down(mqtt_sink_factory) -> None:
    runner = mqtt_sink_factory(None, queue_size=2000, reconnect_min_s=0.01, reconnect_max_s=0.02)
    payload = {"predictions": [{"x": 1.0, "y": 2.0, "width": 3.0, "height": 4.0, "class": "circle"}] * 5}
    durations = []
    for i in range(10_000):
        payload["seq"] = i
        started = time.perf_counter()
        runner.sink.publish_prediction("door", payload)
        durations.append(time.perf_counter() - started)
    durations.sort()
    counters = runner.sink.counters()
    assert counters["connected"] is False and counters["connect_failures"] >= 1
    assert counters["queued"] == 2000 and counters["dropped_overflow"] == 8000
    # About blocking, not speed: a call that waited on the network would take >= 10 ms.
    assert durations[len(durations) // 2] < 0.0005, f"median {durations[len(durations) // 2] * 1e6:.0f} us"
    assert durations[-1] < 0.1, f"slowest call {durations[-1] * 1e3:.1f} ms"


# -- close ----------------------------------------------------------------------------------------


def test_close_flushes_everything_within_the_timeout(
    mosquitto: Mosquitto, mqtt_subscriber_factory, mqtt_sink_factory
) -> None:
    sub = mqtt_subscriber_factory(mosquitto, f"edge-agent/{AGENT}/#")
    runner = mqtt_sink_factory(mosquitto)
    runner.wait(lambda c: c["connected"])
    publish_numbered(runner, ["door", "yard"], 0, 3000)
    elapsed = runner.close(10.0)
    assert elapsed < 10.0
    counters = runner.sink.counters()
    assert counters["acked"] == 3000 and counters["queued"] == 0 and counters["in_flight"] == 0
    check_all_delivered(sub, {"door": 1500, "yard": 1500}, timeout=5)
    assert sub.wait_for_payload(STATUS, "offline", 5)
    assert [m.payload for m in sub.on_topic(STATUS)][-1] == b"offline"


def test_close_with_the_broker_away_is_bounded(mqtt_sink_factory, caplog) -> None:
    runner = mqtt_sink_factory(None, reconnect_min_s=0.05, reconnect_max_s=0.1)
    publish_numbered(runner, ["door"], 0, 10)
    with caplog.at_level(logging.WARNING, logger="edge_agent.mqtt"):
        elapsed = runner.close(1.0)
    assert elapsed < 1.5
    assert any("10 message(s) not acknowledged" in r.getMessage() for r in caplog.records)
    runner.sink.publish_prediction("door", {"late": True})
    assert runner.sink.counters()["dropped_closed"] == 1


# -- protocol options -----------------------------------------------------------------------------


def test_mqtt_311_fallback(mosquitto: Mosquitto, mqtt_subscriber_factory, mqtt_sink_factory) -> None:
    sub = mqtt_subscriber_factory(mosquitto, f"edge-agent/{AGENT}/#")
    runner = mqtt_sink_factory(mosquitto, protocol="3.1.1", retain_predictions=True)
    runner.wait(lambda c: c["connected"])
    runner.sink.publish_prediction("door", {"id": 0})
    runner.sink.publish_stats({"streams": {}})
    assert sub.wait_for(lambda ms: any(m.topic.endswith("/stats") for m in ms), 5)
    message = predictions(sub)[0]
    assert "MessageExpiryInterval" not in message.properties
    late = mqtt_subscriber_factory(mosquitto, f"edge-agent/{AGENT}/+/predictions")
    assert late.wait_for(lambda ms: len(ms) == 1 and ms[0].retain, 5)  # retain_predictions


def test_home_assistant_discovery(mosquitto: Mosquitto, mqtt_subscriber_factory, mqtt_sink_factory) -> None:
    runner = mqtt_sink_factory(mosquitto, ha_discovery=True)
    runner.wait(lambda c: c["connected"])
    runner.sink.publish_prediction("front door", {"predictions": [{}, {}]})
    runner.wait(lambda c: c["acked"] == 1)
    sub = mqtt_subscriber_factory(mosquitto, "homeassistant/#")
    assert sub.wait_for(lambda ms: len(ms) >= 3, 5)
    time.sleep(0.1)
    docs = {m.topic: m.json() for m in sub.messages}
    assert all(m.retain for m in sub.messages) and len(docs) == 3
    components = sorted(topic.split("/")[1] for topic in docs)
    assert components == ["binary_sensor", "sensor", "sensor"]
    states = sorted(doc["state_topic"] for doc in docs.values())
    assert states == sorted([STATUS, f"edge-agent/{AGENT}/front door/predictions", f"edge-agent/{AGENT}/stats"])
    assert len({doc["unique_id"] for doc in docs.values()}) == 3


def test_duplicate_agent_id_is_reported_once_not_per_takeover(mosquitto: Mosquitto, mqtt_sink_factory, caplog) -> None:
    with caplog.at_level(logging.DEBUG, logger="edge_agent.mqtt"):
        first = mqtt_sink_factory(mosquitto)
        first.wait(lambda c: c["connected"])
        mqtt_sink_factory(mosquitto)  # same agent_id, so the same client id: they take turns
        counters = first.wait(lambda c: c["disconnects"] >= 4, 10)
    assert "same client id" in counters["last_error"]
    records = [r for r in caplog.records if r.name == "edge_agent.mqtt"]
    takeovers = [r for r in records if r.levelno == logging.ERROR and "same client id" in r.getMessage()]
    assert 1 <= len(takeovers) <= 2  # once per sink
    assert sum(r.levelno == logging.WARNING for r in records) <= 2  # one "lost" warning per sink


def test_window_respects_the_brokers_receive_maximum(mosquitto: Mosquitto, mqtt_sink_factory) -> None:
    # paho alone would send every stored message at once after a reconnect; the sink never has
    # more unacknowledged than the broker's Receive Maximum (mosquitto: 20), whatever it is told.
    runner = mqtt_sink_factory(mosquitto, max_inflight=100)
    runner.wait(lambda c: c["connected"])
    mosquitto.pause()
    try:
        publish_numbered(runner, ["door"], 0, 100)
        counters = runner.wait(lambda c: c["in_flight"] == 20 and c["queued"] == 80, 5)
        time.sleep(0.1)
        assert runner.sink.counters()["in_flight"] == 20
    finally:
        mosquitto.resume()
    runner.wait(lambda c: c["acked"] == 100)
    assert counters["dropped_overflow"] == 0


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_message_the_broker_refuses_does_not_wedge_the_queue(
    mosquitto_factory, mqtt_subscriber_factory, mqtt_sink_factory, protocol: str
) -> None:
    # v5: the broker announces its limit and the sink skips the message; 3.1.1: the broker just
    # drops the connection, and the sink gives the message up after it sank five connections.
    broker = mosquitto_factory(extra_config=["max_packet_size 2000"])
    sub = mqtt_subscriber_factory(broker, f"edge-agent/{AGENT}/+/predictions")
    runner = mqtt_sink_factory(broker, protocol=protocol, reconnect_min_s=0.02, reconnect_max_s=0.05)
    runner.wait(lambda c: c["connected"])
    runner.sink.publish_prediction("door", {"id": 0})
    runner.sink.publish_prediction("door", {"id": 1, "blob": "x" * 5000})
    runner.sink.publish_prediction("door", {"id": 2})
    counters = runner.wait(lambda c: c["acked"] == 2 and c["queued"] == 0 and c["in_flight"] == 0, 10)
    assert counters["dropped_undeliverable"] == 1
    assert sub.wait_for_count("/predictions", 2, 5)
    assert sorted({m.json()["id"] for m in predictions(sub)}) == [0, 2]
