"""``/metrics``: the agent's state in Prometheus' text format, through prometheus-client.

Nothing is counted twice: at scrape time a collector reads the counters the pipeline keeps anyway
(runner stats, the router's per-stream metrics and bucket counts, the stages, the sinks'
``counters()``) and hands them to the library's metric families, which also escape label values.
Each server has its own registry, so several agents in one process (tests) never share series.

MQTT series come from the MQTT sink's ``counters()``: ``connected``, ``queued``, ``in_flight``,
``outbox_bytes``, ``oldest_queued_age_s``, ``published``, ``acked``, ``resent``, ``restored``,
``reconnects`` (else ``connects`` - 1), ``connect_failures`` and every ``dropped_<cause>``; keys
it lacks are left out.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, get_args

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from edge_agent.pipelines.metrics import BucketCounts
from edge_agent.pipelines.sinks.mqtt import MqttSink
from edge_agent.pipelines.sources.runner import State

if TYPE_CHECKING:
    from edge_agent.agent.supervisor import Supervisor

PREFIX = "edge_agent"
STATES: tuple[str, ...] = get_args(State)


def _counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)


def _histogram(family: HistogramMetricFamily, labels: list[str], counts: BucketCounts) -> None:
    family.add_metric(labels, buckets=counts.cumulative(), sum_value=counts.total)


# MqttSink.counters() key -> (series, help); the names are those /metrics had before (issue 10).
MQTT_GAUGES = {
    "queued": ("mqtt_queued", "Messages waiting for the broker (not in flight)."),
    "in_flight": ("mqtt_in_flight", "Messages sent, not yet acknowledged."),
    "outbox_bytes": ("mqtt_outbox_bytes", "Bytes held in the outbox."),
    "oldest_queued_age_s": ("mqtt_oldest_queued_age_seconds", "Age of the oldest unacknowledged message."),
}
MQTT_COUNTERS = {
    "published": ("mqtt_published", "Messages handed to the broker connection."),
    "acked": ("mqtt_acked", "Messages the broker acknowledged."),
    "resent": ("mqtt_resent", "Messages sent again after a connection dropped."),
    "restored": ("mqtt_restored", "Messages found in the outbox at start."),
    "reconnects": ("mqtt_reconnects", "Successful connections after the first."),
    "connect_failures": ("mqtt_connect_failures", "Failed connection attempts."),
}


def mqtt_families(counters: Mapping[str, Any], labels: Mapping[str, str] | None = None) -> Iterator[Metric]:
    """Families for one MQTT sink's ``counters()``; keys it lacks are left out, every
    ``dropped_<cause>`` key becomes ``edge_agent_mqtt_dropped_total{cause="<cause>"}``."""
    names, values = list(labels or {}), list((labels or {}).values())

    def number(key: str) -> float | None:
        value = counters.get(key)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    connected = _gauge("mqtt_connected", "1 while connected to the broker.", names)
    connected.add_metric(values, float(bool(counters.get("connected"))))
    yield connected
    for table, make in ((MQTT_GAUGES, _gauge), (MQTT_COUNTERS, _counter)):
        for key, (name, doc) in table.items():
            value = number(key)
            if key == "reconnects" and value is None and number("connects") is not None:
                value = max((number("connects") or 0.0) - 1.0, 0.0)
            if value is not None:
                family = make(name, doc, names)
                family.add_metric(values, value)
                yield family
    dropped = _counter("mqtt_dropped", "Messages given up, by cause.", [*names, "cause"])
    for key in sorted(counters):
        value = number(key)
        if key.startswith("dropped_") and value is not None:
            dropped.add_metric([*values, key.removeprefix("dropped_")], value)
    if dropped.samples:
        yield dropped


class AgentCollector(Collector):
    """Reads one supervisor's state on every scrape."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        sup = self._supervisor
        agent = [sup.config.agent.agent_id]
        uptime = _gauge("uptime_seconds", "Seconds since the agent started.", ["agent_id"])
        uptime.add_metric(agent, time.monotonic() - sup.started_monotonic)
        yield uptime
        ready = _gauge("ready", "1 once every model is loaded and every stream started.", ["agent_id"])
        ready.add_metric(agent, float(sup.ready))
        yield ready
        yield from self._streams()
        yield from self._models()
        mqtt = [sink for sink in sup.sinks if isinstance(sink, MqttSink)]
        if mqtt:  # one MQTT sink per agent
            yield from mqtt_families(mqtt[0].counters())

    def _streams(self) -> Iterator[Metric]:
        sup = self._supervisor
        router_metrics = dict(sup.router.metrics) if sup.router is not None else {}
        s = ["stream"]
        info = _gauge("stream_info", "Always 1; the stream's model and source kind as labels.", [*s, "model", "kind"])
        decoded = _counter("stream_frames_decoded", "Frames decoded from the source.", s)
        processed = _counter("stream_frames_processed", "Frames that went through the model.", s)
        dropped = _counter(
            "stream_frames_dropped",
            "Frames not processed: replaced in the slot by a newer one, or skipped by the fps cap.",
            ["stream", "reason"],
        )
        reconnects = _counter("stream_reconnects", "Connection attempts after the first.", s)
        stalls = _counter("stream_stalls", "Times the source went quiet past STREAM_STALL_TIMEOUT.", s)
        errors = _counter("stream_inference_errors", "Frames whose inference failed.", s)
        state = _gauge("stream_state", "1 for the stream's current state, 0 for the others.", ["stream", "state"])
        up = _gauge("stream_up", "1 while the stream is streaming.", s)
        fps_in = _gauge("stream_fps_in", "Frames decoded per second over the last seconds.", s)
        fps_out = _gauge("stream_fps_processed", "Frames processed per second over the last seconds.", s)
        queued = _gauge("stream_slot_frames", "Frames waiting for the model (0 or 1: latest frame wins).", s)
        age = _gauge("stream_last_frame_age_seconds", "Seconds since the source's last frame.", s)
        keyframe_interval = _gauge(
            "stream_keyframe_interval_seconds", "Measured seconds between the source's keyframes (its GOP).", s
        )
        keyframes_only = _gauge(
            "stream_decoding_keyframes_only",
            "1 while only keyframes are decoded (DECODE=keyframes, or auto's choice), else 0.",
            s,
        )
        viewers = _gauge("live_view_viewers", "MJPEG viewers of the stream's live picture.", s)
        encodes = _counter("live_view_pictures_encoded", "Live pictures drawn and encoded.", s)
        inference = HistogramMetricFamily(
            f"{PREFIX}_stream_inference_seconds", "Model time of the batch each frame was in.", labels=s
        )
        latency = HistogramMetricFamily(
            f"{PREFIX}_stream_latency_seconds", "End to end: frame decoded to message handed to the sinks.", labels=s
        )
        frame_age = HistogramMetricFamily(
            f"{PREFIX}_stream_frame_age_seconds", "Age of a frame when the model took it.", labels=s
        )
        for name, record in list(sup.streams.items()):
            stats = record.runner.stats
            label = [name]
            info.add_metric([name, record.model_id, stats.kind], 1.0)
            decoded.add_metric(label, stats.frames_decoded)
            dropped.add_metric([name, "replaced"], stats.dropped)
            dropped.add_metric([name, "fps_cap"], stats.skipped_by_fps_cap)
            reconnects.add_metric(label, stats.reconnects)
            stalls.add_metric(label, stats.stalls)
            for known in dict.fromkeys((*STATES, stats.state)):
                state.add_metric([name, known], float(known == stats.state))
            up.add_metric(label, float(stats.state == "streaming"))
            fps_in.add_metric(label, stats.fps_in)
            queued.add_metric(label, float(record.slot.has_frame))
            if stats.last_frame_age_s is not None:
                age.add_metric(label, stats.last_frame_age_s)
            if stats.keyframe_interval_s is not None:
                keyframe_interval.add_metric(label, stats.keyframe_interval_s)
            keyframes_only.add_metric(label, float(stats.decoding == "keyframes"))
            picture = sup.live.picture(name)
            viewers.add_metric(label, picture.viewers if picture is not None else 0)
            encodes.add_metric(label, picture.encodes if picture is not None else 0)
            metrics = router_metrics.get(name)
            if metrics is not None:
                processed.add_metric(label, metrics.processed)
                errors.add_metric(label, metrics.inference_errors)
                fps_out.add_metric(label, metrics.processed_rate.rate())
                _histogram(inference, label, metrics.inference_s_buckets)
                _histogram(latency, label, metrics.latency_s_buckets)
                _histogram(frame_age, label, metrics.frame_age_s_buckets)
            else:
                processed.add_metric(label, 0)
                fps_out.add_metric(label, 0.0)
        yield from (info, decoded, processed, dropped, reconnects, stalls, errors, state, up, fps_in, fps_out)
        yield from (queued, age, keyframe_interval, keyframes_only, viewers, encodes, inference, latency, frame_age)

    def _models(self) -> Iterator[Metric]:
        sup = self._supervisor
        load = _gauge("model_load_seconds", "How long loading the model took (download and build included).", ["model"])
        for model_id, seconds in list(sup.model_load_s.items()):
            load.add_metric([model_id], seconds)
        batches = _counter("model_batches", "Batches the model ran.", ["model"])
        frames = _counter("model_frames", "Frames the model ran on.", ["model"])
        busy = _gauge("model_busy", "1 while the model runs a batch.", ["model"])
        in_flight = _gauge("model_batches_in_flight", "Batches the model is running now.", ["model"])
        concurrency = _gauge(
            "model_concurrency", "Batches the model may run at once (MODEL_CONCURRENCY, see the README).", ["model"]
        )
        for model_id, model in list(sup.models.items()):
            batches.add_metric([model_id], model.stage.batches)
            frames.add_metric([model_id], model.stage.frames)
            busy.add_metric([model_id], float(model.stage.busy))
            in_flight.add_metric([model_id], model.stage.in_flight)
            concurrency.add_metric([model_id], model.stage.concurrency)
        yield from (load, batches, frames, busy, in_flight, concurrency)


def make_registry(supervisor: Supervisor) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(supervisor))
    ProcessCollector(registry=registry)  # process_cpu_seconds_total, resident memory, open fds
    return registry


def add_metrics_route(app: web.Application, supervisor: Supervisor) -> None:
    registry = make_registry(supervisor)

    async def metrics(request: web.Request) -> web.Response:
        # The library picks the format the scraper asks for (Prometheus text, or OpenMetrics).
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(registry), headers={"Content-Type": content_type})

    app.router.add_get("/metrics", metrics)
