"""Errors raised by the sinks (MQTT configuration, unpublishable payloads)."""

from __future__ import annotations

from edge_agent.models.common.errors import EdgeAgentError


class SinkError(EdgeAgentError):
    """Base of every sink error."""


class MqttConfigError(SinkError):
    """The MQTT settings cannot work: a bad value, a missing or unreadable file, a bad TLS setup.

    Raised when the sink is built, so the agent fails at start-up with a message naming the
    setting, not later in the network thread.
    """

    permanent = True


class PayloadError(SinkError):
    """A payload cannot be encoded as JSON (a caller bug, not a broker or pipe problem)."""


# The MQTT sink's name for it, kept for callers that catch it by that name.
MqttPayloadError = PayloadError
