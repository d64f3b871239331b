"""Which static headers a subscriber may add to its requests, and which values they may carry. Pure.

A static header (`headers`, `headers_file`, `headers_credential`) rides along every request and
broker message; it never replaces one the relay sets: the Standard Webhooks id, timestamp and
signature, the content headers, the user agent, the event, entity and CloudEvents headers, the
trace context, nor anything the HTTP connection itself is made of (host, length, encoding).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

# RFC 9110 field-name: a token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}")
# Visible ASCII with single spaces or tabs inside: no line break can split the request (or a
# broker's header frame), and nothing a client library would re-encode.
_VALUE = re.compile(r"[\x21-\x7e](?:[\x20\x21-\x7e\t]*[\x21-\x7e])?")
MAX_VALUE_BYTES: Final = 8192
RESERVED: Final = frozenset(
    {
        "content-type",
        "content-length",
        "content-encoding",
        "transfer-encoding",
        "user-agent",
        "host",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "expect",
        "traceparent",
        "tracestate",
    }
)
# Prefixes the relay's own headers live under.
RESERVED_PREFIXES: Final = ("webhook-", "x-it-", "ce-", "proxy-")
# The start of a credential in an Authorization-like value ("Bearer ", "Basic "), not itself secret.
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9._~+/-]*\s+(?=\S)")


def name_problem(name: str) -> str | None:
    """Why a header name cannot be configured (None: it can)."""
    if not _TOKEN.fullmatch(name):
        return f"{name[:40]!r} is not a header name (letters, digits and !#$%&'*+-.^_`|~)"
    lower = name.lower()
    if lower in RESERVED or lower.startswith(RESERVED_PREFIXES):
        return (
            f"{name} is set by the relay (signature, id, timestamp, content, user agent, event, "
            "entity and trace headers cannot be overridden)"
        )
    return None


def value_problem(value: str) -> str | None:
    """Why a header value cannot be sent (None: it can). Never quotes the value: it is a secret."""
    if not value:
        return "the value is empty"
    if len(value.encode("utf-8", "surrogatepass")) > MAX_VALUE_BYTES:
        return f"the value is longer than {MAX_VALUE_BYTES} bytes"
    if not _VALUE.fullmatch(value):
        return "the value must be visible ASCII (spaces inside allowed), no line breaks or control characters"
    return None


def duplicate(names: Iterable[str]) -> str | None:
    """A header named twice (in any case, across headers, headers_file and headers_credential)."""
    seen: set[str] = set()
    for name in names:
        if name.lower() in seen:
            return name
        seen.add(name.lower())
    return None


def secrets_of(headers: Mapping[str, str]) -> list[str]:
    """What to mask in stored texts: each value, and its credential without the scheme word."""
    out: list[str] = []
    for value in headers.values():
        out.append(value)
        bare = _SCHEME.sub("", value, count=1)
        if bare != value:
            out.append(bare)
    return out
