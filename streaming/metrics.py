"""Prometheus metrics at `/metrics` (prometheus-client; multi-process safe).

Per-message work stays off the metrics path: publishes and deliveries are counted in plain integers
and the registry's tick moves them into the counters. With PROMETHEUS_MULTIPROC_DIR set
(several server processes on one host), values are aggregated across processes.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections import Counter as Tally

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

CONNECTIONS = Gauge(
    "realtime_connections", "Open connections of this process.", ["transport"], multiprocess_mode="livesum"
)
SUBSCRIPTIONS = Gauge(
    "realtime_subscriptions", "Explicit channel subscriptions of this process.", multiprocess_mode="livesum"
)
PUBLISHED = Counter("realtime_messages_published_total", "Messages handed to the bus.", ["persisted"])
DELIVERED = Counter("realtime_messages_delivered_total", "Messages handed to a connection.", ["transport"])
LATENCY = Histogram(
    "realtime_publish_to_deliver_seconds",
    "From the publish handing a message to the bus to this process fanning it out.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
DISCONNECTS = Counter("realtime_disconnects_total", "Connections closed by the server.", ["reason"])
AUTH_FAILURES = Counter("realtime_auth_failures_total", "Refused credentials.", ["transport"])
BUS_FAILURES = Counter("realtime_bus_failures_total", "Publishes the bus refused (Redis down).")
UNRECOVERABLE = Counter(
    "realtime_messages_unrecoverable_total",
    "Persisted messages the bus lost that history no longer held when the process recovered the gap.",
)

DISCONNECT_REASONS = {4408: "idle", 4409: "admin", 4429: "slow_consumer_or_rate_limit", 4401: "unauthenticated"}


class Tallies:
    """A labelled counter counted in plain integers on the hot path, published to Prometheus each tick."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self.pending: Tally[str] = Tally()

    def add(self, label: str, count: int = 1) -> None:
        self.pending[label] += count

    def publish(self) -> None:
        pending, self.pending = self.pending, Tally()
        for label, count in pending.items():
            self.counter.labels(label).inc(count)


class Latencies:
    """A histogram's observations counted per bucket in plain integers on the hot path, added to
    the Prometheus histogram each tick: `Histogram.observe` takes two locks and walks the buckets
    in Python, once per publish per process (bench/OPTIMISATIONS.md, step 21).
    Upstream: prometheus-client has no bulk observe; its bucket values are private (pinned by
    tests/streaming/test_metrics.py), and without them each value is observed at once."""

    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram
        bounds = getattr(histogram, "_upper_bounds", None)
        buckets, total = getattr(histogram, "_buckets", None), getattr(histogram, "_sum", None)
        self.bulk = bool(bounds) and buckets is not None and len(buckets) == len(bounds) and total is not None
        self.bounds: list[float] = list(bounds) if self.bulk else []
        self.counts = [0] * len(self.bounds)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        if not self.bulk:
            self.histogram.observe(seconds)
            return
        self.counts[bisect_left(self.bounds, seconds)] += 1  # the first bucket whose bound is >= it
        self.total += seconds

    def publish(self) -> None:
        if not self.bulk or not any(self.counts):
            return
        counts, total = self.counts, self.total
        self.counts, self.total = [0] * len(self.bounds), 0.0
        for bucket, count in zip(self.histogram._buckets, counts, strict=True):
            if count:
                bucket.inc(count)
        self.histogram._sum.inc(total)


deliveries = Tallies(DELIVERED)
published = Tallies(PUBLISHED)
latencies = Latencies(LATENCY)


def publish_tallies() -> None:
    """Called by the registry's tick: what the hot paths counted, into the counters."""
    deliveries.publish()
    published.publish()
    latencies.publish()


def record_disconnect(code: int) -> None:
    reason = DISCONNECT_REASONS.get(int(code))
    if reason is not None:
        DISCONNECTS.labels(reason).inc()


def exposition() -> tuple[bytes, str]:
    """The metrics text of this process (or of all processes in multi-process mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
