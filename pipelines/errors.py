"""Errors of the stream path (sources, slots). Camera trouble is never raised to callers: a
runner reports it in its stats and reconnects; these are for configuration mistakes a user must
fix, and for internal signalling between the reader thread and its runner."""

from __future__ import annotations

from edge_agent.models.common.errors import EdgeAgentError


class StreamError(EdgeAgentError):
    """Base of every stream-side error."""


class SourceConfigError(StreamError):
    """A stream URL or its options cannot work (unsupported scheme, missing file, bad value)."""

    permanent = True


class SourceStalledError(StreamError):
    """The source delivered no frame for longer than its stall timeout."""


class SourceEndedError(StreamError):
    """A live source ended its stream (a killed RTSP server ends PyAV's loop without an error)."""


class StateError(EdgeAgentError):
    """The state directory or its database cannot be used (not writable, locked, too new)."""
