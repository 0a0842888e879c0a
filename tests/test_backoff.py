"""Reconnect backoff: growth, cap, jitter bounds, reset after a healthy session."""

from __future__ import annotations

import random

import pytest

from edge_agent.pipelines.backoff import Backoff, backoff_delay


def test_delays_double_up_to_the_cap_without_jitter() -> None:
    delays = [backoff_delay(n, 1.0, 30.0, jitter=0.0) for n in range(8)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_huge_attempt_numbers_do_not_overflow() -> None:
    assert backoff_delay(10_000, 1.0, 30.0, jitter=0.0) == 30.0
    assert backoff_delay(10_000, 0.5, 0.5, jitter=0.0) == 0.5


def test_jitter_only_shortens_and_stays_within_its_fraction() -> None:
    for n in range(10):
        base = backoff_delay(n, 1.0, 30.0, jitter=0.0)
        lo = backoff_delay(n, 1.0, 30.0, jitter=0.2, rand=0.999999)
        hi = backoff_delay(n, 1.0, 30.0, jitter=0.2, rand=0.0)
        assert hi == base
        assert base * 0.8 <= lo < base


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempt": -1},
        {"initial": 0.0},
        {"maximum": 0.5},  # below initial
        {"factor": 0.5},
        {"jitter": 1.0},
        {"rand": 1.0},
    ],
)
def test_rejects_bad_numbers(kwargs: dict) -> None:
    args = {"attempt": 0, "initial": 1.0, "maximum": 30.0} | kwargs
    with pytest.raises(ValueError):
        backoff_delay(args.pop("attempt"), args.pop("initial"), args.pop("maximum"), **args)


def test_stateful_backoff_grows_resets_and_spreads() -> None:
    b = Backoff(1.0, 8.0, jitter=0.2, reset_after=10.0, rng=random.Random(7))
    delays = [b.next_delay() for _ in range(6)]
    assert all(x > y * 1.4 for x, y in zip(delays[1:4], delays[:3], strict=True))  # grows
    assert all(6.4 <= d <= 8.0 for d in delays[3:])  # capped, jittered
    b.record_session(3.0)  # short session: still an outage, keep growing
    assert b.next_delay() >= 6.4
    b.record_session(10.0)  # a healthy session starts over
    assert 0.8 <= b.next_delay() <= 1.0
    # two runners with different RNGs don't retry in lockstep
    a1 = Backoff(rng=random.Random(1))
    a2 = Backoff(rng=random.Random(2))
    assert [a1.next_delay() for _ in range(5)] != [a2.next_delay() for _ in range(5)]
