"""Rate and connection limits: a token bucket with the abuse rule built on it, shared by all the
connections of one user (or of one address, for anonymous ones), and per-user/per-address
connection counts."""

from __future__ import annotations

import time
from collections import Counter

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


class ClientLimits:
    """This process's per-client state: connection counts and the shared rate buckets.

    A client is a user id when authenticated, else an IP address: CLIENT_RATE_LIMIT is what one
    client may send over all its connections together (several tabs or sockets do not multiply
    it), and MAX_CONNECTIONS_PER_USER / MAX_CONNECTIONS_PER_IP bound how many it may hold.
    """

    def __init__(self) -> None:
        self.users: Counter[str] = Counter()
        self.ips: Counter[str] = Counter()
        self._buckets: dict[str, tuple[TokenBucket, int]] = {}

    def refusal(self, user_id: str | None, ip: str | None, per_user: int, per_ip: int) -> str | None:
        """Why one more connection of this client is refused (None when it is admitted)."""
        if user_id is not None and per_user and self.users[user_id] >= per_user:
            return f"too many connections for this user (at most {per_user} per server process)"
        if ip is not None and per_ip and self.ips[ip] >= per_ip:
            return f"too many connections from this address (at most {per_ip} per server process)"
        return None

    def opened(self, user_id: str | None, ip: str | None) -> None:
        if user_id is not None:
            self.users[user_id] += 1
        if ip is not None:
            self.ips[ip] += 1

    def closed(self, user_id: str | None, ip: str | None) -> None:
        for counter, key in ((self.users, user_id), (self.ips, ip)):
            if key is not None:
                counter[key] -= 1
                if counter[key] <= 0:
                    del counter[key]

    def bucket(self, key: str, rate: float, burst: int) -> TokenBucket:
        """The rate bucket of a client (created on first use); pair with `release(key)`."""
        bucket, holders = self._buckets.get(key) or (TokenBucket(rate, burst), 0)
        self._buckets[key] = (bucket, holders + 1)
        return bucket

    def release(self, key: str) -> None:
        bucket, holders = self._buckets[key]
        if holders <= 1:
            del self._buckets[key]
        else:
            self._buckets[key] = (bucket, holders - 1)
