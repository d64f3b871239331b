"""A real local HTTP subscriber: records every request and answers as a test tells it to."""

from __future__ import annotations

import asyncio
import os
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

# Every wait in the tests is for a condition, so a generous bound costs nothing when things go well;
# CI machines have run four times slower than a developer's. IT_RELAY_TEST_PATIENCE scales them all.
PATIENCE = float(os.environ.get("IT_RELAY_TEST_PATIENCE", "3"))


@dataclass(frozen=True)
class Reply:
    status: int = 200
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class Sink:
    """An aiohttp server on 127.0.0.1: `script(path, Reply, ...)` queues answers for a path."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
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

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        queue = self._script.get(request.path)
        reply = queue.popleft() if queue else Reply()
        async with self._changed:
            self.requests.append(
                Received(
                    request.path, {k.lower(): v for k, v in request.headers.items()}, body, time.monotonic()
                )
            )
            self._changed.notify_all()
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        return web.Response(status=reply.status, headers=reply.headers)

    async def wait_for(self, predicate: Callable[[list[Received]], bool], within: float = 10.0) -> None:
        """Wait until predicate(requests) holds; fail the test after `within` seconds."""
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: predicate(self.requests)), within * PATIENCE
            )

    async def start(self) -> Sink:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(site.name.rsplit(":", 1)[1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
