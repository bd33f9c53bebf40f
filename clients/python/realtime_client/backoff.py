"""Delays between reconnection attempts: exponential growth, a cap, and full jitter."""

from __future__ import annotations

import random
from collections.abc import Iterator


class Backoff(Iterator[float]):
    """An endless iterator of reconnection delays, reset after a stable connection.

    The delay before attempt n (counting from 0) is drawn uniformly from
    ``[0, min(maximum, initial * factor**n)]``: "full jitter", so that every client dropped by the
    same server restart does not come back in the same instant. `attempts` counts the delays
    handed out since the last `reset()`. Pass a seeded `random.Random` for reproducible delays.
    """

    def __init__(
        self,
        initial: float = 5.0,
        maximum: float = 10.0,
        factor: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        if initial < 0 or maximum < 0 or factor < 1:
            raise ValueError("initial and maximum must be >= 0 and factor >= 1")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.rng = rng or random.Random()
        self.attempts = 0

    def ceiling(self, attempt: int) -> float:
        """The largest delay attempt number `attempt` (from 0) can get."""
        # Stop multiplying once past the cap: factor**attempt overflows for long outages.
        ceiling = self.initial
        for _ in range(attempt):
            if ceiling >= self.maximum:
                break
            ceiling *= self.factor
        return min(self.maximum, ceiling)

    def __next__(self) -> float:
        delay = self.rng.uniform(0, self.ceiling(self.attempts))
        self.attempts += 1
        return delay

    def reset(self) -> None:
        """Start again from the initial delay (called once a connection has proved stable)."""
        self.attempts = 0
