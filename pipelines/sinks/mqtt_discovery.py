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
