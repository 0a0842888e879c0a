"""Histogram bucket counts and the MQTT series built from a sink's ``counters()``, read back with
prometheus_client's own parser."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from edge_agent.agent.web.metrics import mqtt_families
from edge_agent.pipelines.metrics import BucketCounts, StreamMetrics


def test_bucket_counts_are_cumulative_with_prometheus_le_semantics() -> None:
    counts = BucketCounts(bounds=(0.01, 0.1, 1.0))
    for value in (0.005, 0.01, 0.05, 0.1, 0.5, 2.0, math.nan):
        counts.observe(value)
    # le is "less than or equal": 0.01 lands in the 0.01 bucket, 0.1 in the 0.1 bucket; NaN is ignored.
    assert counts.cumulative() == [("0.01", 2), ("0.1", 4), ("1.0", 5), ("+Inf", 6)]
    assert counts.count == 6 and counts.total == pytest.approx(2.665)
    with pytest.raises(ValueError, match="increasing"):
        BucketCounts(bounds=(1.0, 0.5))


def test_stream_metrics_fill_the_histograms_in_seconds() -> None:
    metrics = StreamMetrics()
    metrics.record(frame_age_ms=3.0, inference_ms=40.0, latency_ms=2000.0)
    assert dict(metrics.inference_s_buckets.cumulative())["0.05"] == 1
    assert dict(metrics.inference_s_buckets.cumulative())["0.025"] == 0
    assert dict(metrics.latency_s_buckets.cumulative())["1.0"] == 0
    assert dict(metrics.latency_s_buckets.cumulative())["2.5"] == 1
    assert metrics.frame_age_s_buckets.total == pytest.approx(0.003)


class _Fixed(Collector):
    def __init__(self, counters: dict) -> None:  # type: ignore[type-arg]
        self.counters = counters

    def collect(self):  # type: ignore[no-untyped-def]
        yield from mqtt_families(self.counters)


def _parse(counters: dict) -> dict[str, dict[tuple, float]]:  # type: ignore[type-arg]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(counters))
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_mqtt_series_from_the_sinks_counters() -> None:
    # The keys MqttSink.counters() has (issue 10's durable outbox included).
    counters = {
        "connected": True,
        "queued": 12,
        "in_flight": 3,
        "outbox_bytes": 4096,
        "oldest_queued_age_s": 1.5,
        "published": 100,
        "acked": 97,
        "resent": 2,
        "dropped_overflow": 5,
        "dropped_rejected": 0,
        "dropped_undeliverable": 1,
        "dropped_closed": 0,
        "connects": 3,
        "reconnects": 2,
        "last_error": "timed out",
    }
    got = _parse(counters)
    one = ()  # no labels: one MQTT sink per agent
    assert got["edge_agent_mqtt_connected"][one] == 1
    assert got["edge_agent_mqtt_queued"][one] == 12
    assert got["edge_agent_mqtt_in_flight"][one] == 3
    assert got["edge_agent_mqtt_outbox_bytes"][one] == 4096
    assert got["edge_agent_mqtt_oldest_queued_age_seconds"][one] == 1.5
    assert got["edge_agent_mqtt_published_total"][one] == 100
    assert got["edge_agent_mqtt_acked_total"][one] == 97
    assert got["edge_agent_mqtt_resent_total"][one] == 2
    assert got["edge_agent_mqtt_reconnects_total"][one] == 2
    dropped = got["edge_agent_mqtt_dropped_total"]
    assert {dict(k)["cause"]: v for k, v in dropped.items()} == {
        "overflow": 5,
        "rejected": 0,
        "undeliverable": 1,
        "closed": 0,
    }


def test_mqtt_series_tolerate_missing_keys_and_fall_back_to_connects() -> None:
    got = _parse({"connected": False, "connects": 4, "published": 1, "oldest_queued_age_s": None})
    assert got["edge_agent_mqtt_connected"][()] == 0
    assert got["edge_agent_mqtt_reconnects_total"][()] == 3
    assert "edge_agent_mqtt_oldest_queued_age_seconds" not in got
    assert "edge_agent_mqtt_messages_dropped_total" not in got
