"""Every sender (delivery.transport) behaves the same against real local servers: the answer is
reported as sent, proxies come from the configuration only, redirects are answers, the timeout is
total, the response is capped, error texts never hold a licence key, and no CA-bundle, netrc or
key-log variable of the environment changes anything beyond SSL_CERT_FILE (docs/operations.md).

Misbehaving subscribers and proxies are raw asyncio TCP servers: they send what no HTTP server would.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest
import trustme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay import journal
from relay.contracts.examples import example
from relay.model import Transport
from relay.sender import Response, Sender, SendError, make_sender
from tests.support.relay import cli, path_of, relay_settings, running, wait_for_rows, write_config
from tests.support.sink import PATIENCE, Sink

TRANSPORTS: list[Transport] = ["pyreqwest", "pyqwest", "aiohttp", "httpx-aiohttp", "httpx"]
CAP = 1024
HOOK_HEADERS = {"content-type": "application/json", "webhook-id": "msg_1", "webhook-signature": "v1,c2ln"}
# Everything a host or container may set that a client could act on by itself.
AMBIENT = [
    *(f"{p}_PROXY" for p in ("HTTP", "HTTPS", "ALL", "NO")),
    *(f"{p}_proxy" for p in ("http", "https", "all", "no")),
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NETRC",
    "SSLKEYLOGFILE",
]

# A connection's handler; the server is passed so that it can record what it reads.
Handler = Callable[["RawServer", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Request:
    line: str
    headers: dict[str, str]
    body: bytes


@dataclass
class RawServer:
    """A TCP server on 127.0.0.1 running `handler` per connection; counts and records them."""

    handler: Handler
    context: ssl.SSLContext | None = None
    connections: int = 0
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handler(self, reader, writer)
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # the client went away: what several of these tests are about
        except asyncio.CancelledError:
            pass  # close() ends the handlers still running (drips, silences)
        finally:
            writer.close()
            self._tasks.discard(task)

    async def read_request(self, reader: asyncio.StreamReader) -> Request:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:] if h)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        request = Request(head[0], headers, body)
        self.requests.append(request)
        return request

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()


Servers = Callable[..., Awaitable[RawServer]]
Senders = Callable[..., Sender]


@pytest.fixture(autouse=True)
def _no_ambient_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in AMBIENT:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    started: list[RawServer] = []

    async def start(handler: Handler, context: ssl.SSLContext | None = None) -> RawServer:
        started.append(await RawServer(handler, context).start())
        return started[-1]

    yield start
    for server in started:
        await server.close()


@pytest.fixture
async def senders() -> AsyncIterator[Senders]:
    made: list[Sender] = []

    def make(transport: Transport, **kwargs: object) -> Sender:
        made.append(make_sender(transport, 4, CAP, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for sender in made:
        await sender.aclose()


@dataclass(frozen=True)
class Authority:
    bundle: Path
    server: ssl.SSLContext


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    """A private CA (in no system store), its PEM bundle, and a server context it signed."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    bundle = tmp_path / "private-ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    return Authority(bundle, context)


async def _subscriber(server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A well-behaved subscriber: every request recorded, answered 202 on a kept-alive connection."""
    while not reader.at_eof():
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 202 Accepted\r\nRetry-After: 7\r\nContent-Length: 8\r\n\r\naccepted")
        await writer.drain()


async def _recorder(_: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A socket that only listens: whoever connects is counted, nothing is answered."""
    await reader.read()


async def _forward_proxy(
    server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """A forward proxy: answers plain-HTTP requests itself (299), tunnels CONNECT to the target."""
    request = await server.read_request(reader)
    method, target, _ = request.line.split(" ")
    if method != "CONNECT":
        writer.write(b"HTTP/1.1 299 Proxied\r\nContent-Length: 7\r\nConnection: close\r\n\r\nproxied")
        await writer.drain()
        return
    host, _, port = target.rpartition(":")
    up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

    async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while chunk := await source.read(65536):
                sink.write(chunk)
                await sink.drain()
        finally:
            sink.close()

    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)


def _answering(response: bytes) -> Handler:
    """A subscriber that reads the request and sends `response` verbatim."""

    async def handle(_: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(response)
        await writer.drain()
        await reader.read()  # until the client hangs up

    return handle


async def _post(sender: Sender, url: str, timeout_s: float = 10.0) -> Response:
    # A bound of its own, so a sender that ignores its timeout fails here instead of hanging.
    async with asyncio.timeout(timeout_s + 10 * PATIENCE):
        return await sender.post(url, b'{"event_id": "e1"}', HOOK_HEADERS, timeout_s)


async def _error(sender: Sender, url: str, timeout_s: float = 10.0) -> str:
    with pytest.raises(SendError) as caught:
        await _post(sender, url, timeout_s)
    return str(caught.value)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_answer_is_reported_as_sent(
    transport: Transport, servers: Servers, senders: Senders
) -> None:
    subscriber = await servers(_subscriber)
    sender = senders(transport)
    response = await _post(sender, f"http://127.0.0.1:{subscriber.port}/hook")
    assert (response.status, response.headers["retry-after"], response.body) == (202, "7", b"accepted")
    (request,) = subscriber.requests
    assert request.line == "POST /hook HTTP/1.1" and request.body == b'{"event_id": "e1"}'
    assert {k: request.headers[k] for k in HOOK_HEADERS} == HOOK_HEADERS
    # Nobody listening: a send error (retried by the schedule), not an exception of the client.
    refused = await RawServer(_recorder).start()
    await refused.close()
    assert await _error(sender, f"http://127.0.0.1:{refused.port}/hook")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_proxies_in_the_environment_are_ignored(
    transport: Transport,
    servers: Servers,
    senders: Senders,
    authority: Authority,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trap = await servers(_recorder)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, f"http://trap:secret@127.0.0.1:{trap.port}")
    monkeypatch.setenv("SSL_CERT_FILE", str(authority.bundle))
    plain = await servers(_subscriber)
    tls = await servers(_subscriber, authority.server)
    sender = senders(transport)
    for url in (
        f"http://127.0.0.1:{plain.port}/hook",
        f"http://localhost:{plain.port}/hook",
        f"https://localhost:{tls.port}/hook",
    ):
        assert (await _post(sender, url)).status == 202, url
    assert (len(plain.requests), len(tls.requests), trap.connections) == (2, 1, 0)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("proxy_tls", [False, True], ids=["http-proxy", "https-proxy"])
async def test_an_explicit_proxy_is_used_for_whom_it_is_configured(
    transport: Transport,
    proxy_tls: bool,
    servers: Servers,
    senders: Senders,
    authority: Authority,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(authority.bundle))
    # The environment names another proxy and exempts every host: neither counts.
    trap = await servers(_recorder)
    monkeypatch.setenv("ALL_PROXY", f"http://127.0.0.1:{trap.port}")
    monkeypatch.setenv("NO_PROXY", "*")
    proxy = await servers(_forward_proxy, authority.server if proxy_tls else None)
    own_proxy = await servers(_forward_proxy)
    plain = await servers(_subscriber)
    tls = await servers(_subscriber, authority.server)
    direct = await servers(_subscriber)
    scheme = "https" if proxy_tls else "http"
    sender = senders(
        transport,
        proxy=f"{scheme}://relay:pr%40xy@localhost:{proxy.port}",
        proxies={
            f"http://127.0.0.1:{direct.port}/hook": None,
            f"http://127.0.0.1:{direct.port}/own": f"http://127.0.0.1:{own_proxy.port}",
        },
    )
    # Plain HTTP: the proxy gets the whole request (it answers itself here).
    proxied = await _post(sender, f"http://127.0.0.1:{plain.port}/hook")
    assert (proxied.status, proxied.body) == (299, b"proxied")
    # HTTPS: tunnelled; the subscriber gets the request, the proxy sees only where it goes.
    assert (await _post(sender, f"https://localhost:{tls.port}/hook")).status == 202
    # A subscriber with proxy = "none" is reached directly; one with a proxy of its own through it.
    assert (await _post(sender, f"http://127.0.0.1:{direct.port}/hook")).status == 202
    assert (await _post(sender, f"http://127.0.0.1:{direct.port}/own")).status == 299
    assert [r.line for r in own_proxy.requests] == [f"POST http://127.0.0.1:{direct.port}/own HTTP/1.1"]
    assert "proxy-authorization" not in own_proxy.requests[0].headers
    forwarded, tunnel = proxy.requests
    assert forwarded.line == f"POST http://127.0.0.1:{plain.port}/hook HTTP/1.1"
    assert forwarded.body == b'{"event_id": "e1"}'
    assert tunnel.line.startswith(f"CONNECT localhost:{tls.port} ")
    credentials = "Basic " + base64.b64encode(b"relay:pr@xy").decode()
    assert forwarded.headers["proxy-authorization"] == tunnel.headers["proxy-authorization"] == credentials
    assert (len(plain.requests), len(tls.requests), len(direct.requests), trap.connections) == (0, 1, 1, 0)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_proxys_credentials_never_reach_the_error_text(
    transport: Transport, servers: Servers, senders: Senders
) -> None:
    gone = await RawServer(_recorder).start()
    await gone.close()
    sender = senders(transport, proxy=f"http://relay:Pr0xyS3cret@127.0.0.1:{gone.port}")
    text = await _error(sender, "http://127.0.0.1:9/hook?token=T0kenS3cret")
    assert "Pr0xyS3cret" not in text and "T0kenS3cret" not in text


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_the_answer_never_followed(
    transport: Transport, status: int, servers: Servers, senders: Senders
) -> None:
    elsewhere = await servers(_subscriber)
    for location in (f"http://127.0.0.1:{elsewhere.port}/elsewhere", "/elsewhere"):
        moved = await servers(
            _answering(
                f"HTTP/1.1 {status} Moved\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode()
            )
        )
        response = await _post(senders(transport), f"http://127.0.0.1:{moved.port}/hook")
        assert (response.status, response.headers["location"]) == (status, location)
        assert moved.connections == 1
    assert elsewhere.connections == 0


async def _drip_body(_: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
    await _drip(writer)


async def _drip_headers(_: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nX-Drip: ")
    await _drip(writer)


async def _silent(_: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()


async def _drip(writer: asyncio.StreamWriter) -> None:
    # One byte every 100 ms, for far longer than any timeout here: each read succeeds.
    for _ in range(100000):
        writer.write(b"x")
        await writer.drain()
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    "subscriber", [_drip_body, _drip_headers, _silent], ids=["body", "headers", "silent"]
)
async def test_the_timeout_bounds_the_whole_exchange(
    transport: Transport, subscriber: Handler, servers: Servers, senders: Senders
) -> None:
    slow = await servers(subscriber)
    started = time.monotonic()
    text = await _error(senders(transport), f"http://127.0.0.1:{slow.port}/hook", timeout_s=0.5)
    elapsed = time.monotonic() - started
    assert text == "timeout after 0.5s"
    assert 0.45 <= elapsed < 0.5 + 2 * PATIENCE


def _endless(framing: str, dropped: asyncio.Event) -> Handler:
    """A subscriber whose body never ends; `dropped` is set when the client closes the connection."""
    chunk = bytes(range(256)) * 256

    async def handle(_: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        framed = b"Transfer-Encoding: chunked" if framing == "chunked" else b"Content-Length: 1099511627776"
        writer.write(b"HTTP/1.1 200 OK\r\n" + framed + b"\r\n\r\n")
        try:
            while True:
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if framing == "chunked" else chunk)
                await writer.drain()
        finally:
            dropped.set()

    return handle


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("framing", ["chunked", "content-length"])
async def test_at_most_the_cap_is_read_and_the_rest_dropped_with_the_connection(
    transport: Transport, framing: str, servers: Servers, senders: Senders
) -> None:
    dropped = asyncio.Event()
    huge = await servers(_endless(framing, dropped))
    response = await _post(senders(transport), f"http://127.0.0.1:{huge.port}/hook", timeout_s=5 * PATIENCE)
    assert (response.status, response.body) == (200, (bytes(range(256)) * 4)[:CAP])
    await asyncio.wait_for(dropped.wait(), 10 * PATIENCE)


VALUE = "SECRETVALUE"


def _fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) for c in text)


# Malformed answers that carry a licence key, as a subscriber (or what sits before it) may send.
MALFORMED = {
    "status code": b"HTTP/1.1 2x0 license_key=SECRETVALUE\r\nContent-Length: 0\r\n\r\n",
    "status without code": b"HTTP/1.1 license_key=SECRETVALUE\r\n\r\n",
    "status json": b'HTTP/1.1 {"license_key": "SECRETVALUE"}\r\n\r\n',
    "no version": b"license_key=SECRETVALUE\r\n\r\n",
    "no version, undecodable": b"\xff\xfe Licence-Key: SECRETVALUE\r\n\r\n",
    "fullwidth key": f"HTTP/1.1 {_fullwidth('license_key')}=SECRETVALUE\r\n\r\n".encode(),
    "soft hyphen in key": b"HTTP/1.1 lic\xc2\xadense_key=SECRETVALUE\r\n\r\n",
    "header without colon": b"HTTP/1.1 200 OK\r\nLicense-Key SECRETVALUE\r\n\r\n",
    "header bad token": b"HTTP/1.1 200 OK\r\nX-Bad header license_key=SECRETVALUE\r\nContent-Length: 0\r\n\r\n",
    "header with NUL": b"HTTP/1.1 200 OK\r\nX: a\x00license_key=SECRETVALUE\r\n\r\n",
    "content-length": b"HTTP/1.1 200 OK\r\nContent-Length: license_key=SECRETVALUE\r\n\r\n",
    "chunk size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nlicense_key=SECRETVALUE\r\n",
    "chunk size, quoted": b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"licence key": "SECRETVALUE"\r\n',
    "status line, long": b"HTTP/1.1 2x0 " + b"a" * 20000 + b" license_key=SECRETVALUE\r\n\r\n",
}


def _assert_safe(text: str) -> None:
    assert VALUE not in text, text
    assert len(text) <= 300 and "\n" not in text and "\x00" not in text


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("answer", MALFORMED.values(), ids=MALFORMED.keys())
async def test_error_texts_of_malformed_answers_never_hold_a_licence_key(
    transport: Transport, answer: bytes, servers: Servers, senders: Senders
) -> None:
    bad = await servers(_answering(answer))
    _assert_safe(await _error(senders(transport), f"http://127.0.0.1:{bad.port}/hook", timeout_s=5))


_SEPARATORS = st.text(alphabet="_- .", min_size=0, max_size=3)
_KEYS = st.builds(
    lambda licence, sep, key, case: case(f"{licence}{sep}{key}"),
    st.sampled_from(["license", "licence"]),
    _SEPARATORS,
    st.sampled_from(["key", "keys", "key_hash"]),
    st.sampled_from([str.lower, str.upper, str.title, lambda s: s]),
)
_ASSIGNS = st.sampled_from(["=", ": ", ":", " ", "=>", "\t", " = "])
_QUOTES = st.sampled_from(["", '"', "'"])
_VALUES = st.text(alphabet="ABCDEFGHJKMNPQRSTUVWXYZ0123456789", min_size=4, max_size=12).map(
    lambda tail: VALUE + tail
)
_JUNK = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@st.composite
def _malformed_with_a_key(draw: st.DrawFn) -> tuple[bytes, str]:
    quote = draw(_QUOTES)
    value = draw(_VALUES)
    pair = f"{draw(_KEYS)}{draw(_ASSIGNS)}{quote}{value}{quote}".encode()
    before, after = draw(_JUNK), draw(_JUNK)
    where = draw(st.sampled_from(["status", "header", "chunk"]))
    if where == "status":
        answer = b"HTTP/1.1 " + before + pair + after + b"\r\n\r\n"
    elif where == "header":
        answer = b"HTTP/1.1 200 OK\r\nX-" + before + b" " + pair + after + b"\r\n\r\n"
    else:
        answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + before + b"z" + pair + b"\r\n"
    return answer, value


@pytest.mark.parametrize("transport", TRANSPORTS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=_malformed_with_a_key())
async def test_generated_malformed_answers_never_put_a_licence_key_in_an_error(
    transport: Transport, case: tuple[bytes, str]
) -> None:
    answer, value = case
    bad = await RawServer(_answering(answer)).start()
    sender = make_sender(transport, 1, CAP)
    try:
        outcome = await _outcome(sender, f"http://127.0.0.1:{bad.port}/hook")
    finally:
        await sender.aclose()
        await bad.close()
    # A lenient client may take it for an answer: the relay stores its status and a scrubbed excerpt.
    if isinstance(outcome, str):
        assert value not in outcome, outcome
        _assert_safe(outcome)


async def _outcome(sender: Sender, url: str) -> Response | str:
    """The response, or the text of the SendError raised instead."""
    try:
        return await _post(sender, url, timeout_s=5)
    except SendError as exc:
        return str(exc)


@pytest.fixture
def ambient_trust(tmp_path: Path, authority: Authority, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every variable a client might take a CA bundle, credentials or a key log from, set; only
    SSL_CERT_FILE is left to the test. Yields the key-log file that must never be written."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.setenv(name, str(authority.bundle))
    netrc = tmp_path / "netrc"
    netrc.write_text(
        "machine localhost login relay password N3trcS3cret\ndefault login any password N3trcS3cret\n"
    )
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".netrc").write_text(netrc.read_text())
    (tmp_path / ".netrc").chmod(0o600)
    keylog = tmp_path / "keys.log"
    monkeypatch.setenv("SSLKEYLOGFILE", str(keylog))
    return keylog


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_only_ssl_cert_file_of_the_environment_changes_what_is_trusted(
    transport: Transport,
    servers: Servers,
    senders: Senders,
    authority: Authority,
    ambient_trust: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tls = await servers(_subscriber, authority.server)
    url = f"https://localhost:{tls.port}/hook"
    # The private CA in REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE only: not trusted.
    text = await _error(senders(transport), url)
    assert any(word in text.lower() for word in ("certif", "issuer", "verify")), text
    # In SSL_CERT_FILE (the documented way): trusted; netrc's credentials are never sent.
    monkeypatch.setenv("SSL_CERT_FILE", str(authority.bundle))
    assert (await _post(senders(transport), url)).status == 202
    plain = await servers(_subscriber)
    assert (await _post(senders(transport), f"http://localhost:{plain.port}/hook")).status == 202
    for request in (*tls.requests, *plain.requests):
        assert "authorization" not in request.headers
    assert not await asyncio.to_thread(ambient_trust.exists)


# Through the relay: the daemon and send-test build their senders from the configuration.


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_relay_delivers_through_the_configured_proxy_never_the_environments(
    transport: Transport,
    tmp_path: Path,
    relay_db: str,
    db: asyncpg.Connection,
    sink: Sink,
    servers: Servers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trap = await servers(_recorder)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{trap.port}")  # the CLI's process inherits them
    proxy = await servers(_forward_proxy)
    settings = relay_settings(
        relay_db,
        sink,
        ["FA", "GR"],
        subscriber_overrides={"GR": {"proxy": "none"}},
        delivery={"transport": transport, "proxy": f"http://relay:S3cret@127.0.0.1:{proxy.port}"},
    )
    async with running(settings):
        await journal.publish(db, example("it_asset_disposed"))  # routed to FA and GR
        await wait_for_rows(
            db, "SELECT count(*) FROM it_relay.deliveries WHERE status = 'delivered'", lambda n: n == 2
        )
    sent = await cli(
        "send-test", "--subscriber", "FA", "--config", str(write_config(tmp_path / "r.toml", settings))
    )
    assert sent.returncode == 0 and ": HTTP 299 in " in sent.stdout, sent.stderr
    # FA's deliveries went to the proxy (which answered 299 itself), GR's straight to the sink.
    assert [r.line for r in proxy.requests] == [f"POST {sink.url(path_of('FA'))} HTTP/1.1"] * 2
    assert (len(sink.at(path_of("FA"))), len(sink.at(path_of("GR"))), trap.connections) == (0, 1, 0)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_no_store_or_printout_holds_a_licence_key_a_malformed_answer_carried(
    transport: Transport,
    tmp_path: Path,
    relay_db: str,
    db: asyncpg.Connection,
    sink: Sink,
    servers: Servers,
) -> None:
    bad = await servers(_answering(MALFORMED["header without colon"]))
    settings = relay_settings(
        relay_db,
        sink,
        ["FA"],
        subscriber_overrides={"FA": {"url": f"http://127.0.0.1:{bad.port}/fa"}},
        delivery={"transport": transport, "retry_schedule_s": [60]},
    )
    config = str(write_config(tmp_path / "relay.toml", settings))
    async with running(settings):
        await journal.publish(db, example("it_asset_purchased"))
        error = await wait_for_rows(
            db, "SELECT last_error FROM it_relay.deliveries WHERE attempts > 0", lambda v: v is not None
        )
    attempts = [row["error"] for row in await db.fetch("SELECT error FROM it_relay.attempts")]
    printed = await asyncio.gather(
        cli("status", "--json", "--config", config),
        cli("deliveries", "list", "--wide", "--config", config),
        cli("send-test", "--subscriber", "FA", "--config", config),
    )
    assert attempts and all(attempts)
    for text in (error, *attempts, *(p.stdout + p.stderr for p in printed)):
        assert VALUE not in text, text
    assert printed[2].returncode == 1 and "no response" in printed[2].stdout
