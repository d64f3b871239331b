"""The HTTP sender behind delivery: one small interface over five clients that behave alike.

Every transport ignores the environment's proxy variables (HTTP_PROXY, ALL_PROXY, NO_PROXY, any
case), netrc and CA-bundle variables other than SSL_CERT_FILE / SSL_CERT_DIR: a proxy is used only
when configured (delivery.proxy, subscribers.X.proxy), and TLS is verified against the system's CA
store. Every error text leaving here is scrubbed of licence keys and URL secrets, and bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from base64 import b64encode
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp
import httpx

from relay.error_text import safe_reason
from relay.errors import RelayError
from relay.model import Transport


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Mapping[str, str]
    # The start of the body, at most delivery.max_response_bytes: a subscriber cannot make the
    # relay hold more than that per request, whatever it sends.
    body: bytes = b""


class SendError(RelayError):
    """No HTTP response: connection refused or reset, DNS, TLS, or the timeout passed.

    Its text is stored and shown (attempts, last_error, send-test), so it is made safe here, once
    for every way one is built: a client's message can quote the subscriber's raw bytes."""

    def __init__(self, reason: str) -> None:
        super().__init__(safe_reason(reason))


class Sender(Protocol):
    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> Response: ...

    async def aclose(self) -> None: ...


def describe(exc: BaseException) -> str:
    """A short reason for last_error: the exception type and message, made safe (safe_reason)."""
    return safe_reason(f"{type(exc).__name__}: {str(exc) or type(exc).__name__}")


def _system_tls() -> ssl.SSLContext:
    """The system's CA store (SSL_CERT_FILE / SSL_CERT_DIR honoured), read when a sender is made;
    unlike ssl.create_default_context(), never writes TLS secrets to $SSLKEYLOGFILE."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_default_certs()
    return context


def _proxy_credentials(proxy: str) -> tuple[str, dict[str, str]]:
    """A proxy URL without its userinfo, and the Proxy-Authorization header that carries it."""
    parts = urlsplit(proxy)
    if parts.username is None:
        return proxy, {}
    host = parts.netloc.rpartition("@")[2]
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
    return urlunsplit(parts._replace(netloc=host)), {
        "Proxy-Authorization": f"Basic {b64encode(pair).decode()}"
    }


def _to_proxy(url: str, headers: Mapping[str, str], credentials: Mapping[str, str]) -> Mapping[str, str]:
    """The request's headers, with the proxy's credentials when the proxy reads the request itself
    (plain HTTP): aiohttp sends its proxy headers only in a CONNECT, which an https:// URL gets."""
    return {**headers, **credentials} if credentials and url[:5].lower() == "http:" else headers


class AiohttpSender:
    """Bare aiohttp."""

    def __init__(
        self, max_connections: int = 100, max_response_bytes: int = 65536, proxy: str | None = None
    ) -> None:
        self._max_connections = max_connections
        self._max_response_bytes = max_response_bytes
        # aiohttp sends an explicit proxy URL's userinfo nowhere: it goes in as a header.
        self._proxy: str | None = None
        self._proxy_headers: dict[str, str] = {}
        if proxy:
            self._proxy, self._proxy_headers = _proxy_credentials(proxy)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use, inside the running loop, as aiohttp requires.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._max_connections, ttl_dns_cache=60, ssl=_system_tls()
                ),
                trust_env=False,
                skip_auto_headers=("user-agent",),
            )
        return self._session

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> Response:
        try:
            async with self._client().post(
                url,
                data=body,
                headers=_to_proxy(url, headers, self._proxy_headers),
                timeout=aiohttp.ClientTimeout(total=timeout_s),
                allow_redirects=False,
                proxy=self._proxy,
                proxy_headers=self._proxy_headers or None,
            ) as response:
                limit = self._max_response_bytes
                kept = bytearray()
                # read(n) returns what has arrived so far: read on until the cap or the end.
                while len(kept) <= limit and (chunk := await response.content.read(limit + 1 - len(kept))):
                    kept += chunk
                if len(kept) > limit or not response.content.at_eof():
                    # More than we keep: drop the rest with the connection rather than read it.
                    response.close()
                answered = {k.lower(): v for k, v in response.headers.items()}
                return Response(response.status, answered, bytes(kept[:limit]))
        except TimeoutError:
            raise SendError(f"timeout after {timeout_s:g}s") from None
        except (OSError, aiohttp.ClientError) as exc:
            raise SendError(describe(exc)) from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def make_sender(
    transport: Transport,
    max_connections: int,
    max_response_bytes: int = 65536,
    *,
    proxy: str | None = None,
    proxies: Mapping[str, str | None] | None = None,
) -> Sender:
    """The sender for `transport`: through `proxy` (None: directly), or, for a URL `proxies`
    names, through the proxy it gives (None: directly); never through the environment's."""

    def one(through: str | None) -> Sender:
        if transport == "pyreqwest":
            return PyreqwestSender(max_connections, max_response_bytes, through)
        if transport == "pyqwest":
            return PyqwestSender(max_connections, max_response_bytes, through)
        if transport == "aiohttp":
            return AiohttpSender(max_connections, max_response_bytes, through)
        return HttpxSender(transport, max_connections, max_response_bytes, through)

    routes = {url: p for url, p in (proxies or {}).items() if p != proxy}
    return _ByProxy(one, proxy, routes) if routes else one(proxy)


class _ByProxy:
    """One sender per proxy in use; a request goes through the one its URL's subscriber names."""

    def __init__(
        self, make: Callable[[str | None], Sender], default: str | None, routes: Mapping[str, str | None]
    ) -> None:
        self._make = make
        self._default = default
        self._routes = dict(routes)
        self._senders: dict[str | None, Sender] = {}

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> Response:
        proxy = self._routes.get(url, self._default)
        sender = self._senders.get(proxy)
        if sender is None:
            sender = self._senders[proxy] = self._make(proxy)
        return await sender.post(url, body, headers, timeout_s)

    async def aclose(self) -> None:
        for sender in self._senders.values():
            await sender.aclose()


_NOWHERE = "http://127.0.0.1:9"
_EVERY_HOST = "*,0.0.0.0/0,::/0"  # "*" covers names only, the networks every address


class PyqwestSender:
    """pyqwest (reqwest underneath, another API over it): selectable, measured beside pyreqwest
    (docs/benchmarks.md). Installed with the `pyqwest` extra."""

    def __init__(
        self, max_connections: int = 100, max_response_bytes: int = 65536, proxy: str | None = None
    ) -> None:
        self._max_connections = max_connections
        self._max_response_bytes = max_response_bytes
        self._proxy = proxy
        self._client: Any = None
        self._transport: Any = None

    def _make(self) -> Any:
        try:
            from pyqwest import Client, HTTPTransport, Proxy
        except ImportError:
            raise SendError("delivery.transport = pyqwest needs pip install 'it-relay[pyqwest]'") from None
        self._transport = HTTPTransport(
            # pyqwest reads HTTP_PROXY & co. unless a proxy is given, and has no switch for that: a
            # proxy that excludes every host and address turns them off (never connected to).
            proxy=self._proxy or Proxy(_NOWHERE, no_proxy=_EVERY_HOST),
            tls_include_system_certs=True,
            follow_redirects=False,
            enable_gzip=False,
            enable_brotli=False,
            enable_zstd=False,
            enable_otel=False,
            pool_max_idle_per_host=self._max_connections,
        )
        self._client = Client(self._transport)
        return self._client

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> Response:
        client = self._client or self._make()
        limit = self._max_response_bytes
        try:
            # pyqwest has no per-request timeout on its async client: the loop's is the bound.
            async with (
                asyncio.timeout(timeout_s),
                client.stream("POST", url, dict(headers), body) as response,
            ):
                kept = bytearray()
                async for chunk in response.content:
                    kept += bytes(chunk)[: limit + 1 - len(kept)]
                    if len(kept) > limit:
                        break  # leaving the block drops the rest with the connection
                status = response.status
                response_headers = {k.lower(): v for k, v in response.headers.items()}
        except TimeoutError:
            raise SendError(f"timeout after {timeout_s:g}s") from None
        except Exception as exc:
            from pyqwest import ReadError, RemoteProtocolError, WriteError

            if isinstance(exc, OSError | ReadError | WriteError | RemoteProtocolError):
                raise SendError(describe(exc)) from None
            raise
        return Response(status, response_headers, bytes(kept[:limit]))

    async def aclose(self) -> None:
        if self._transport is not None:
            await self._transport.aclose()


class PyreqwestSender:
    """pyreqwest: Rust's reqwest and hyper under a small Python API; the fastest client measured
    here (docs/benchmarks.md), so the default. TLS is verified against the system's CA store
    (rustls-platform-verifier; SSL_CERT_FILE / SSL_CERT_DIR are honoured), redirects are never
    followed, each host keeps a pool of keep-alive connections."""

    def __init__(
        self, max_connections: int = 100, max_response_bytes: int = 65536, proxy: str | None = None
    ) -> None:
        self._max_connections = max_connections
        self._max_response_bytes = max_response_bytes
        self._proxy = proxy
        self._client: Any = None
        # Built now rather than by the first delivery, which waited 5-18 ms for the CA store and the
        # runtime (the import too, the first time). A failure here is met again, and reported, there.
        with contextlib.suppress(Exception):
            self._make()

    def _make(self) -> Any:
        from pyreqwest.client import ClientBuilder
        from pyreqwest.proxy import ProxyBuilder

        # no_proxy() drops the proxies reqwest reads from the environment; an explicit one
        # (credentials in its URL become Proxy-Authorization) is added after.
        builder = ClientBuilder().no_proxy()
        if self._proxy:
            builder = builder.proxy(ProxyBuilder.all(self._proxy))
        self._client = (
            builder.follow_redirects(False)
            .error_for_status(False)
            .max_connections(self._max_connections)
            .pool_max_idle_per_host(self._max_connections)
            .tcp_nodelay(True)
            .build()
        )
        return self._client

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> Response:
        from pyreqwest.exceptions import PyreqwestError, RequestTimeoutError

        client = self._client or self._make()
        limit = self._max_response_bytes
        try:
            request = (
                client.post(url)
                .headers(headers)
                .body_bytes(body)
                .timeout(timedelta(seconds=timeout_s))
                .build_streamed()
            )
            # reqwest's timeout runs from connecting until the body is read: one total bound.
            async with request as response:
                kept = bytearray()
                reader = response.body_reader
                while len(kept) <= limit:
                    chunk = await reader.read(limit + 1 - len(kept))
                    if chunk is None:
                        break
                    kept += bytes(chunk)
                # Leaving the block with the body unread drops the connection with the rest.
                status = response.status
                response_headers = {k.lower(): v for k, v in response.headers.items()}
        except (TimeoutError, RequestTimeoutError):
            raise SendError(f"timeout after {timeout_s:g}s") from None
        except PyreqwestError as exc:
            raise SendError(_reqwest_reason(exc)) from None
        return Response(status, response_headers, bytes(kept[:limit]))

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()


def _reqwest_reason(exc: Exception) -> str:
    """The innermost cause reqwest gives (e.g. "Connection refused (os error 111)"), made safe."""
    details = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
    causes = [c.get("message", "") for c in details.get("causes") or [] if isinstance(c, dict)]
    text = causes[-1] if causes else (str(exc.args[0]) if exc.args else type(exc).__name__)
    return safe_reason(f"{type(exc).__name__}: {text}")


class HttpxSender:
    """httpx.AsyncClient, over aiohttp (httpx-aiohttp) or httpx's own transport."""

    def __init__(
        self,
        transport: Transport = "httpx-aiohttp",
        max_connections: int = 100,
        max_response_bytes: int = 65536,
        proxy: str | None = None,
    ) -> None:
        self._max_response_bytes = max_response_bytes
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        through = None
        # The credentials as a header: httpx-aiohttp would hand them to aiohttp's deprecated proxy_auth.
        self._plain_proxy_headers: dict[str, str] = {}
        if proxy:
            url, proxy_headers = _proxy_credentials(proxy)
            through = httpx.Proxy(url, headers=proxy_headers)
            if transport == "httpx-aiohttp":
                self._plain_proxy_headers = proxy_headers
        if transport == "httpx-aiohttp":
            from httpx_aiohttp import AiohttpTransport

            self._client = httpx.AsyncClient(
                transport=AiohttpTransport(
                    verify=_system_tls(), limits=limits, trust_env=False, proxy=through
                ),
                follow_redirects=False,
            )
        else:
            self._client = httpx.AsyncClient(
                verify=_system_tls(), limits=limits, trust_env=False, proxy=through, follow_redirects=False
            )

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> Response:
        try:
            # httpx's timeout is per phase; the outer one bounds a subscriber that drips bytes.
            async with (
                asyncio.timeout(timeout_s),
                self._client.stream(
                    "POST",
                    url,
                    content=body,
                    headers=dict(_to_proxy(url, headers, self._plain_proxy_headers)),
                    timeout=timeout_s,
                ) as response,
            ):
                kept = bytearray()
                async for chunk in response.aiter_raw():
                    kept += chunk[: self._max_response_bytes + 1 - len(kept)]
                    if len(kept) > self._max_response_bytes:
                        break  # leaving the block closes the response and its connection
                status, response_headers = response.status_code, response.headers
        except TimeoutError:
            raise SendError(f"timeout after {timeout_s:g}s") from None
        except httpx.HTTPError as exc:
            cause = exc.__cause__
            # httpx-aiohttp calls every failed connection (refused, bad certificate) ConnectTimeout.
            if isinstance(cause, aiohttp.ClientError) and not isinstance(cause, TimeoutError):
                raise SendError(describe(cause)) from None
            if isinstance(exc, httpx.TimeoutException):
                raise SendError(f"timeout after {timeout_s:g}s") from None
            raise SendError(describe(exc)) from None
        except (OSError, aiohttp.ClientError) as exc:
            raise SendError(describe(exc)) from None
        return Response(
            status,
            {k.lower(): v for k, v in response_headers.items()},
            bytes(kept[: self._max_response_bytes]),
        )

    async def aclose(self) -> None:
        await self._client.aclose()
