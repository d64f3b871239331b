"""Configuration: a TOML file, overridden by IT_RELAY_<SECTION>__<KEY> environment variables.

Secrets (subscriber signing secrets, the database password) may be inline, in a `*_file`, or a
systemd credential (`*_credential`, read from $CREDENTIALS_DIRECTORY). Every section forbids
unknown keys, so a typo is named instead of ignored.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
import re
import tomllib
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from relay import filter_check, ratelimit
from relay.contracts import SUBSCRIBERS, format_errors
from relay.errors import ConfigError
from relay.redaction import mask_url
from relay.settings_common import _NO_PROXY, _READ_SECRETS, CONFIG_ENV, CredentialUnavailable
from relay.settings_sections import (
    ComplianceSettings,
    DatabaseSettings,
    DeliverySettings,
    IngestSettings,
    LoggingSettings,
    RetentionSettings,
    SchedulerSettings,
    ServerSettings,
    SlaTarget,
    TracingSettings,
    ValidationSettings,
)
from relay.settings_subscribers import (
    _LEASE_MARGIN_S,
    _SUBSCRIBER_KEYS,
    SubscriberSettings,
    _effective_proxy,
    canonical_subscriber,
)

# Everything the rest of the relay reads from here (the sections live in settings_sections and
# settings_subscribers; what they share in settings_common).
__all__ = [
    "CONFIG_ENV",
    "ComplianceSettings",
    "ConfigErrors",
    "CredentialUnavailable",
    "DatabaseSettings",
    "DeliverySettings",
    "IngestSettings",
    "LoggingSettings",
    "RetentionSettings",
    "SchedulerSettings",
    "ServerSettings",
    "Settings",
    "SlaTarget",
    "SubscriberSettings",
    "TracingSettings",
    "ValidationSettings",
    "canonical_subscriber",
    "fingerprint",
    "load_settings",
    "masked",
    "secrets_unread",
    "sources",
]


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
        # A rate-limited subscriber's request may also wait for its slot (at most two of the
        # limiter's horizons) before each attempt.
        d = self.delivery
        paced = (1 + d.inprocess_retries) * ratelimit.LONGEST_WAIT_S
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
