"""The MQTT sink with credentials and TLS against a real mosquitto on 127.0.0.1."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.fixtures.mosquitto import TlsFiles
from tests.test_mqtt_sink import AGENT, STATUS

USERS = {"agent": "s3cret pass", "viewer": "look"}


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "edge_agent.mqtt" and r.levelno >= logging.WARNING]


def test_password_from_a_file_is_accepted(
    mosquitto_factory, mqtt_subscriber_factory, mqtt_sink_factory, tmp_path: Path
) -> None:
    broker = mosquitto_factory(users=USERS)
    secret = tmp_path / "mqtt-password"  # what systemd's LoadCredential= puts in $CREDENTIALS_DIRECTORY
    secret.write_text(USERS["agent"] + "\n")
    runner = mqtt_sink_factory(broker, username="agent", password_file=str(secret))
    runner.wait(lambda c: c["connected"], 5)
    sub = mqtt_subscriber_factory(broker, STATUS, username="viewer", password=USERS["viewer"])
    assert sub.wait_for_payload(STATUS, "online", 5)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_wrong_password_is_reported_once_and_retried_with_backoff(
    mosquitto_factory, mqtt_sink_factory, caplog: pytest.LogCaptureFixture, protocol: str
) -> None:
    broker = mosquitto_factory(users=USERS)
    with caplog.at_level(logging.DEBUG, logger="edge_agent.mqtt"):
        runner = mqtt_sink_factory(
            broker, username="agent", password="wrong", protocol=protocol, reconnect_min_s=0.05, reconnect_max_s=0.1
        )
        counters = runner.wait(lambda c: c["connect_failures"] >= 4, 10)
    assert counters["connected"] is False and counters["connects"] == 0
    assert "Bad user name or password" in counters["last_error"] or "Not authorized" in counters["last_error"]
    errors = _errors(caplog)
    assert len(errors) == 1, errors  # once, not once per attempt
    assert "refused the connection" in errors[0] and "username and password" in errors[0]


def test_tls_with_a_private_ca(
    mosquitto_factory, mqtt_subscriber_factory, mqtt_sink_factory, mqtt_tls_files: TlsFiles
) -> None:
    broker = mosquitto_factory(tls=mqtt_tls_files)
    runner = mqtt_sink_factory(broker, tls=True, tls_ca=str(mqtt_tls_files.ca_cert))
    runner.wait(lambda c: c["connected"], 5)
    sub = mqtt_subscriber_factory(broker, f"edge-agent/{AGENT}/#", tls_ca=mqtt_tls_files.ca_cert)
    assert sub.wait_for_payload(STATUS, "online", 5)
    runner.sink.publish_prediction("door", {"id": 0})
    assert sub.wait_for_count("/predictions", 1, 5)


def test_tls_untrusted_broker_gives_a_clear_error(
    mosquitto_factory, mqtt_sink_factory, mqtt_tls_files: TlsFiles, caplog: pytest.LogCaptureFixture
) -> None:
    broker = mosquitto_factory(tls=mqtt_tls_files)
    with caplog.at_level(logging.DEBUG, logger="edge_agent.mqtt"):
        runner = mqtt_sink_factory(
            broker, tls=True, tls_ca=str(mqtt_tls_files.other_ca_cert), reconnect_min_s=0.05, reconnect_max_s=0.1
        )
        counters = runner.wait(lambda c: c["connect_failures"] >= 3, 10)
    assert counters["connected"] is False
    assert "certificate verify failed" in counters["last_error"]
    errors = _errors(caplog)
    assert len(errors) == 1 and "tls_ca" in errors[0], errors


def test_plain_client_on_a_tls_port_is_explained(
    mosquitto_factory, mqtt_sink_factory, mqtt_tls_files: TlsFiles
) -> None:
    broker = mosquitto_factory(tls=mqtt_tls_files)
    runner = mqtt_sink_factory(broker, reconnect_min_s=0.05, reconnect_max_s=0.1)
    counters = runner.wait(lambda c: c["connect_failures"] >= 2, 10)
    assert "TLS" in counters["last_error"]


def test_mutual_tls_client_certificate(mosquitto_factory, mqtt_sink_factory, mqtt_tls_files: TlsFiles) -> None:
    broker = mosquitto_factory(tls=mqtt_tls_files, require_client_cert=True)
    runner = mqtt_sink_factory(
        broker,
        tls=True,
        tls_ca=str(mqtt_tls_files.ca_cert),
        tls_cert=str(mqtt_tls_files.client_cert),
        tls_key=str(mqtt_tls_files.client_key),
    )
    runner.wait(lambda c: c["connected"], 5)
    without = mqtt_sink_factory(
        broker,
        agent_id="no-cert",
        tls=True,
        tls_ca=str(mqtt_tls_files.ca_cert),
        reconnect_min_s=0.05,
        reconnect_max_s=0.1,
    )
    counters = without.wait(lambda c: c["connect_failures"] >= 2, 10)
    assert counters["connected"] is False and counters["last_error"]
