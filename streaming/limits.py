"""Per-connection rate limiting: a token bucket and the abuse rule built on it."""

from __future__ import annotations

import time

ABUSE_SECONDS = 10.0


class TokenBucket:
    """`rate` tokens per second, at most `burst` banked; `take()` is False when empty.

    `abusive` turns true once a connection has stayed over its limit for ABUSE_SECONDS: from
    its first refused frame until a frame is accepted with at least one token to spare.
    """

    __slots__ = ("burst", "limited_since", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.updated = time.monotonic()
        self.limited_since: float | None = None

    def take(self, now: float | None = None) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            if self.tokens >= 1:
                self.limited_since = None
            return True
        if self.limited_since is None:
            self.limited_since = now
        return False

    def abusive(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return self.limited_since is not None and now - self.limited_since >= ABUSE_SECONDS
