"""NATS JetStream destination: publish, delivered on the stream's PubAck; nats-py.

Delivered only when a stream has stored the message (or already had it: a PubAck marked
duplicate, within the stream's duplicate window, for the same `Nats-Msg-Id`). No stream capturing
the subject (no responders), an error PubAck (a full stream with discard=new, a mismatch), a
timeout or a lost connection is a retry. The relay never creates streams: the operator does.

One connection per URL and instance, shared by its subscribers; nats-py reconnects it in the
background (a send while it is away is a retry at once), and a connection that gave up is made
again with backoff. Publishes are pipelined: each waits for its own PubAck on the connection's
one reply subscription, as many at once as the lane lets in flight.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Final

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext

from relay import broker_routes
from relay.brokers.link import Link, Unavailable, reason_text, url_secrets
from relay.brokers.message import nats_headers, route_values
from relay.logs import get_logger
from relay.model import Answer
from relay.redaction import mask_url
from relay.request import Request
from relay.tracing import name_destination

log = get_logger("relay.brokers")
_REASON_CHARS: Final = 200
# Between nats-py's own attempts to reconnect a lost connection (it keeps trying).
_RECONNECT_WAIT_S: Final = 1.0


class NatsBroker:
    """The connection to one NATS URL (and its JetStream context), shared by its subscribers."""

    def __init__(self, url: str, *, connect_timeout_s: float = 10.0) -> None:
        self.url = url
        self.shown = mask_url(url)
        self.secrets = url_secrets(url)
        self._connect_timeout_s = connect_timeout_s
        self._users = 0
        self._last_error: Exception | None = None
        self.link: Link[tuple[Client, JetStreamContext]] = Link(
            name=self.shown,
            connect=self._connect,
            alive=lambda pair: not pair[0].is_closed,
            close=lambda pair: pair[0].close(),
            reason=self.reason,
        )

    async def _connect(self) -> tuple[Client, JetStreamContext]:
        self._last_error = None
        try:
            client = await self._connect_once()
        except nats.errors.NoServersError:
            # nats-py says only that no server answered: the last failure seen tells why.
            raise self._last_error or nats.errors.NoServersError() from None
        # ... and once connected, nats-py reconnects a lost one by itself without end (it reads
        # these options when the connection fails).
        client.options["max_reconnect_attempts"] = -1
        client.options["reconnect_time_wait"] = _RECONNECT_WAIT_S
        return client, client.jetstream()

    async def _connect_once(self) -> Client:
        return await nats.connect(
            self.url,
            connect_timeout=max(1, round(self._connect_timeout_s)),
            # A first connection gives up after a second try (the Link's backoff paces the next) ...
            max_reconnect_attempts=1,
            reconnect_time_wait=0.1,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            name="it-relay",
        )

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = exc
        log.debug("NATS client error", broker=self.shown, error=self.reason(exc))

    async def _on_disconnected(self) -> None:
        if self._users > 0:  # not our own close at shutdown
            log.warning("NATS connection lost, reconnecting", broker=self.shown)

    async def _on_reconnected(self) -> None:
        log.info("NATS connection restored", broker=self.shown)

    def reason(self, exc: BaseException) -> str:
        """One line on what went wrong, credentials masked."""
        return reason_text("NATS", self.url, self.secrets, describe(exc))

    def acquire(self) -> NatsBroker:
        self._users += 1
        return self

    async def release(self) -> None:
        """A destination is done with it; the last one closes the connection."""
        self._users -= 1
        if self._users <= 0:
            await self.link.aclose()


def describe(exc: BaseException) -> str:
    """A NATS failure in the operator's words (never the URL: the caller names the broker)."""
    if isinstance(exc, nats.js.errors.NoStreamResponseError | nats.errors.NoRespondersError):
        return "no stream captures this subject (no responders): create one, or fix subject"
    if isinstance(exc, nats.js.errors.APIError):
        text = (exc.description or "error")[:_REASON_CHARS]
        return f"JetStream refused the message: {text} (code {exc.code}, error {exc.err_code})"
    if isinstance(exc, nats.errors.AuthorizationError):
        return "authorization refused (the URL's user and password or token)"
    if isinstance(exc, nats.errors.TimeoutError | TimeoutError):
        return "timed out"
    if isinstance(exc, nats.errors.NoServersError):
        return "connection failed: no server answered"
    if isinstance(exc, nats.errors.ConnectionClosedError | nats.errors.ConnectionReconnectingError):
        return "connection lost (unacknowledged messages are retried)"
    if isinstance(exc, OSError) and exc.strerror:
        return f"connection failed: {exc.strerror}"
    text = str(exc).removeprefix("nats: ")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class NatsDestination:
    """A subscriber whose URL is nats:// or tls://: publish to its subject, wait for the PubAck."""

    def __init__(self, broker: NatsBroker, *, subscriber: str, subject: broker_routes.Template) -> None:
        self._broker = broker.acquire()
        self._subscriber = subscriber
        self._subject = subject

    async def send(self, request: Request, timeout_s: float, at: datetime) -> Answer:
        subject = self._subject.render(route_values(request, self._subscriber))
        problem = broker_routes.nats_subject_problem(subject)
        if problem is not None:
            # The same message renders the same subject on every retry: waiting cannot help.
            return Answer("dead", None, f"subject for this event {problem}")
        name_destination(subject)
        headers = nats_headers(request, self._subscriber)
        try:
            async with asyncio.timeout(timeout_s):
                client, stream = await self._broker.link.get()
                if not client.is_connected:
                    return Answer(
                        "retry", None, self._broker.reason(nats.errors.ConnectionReconnectingError())
                    )
                await stream.publish(subject, request.body, timeout=timeout_s, headers=headers)
        except Unavailable as exc:
            return Answer("retry", None, str(exc))
        except TimeoutError:
            return Answer("retry", None, self._broker.reason(TimeoutError()) + f" after {timeout_s:g} s")
        except (nats.errors.Error, OSError) as exc:
            return Answer("retry", None, self._broker.reason(exc))
        return Answer("delivered", None, None)

    async def aclose(self) -> None:
        await self._broker.release()
