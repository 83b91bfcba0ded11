"""Per-caller token buckets, in process.

Each caller (a token's subject once verified, or a client address without a
valid token) has a bucket of ``burst`` requests refilled at ``per_minute``.
One node needs nothing more: its buckets see all of its traffic. With several
nodes behind a load balancer each node would grant its own budget; see the
README's operations section for what replaces this then.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets by key; the least recently used are forgotten past ``max_keys``.

    A forgotten bucket comes back full, which grants a caller no more than its
    burst: the same as a caller seen for the first time.
    """

    def __init__(
        self,
        per_minute: int,
        burst: int,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_minute <= 0 or burst <= 0:
            raise ValueError("Rate limits must be positive: set PLEDGEQL_RATE_LIMIT_PER_MINUTE and _BURST above 0")
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def take(self, key: str) -> float:
        """Spend one request of ``key``'s budget: 0.0 when allowed, else the seconds until it would be."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = Bucket(self.burst, now)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after_header(seconds: float) -> str:
    """Whole seconds, rounded up, at least 1 (RFC 9110 delay-seconds)."""
    return str(max(1, math.ceil(seconds)))
