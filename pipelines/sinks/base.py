"""The interface every sink offers the supervisor."""

from __future__ import annotations

from typing import Any, Protocol


class Sink(Protocol):
    """A destination for prediction messages and periodic stats.

    ``publish_*`` must never block: they are called on the event loop for every processed frame.
    """

    async def start(self) -> None: ...

    def publish_prediction(self, stream: str, payload: dict[str, Any]) -> None: ...

    def publish_stats(self, payload: dict[str, Any]) -> None: ...

    def publish_answer(self, stream: str, payload: dict[str, Any]) -> None:
        """A vision-language answer about ``stream`` (its own topic); never blocks."""

    async def close(self, timeout: float) -> None: ...

    def counters(self) -> dict[str, Any]: ...
