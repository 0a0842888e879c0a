"""Latest-frame-wins handoff from a reader thread to the event loop.

One slot per stream holds at most one frame. A reader thread ``put``s every frame it decodes; the
inference stage ``take``s from the loop thread whenever it is ready. When the model is slower than
the camera, a new frame replaces the one nobody took yet and the replacement is counted in
``dropped``, so memory stays at one frame per stream however far inference falls behind: there is
no queue anywhere to grow.

For files played frame by frame (``wait_for_consumer=True``, the ``every`` mode) ``put`` instead
blocks the reader thread until the previous frame was taken, so decoding runs at the speed of
inference and nothing is dropped.

Waking the consumer: listeners registered with :meth:`add_listener` are called on the loop
thread (through ``call_soon_threadsafe``) when the slot goes from empty to holding a frame. One
inference task can thus wait on any number of slots with a single ``asyncio.Event``. A put that
replaces an untaken frame does not wake anyone again: the consumer was already told.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from edge_agent.pipelines.frames import Frame

# How often a put blocked in ``every`` mode re-checks its cancel event. The runner also calls
# ``wake_blocked`` when it stops a reader, so this only bounds the worst case.
_CANCEL_POLL_S = 0.1


class LatestFrameSlot:
    """A one-frame mailbox between one producer thread and the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, wait_for_consumer: bool = False) -> None:
        self._loop = loop
        self.wait_for_consumer = wait_for_consumer
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False
        self._listeners: list[Callable[[], object]] = []
        self.put_count = 0
        self.taken_count = 0
        self.dropped = 0

    # -- producer side (any thread) -------------------------------------------------------------

    def put(self, frame: Frame, *, cancel: threading.Event | None = None) -> bool:
        """Offer ``frame``. Returns True when it is in the slot, False when the slot is closed or
        (``every`` mode) ``cancel`` was set while waiting for the consumer.

        Live mode never blocks: an untaken frame is replaced and counted in ``dropped``.
        """
        with self._cond:
            if self._closed:
                return False
            if self.wait_for_consumer:
                while self._frame is not None and not self._closed:
                    if cancel is not None and cancel.is_set():
                        return False
                    self._cond.wait(_CANCEL_POLL_S)
                if self._closed:
                    return False
            was_empty = self._frame is None
            if not was_empty:
                self.dropped += 1
            self._frame = frame
            self.put_count += 1
            listeners = list(self._listeners) if was_empty else []
        for callback in listeners:
            self._call_on_loop(callback)
        return True

    def wake_blocked(self) -> None:
        """Make a put blocked in ``every`` mode re-check its cancel event now."""
        with self._cond:
            self._cond.notify_all()

    def _call_on_loop(self, callback: Callable[[], object]) -> None:
        try:
            self._loop.call_soon_threadsafe(callback)
        except RuntimeError:
            # The loop is closed (shutdown): nobody is left to wake.
            pass

    # -- consumer side (event loop) -------------------------------------------------------------

    def take(self) -> Frame | None:
        """The newest frame, or None. Never blocks; in ``every`` mode it releases the reader."""
        with self._cond:
            frame = self._frame
            if frame is None:
                return None
            self._frame = None
            self.taken_count += 1
            self._cond.notify_all()
            return frame

    def peek(self) -> Frame | None:
        """The waiting frame without taking it (for previews and tests)."""
        with self._cond:
            return self._frame

    @property
    def has_frame(self) -> bool:
        return self._frame is not None

    @property
    def closed(self) -> bool:
        return self._closed

    def add_listener(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` on the loop thread whenever a frame becomes available.

        If a frame is already waiting, the callback is scheduled once right away so a consumer
        attached late does not sleep past it.
        """
        with self._cond:
            self._listeners.append(callback)
            pending = self._frame is not None
        if pending:
            self._call_on_loop(callback)

    def remove_listener(self, callback: Callable[[], object]) -> None:
        with self._cond:
            try:
                self._listeners.remove(callback)
            except ValueError:
                pass

    def close(self) -> None:
        """Refuse further frames and release a blocked producer. An untaken frame is discarded and
        counted as dropped, so ``put_count == taken_count + dropped`` once the slot is closed."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            if self._frame is not None:
                self._frame = None
                self.dropped += 1
            self._cond.notify_all()

    def __repr__(self) -> str:
        mode = "every" if self.wait_for_consumer else "live"
        return (
            f"<LatestFrameSlot {mode} put={self.put_count} taken={self.taken_count} "
            f"dropped={self.dropped}{' closed' if self._closed else ''}>"
        )
