"""Reconnection delays: exponential ceilings from reconnect_interval, a cap, full jitter, reset."""

from __future__ import annotations

import itertools
import random
import statistics

import pytest
from realtime_client import Backoff, create_sse_client, create_ws_client


def test_backoff_ceiling_doubles_from_the_initial_interval_up_to_the_cap():
    backoff = Backoff(initial=5, maximum=60)
    assert [backoff.ceiling(n) for n in range(7)] == [5, 10, 20, 40, 60, 60, 60]


def test_backoff_delays_stay_within_zero_and_each_attempts_ceiling():
    for seed in range(50):
        backoff = Backoff(initial=0.5, maximum=8, rng=random.Random(seed))
        delays = list(itertools.islice(backoff, 12))
        ceilings = [backoff.ceiling(n) for n in range(12)]
        assert all(0 <= delay <= ceiling for delay, ceiling in zip(delays, ceilings, strict=True))
        assert backoff.attempts == 12


def test_backoff_jitter_is_full_spreading_delays_over_the_whole_range():
    backoff = Backoff(initial=5, maximum=60, rng=random.Random(7))
    first_delays = []
    for _ in range(2000):
        first_delays.append(next(backoff))
        backoff.reset()
    assert min(first_delays) < 0.1 and max(first_delays) > 4.9
    assert statistics.mean(first_delays) == pytest.approx(2.5, abs=0.15)


def test_backoff_with_the_same_seed_repeats_the_same_delays():
    first = list(itertools.islice(Backoff(rng=random.Random(42)), 8))
    second = list(itertools.islice(Backoff(rng=random.Random(42)), 8))
    other = list(itertools.islice(Backoff(rng=random.Random(43)), 8))
    assert first == second
    assert first != other


def test_backoff_reset_starts_again_from_the_initial_ceiling():
    backoff = Backoff(initial=1, maximum=100, rng=random.Random(3))
    for _ in range(6):
        next(backoff)
    assert backoff.attempts == 6
    backoff.reset()
    assert backoff.attempts == 0
    assert next(backoff) <= 1


def test_backoff_survives_very_long_outages():
    backoff = Backoff(initial=5, maximum=60)
    assert backoff.ceiling(100_000) == 60


@pytest.mark.parametrize("arguments", [{"initial": -1}, {"maximum": -1}, {"factor": 0.5}])
def test_backoff_rejects_nonsense(arguments):
    with pytest.raises(ValueError):
        Backoff(**arguments)


@pytest.mark.parametrize("factory", [create_ws_client, create_sse_client])
def test_clients_build_their_backoff_from_reconnect_interval_and_an_injected_rng(factory):
    client = factory(reconnect_interval=2, max_reconnect_delay=30, rng=random.Random(1))
    expected = Backoff(2, 30, rng=random.Random(1))
    assert [client.backoff.ceiling(n) for n in range(6)] == [2, 4, 8, 16, 30, 30]
    assert list(itertools.islice(client.backoff, 5)) == list(itertools.islice(expected, 5))


@pytest.mark.parametrize("factory", [create_ws_client, create_sse_client])
def test_with_the_design_documents_settings_no_wait_exceeds_ten_seconds(factory):
    """A server that is back is rejoined within max(max_reconnect_delay, reconnect_interval)."""
    client = factory(host="localhost", port=8000, reconnect_interval=5, max_reconnect_attempts=10)
    assert [client.backoff.ceiling(n) for n in range(10)] == [5] + [10] * 9
    assert max(itertools.islice(client.backoff, 1000)) <= 10
