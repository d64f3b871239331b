"""Configuration: a TOML file, overridden by IT_RELAY_<SECTION>__<KEY> environment variables.

Secrets (subscriber signing secrets, the database password) may be inline, in a `*_file`, or a
systemd credential (`*_credential`, read from $CREDENTIALS_DIRECTORY). Every section forbids
unknown keys, so a typo is named instead of ignored.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import difflib
import hashlib
import json
import os
import re
import tomllib
import typing
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AnyUrl,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from relay import broker_routes, filter_check, header_rules, ratelimit, retry
from relay.contracts import SUBSCRIBERS, format_errors
from relay.errors import ConfigError
from relay.redaction import mask_url

CONFIG_ENV = "IT_RELAY_CONFIG"
PositiveFloat = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


# Whether loading reads secrets now (files, credentials): commands that only read the database
# load without (secrets_unread()), so a shell without $CREDENTIALS_DIRECTORY runs them.
_READ_SECRETS: ContextVar[bool] = ContextVar("read_secrets", default=True)


class CredentialUnavailable(ValueError):
    """A `*_credential` (`key`) asked for outside systemd (no $CREDENTIALS_DIRECTORY)."""

    def __init__(self, key: str) -> None:
        super().__init__(
            f"{key} needs $CREDENTIALS_DIRECTORY, which systemd sets for the unit (LoadCredential=); "
            "from a shell, set it to the directory of the credential files"
        )
        self.key = key


def _read_secret(
    inline: SecretStr | None, file: Path | None, credential: str | None, what: str
) -> str | None:
    given = [x for x in (inline, file, credential) if x is not None]
    if len(given) > 1:
        raise ValueError(f"give only one of {what}, {what}_file, {what}_credential")
    if inline is not None:
        return inline.get_secret_value()
    if file is not None:
        path = file
    elif credential is not None:
        path = _credential_path(credential, f"{what}_credential")
    else:
        return None
    return _read_file(path, what)


def _credential_path(name: str, key: str) -> Path:
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise CredentialUnavailable(key)
    return Path(directory) / name


def _read_file(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read {what} from {path}: {exc.strerror}") from None


class DatabaseSettings(Section):
    url: str = "postgresql://it_relay@localhost:5432/encore"
    password: SecretStr | None = None
    password_file: Path | None = None
    password_credential: str | None = None
    channel: str = "it_events"
    poll_interval_s: PositiveFloat = 5.0
    pool_size: PositiveInt = 8
    # The relay's own bookkeeping (routing, claims, outcomes) commits asynchronously by default: a
    # PostgreSQL crash can lose its last moments, which are then redone (at-least-once holds).
    bookkeeping_commit: Literal["async", "sync"] = "async"
    # The listener's liveness probe: asyncpg does not notice a silently dead server by itself.
    probe_interval_s: PositiveFloat = 10.0
    probe_timeout_s: PositiveFloat = 5.0
    connect_timeout_s: PositiveFloat = 10.0

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("channel")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", value):
            raise ValueError("must be a lower-case SQL identifier (letters, digits, _; at most 63)")
        return value

    def resolved_password(self) -> str | None:
        return _read_secret(self.password, self.password_file, self.password_credential, "password")

    @model_validator(mode="after")
    def _check_password(self) -> DatabaseSettings:
        if _READ_SECRETS.get():
            self.resolved_password()
        return self


class ServerSettings(Section):
    listen: str = "127.0.0.1:9464"
    enabled: bool = True

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be host:port, e.g. 127.0.0.1:9464")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


def _list_text(value: Any) -> Any:
    """A list given as text (an environment variable): JSON (`[5, 30]`) or comma-separated (`5,30`)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise ValueError("must be a JSON list ([5, 30]) or comma-separated values (5,30)") from None
    return [part.strip() for part in text.split(",") if part.strip()]


_NO_PROXY = "none"


def _proxy_url(value: str | None) -> str | None:
    """A proxy URL (http:// or https://: host, optional port and user:password), or "none";
    the message never quotes the value, which may hold credentials."""
    if value is None:
        return None
    text = value.strip()
    if text.lower() in ("", _NO_PROXY):
        return _NO_PROXY
    parts = urlsplit(text)
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        raise ValueError("the proxy's port must be a number from 0 to 65535") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError('must be an http:// or https:// proxy URL, or "none" (SOCKS is not supported)')
    if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("must be a proxy's address: scheme://[user:password@]host[:port], nothing after it")
    return text


class DeliverySettings(Section):
    timeout_s: PositiveFloat = 10.0
    concurrency: PositiveInt = 64
    retry_schedule_s: Annotated[
        list[Annotated[float, Field(ge=0)]], Field(min_length=1), NoDecode, BeforeValidator(_list_text)
    ] = [
        5,
        30,
        120,
        600,
        1800,
        3600,
        10800,
        21600,
    ]
    # Quick in-process retries (tenacity) before a failure is written back to the table.
    inprocess_retries: Annotated[int, Field(ge=0, le=5)] = 1
    inprocess_retry_wait_s: Annotated[float, Field(ge=0)] = 0.2
    jitter: Annotated[float, Field(ge=0, le=1)] = 0.2
    retry_after_max_s: PositiveFloat = 3600.0
    shutdown_grace_s: Annotated[float, Field(ge=0)] = 20.0
    batch_size: PositiveInt = 200
    lease_s: PositiveFloat = 60.0
    circuit_failure_threshold: PositiveInt = 5
    circuit_cooldown_s: PositiveFloat = 30.0
    transport: Literal["pyreqwest", "pyqwest", "aiohttp", "httpx-aiohttp", "httpx"] = "pyreqwest"
    # At most this much of a subscriber's response is read; the rest is discarded with the connection.
    max_response_bytes: Annotated[int, Field(ge=0, le=16 * 1024 * 1024)] = 65536
    # One row per HTTP attempt in it_relay.attempts (time, status or error, duration, excerpt).
    record_attempts: bool = True
    # The proxy every request goes through; HTTP_PROXY & co. in the environment are never read.
    proxy: str | None = None

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, value: str | None) -> str | None:
        proxy = _proxy_url(value)
        return None if proxy == _NO_PROXY else proxy

    def attempt_budget_s(self, timeout_s: float) -> float:
        """The longest one claim can take: every quick retry timing out, and the waits between."""
        retries = self.inprocess_retries
        return timeout_s * (1 + retries) + self.inprocess_retry_wait_s * retries


class RetentionSettings(Section):
    delivered_days: PositiveFloat = 7
    dead_days: PositiveFloat = 30
    rejected_days: PositiveFloat = 30
    interval_s: PositiveFloat = 600.0


class ValidationSettings(Section):
    unknown_fields: Literal["keep", "drop", "reject"] = "keep"


class SlaTarget(Section):
    response: PositiveFloat
    resolution: PositiveFloat

    @model_validator(mode="after")
    def _ordered(self) -> SlaTarget:
        if self.resolution < self.response:
            raise ValueError("resolution target must not be shorter than the response target")
        return self


class ComplianceSettings(Section):
    # Over-deployment (usage above the licence count), as a percentage of the licence count.
    warning_percent: Annotated[float, Field(ge=0)] = 0.0
    critical_percent: Annotated[float, Field(ge=0)] = 10.0
    # A licence whose usage is below this share of its count is under-utilised.
    under_utilized_percent: Annotated[float, Field(ge=0, le=100)] = 50.0

    @model_validator(mode="after")
    def _ordered(self) -> ComplianceSettings:
        if self.critical_percent < self.warning_percent:
            raise ValueError("critical_percent must not be below warning_percent")
        return self


TicketPriority = Literal["critical", "high", "medium", "low"]


def _default_sla() -> dict[TicketPriority, SlaTarget]:
    return {
        "critical": SlaTarget(response=1, resolution=4),
        "high": SlaTarget(response=4, resolution=24),
        "medium": SlaTarget(response=8, resolution=72),
        "low": SlaTarget(response=24, resolution=120),
    }


def _positive_days(values: list[int]) -> list[int]:
    if any(v <= 0 for v in values) or len(set(values)) != len(values):
        raise ValueError("must be distinct positive day counts")
    return values


class SchedulerSettings(Section):
    enabled: bool = True
    interval_s: PositiveFloat = 60.0
    expiry_milestones_days: Annotated[list[int], NoDecode, BeforeValidator(_list_text)] = [90, 60, 30, 14, 7]
    patch_overdue_days: Annotated[list[int], NoDecode, BeforeValidator(_list_text)] = [1, 3, 7, 14, 30]
    timezone: str = "UTC"
    sla_hours: dict[TicketPriority, SlaTarget] = Field(default_factory=_default_sla)
    compliance: ComplianceSettings = ComplianceSettings()

    _days = field_validator("expiry_milestones_days", "patch_overdue_days")(_positive_days)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown IANA time zone") from None
        return value

    @field_validator("sla_hours")
    @classmethod
    def _all_priorities(cls, value: dict[TicketPriority, SlaTarget]) -> dict[TicketPriority, SlaTarget]:
        return {**_default_sla(), **value}


class SubscriberSettings(Section):
    # The scheme chooses the destination: a webhook, RabbitMQ or NATS JetStream (relay.brokers).
    url: AnyUrl
    secret: SecretStr | None = None
    # Several secrets while rotating: every request is signed with each (space-separated).
    secrets: list[SecretStr] | None = None
    secret_file: Path | None = None
    secret_credential: str | None = None
    timeout_s: PositiveFloat | None = None
    max_in_flight: PositiveInt = 16
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


class IngestSettings(Section):
    # Full-payload NOTIFYs from legacy producers (it_relay.publish() notifies only ids).
    legacy: bool = True
    # Roles whose legacy NOTIFYs are trusted, checked by the sending backend's pid; [] = any role.
    legacy_senders: Annotated[list[str], NoDecode, BeforeValidator(_list_text)] = []

    @field_validator("legacy_senders")
    @classmethod
    def _role_names(cls, value: list[str]) -> list[str]:
        for role in value:
            if not role or len(role) > 63 or "\x00" in role:
                raise ValueError(f"{role!r} is not a PostgreSQL role name")
        return value


class LoggingSettings(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "json", "console"] = "auto"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class TracingSettings(Section):
    # OpenTelemetry traces; the exporter, its endpoint and the sampler come from the standard
    # OTEL_* variables (docs/operations.md, "Tracing").
    enabled: bool = False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="IT_RELAY_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
    )

    database: DatabaseSettings = DatabaseSettings()
    server: ServerSettings = ServerSettings()
    delivery: DeliverySettings = DeliverySettings()
    retention: RetentionSettings = RetentionSettings()
    validation: ValidationSettings = ValidationSettings()
    ingest: IngestSettings = IngestSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    logging: LoggingSettings = LoggingSettings()
    tracing: TracingSettings = TracingSettings()
    subscribers: dict[str, SubscriberSettings] = {}

    @field_validator("subscribers", mode="before")
    @classmethod
    def _canonical_names(cls, value: Any) -> Any:
        # Environment variables cannot carry '-' portably and arrive lower-cased, so PF_10, pf-10
        # and PF-10 all name the contract's subscriber "PF-10"; later sources win when merged.
        if not isinstance(value, dict):
            return value
        merged: dict[str, Any] = {}
        for name, conf in value.items():
            canonical = _SUBSCRIBER_KEYS.get(re.sub(r"[^0-9a-z]", "", str(name).lower()))
            if canonical is None:
                raise ValueError(f"unknown subscriber {name!r}; the contracts name {', '.join(SUBSCRIBERS)}")
            if isinstance(conf, dict) and isinstance(merged.get(canonical), dict):
                merged[canonical] = {**merged[canonical], **conf}
            else:
                merged[canonical] = conf
        return merged

    @model_validator(mode="after")
    def _lease_outlives_attempts(self) -> Settings:
        # A lease that ends while its request still runs lets another claim send it again, with
        # the same attempt number: every attempt must end (and be recorded) inside its lease.
        # A rate-limited subscriber's request may also wait for its turn (up to the limiter's
        # horizon) before each attempt.
        d = self.delivery
        paced = (1 + d.inprocess_retries) * ratelimit.HORIZON_S
        claims = {"delivery.timeout_s": (d.timeout_s, 0.0)} | {
            f"subscribers.{n}.timeout_s": (s.timeout_s or d.timeout_s, paced if s.rate_limit_per_s else 0.0)
            for n, s in self.subscribers.items()
            if s.timeout_s or s.rate_limit_per_s
        }
        key, (longest, waits) = max(claims.items(), key=lambda kv: d.attempt_budget_s(kv[1][0]) + kv[1][1])
        needed = d.attempt_budget_s(longest) + waits + _LEASE_MARGIN_S
        if d.lease_s < needed:
            pacing = f", {waits:g} s waiting for the rate limit" if waits else ""
            raise ValueError(
                f"delivery.lease_s: {d.lease_s:g} s is shorter than a claim can take ({key} = {longest:g} s, "
                f"{d.inprocess_retries} quick retries{pacing}, {_LEASE_MARGIN_S:g} s to record the outcome): "
                f"use at least {needed:g}"
            )
        return self

    @model_validator(mode="after")
    def _filters_fit_the_contracts(self) -> Settings:
        for name, subscriber in self.subscribers.items():
            if subscriber.filter is None:
                continue
            problem = filter_check.problem(subscriber.filter, name)
            if problem is not None:
                sep = "" if problem.startswith(":") else "."
                raise ValueError(f"subscribers.{name}.filter{sep}{problem}")
        return self

    @model_validator(mode="after")
    def _one_proxy_per_url(self) -> Settings:
        # The sender picks a request's proxy by its URL: subscribers sharing one share the proxy.
        seen: dict[str, tuple[str, str | None]] = {}
        for name, subscriber in self.subscribers.items():
            proxy = _effective_proxy(self.delivery, subscriber)
            first = seen.setdefault(str(subscriber.url), (name, proxy))
            if first[1] != proxy:
                raise ValueError(
                    f"subscribers.{name}.proxy: differs from subscribers.{first[0]}.proxy, "
                    "which has the same url; give both the same proxy"
                )
        return self

    def subscriber_proxies(self) -> dict[str, str | None]:
        """Each webhook's URL and the proxy its requests go through (None: directly)."""
        return {
            str(s.url): _effective_proxy(self.delivery, s)
            for s in self.subscribers.values()
            if s.kind == "http"
        }

    def as_owner(self, url: str) -> Settings:
        """These settings connecting as another login (the schema owner's, for `db upgrade`)."""
        try:
            database = DatabaseSettings.model_validate(
                self.database.model_dump()
                | {"url": url, "password": None, "password_file": None}
                | {"password_credential": None}
            )
        except ValidationError as exc:
            raise ConfigError(f"--database-url: {format_errors(exc.errors())[0]}") from None
        return self.model_copy(update={"database": database})

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("toml_file") is not None:
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)


class ConfigErrors(ConfigError):
    """Every problem of a configuration (`problems`); the message names the first."""

    def __init__(self, problems: list[str]) -> None:
        more = f" (and {len(problems) - 1} more: check-config lists them)" if len(problems) > 1 else ""
        super().__init__(f"config error: {problems[0]}{more}")
        self.problems = problems


@contextlib.contextmanager
def secrets_unread() -> Iterator[None]:
    """Settings loaded inside read no secret (from a file or a credential) and check none."""
    reading = _READ_SECRETS.set(False)
    try:
        yield
    finally:
        _READ_SECRETS.reset(reading)


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load the effective configuration, or raise ConfigError naming the bad key."""
    chosen = path if path is not None else os.environ.get(CONFIG_ENV)
    config_path = Path(chosen) if chosen else None
    if config_path is not None:
        if config_path.is_dir():
            raise ConfigError(f"config file {config_path}: is a directory; give the TOML file in it")
        if not config_path.is_file():
            origin = (
                f" (named by {CONFIG_ENV}; mount the file there, or point {CONFIG_ENV} at it)"
                if path is None
                else ""
            )
            raise ConfigError(f"config file {config_path}: not found{origin}")
        try:
            tomllib.loads(config_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_path}: invalid TOML: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {config_path}: cannot read it: {exc}") from None
    # pydantic-settings reads the file named in the class's config: a subclass per file, so no
    # module state says which file is being read.
    cls: type[Settings] = (
        Settings
        if config_path is None
        else type(
            "FileSettings", (Settings,), {"model_config": {**Settings.model_config, "toml_file": config_path}}
        )
    )
    _check_environment()
    try:
        return cls(**overrides)
    except ValidationError as exc:
        # A mistyped key explains the "field required" that follows it: report it first.
        details = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        raise ConfigErrors(
            [_did_you_mean(e, text) for e, text in zip(details, format_errors(details), strict=True)]
        ) from None
    except SettingsError as exc:
        raise ConfigError(f"config error: {exc}") from None


def sources(path: str | Path | None = None) -> tuple[Path | None, list[str]]:
    """Where the configuration comes from: the file (given or $IT_RELAY_CONFIG), and the
    IT_RELAY_* variables that override it (names only; values may be secrets)."""
    chosen = path if path is not None else os.environ.get(CONFIG_ENV)
    names = sorted(
        n for n in os.environ if n.upper().startswith("IT_RELAY_") and not n.upper().startswith(_NOT_SETTINGS)
    )
    return (Path(chosen) if chosen else None), names


# IT_RELAY_CONFIG names the file; IT_RELAY_TEST_* belong to the test suite, never the daemon.
_NOT_SETTINGS = ("IT_RELAY_CONFIG", "IT_RELAY_TEST_")


def _check_environment() -> None:
    """Every IT_RELAY_* variable must name a setting: a typo is an error, never silently ignored."""
    for name in sorted(os.environ):
        upper = name.upper()
        if not upper.startswith("IT_RELAY_") or upper.startswith(_NOT_SETTINGS):
            continue
        problem = _unknown_path(Settings, name[len("IT_RELAY_") :].lower().split("__"))
        if problem is not None:
            raise ConfigError(f"environment variable {name}: {problem}")


def _unknown_path(model: type[BaseModel], parts: list[str]) -> str | None:
    """What is wrong with a setting's path (section, key, ...), or None when it names one."""
    fields = model.model_fields
    head, rest = parts[0], parts[1:]
    if head not in fields:
        return _unknown(head, list(fields))
    if not rest:
        return None
    annotation = fields[head].annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _unknown_path(annotation, rest)
    if typing.get_origin(annotation) is dict:
        key_type, value_type = typing.get_args(annotation)
        key = rest[0]
        if head == "subscribers" and re.sub(r"[^0-9a-z]", "", key) not in _SUBSCRIBER_KEYS:
            return _unknown(key, list(SUBSCRIBERS), "subscriber")
        if typing.get_origin(key_type) is Literal and key not in typing.get_args(key_type):
            return _unknown(key, list(typing.get_args(key_type)))
        if len(rest) > 1 and isinstance(value_type, type) and issubclass(value_type, BaseModel):
            return _unknown_path(value_type, rest[1:])
        return None
    return f"{head} is a value, not a section"


def _unknown(name: str, known: list[str], what: str = "setting") -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else f"expected one of {', '.join(known)}"
    return f"unknown {what} {name!r}; {hint}"


def _did_you_mean(error: Any, text: str) -> str:
    """An unknown key's message, with the nearest known key of its section."""
    loc = tuple(error.get("loc", ()))
    if error.get("type") != "extra_forbidden" or not loc:
        return text
    model: Any = Settings
    parts = list(loc[:-1])
    while parts:
        field = getattr(model, "model_fields", {}).get(parts.pop(0))
        model = field.annotation if field is not None else None
        if typing.get_origin(model) is dict:
            model = typing.get_args(model)[1]  # the next part is a key of the mapping (FA)
            parts = parts[1:]
    known = list(getattr(model, "model_fields", {}))
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    return f"{text} (did you mean {close[0]}?)" if close else text


def masked(settings: Settings) -> dict[str, Any]:
    """The effective configuration as plain data, every secret shown as '**********'."""
    data = settings.model_dump(mode="json")
    data["database"]["url"] = mask_url(settings.database.url)
    # Shown as it is written: "none" rather than null, a URL without its password.
    data["delivery"]["proxy"] = mask_url(settings.delivery.proxy) if settings.delivery.proxy else _NO_PROXY
    for name, subscriber in settings.subscribers.items():
        data["subscribers"][name]["url"] = mask_url(str(subscriber.url))
        if subscriber.proxy:
            data["subscribers"][name]["proxy"] = mask_url(subscriber.proxy)
    return data


_SECRET_SOURCES = frozenset(
    f"{what}{how}" for what in ("secret", "password") for how in ("", "_file", "_credential")
) | {"secrets"}


def fingerprint(settings: Settings) -> str:
    """A short digest of what decides delivery (the subscribers and their policies, the delivery
    section), without secrets: instances that run the same configuration share it."""
    data = masked(settings)
    # Where a secret comes from (inline, a file, a credential) is no difference: its value is not seen.
    subscribers = {
        name: {k: v for k, v in conf.items() if k not in _SECRET_SOURCES}
        for name, conf in data["subscribers"].items()
    }
    shown = {"subscribers": subscribers, "delivery": data["delivery"]}
    text = json.dumps(shown, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
