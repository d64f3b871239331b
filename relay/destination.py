"""Where a request goes: the `Destination` interface, and HTTP behind it (brokers implement it too).

A destination turns one request into one `Answer` — delivered, retry or dead, with what the
subscriber said — and never raises for anything the subscriber or the network does.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Protocol

from relay import broker_routes, retry
from relay.model import Answer as Answer  # re-exported: every destination answers with it
from relay.request import Request
from relay.sender import Sender, SendError
from relay.settings import SubscriberSettings


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
        outcome = retry.classify(response.status, request.retry_on_status)
        if outcome == "delivered":
            return Answer(outcome, response.status, None, None, response.body)
        wait = retry.retry_after_s(response.headers, at) if outcome == "retry" else None
        return Answer(outcome, response.status, f"HTTP {response.status}", wait, response.body)

    async def aclose(self) -> None:
        """The sender belongs to whoever made it (the daemon, or send-test): it closes it."""


class Watched:
    """A destination that keeps its last answer (send-test: a broker's has no HTTP status)."""

    def __init__(self, destination: Destination) -> None:
        self._destination = destination
        self.answer: Answer | None = None

    async def send(self, request: Request, timeout_s: float, at: datetime) -> Answer:
        self.answer = await self._destination.send(request, timeout_s, at)
        return self.answer

    async def aclose(self) -> None:
        await self._destination.aclose()


def destinations_for(
    subscribers: Mapping[str, SubscriberSettings], http: Destination
) -> dict[str, Destination]:
    """Each configured subscriber's destination, chosen by its URL's scheme: webhooks share `http`;
    a broker's subscribers share one connection per URL (each closes its part with `aclose`)."""
    out: dict[str, Destination] = {}
    brokers: dict[str, object] = {}
    for name, conf in subscribers.items():
        if conf.kind == "http":
            out[name] = http
        elif conf.kind == "amqp":
            out[name] = _amqp(name, conf, brokers)
        else:
            out[name] = _nats(name, conf, brokers)
    return out


# The broker clients load only when a broker subscriber is configured: every command imports this
# module, and aio-pika with nats-py take ~0.15 s to import.
def _amqp(name: str, conf: SubscriberSettings, brokers: dict[str, object]) -> Destination:
    from relay.brokers.amqp import AmqpBroker, AmqpDestination

    url = conf.broker_url()
    broker = brokers.get(url)
    if not isinstance(broker, AmqpBroker):
        broker = brokers[url] = AmqpBroker(url)
    return AmqpDestination(
        broker,
        subscriber=name,
        exchange=conf.exchange or "",
        routing_key=broker_routes.parse(conf.routing_key or ""),
    )


def _nats(name: str, conf: SubscriberSettings, brokers: dict[str, object]) -> Destination:
    from relay.brokers.nats import NatsBroker, NatsDestination

    url = conf.broker_url()
    broker = brokers.get(url)
    if not isinstance(broker, NatsBroker):
        broker = brokers[url] = NatsBroker(url)
    return NatsDestination(broker, subscriber=name, subject=broker_routes.parse(conf.subject or ""))
