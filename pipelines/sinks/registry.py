"""Which sinks exist and how each is built from the agent's configuration.

Adding a sink is a module of its own (the sink class and a ``from_settings`` factory) plus one
line in :data:`SINK_FACTORIES`. The supervisor builds whatever the factories return, in this
order, and never names a sink class. A factory returns None when its sink is not configured; a
sink with variables of its own reads them with its own settings model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from edge_agent.pipelines.sinks import mqtt, stdout
from edge_agent.pipelines.sinks.base import Sink
from edge_agent.pipelines.sinks.mqtt_config import MqttConfig


class SinkSettings(Protocol):
    """What the built-in sinks read from the agent's configuration (``agent.settings.Config``)."""

    @property
    def stdout_enabled(self) -> bool: ...

    @property
    def mqtt(self) -> MqttConfig | None: ...


@dataclass(frozen=True)
class SinkHooks:
    """Calls a sink may make back into the agent."""

    #: the sink's reader went away for good (stdout: a broken pipe); called from any thread
    reader_gone: Callable[[Sink], None] | None = None


SinkFactory = Callable[[SinkSettings, SinkHooks], Sink | None]

#: name -> factory, in the order the sinks are built and started.
SINK_FACTORIES: dict[str, SinkFactory] = {
    "mqtt": mqtt.from_settings,
    "stdout": stdout.from_settings,
}


def build_sinks(settings: SinkSettings, hooks: SinkHooks) -> list[Sink]:
    """The configured sinks, built (not started) in :data:`SINK_FACTORIES` order."""
    built = (factory(settings, hooks) for factory in SINK_FACTORIES.values())
    return [sink for sink in built if sink is not None]
