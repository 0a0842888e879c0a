"""Reconnect delays: exponential growth, a cap, jitter, and a reset after a healthy period.

Jitter spreads the retries of many cameras that went down together (a switch reboot) so they do
not all hit the network and the decoder in the same instant when it comes back.
"""

from __future__ import annotations

import math
import random


def backoff_delay(
    attempt: int,
    initial: float,
    maximum: float,
    *,
    factor: float = 2.0,
    jitter: float = 0.2,
    rand: float = 0.0,
) -> float:
    """Delay before retry number ``attempt`` (0-based): ``initial * factor**attempt`` capped at
    ``maximum``, then shortened by up to ``jitter`` (a fraction) using ``rand`` in [0, 1).

    Pure: pass ``rand`` from your own RNG. With the defaults the delays run 1, 2, 4, 8, 16, 30, 30...
    seconds, each minus up to 20 %.
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    if initial <= 0 or maximum < initial:
        raise ValueError("need 0 < initial <= maximum")
    if factor < 1:
        raise ValueError("factor must be >= 1")
    if not 0 <= jitter < 1:
        raise ValueError("jitter must be in [0, 1)")
    if not 0 <= rand < 1:
        raise ValueError("rand must be in [0, 1)")
    # Compare exponents rather than computing factor**attempt, which overflows for long outages.
    if factor == 1 or attempt < math.log(maximum / initial, factor):
        base = min(initial * factor**attempt, maximum)
    else:
        base = maximum
    return base * (1.0 - jitter * rand)


class Backoff:
    """Stateful wrapper: one per stream. Not thread-safe (lives on the event loop)."""

    def __init__(
        self,
        initial: float = 1.0,
        maximum: float = 30.0,
        *,
        factor: float = 2.0,
        jitter: float = 0.2,
        reset_after: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        backoff_delay(0, initial, maximum, factor=factor, jitter=jitter)  # validates the numbers
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self.reset_after = reset_after
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        delay = backoff_delay(
            self.attempt, self.initial, self.maximum, factor=self.factor, jitter=self.jitter, rand=self._rng.random()
        )
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0

    def record_session(self, healthy_seconds: float) -> None:
        """Tell the backoff how long the connection that just ended delivered frames; a session
        at least ``reset_after`` long counts as healthy and starts the next outage from scratch."""
        if healthy_seconds >= self.reset_after:
            self.reset()
