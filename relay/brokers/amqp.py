"""RabbitMQ (AMQP 0-9-1) destination: publisher confirms, mandatory, persistent; aio-pika.

Delivered only on the broker's ack of this message. A nack (a full queue with reject-publish), an
unroutable return, a channel error (a missing exchange, a refused permission), a lost connection
(its unconfirmed messages are unknown), an authentication refused or a timeout is a retry. The
relay never declares anything: the exchange, the queues and their bindings are the operator's.

One connection per broker URL and instance, and one confirm channel per subscriber on it: a
channel error closes its channel with every unconfirmed message on it, so one subscriber's
missing exchange never fails another's publishes (and returns, matched by message id, stay
unambiguous). Publishes are pipelined: each waits for its own confirm, as many at once as the
lane lets in flight.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Final

import aio_pika
import aiormq
import aiormq.exceptions as amqp_errors
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, HeadersType
from pamqp.commands import Basic

from relay import broker_routes
from relay.brokers.link import Link, Unavailable, reason_text, url_secrets
from relay.brokers.message import CONTENT_TYPE, amqp_headers, route_values
from relay.model import Answer
from relay.redaction import mask_url
from relay.request import Request
from relay.tracing import name_destination

_REASON_CHARS: Final = 200


class AmqpBroker:
    """The connection to one RabbitMQ URL, shared by the subscribers that name it."""

    def __init__(self, url: str, *, connect_timeout_s: float = 10.0) -> None:
        self.url = url
        self.shown = mask_url(url)
        self.secrets = url_secrets(url)
        self._connect_timeout_s = connect_timeout_s
        self._users = 0
        self.link: Link[AbstractConnection] = Link(
            name=self.shown,
            connect=self._connect,
            # A connection the broker dropped is not closed, only no longer connected.
            alive=lambda conn: conn.connected.is_set() and not conn.is_closed,
            close=lambda conn: conn.close(),
            reason=self.reason,
        )

    async def _connect(self) -> AbstractConnection:
        return await aio_pika.connect(self.url, timeout=self._connect_timeout_s)

    def reason(self, exc: BaseException) -> str:
        """One line on what went wrong, credentials masked."""
        return reason_text("AMQP", self.url, self.secrets, describe(exc))

    def acquire(self) -> AmqpBroker:
        self._users += 1
        return self

    async def release(self) -> None:
        """A destination is done with it; the last one closes the connection."""
        self._users -= 1
        if self._users <= 0:
            await self.link.aclose()


def describe(exc: BaseException) -> str:
    """An AMQP failure in the operator's words (never the URL: the caller names the broker)."""
    if isinstance(exc, amqp_errors.PublishError):
        frame = exc.frame
        if isinstance(frame, Basic.Return):
            return (
                f"unroutable: returned by the broker ({frame.reply_code} {frame.reply_text}): "
                f"no queue bound to exchange {frame.exchange!r} for routing key {frame.routing_key!r}"
            )
        return "unroutable: returned by the broker"
    if isinstance(exc, amqp_errors.DeliveryError):
        return "nacked by the broker: not taken (a full queue with overflow reject-publish, or an internal error)"
    if isinstance(exc, amqp_errors.ProbableAuthenticationError | amqp_errors.AuthenticationError):
        return "authentication refused (the URL's user and password, or the vhost's permissions)"
    if isinstance(exc, amqp_errors.ChannelClosed):
        return f"channel error: {_closing_text(exc)}"
    if isinstance(exc, amqp_errors.ConnectionClosed):
        return f"connection closed: {_closing_text(exc)} (unconfirmed messages are retried)"
    if isinstance(exc, RuntimeError) and "closed" in str(exc):
        return "channel or connection closed under the publish (unconfirmed messages are retried)"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionError | OSError):
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return f"connection failed: {text or type(exc).__name__}"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _closing_text(exc: BaseException) -> str:
    # aiormq's closing exceptions carry (reply_code, reply_text), e.g. 404 "NOT_FOUND - no exchange".
    parts = [str(a) for a in exc.args if a not in (None, "")]
    return (" ".join(parts) or type(exc).__name__)[:_REASON_CHARS]


class AmqpDestination:
    """A subscriber whose URL is amqp:// or amqps://: publish to its exchange, wait for the confirm."""

    def __init__(
        self,
        broker: AmqpBroker,
        *,
        subscriber: str,
        exchange: str,
        routing_key: broker_routes.Template,
    ) -> None:
        self._broker = broker.acquire()
        self._subscriber = subscriber
        self._exchange_name = exchange
        self._routing_key = routing_key
        self._channel: Link[tuple[AbstractChannel, AbstractExchange]] = Link(
            name=f"{broker.shown} exchange {exchange!r} ({subscriber})",
            what="channel",
            connect=self._open,
            alive=lambda pair: not pair[0].is_closed and broker.link.alive_now(),
            close=lambda pair: pair[0].close(),
            reason=broker.reason,
            # The operator creating a missing exchange is seen within seconds.
            max_wait_s=5.0,
        )

    async def _open(self) -> tuple[AbstractChannel, AbstractExchange]:
        connection = await self._broker.link.get()
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        if not self._exchange_name:
            return channel, channel.default_exchange
        # Checked (passively: never created) before anything is published: a publish to a missing
        # exchange closes the channel under the publishes pipelined behind it, and aiormq may then
        # write those on the closed channel, which RabbitMQ answers by closing the whole connection.
        return channel, await channel.get_exchange(self._exchange_name, ensure=True)

    async def send(self, request: Request, timeout_s: float, at: datetime) -> Answer:
        key = self._routing_key.render(route_values(request, self._subscriber))
        problem = broker_routes.amqp_key_problem(key)
        if problem is not None:
            # The same message renders the same key on every retry: waiting cannot help.
            return Answer("dead", None, f"routing_key for this event {problem}")
        # The default exchange ("") is RabbitMQ's amq.default.
        name_destination(self._exchange_name or "amq.default", routing_key=key)
        headers: HeadersType = {**amqp_headers(request)}
        message = aio_pika.Message(
            request.body,
            headers=headers,
            content_type=CONTENT_TYPE,
            message_id=request.event_id,
            type=request.event_type,
            timestamp=at,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        try:
            async with asyncio.timeout(timeout_s):
                _, exchange = await self._channel.get()
                confirm = await exchange.publish(message, key, mandatory=True)
        except Unavailable as exc:
            return Answer("retry", None, str(exc))
        except TimeoutError:
            return Answer("retry", None, self._broker.reason(TimeoutError()) + f" after {timeout_s:g} s")
        except (aiormq.exceptions.AMQPError, RuntimeError, OSError) as exc:
            # aiormq raises RuntimeError (ChannelInvalidStateError, "... closed") for a channel or a
            # connection lost under the publish.
            return Answer("retry", None, self._broker.reason(exc))
        if isinstance(confirm, Basic.Ack):
            return Answer("delivered", None, None)
        # With on_return_raises a return raises; anything else is not a confirmation.
        return Answer("retry", None, self._broker.reason(RuntimeError(f"no ack ({type(confirm).__name__})")))

    async def aclose(self) -> None:
        try:
            await self._channel.aclose()
        finally:
            await self._broker.release()
