"""The agent's MQTT topic names, and the clean-up that stops a stream name from bending them.

Layout (``{prefix}`` may hold several levels, e.g. ``site-3/edge-agent``)::

    {prefix}/{agent_id}/status                 retained "online" / "offline" (Last Will)
    {prefix}/{agent_id}/stats                  periodic stats
    {prefix}/{agent_id}/{stream}/predictions   one message per processed frame
    {prefix}/{agent_id}/{stream}/events        tracking events (QoS >= 1, own seq)
    {prefix}/{agent_id}/{stream}/zones/{zone}/{class}[/active]     retained: objects in the zone now
    {prefix}/{agent_id}/{stream}/lines/{line}/{class}/{in|out}     retained: crossings so far
    {prefix}/{agent_id}/{stream}/snapshots/{class}                 retained JPEG: the latest best snapshot

Stream names come from user configuration and are only *sanitised* (a ``/`` in a stream name
must not create a new level, a ``+`` or ``#`` must not make a publish invalid); the message body
carries the real name. ``agent_id`` and the prefix are configuration the user controls fully, so
they are *validated* instead: a bad one is an error at start-up, not a silently changed topic.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from edge_agent.pipelines.sinks.errors import MqttConfigError

# MQTT forbids U+0000 and wildcards in topic names; "/" would add a level; C0/C1 controls are
# "should not" in the spec and break log lines; lone surrogates cannot be encoded as UTF-8.
_NOT_IN_LEVEL = re.compile(r"[+#/\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_NOT_IN_PREFIX = re.compile(r"[+#\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# Home Assistant accepts only these characters in the object id of a discovery topic.
_NOT_IN_HA_ID = re.compile(r"[^A-Za-z0-9_-]")


def sanitize_level(name: str) -> str:
    """Turn any name into exactly one topic level.

    Wildcards, ``/`` and control characters become ``_``; a leading ``$`` (reserved for broker
    topics such as ``$SYS``, which wildcard subscriptions skip) becomes ``_``; an empty name
    becomes ``_``.
    """
    cleaned = _NOT_IN_LEVEL.sub("_", name)
    if cleaned.startswith("$"):
        cleaned = "_" + cleaned[1:]
    return cleaned or "_"


def validate_level(value: str, what: str) -> str:
    """Check that ``value`` is usable as one topic level as it is; ``what`` names the setting."""
    if not isinstance(value, str) or not value:
        raise MqttConfigError(f"{what} must be a non-empty string")
    if _NOT_IN_LEVEL.search(value) or value.startswith("$"):
        raise MqttConfigError(
            f"{what}={value!r} cannot be an MQTT topic level: it must not contain '/', '+', '#' or "
            "control characters, nor start with '$'"
        )
    return value


def validate_prefix(value: str, what: str = "topic_prefix") -> str:
    """Check a topic prefix: one or more non-empty levels, no wildcards, not a ``$`` topic."""
    if not isinstance(value, str) or not value:
        raise MqttConfigError(f"{what} must be a non-empty string such as 'edge-agent'")
    if _NOT_IN_PREFIX.search(value):
        raise MqttConfigError(f"{what}={value!r} must not contain '+', '#' or control characters")
    if value.startswith("$"):
        raise MqttConfigError(f"{what}={value!r} must not start with '$' (reserved for the broker)")
    if any(level == "" for level in value.split("/")):
        raise MqttConfigError(f"{what}={value!r} has an empty topic level: no leading, trailing or double '/'")
    return value


@dataclass(frozen=True)
class Topics:
    """Topic names of one agent; pure, cheap to build, safe to share between threads."""

    prefix: str
    agent_id: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.agent_id}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def stats(self) -> str:
        return f"{self.base}/stats"

    def predictions(self, stream: str) -> str:
        return f"{self.base}/{sanitize_level(stream)}/predictions"

    def answers(self, stream: str) -> str:
        """Vision-language answers about a stream (VLM_PROMPT, event prompts)."""
        return f"{self.base}/{sanitize_level(stream)}/vlm"

    def events(self, stream: str) -> str:
        return f"{self.base}/{sanitize_level(stream)}/events"

    def count(self, stream: str, subtopic: str) -> str:
        """A retained count; ``subtopic`` is ``zones/<zone>/<class>[/active]`` or
        ``lines/<line>/<class>/<in|out>`` (each level sanitised; zone and line names are already
        topic-safe, class names come from the model)."""
        levels = "/".join(sanitize_level(part) for part in subtopic.split("/"))
        return f"{self.base}/{sanitize_level(stream)}/{levels}"

    def snapshot(self, stream: str, cls: str) -> str:
        return f"{self.base}/{sanitize_level(stream)}/snapshots/{sanitize_level(cls)}"

    def predictions_filter(self) -> str:
        """Subscription filter matching every stream's predictions of this agent."""
        return f"{self.base}/+/predictions"


def ha_object_id(*parts: str) -> str:
    """A Home Assistant object id from free-form parts.

    Characters HA does not accept become ``_``. When that changes a part, a short hash of the
    original is appended so that ``front door`` and ``front_door`` stay two entities.
    """
    cleaned = []
    for part in parts:
        safe = _NOT_IN_HA_ID.sub("_", part) or "_"
        if safe != part:
            safe += "_" + hashlib.sha1(part.encode("utf-8", "surrogatepass")).hexdigest()[:6]
        cleaned.append(safe)
    return "_".join(cleaned)


def ha_config_topic(ha_prefix: str, component: str, object_id: str) -> str:
    """``<discovery prefix>/<component>/<object_id>/config``."""
    return f"{ha_prefix}/{component}/{object_id}/config"
