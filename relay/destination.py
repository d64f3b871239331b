"""Where a request goes: the `Destination` interface, and HTTP behind it (brokers implement it too).

A destination turns one request into one `Answer` — delivered, retry or dead, with what the
subscriber said — and never raises for anything the subscriber or the network does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from relay import retry
from relay.model import Outcome
from relay.request import Request
from relay.sender import Sender, SendError
from relay.settings import SubscriberSettings


@dataclass(frozen=True, slots=True)
class Answer:
    outcome: Outcome
    # The HTTP status (None: no response), the reason when not delivered, the subscriber's
    # Retry-After in seconds, and the start of its response (raw: the caller scrubs it).
    status: int | None
    error: str | None
    retry_after_s: float | None = None
    body: bytes = b""


class Destination(Protocol):
    async def send(self, request: Request, timeout_s: float, at: datetime) -> Answer: ...

    async def aclose(self) -> None: ...


class HttpDestination:
    """A webhook: POST through the configured sender, the response classified."""

    def __init__(self, sender: Sender) -> None:
        self._sender = sender

    async def send(self, request: Request, timeout_s: float, at: datetime) -> Answer:
        try:
            response = await self._sender.post(request.url, request.body, request.headers, timeout_s)
        except SendError as exc:
            return Answer("retry", None, str(exc))
        outcome = retry.classify(response.status)
        if outcome == "delivered":
            return Answer(outcome, response.status, None, None, response.body)
        wait = retry.retry_after_s(response.headers, at) if outcome == "retry" else None
        return Answer(outcome, response.status, f"HTTP {response.status}", wait, response.body)

    async def aclose(self) -> None:
        """The sender belongs to whoever made it (the daemon, or send-test): it closes it."""


def destinations_for(
    subscribers: Mapping[str, SubscriberSettings], http: Destination
) -> dict[str, Destination]:
    """Each configured subscriber's destination, chosen by its URL's scheme (webhooks share one)."""
    return {name: http for name in subscribers}
