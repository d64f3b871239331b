"""Something a destination needs open (a broker connection, a channel on it): opened lazily,
shared by every send, opened again once it is lost.

A failed attempt waits (doubling, capped) before the next one; meanwhile every send is answered
"retry" at once with the reason, so a broker that is down costs no time per delivery and the
lane's schedule and circuit breaker see each failure as they would a refused webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Generic, TypeVar
from urllib.parse import unquote, urlsplit

from relay.logs import get_logger
from relay.redaction import excerpt, mask_url

log = get_logger("relay.brokers")
C = TypeVar("C")


# A stored reason is cut to this many bytes (after masking).
_REASON_BYTES: Final = 400
# Closing what was lost may wait on a dead peer: never for long.
_CLOSE_S: Final = 5.0


def url_secrets(url: str) -> list[str]:
    """A broker URL's password as written and percent-decoded: masked wherever a text repeats it."""
    password = urlsplit(url).password
    return [] if not password else list({password, unquote(password)})


def reason_text(kind: str, url: str, secrets: Sequence[str], detail: str) -> str:
    """One line on what went wrong with a broker, fit to store and show (credentials masked)."""
    return excerpt(f"{kind} {mask_url(url)}: {detail}".encode(), _REASON_BYTES, secrets).replace("\n", " ")


class Unavailable(Exception):
    """Not open now; the message is the reason, fit to store (credentials masked)."""


class Link(Generic[C]):
    def __init__(
        self,
        *,
        name: str,
        connect: Callable[[], Awaitable[C]],
        alive: Callable[[C], bool],
        close: Callable[[C], Awaitable[None]],
        reason: Callable[[BaseException], str],
        what: str = "connection",
        first_wait_s: float = 0.5,
        max_wait_s: float = 30.0,
    ) -> None:
        self._name = name  # masked: it is logged
        self._what = what
        self._connect = connect
        self._alive = alive
        self._close = close
        self._reason = reason
        self._first_wait_s = first_wait_s
        self._max_wait_s = max_wait_s
        self._conn: C | None = None
        self._pending: asyncio.Task[C] | None = None
        self._wait_s = 0.0
        self._next_try = 0.0
        self._last_error = ""
        self._closed = False
        self._closing: set[asyncio.Task[None]] = set()

    def alive_now(self) -> bool:
        return self._conn is not None and self._alive(self._conn)

    async def get(self) -> C:
        """The open thing, opening it first if needed; Unavailable when it cannot be had now."""
        conn = self._conn
        if conn is not None and self._alive(conn):
            return conn
        if self._closed:
            raise Unavailable(f"{self._name}: closed (the relay is stopping)")
        if self._pending is None:
            now = time.monotonic()
            if now < self._next_try:
                raise Unavailable(f"{self._last_error} (next attempt in {self._next_try - now:.1f} s)")
            self._pending = asyncio.create_task(self._attempt(conn), name=f"open {self._name}")
        # Shielded: a caller whose own timeout ends does not cancel the attempt others wait for.
        return await asyncio.shield(self._pending)

    async def _attempt(self, old: C | None) -> C:
        try:
            if old is not None:
                # Closed aside: a lost peer must not hold up the new one.
                self._conn = None
                closing = asyncio.create_task(self._close_quietly(old))
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
            try:
                conn = await self._connect()
            except Exception as exc:
                self._failed(exc)
                raise Unavailable(self._last_error) from None
            if self._closed:
                await self._close_quietly(conn)
                raise Unavailable(f"{self._name}: closed (the relay is stopping)")
            if self._wait_s:
                log.info(f"broker {self._what} open again", broker=self._name)
            self._wait_s = 0.0
            self._conn = conn
            return conn
        finally:
            self._pending = None

    def _failed(self, exc: Exception) -> None:
        if isinstance(exc, Unavailable):
            # What this depends on (the connection under a channel) failed, logged it and paces
            # its own retries: this one tries again as soon as that is back.
            self._last_error = str(exc)
            return
        self._last_error = self._reason(exc)
        self._wait_s = min(self._max_wait_s, max(self._first_wait_s, self._wait_s * 2))
        self._next_try = time.monotonic() + self._wait_s
        log.warning(
            f"broker {self._what} failed", broker=self._name, error=self._last_error, retry_in_s=self._wait_s
        )

    async def aclose(self) -> None:
        """Close it for good (shutdown): a later get() is Unavailable."""
        self._closed = True
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._close_quietly(conn)

    async def _close_quietly(self, conn: C) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._close(conn), _CLOSE_S)
