"""The configuration's sections other than the subscribers (database, server, delivery, ...)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    NoDecode,
)

from relay.contracts import UnknownFields
from relay.model import LogFormat, LogLevel, Transport
from relay.settings_common import (
    _NO_PROXY,
    _READ_SECRETS,
    PositiveFloat,
    PositiveInt,
    Section,
    _list_text,
    _proxy_url,
    _read_secret,
)


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


class DeliverySettings(Section):
    timeout_s: PositiveFloat = 10.0
    concurrency: PositiveInt = 256
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
    transport: Transport = "pyreqwest"
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
    unknown_fields: UnknownFields = "keep"


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
    level: LogLevel = "INFO"
    format: LogFormat = "auto"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class TracingSettings(Section):
    # OpenTelemetry traces; the exporter, its endpoint and the sampler come from the standard
    # OTEL_* variables (docs/operations.md, "Tracing").
    enabled: bool = False
