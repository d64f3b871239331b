"""Broker routing: which destination a subscriber's URL names, the keys that go with it, and the
routing templates (`routing_key`, `subject`). Pure.

`url`'s scheme chooses: http(s) a webhook, amqp(s) RabbitMQ (with `exchange` and `routing_key`),
nats or tls NATS JetStream (with `subject`); a key of another kind is an error, not ignored. A
template is text with `{placeholder}`s from PLACEHOLDERS (`{{` and `}}` are literal braces),
parsed once at configuration time and rendered per message by joining precomputed parts.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import quote, urlsplit, urlunsplit

PLACEHOLDERS: Final = ("event_type", "subscriber", "entity_key", "organization_id")
# An AMQP routing key is a short string: at most 255 bytes.
AMQP_KEY_BYTES: Final = 255
# A subject's token: no whitespace, no '.', no wildcard character ('*', '>').
_NATS_TOKEN = re.compile(r"[^\s.]+")

# What a rendering is checked with at configuration time (a uuid, an entity key of the journal).
SAMPLE: Final[Mapping[str, str]] = {
    "event_type": "it_asset_assigned",
    "subscriber": "PF-11",
    "entity_key": "asset_id:00000000-0000-4000-8000-000000000000",
    "organization_id": "00000000-0000-4000-8000-000000000000",
}


class TemplateError(ValueError):
    """A template that cannot be used; the message never quotes more than the placeholder."""


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: literal text and placeholder names, alternating."""

    parts: tuple[tuple[str, str | None], ...]

    @property
    def names(self) -> frozenset[str]:
        return frozenset(name for _, name in self.parts if name is not None)

    def render(self, values: Mapping[str, str]) -> str:
        return "".join(text + (values[name] if name is not None else "") for text, name in self.parts)


def parse(text: str) -> Template:
    """The template of `text`, or TemplateError naming the unknown placeholder or the bad brace."""
    try:
        pieces = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise TemplateError(f"not a template ({exc}); write a literal brace as {{{{ or }}}}") from None
    parts: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in pieces:
        if name is None:
            parts.append((literal, None))
            continue
        if name not in PLACEHOLDERS:
            shown = name if name.isidentifier() and len(name) <= 40 else "?"
            raise TemplateError(f"unknown placeholder {{{shown}}}; known: {_known()}")
        if spec or conversion:
            raise TemplateError(f"{{{name}}} takes no format or conversion; write it as {{{name}}}")
        parts.append((literal, name))
    return Template(tuple(parts))


def _known() -> str:
    return " ".join(f"{{{p}}}" for p in PLACEHOLDERS)


def nats_subject_problem(subject: str) -> str | None:
    """Why `subject` cannot be published to (None: it can)."""
    if not subject:
        return "is empty"
    for token in subject.split("."):
        if not token:
            return "has an empty token (a leading, trailing or doubled '.')"
        if not _NATS_TOKEN.fullmatch(token):
            return "contains whitespace"
        if "*" in token or ">" in token:
            return "contains a wildcard character ('*' or '>'): a message goes to one subject"
    return None


def amqp_key_problem(key: str) -> str | None:
    """Why `key` cannot be an AMQP routing key (None: it can)."""
    if len(key.encode()) > AMQP_KEY_BYTES:
        return f"is longer than {AMQP_KEY_BYTES} bytes"
    return None


def check(text: str, kind: str) -> Template:
    """Parse and check a template against a sample rendering; `kind` is "amqp" or "nats"."""
    template = parse(text)
    rendered = template.render(SAMPLE)
    problem = nats_subject_problem(rendered) if kind == "nats" else amqp_key_problem(rendered)
    if problem is not None:
        raise TemplateError(
            f"renders to a subject that {problem}" if kind == "nats" else f"rendered {problem}"
        )
    return template


Kind = Literal["http", "amqp", "nats"]
KINDS: Final[dict[str, Kind]] = {
    "http": "http",
    "https": "http",
    "amqp": "amqp",
    "amqps": "amqp",
    "nats": "nats",
    "tls": "nats",
}
SCHEMES_HELP: Final = (
    "URL scheme should be 'http' or 'https' (a webhook), 'amqp' or 'amqps' (RabbitMQ), "
    "'nats' or 'tls' (NATS JetStream)"
)
# The keys that belong to one kind only, and the kind they belong to.
OWN_KEYS: Final[dict[str, Kind]] = {"exchange": "amqp", "routing_key": "amqp", "subject": "nats"}
_BROKER_ONLY: Final = ("password", "password_file", "password_credential")
_HTTP_ONLY: Final = ("proxy",)
_A_URL_OF: Final[dict[Kind, str]] = {
    "http": "an http(s):// url",
    "amqp": "an amqp(s):// url",
    "nats": "a nats:// (or tls://) url",
}


def kind(url: str) -> Kind | None:
    """The destination kind of a URL (None: a scheme the relay does not deliver to)."""
    return KINDS.get(urlsplit(url).scheme.lower())


def key_problem(key: str, url_kind: Kind, value: object) -> str | None:
    """Why `key` (given as `value`, None when absent) does not go with a URL of `url_kind`."""
    own = OWN_KEYS.get(key)
    if own is not None:
        if own != url_kind:
            return None if value is None else f"only for {_A_URL_OF[own]}"
        if value is None:
            return f"required for {_A_URL_OF[own]}" + (
                ' (the exchange to publish to; "" is the default exchange)' if key == "exchange" else ""
            )
        if key == "exchange":
            return None
        try:
            check(str(value), own)
        except TemplateError as exc:
            return str(exc)
        return None
    if value is None:
        return None
    if key in _BROKER_ONLY and url_kind == "http":
        return "only for a broker url (amqp://, nats://); a webhook's credentials go in its url or headers"
    if key in _HTTP_ONLY and url_kind != "http":
        return "only for a webhook (http(s)://); brokers are reached directly"
    return None


def with_password(url: str, password: str) -> str:
    """`url` with `password` set (percent-encoded) for its user (empty if it names none)."""
    parts = urlsplit(url)
    if parts.password is not None:
        raise ValueError(
            "give the password in url or in password / password_file / password_credential, not both"
        )
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    netloc = f"{user}:{quote(password, safe='')}@{host}{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
