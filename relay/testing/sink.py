"""A local webhook receiver: records every request and answers as it is told to.

One implementation for the demo (every subscriber on one server, signatures verified) and the
tests (scripted answers: failures, delays, Retry-After). The benchmark's sink is a raw asyncio
server instead (bench/sink.py): it must cost less than any client it measures.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Self

from aiohttp import web
from standardwebhooks import Webhook


@dataclass(frozen=True)
class Reply:
    status: int = 200
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    verified: bool | None = None  # None: the sink was not asked to verify signatures


class Sink:
    """An aiohttp server on 127.0.0.1: `script(path, Reply, ...)` queues answers for a path.

    With `secret`, every request's Standard Webhooks signature is checked: a bad one is answered
    401 and counted, never recorded as received.
    """

    def __init__(self, secret: str | None = None, *, patience: float = 1.0) -> None:
        self.requests: list[Received] = []
        self.rejected_signatures = 0
        self._verifier = Webhook(secret) if secret else None
        self._patience = patience
        self._script: dict[str, deque[Reply]] = defaultdict(deque)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def script(self, path: str, *replies: Reply) -> None:
        self._script[path].extend(replies)

    def at(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        queue = self._script.get(request.path)
        reply = queue.popleft() if queue else Reply()
        headers = {k.lower(): v for k, v in request.headers.items()}
        verified: bool | None = None
        if self._verifier is not None and 200 <= reply.status < 300:
            try:
                self._verifier.verify(body, headers)
                verified = True
            except Exception:
                self.rejected_signatures += 1
                return web.Response(status=401)
        async with self._changed:
            self.requests.append(Received(request.path, headers, body, time.monotonic(), verified))
            self._changed.notify_all()
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        return web.Response(status=reply.status, headers=reply.headers, body=reply.body)

    async def wait_for(self, predicate: Callable[[list[Received]], bool], within: float = 10.0) -> None:
        """Wait until predicate(requests) holds; raise TimeoutError after `within` seconds."""
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: predicate(self.requests)), within * self._patience
            )

    async def start(self, port: int = 0) -> Self:
        """Listen on `port` (0: any free port, then read `.port`)."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, reuse_address=True)
        await site.start()
        self.port = int(site.name.rsplit(":", 1)[1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
