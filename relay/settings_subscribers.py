"""A subscriber's configuration: where it is, how it is signed, and its policies."""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AnyUrl,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    NoDecode,
)

from relay import broker_routes, header_rules, ratelimit, retry
from relay.contracts import SUBSCRIBERS
from relay.settings_common import (
    _NO_PROXY,
    _READ_SECRETS,
    PositiveFloat,
    PositiveInt,
    Section,
    _credential_path,
    _list_text,
    _proxy_url,
    _read_file,
    _read_secret,
)
from relay.settings_sections import DeliverySettings


class SubscriberSettings(Section):
    # The scheme chooses the destination: a webhook, RabbitMQ or NATS JetStream (relay.brokers).
    url: AnyUrl
    secret: SecretStr | None = None
    # Several secrets while rotating: every request is signed with each (space-separated).
    secrets: list[SecretStr] | None = None
    secret_file: Path | None = None
    secret_credential: str | None = None
    timeout_s: PositiveFloat | None = None
    max_in_flight: PositiveInt = 64
    format: Literal["standard", "cloudevents"] = "standard"
    enabled: bool = True
    # "entity": one delivery in flight per entity, in journal order (docs/reliability.md, Ordering).
    ordering: Literal["none", "entity"] = "none"
    # Ordered subscribers, when an entity's head goes dead: "skip" goes on, "hold" waits for release.
    on_exhausted: Literal["skip", "hold"] = "skip"
    # This subscriber's proxy instead of delivery.proxy; "none" sends it directly. None: delivery's.
    proxy: str | None = None
    # RabbitMQ: the existing exchange and the routing key template; NATS: the subject template.
    exchange: str | None = Field(None, validate_default=True)
    routing_key: str | None = Field(None, validate_default=True)
    subject: str | None = Field(None, validate_default=True)
    # A broker's password, when not in url.
    password: SecretStr | None = None
    password_file: Path | None = None
    password_credential: str | None = None
    # Per-subscriber policy (docs/subscribers.md). Outpost's operators on the validated, redacted
    # payload (relay.filters); checked against the contracts routed to this subscriber by Settings.
    filter: dict[str, Any] | None = None
    # Requests per second to this subscriber, all instances together (relay.ratelimit).
    rate_limit_per_s: Annotated[float, Field(gt=0, le=ratelimit.MAX_RATE_PER_S)] | None = None
    # This subscriber's durable retry schedule instead of delivery.retry_schedule_s.
    retry_schedule_s: Annotated[
        Annotated[list[Annotated[float, Field(ge=0)]], Field(min_length=1)] | None,
        NoDecode,
        BeforeValidator(_list_text),
    ] = None
    # The 4xx statuses retried (5xx, timeouts and network errors always are); None: 408, 425, 429.
    retry_on_status: Annotated[list[int] | None, NoDecode, BeforeValidator(_list_text)] = None
    # Static headers on every request, by name: inline, from a file, or a systemd credential.
    headers: dict[str, SecretStr] = {}
    headers_file: dict[str, Path] = {}
    headers_credential: dict[str, str] = {}

    _proxy = field_validator("proxy")(_proxy_url)

    @field_validator("retry_on_status")
    @classmethod
    def _client_errors(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return None
        wrong = [v for v in value if not 400 <= v <= 499]
        if wrong:
            raise ValueError(
                f"{wrong[0]} is not a 4xx status; list the 4xx statuses to retry "
                "(5xx, timeouts and network errors are always retried)"
            )
        return sorted(set(value))

    @field_validator("headers", "headers_file", "headers_credential")
    @classmethod
    def _header_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            problem = header_rules.name_problem(name)
            if problem is not None:
                raise ValueError(problem)
        return value

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: AnyUrl) -> AnyUrl:
        if broker_routes.kind(str(value)) is None:
            raise ValueError(broker_routes.SCHEMES_HELP)
        if not value.host:
            raise ValueError("the URL names no host")
        return value

    @field_validator(
        "exchange", "routing_key", "subject", "proxy", "password", "password_file", "password_credential"
    )
    @classmethod
    def _belongs_to_the_url(cls, value: Any, info: ValidationInfo) -> Any:
        url = info.data.get("url")
        kind = broker_routes.kind(str(url)) if url is not None else None
        problem = None if kind is None else broker_routes.key_problem(info.field_name or "", kind, value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @property
    def kind(self) -> broker_routes.Kind:
        """webhook (http), amqp or nats, by the url's scheme."""
        return broker_routes.kind(str(self.url)) or "http"

    def broker_url(self) -> str:
        """The URL to connect to a broker with, its password resolved from a file or credential."""
        password = _read_secret(self.password, self.password_file, self.password_credential, "password")
        url = str(self.url)
        return url if password is None else broker_routes.with_password(url, password)

    def static_headers(self) -> dict[str, str]:
        """The static headers with their values, read from files and credentials."""
        twice = header_rules.duplicate([*self.headers, *self.headers_file, *self.headers_credential])
        if twice is not None:
            raise ValueError(f"headers: {twice} is named twice (names are case-insensitive)")
        found = {f"headers.{n}": (n, v.get_secret_value()) for n, v in self.headers.items()}
        found |= {
            f"headers_file.{n}": (n, _read_file(p, f"headers_file.{n}")) for n, p in self.headers_file.items()
        }
        for name, credential in self.headers_credential.items():
            key = f"headers_credential.{name}"
            found[key] = (name, _read_file(_credential_path(credential, key), key))
        for key, (_, value) in found.items():
            problem = header_rules.value_problem(value)
            if problem is not None:
                raise ValueError(f"{key}: {problem}")
        return dict(found.values())

    def retry_schedule(self, delivery: DeliverySettings) -> list[float]:
        """The durable schedule this subscriber's failures follow: its own, else delivery's."""
        return list(self.retry_schedule_s if self.retry_schedule_s is not None else delivery.retry_schedule_s)

    def retryable_statuses(self) -> frozenset[int]:
        """The 4xx statuses retried for this subscriber (its own list, else 408, 425, 429)."""
        return retry.RETRYABLE_4XX if self.retry_on_status is None else frozenset(self.retry_on_status)

    def signing_secrets(self) -> list[str]:
        """The secrets to sign with, newest first; resolved from files or credentials."""
        if self.secrets is not None:
            if any(x is not None for x in (self.secret, self.secret_file, self.secret_credential)):
                raise ValueError(
                    "give either secrets = [...] or one of secret, secret_file, secret_credential"
                )
            return [s.get_secret_value() for s in self.secrets]
        one = _read_secret(self.secret, self.secret_file, self.secret_credential, "secret")
        if one is None:
            raise ValueError(
                "a signing secret is required (secret, secrets, secret_file or secret_credential)"
            )
        return [one]

    @model_validator(mode="after")
    def _check_secrets(self) -> SubscriberSettings:
        if _READ_SECRETS.get():
            self.check_secrets()
        return self

    def check_secrets(self) -> None:
        """Read every secret this subscriber names and check it (ValueError naming the key)."""
        if self.kind != "http":
            self.broker_url()
        secrets = self.signing_secrets()
        self.static_headers()
        if not secrets:
            raise ValueError("secrets must not be empty")
        for secret in secrets:
            if not _is_webhook_secret(secret):
                # The message never quotes the secret.
                raise ValueError("not a Standard Webhooks secret (whsec_ + base64 of at least 16 bytes)")


def _is_webhook_secret(secret: str) -> bool:
    # standardwebhooks decodes leniently (junk becomes some key); a typo must fail here instead.
    body = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(key) >= 16


def _effective_proxy(delivery: DeliverySettings, subscriber: SubscriberSettings) -> str | None:
    if subscriber.proxy is None:
        return delivery.proxy
    return None if subscriber.proxy == _NO_PROXY else subscriber.proxy


# Time to write an outcome after the last attempt of a claim ends.
_LEASE_MARGIN_S = 1.0

_SUBSCRIBER_KEYS = {re.sub(r"[^0-9a-z]", "", s.lower()): s for s in SUBSCRIBERS}


def canonical_subscriber(name: str) -> str | None:
    """The contract's name for a subscriber given in any case or separator style (pf_10: PF-10)."""
    return _SUBSCRIBER_KEYS.get(re.sub(r"[^0-9a-z]", "", name.lower()))
