"""A per-subscriber circuit breaker: stop claiming after consecutive failures, probe after a cool-down.

Pure state machine; the caller passes the monotonic time. While open, nothing is claimed, so no
delivery's attempts are burnt on a subscriber known to be down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

State = Literal["closed", "open", "half_open"]


@dataclass(slots=True)
class CircuitBreaker:
    failure_threshold: int
    cooldown_s: float
    state: State = "closed"
    failures: int = 0
    opened_at: float = field(default=0.0)
    probing: bool = False

    def allowed(self, now: float) -> int | None:
        """How many deliveries may be claimed now: None for no limit, 0 for none, 1 for a probe."""
        if self.state == "closed":
            return None
        if self.state == "open" and now - self.opened_at >= self.cooldown_s:
            self.state = "half_open"
        if self.state == "half_open" and not self.probing:
            return 1
        return 0

    def claimed_probe(self) -> None:
        if self.state == "half_open":
            self.probing = True

    def seconds_until_probe(self, now: float) -> float:
        return max(0.0, self.cooldown_s - (now - self.opened_at)) if self.state == "open" else 0.0

    def record(self, success: bool, now: float) -> None:
        if success:
            self.state, self.failures, self.probing = "closed", 0, False
            return
        self.failures += 1
        if self.state == "half_open" or self.failures >= self.failure_threshold:
            self.state, self.opened_at, self.probing = "open", now, False

    def release_probe(self) -> None:
        """A claimed probe that was never attempted (shutdown): let the next one through."""
        self.probing = False
