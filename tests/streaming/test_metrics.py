"""The latency histogram counted in plain integers and added to Prometheus each tick."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from streaming import metrics

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
SAMPLES = [0, 0.0005, 0.0004, 0.001, 0.00100001, 0.003, 0.05, 0.7, 2.5, 4.9, 5, 5.1, 60, 0.02] * 3


def histogram_text(observe_each: bool) -> str:
    registry = CollectorRegistry()
    histogram = Histogram("latency_probe_seconds", "probe", buckets=BUCKETS, registry=registry)
    if observe_each:
        for value in SAMPLES:
            histogram.observe(value)
    else:
        latencies = metrics.Latencies(histogram)
        assert latencies.bulk  # the private names it uses are there (prometheus-client is pinned)
        for value in SAMPLES[:20]:
            latencies.observe(value)
        latencies.publish()
        latencies.publish()  # nothing new: nothing added
        for value in SAMPLES[20:]:
            latencies.observe(value)
        latencies.publish()
    lines = generate_latest(registry).decode().splitlines()
    return "\n".join(line for line in lines if "_created" not in line)  # the creation time differs


def test_counted_observations_expose_as_observed_ones():
    assert histogram_text(observe_each=False) == histogram_text(observe_each=True)


def test_without_the_private_buckets_each_value_is_observed_at_once():
    class Plain:
        def __init__(self) -> None:
            self.seen: list[float] = []

        def observe(self, value: float) -> None:
            self.seen.append(value)

    plain = Plain()
    latencies = metrics.Latencies(plain)  # type: ignore[arg-type]
    assert not latencies.bulk
    latencies.observe(0.25)
    latencies.publish()
    assert plain.seen == [0.25]


@pytest.mark.django_db
def test_the_process_histogram_is_fed_by_the_tick():
    before = metrics.LATENCY._sum.get()
    metrics.latencies.observe(0.125)
    metrics.publish_tallies()
    assert metrics.LATENCY._sum.get() == pytest.approx(before + 0.125)
