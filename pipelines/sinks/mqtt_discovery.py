"""Home Assistant MQTT discovery documents for the agent and its streams (optional, retained).

Entities read what the agent publishes anyway; nothing extra is sent per frame:

* ``binary_sensor`` *status* (connectivity) from ``{prefix}/{agent_id}/status``;
* ``sensor`` *<stream> detections* = ``len(predictions)`` of each prediction message;
* ``sensor`` *<stream> fps* = ``streams[<stream>].fps_processed`` of the stats message.

All entities share the status topic as availability, so they turn "unavailable" with the
agent's Last Will.
"""

from __future__ import annotations

import json
from typing import Any

from edge_agent.pipelines.sinks.mqtt_config import MqttConfig
from edge_agent.pipelines.sinks.mqtt_topics import ha_config_topic, ha_object_id


def _device(config: MqttConfig) -> dict[str, Any]:
    return {
        "identifiers": [config.effective_client_id],
        "name": f"edge-agent {config.agent_id}",
        "manufacturer": "edge-agent",
        "model": "edge-agent",
    }


def _common(config: MqttConfig) -> dict[str, Any]:
    return {
        "availability_topic": config.topics.status,
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": _device(config),
        "origin": {"name": "edge-agent"},
    }


def agent_discovery(config: MqttConfig) -> list[tuple[str, dict[str, Any]]]:
    """``(config topic, document)`` pairs describing the agent itself."""
    object_id = ha_object_id("edge_agent", config.agent_id, "status")
    doc = {
        "name": "status",
        "unique_id": object_id,
        "state_topic": config.topics.status,
        "payload_on": "online",
        "payload_off": "offline",
        "device_class": "connectivity",
        "entity_category": "diagnostic",
        **_common(config),
    }
    # The status topic is also the availability topic; HA would show "unavailable" instead of
    # "off" without this.
    del doc["availability_topic"], doc["payload_available"], doc["payload_not_available"]
    return [(ha_config_topic(config.ha_prefix, "binary_sensor", object_id), doc)]


def stream_discovery(config: MqttConfig, stream: str) -> list[tuple[str, dict[str, Any]]]:
    """``(config topic, document)`` pairs for one stream's sensors."""
    topics = config.topics
    detections_id = ha_object_id("edge_agent", config.agent_id, stream, "detections")
    fps_id = ha_object_id("edge_agent", config.agent_id, stream, "fps")
    # json.dumps gives a quoted, escaped literal that Jinja reads as a string as well.
    key = json.dumps(stream)
    detections = {
        "name": f"{stream} detections",
        "unique_id": detections_id,
        "state_topic": topics.predictions(stream),
        "value_template": "{{ value_json.predictions | length }}",
        "state_class": "measurement",
        "icon": "mdi:cctv",
        "qos": min(config.qos, 1),
        **_common(config),
    }
    fps = {
        "name": f"{stream} fps",
        "unique_id": fps_id,
        "state_topic": topics.stats,
        "value_template": "{{ value_json.streams[" + key + "].fps_processed | round(2) }}",
        "unit_of_measurement": "fps",
        "state_class": "measurement",
        "entity_category": "diagnostic",
        **_common(config),
    }
    return [
        (ha_config_topic(config.ha_prefix, "sensor", detections_id), detections),
        (ha_config_topic(config.ha_prefix, "sensor", fps_id), fps),
    ]


# -- tracking entities (pipelines/events): announced when their topic is first published ----------

EVENT_TYPES = ["track.start", "track.update", "track.end", "zone.enter", "zone.exit", "zone.loiter", "line.cross"]


def event_discovery(config: MqttConfig, stream: str) -> list[tuple[str, dict[str, Any]]]:
    """An ``event`` entity per stream fed by its events topic (``type`` becomes ``event_type``;
    the other keys are the event's attributes)."""
    object_id = ha_object_id("edge_agent", config.agent_id, stream, "events")
    doc = {
        "name": f"{stream} events",
        "unique_id": object_id,
        "state_topic": config.topics.events(stream),
        "event_types": EVENT_TYPES,
        "value_template": "{{ dict(value_json, event_type=value_json.type) | to_json }}",
        "qos": 1,
        **_common(config),
    }
    return [(ha_config_topic(config.ha_prefix, "event", object_id), doc)]


def count_discovery(config: MqttConfig, stream: str, subtopic: str) -> list[tuple[str, dict[str, Any]]]:
    """Entities of one retained count topic: a zone's count gets a ``sensor`` and an occupancy
    ``binary_sensor`` (on while the count is > 0); a line's count a ``total_increasing`` sensor.
    The count topics are retained, so HA shows the right state after either side restarts."""
    topic = config.topics.count(stream, subtopic)
    parts = subtopic.split("/")
    object_id = ha_object_id("edge_agent", config.agent_id, stream, *parts)
    label = " ".join([stream, *parts[1:]])
    sensor: dict[str, Any] = {
        "name": label,
        "unique_id": object_id,
        "state_topic": topic,
        "state_class": "total_increasing" if parts[0] == "lines" else "measurement",
        "icon": "mdi:counter",
        "qos": 1,
        **_common(config),
    }
    docs = [(ha_config_topic(config.ha_prefix, "sensor", object_id), sensor)]
    if parts[0] == "zones" and len(parts) == 3:
        occupancy_id = ha_object_id("edge_agent", config.agent_id, stream, *parts, "occupancy")
        occupancy = {
            "name": f"{label} occupancy",
            "unique_id": occupancy_id,
            "state_topic": topic,
            "value_template": "{{ 'ON' if value | int(0) > 0 else 'OFF' }}",
            "device_class": "occupancy",
            "qos": 1,
            **_common(config),
        }
        docs.append((ha_config_topic(config.ha_prefix, "binary_sensor", occupancy_id), occupancy))
    return docs


def snapshot_discovery(config: MqttConfig, stream: str, cls: str) -> list[tuple[str, dict[str, Any]]]:
    """An ``image`` entity showing the retained best snapshot of a class on a stream."""
    object_id = ha_object_id("edge_agent", config.agent_id, stream, cls, "snapshot")
    doc = {
        "name": f"{stream} {cls} snapshot",
        "unique_id": object_id,
        "image_topic": config.topics.snapshot(stream, cls),
        "content_type": "image/jpeg",
        **_common(config),
    }
    return [(ha_config_topic(config.ha_prefix, "image", object_id), doc)]
