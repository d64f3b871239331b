"""The real brokers for broker-destination tests: their URLs, a TCP proxy to take one "down", a
consumer's signature check, and a relay config naming broker subscribers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from uuid import uuid4

import pytest
from standardwebhooks import Webhook

from relay.settings import Settings
from tests.support.relay import SECRET, write_config

AMQP_ENV = "IT_RELAY_TEST_AMQP_URL"
NATS_ENV = "IT_RELAY_TEST_NATS_URL"


def broker_url(variable: str) -> str:
    """The broker a test uses, or a skip naming why (unset, or nothing answering there)."""
    url = os.environ.get(variable)
    if not url:
        pytest.skip(f"{variable} is not set (e.g. {_EXAMPLES[variable]})")
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or _PORTS[parts.scheme]
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        pytest.skip(f"{variable}: nothing answers at {host}:{port} ({exc.strerror or exc})")
    return url


_EXAMPLES = {AMQP_ENV: "amqp://guest:guest@127.0.0.1:5672/", NATS_ENV: "nats://127.0.0.1:4222"}
_PORTS = {"amqp": 5672, "amqps": 5671, "nats": 4222, "tls": 4222}


def unique(prefix: str) -> str:
    """A name of this test's own (exchange, queue, stream, subject token)."""
    return f"{prefix}-{uuid4().hex[:12]}"


def via(url: str, port: int) -> str:
    """`url` pointed at 127.0.0.1:`port` (a proxy), credentials and path kept."""
    parts = urlsplit(url)
    auth = parts.netloc.rpartition("@")[0]
    netloc = f"{auth}@127.0.0.1:{port}" if auth else f"127.0.0.1:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def verify(body: bytes, headers: Mapping[str, Any]) -> dict[str, Any]:
    """What a consumer does with a message: check the Standard Webhooks signature; the payload."""
    wanted = {k: str(headers[k]) for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    verified: dict[str, Any] = Webhook(SECRET).verify(body, wanted)
    return verified


class TcpProxy:
    """A local TCP proxy to a broker, started and stopped by the test (the machine's broker stays up).

    Stopping closes the listener and every proxied connection, as a broker that went away would.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
        self._writers.discard(writer)


def write_broker_config(path: Path, settings: Settings, brokers: Mapping[str, Mapping[str, Any]]) -> Path:
    """A TOML config for relay processes: `settings` (its webhooks) and broker subscribers
    (name: {url, exchange, routing_key | subject, ...}), all signed with SECRET."""
    write_config(path, settings)
    lines = []
    for name, keys in brokers.items():
        lines.append(f'[subscribers."{name}"]')
        lines.append(f'secret = "{SECRET}"')
        lines += [f"{key} = {_toml(value)}" for key, value in keys.items()]
    with path.open("a") as out:
        out.write("\n".join(lines) + "\n")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's
    return str(value)
