"""The MQTT sink with its disk outbox, reconnect schedule and expiring ``online``, on a real mosquitto."""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

from edge_agent.pipelines import state
from edge_agent.pipelines.backoff import Backoff
from edge_agent.pipelines.sinks.mqtt import _RECONNECT_JITTER
from tests.fixtures.mosquitto import Mosquitto
from tests.test_mqtt_sink import AGENT, STATUS, check_all_delivered, publish_numbered


def test_close_with_the_broker_away_keeps_everything_for_the_next_start(
    tmp_path: Path,
    mosquitto_factory,
    mqtt_subscriber_factory,
    mqtt_sink_factory,
    caplog,  # type: ignore[no-untyped-def]
) -> None:
    db = tmp_path / state.DB_NAME
    broker = mosquitto_factory(start=False)
    first = mqtt_sink_factory(broker, outbox_path=db)
    publish_numbered(first, ["door", "yard"], 0, 400)
    first.wait(lambda c: c["queued"] == 400 and c["outbox"] == "disk" and c["oldest_queued_age_s"] is not None)
    with caplog.at_level(logging.WARNING, logger="edge_agent.mqtt"):
        elapsed = first.close(5.0)
    assert elapsed < 1.0, "nothing to wait for: the messages are safe on disk"
    assert any(
        "400 message(s) not acknowledged" in r.getMessage() and "kept in the outbox" in r.getMessage()
        for r in caplog.records
    )

    broker.start()
    sub = mqtt_subscriber_factory(broker, f"edge-agent/{AGENT}/+/predictions")
    second = mqtt_sink_factory(broker, outbox_path=db)
    assert second.sink.counters()["restored"] == 400
    publish_numbered(second, ["door", "yard"], 400, 500)  # new traffic queues behind the old
    second.wait(lambda c: c["acked"] == 100 + 400 and c["queued"] == 0, 15)
    assert check_all_delivered(sub, {"door": 250, "yard": 250}) == 0
    second.close(5.0)
    conn = __import__("sqlite3").connect(db)
    assert conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0


def test_qos0_needs_no_outbox_on_disk(tmp_path: Path, mosquitto: Mosquitto, mqtt_sink_factory) -> None:  # type: ignore[no-untyped-def]
    runner = mqtt_sink_factory(mosquitto, qos=0, outbox_path=tmp_path / state.DB_NAME)
    assert runner.sink.counters()["outbox"] == "memory"


def test_online_expires_unless_refreshed(mosquitto: Mosquitto, mqtt_subscriber_factory, mqtt_sink_factory) -> None:  # type: ignore[no-untyped-def]
    sub = mqtt_subscriber_factory(mosquitto, STATUS)
    runner = mqtt_sink_factory(mosquitto, online_expiry_s=3)
    assert sub.wait_for(lambda ms: sum(m.payload == b"online" for m in ms) >= 3, 5), "refreshed every third"
    assert all(0 < m.properties["MessageExpiryInterval"] <= 3 for m in sub.messages)
    runner.close(2.0)
    assert sub.wait_for_payload(STATUS, "offline", 5)
    offline = [m for m in sub.messages if m.payload == b"offline"][-1]
    assert "MessageExpiryInterval" not in offline.properties  # offline stays until the agent is back


def test_reconnect_delays_double_with_jitter_and_never_pass_the_maximum() -> None:
    backoff = Backoff(0.5, 5.0, jitter=_RECONNECT_JITTER, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(40)]
    assert all(0.25 <= d <= 5.0 for d in delays)
    assert all(2.5 <= d <= 5.0 for d in delays[4:])  # at the cap: 50-100 % of MQTT_RECONNECT_MAX
    assert len({round(d, 3) for d in delays[4:]}) > 10  # spread, not in lockstep


def test_back_within_reconnect_max_of_the_brokers_return_after_a_long_outage(
    mosquitto_factory,
    mqtt_sink_factory,  # type: ignore[no-untyped-def]
) -> None:
    broker = mosquitto_factory()
    runner = mqtt_sink_factory(broker, reconnect_min_s=0.05, reconnect_max_s=1.0)
    runner.wait(lambda c: c["connected"])
    broker.kill()
    time.sleep(6)  # many doublings: paho alone would now wait 3.2 s, then 6.4 s...
    broker.start()
    back = time.monotonic()
    runner.wait(lambda c: c["connected"] and c["reconnects"] == 1, 5)
    assert time.monotonic() - back <= 1.0 + 0.3
