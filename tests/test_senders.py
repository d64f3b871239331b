"""Every sender (delivery.transport) meets the delivery requirements against real local servers:
TLS verified against the system's CA store, no redirects followed, a total timeout, the
response-size cap, connection errors classified for retry."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from relay.sender import SendError, Transport, make_sender

TRANSPORTS: list[Transport] = ["pyreqwest", "pyqwest", "aiohttp", "httpx-aiohttp", "httpx"]


async def _subscriber(context: ssl.SSLContext | None) -> tuple[web.AppRunner, int]:
    async def handle(request: web.Request) -> web.Response:
        await request.read()
        if request.path == "/redirect":
            raise web.HTTPFound("/elsewhere")
        if request.path == "/slow":
            await asyncio.sleep(5)
        if request.path == "/big":
            return web.Response(body=b"x" * 5_000_000)
        return web.Response(status=202, text="accepted", headers={"Retry-After": "7"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    return runner, int(site.name.rsplit(":", 1)[1])


@pytest.fixture
async def https_subscriber(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """An HTTPS subscriber whose certificate is signed by a CA of its own; the CA's bundle."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    runner, port = await _subscriber(context)
    yield f"https://127.0.0.1:{port}", bundle
    await runner.cleanup()


@pytest.fixture
async def http_subscriber() -> AsyncIterator[str]:
    runner, port = await _subscriber(None)
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_the_default_sender_verifies_tls_against_the_system_ca_store(
    https_subscriber: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, bundle = https_subscriber
    # Not in the store: refused, as a retryable send error naming the certificate.
    sender = make_sender("pyreqwest", 4, 1024)
    try:
        with pytest.raises(SendError, match=r"(?i)certif|issuer|verify"):
            await sender.post(f"{base}/hook", b"{}", {"content-type": "application/json"}, 5)
    finally:
        await sender.aclose()
    # The CA in the store the process reads (SSL_CERT_FILE, as an operator's bundle would be).
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    sender = make_sender("pyreqwest", 4, 1024)
    try:
        response = await sender.post(f"{base}/hook", b"{}", {"content-type": "application/json"}, 5)
        assert (response.status, response.headers["retry-after"], response.body) == (202, "7", b"accepted")
    finally:
        await sender.aclose()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_every_sender_meets_the_delivery_requirements(
    transport: Transport, http_subscriber: str
) -> None:
    base = http_subscriber
    sender = make_sender(transport, 4, 1024)
    try:
        response = await sender.post(f"{base}/hook", b"{}", {"content-type": "application/json"}, 5)
        assert (response.status, response.headers["retry-after"], response.body) == (202, "7", b"accepted")
        # A redirect is the subscriber's answer, never followed.
        moved = await sender.post(f"{base}/redirect", b"{}", {}, 5)
        assert moved.status == 302
        # At most the cap is read, whatever the subscriber sends.
        big = await sender.post(f"{base}/big", b"{}", {}, 5)
        assert big.status == 200 and big.body == b"x" * 1024
        # One total timeout for the whole exchange.
        with pytest.raises(SendError, match=r"timeout after 0\.5s"):
            await sender.post(f"{base}/slow", b"{}", {}, 0.5)
        # Nobody listening: a send error (retried by the schedule), not an exception of the client.
        with pytest.raises(SendError):
            await sender.post("http://127.0.0.1:9/hook", b"{}", {}, 2)
    finally:
        await sender.aclose()
