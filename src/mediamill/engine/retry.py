"""Retry policy: exponential back-off with full jitter, capped (AWS architecture blog's "full jitter")."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    base_seconds: float = 2.0
    max_seconds: float = 600.0

    def ceiling(self, attempt: int) -> float:
        """The upper bound of the delay before retry number ``attempt`` (0-based)."""
        return min(self.max_seconds, self.base_seconds * float(2 ** min(attempt, 40)))

    def next_delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """A delay drawn uniformly from [0, ceiling]: spreads retries so they never stampede."""
        return (rng or random).uniform(0, self.ceiling(attempt))
