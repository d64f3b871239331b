"""Configuration: TOML, environment overrides, secrets from files and credentials, named errors."""

from __future__ import annotations

import json
from pathlib import Path

import hypothesis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay import broker_routes
from relay.errors import ConfigError
from relay.settings import Settings, SubscriberSettings, load_settings, masked
from tests.support.relay import example_credentials

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
EXAMPLE = Path(__file__).parent.parent / "config" / "relay.example.toml"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("IT_RELAY_") or name == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(name)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "relay.toml"
    path.write_text(text)
    return path


def test_example_config_is_valid_and_matches_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in example_credentials(tmp_path / "credentials").items():
        monkeypatch.setenv(name, value)
    settings = load_settings(EXAMPLE)
    defaults = load_settings(None)
    assert settings.delivery == defaults.delivery
    assert settings.scheduler == defaults.scheduler
    assert settings.database.model_copy(update={"password_credential": None}) == defaults.database
    assert settings.database.resolved_password() == "example-password"
    assert settings.subscribers["PF-10"].signing_secrets() == [SECRET]


def test_every_key_is_documented_in_the_example() -> None:
    text = EXAMPLE.read_text()
    data = masked(load_settings(None))
    for section, values in data.items():
        if section == "subscribers":
            continue
        for key in values:
            assert f"{key} =" in text or f"{key} " in text or f"[{section}.{key}]" in text, f"{section}.{key}"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(
        tmp_path,
        f'[delivery]\nconcurrency = 8\n[subscribers.PF-10]\nurl = "http://a/"\nsecret = "{SECRET}"\n',
    )
    monkeypatch.setenv("IT_RELAY_DELIVERY__CONCURRENCY", "3")
    monkeypatch.setenv("IT_RELAY_SUBSCRIBERS__PF_10__MAX_IN_FLIGHT", "2")
    monkeypatch.setenv("IT_RELAY_DELIVERY__RETRY_SCHEDULE_S", "[1, 2]")
    settings = load_settings(path)
    assert settings.delivery.concurrency == 3
    assert settings.delivery.retry_schedule_s == [1, 2]
    assert settings.subscribers["PF-10"].max_in_flight == 2
    assert str(settings.subscribers["PF-10"].url) == "http://a/"


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IT_RELAY_CONFIG", str(_write(tmp_path, "[database]\nchannel = 'other'\n")))
    assert load_settings().database.channel == "other"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[database]\nurll = 'x'\n", "database.urll: unknown key"),
        ("[delivery]\nconcurrency = 0\n", "delivery.concurrency:"),
        ("[delivery]\nretry_schedule_s = []\n", "delivery.retry_schedule_s:"),
        ("[nonsense]\na = 1\n", "nonsense: unknown key"),
        ("[scheduler]\ntimezone = 'Mars/Olympus'\n", "scheduler.timezone: unknown IANA time zone"),
        ("[database]\nchannel = 'it-events'\n", "database.channel:"),
        ("[server]\nlisten = '9464'\n", "server.listen: must be host:port"),
        ("[subscribers.PF10X]\nurl = 'http://a/'\n", "subscribers: unknown subscriber 'PF10X'"),
        ("[subscribers.FA]\nurl = 'http://a/'\n", "subscribers.FA: a signing secret is required"),
        (
            "[subscribers.FA]\nurl = 'ftp://a/'\nsecret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'\n",
            "subscribers.FA.url:",
        ),
        ("[validation]\nunknown_fields = 'ignore'\n", "validation.unknown_fields:"),
        ("[database\n", "invalid TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, text))
    assert named in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_environment_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IT_RELAY_DELIVERY__TIMEOUT_S", "soon")
    with pytest.raises(ConfigError, match=r"delivery\.timeout_s"):
        load_settings(None)


def test_invalid_secret_is_named_but_never_shown(tmp_path: Path) -> None:
    path = _write(tmp_path, "[subscribers.GR]\nurl = 'http://a/'\nsecret = 'hunter2-not-base64!'\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert "subscribers.GR: " in str(info.value)
    assert "hunter2" not in str(info.value) and "hunter2" not in repr(info.value)


def test_secrets_from_file_and_systemd_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "fa.secret").write_text(SECRET + "\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "gr-secret").write_text(OTHER)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    path = _write(
        tmp_path,
        f"[subscribers.FA]\nurl = 'http://a/'\nsecret_file = '{tmp_path / 'fa.secret'}'\n"
        "[subscribers.GR]\nurl = 'http://b/'\nsecret_credential = 'gr-secret'\n"
        f"[subscribers.Audit]\nurl = 'http://c/'\nsecrets = ['{OTHER}', '{SECRET}']\n",
    )
    settings = load_settings(path)
    assert settings.subscribers["FA"].signing_secrets() == [SECRET]
    assert settings.subscribers["GR"].signing_secrets() == [OTHER]
    assert settings.subscribers["Audit"].signing_secrets() == [OTHER, SECRET]
    shown = str(masked(settings))
    assert SECRET not in shown and OTHER not in shown


def test_two_secret_sources_are_refused(tmp_path: Path) -> None:
    path = _write(
        tmp_path, f"[subscribers.FA]\nurl = 'http://a/'\nsecret = '{SECRET}'\nsecret_credential = 'x'\n"
    )
    with pytest.raises(ConfigError, match=r"give only one of secret"):
        load_settings(path)


def test_database_password_is_masked(tmp_path: Path) -> None:
    path = _write(tmp_path, "[database]\nurl = 'postgresql://relay:s3cr3t@db:5432/encore'\n")
    assert "s3cr3t" not in str(masked(load_settings(path)))


def test_subscriber_names_are_canonical(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        f"[subscribers.fa_04]\nurl = 'http://a/'\nsecret = '{SECRET}'\n"
        f"[subscribers.audit]\nurl = 'http://a/'\nsecret = '{SECRET}'\n",
    )
    assert set(load_settings(path).subscribers) == {"FA-04", "Audit"}


@pytest.mark.parametrize(
    ("delivery", "subscriber_timeout", "named"),
    [
        ({"lease_s": 1, "timeout_s": 6}, None, "delivery.timeout_s = 6 s"),
        ({"lease_s": 9, "timeout_s": 4, "inprocess_retries": 1}, None, "use at least 9.2"),
        ({"lease_s": 30, "timeout_s": 5}, 40, "subscribers.FA.timeout_s = 40 s"),
    ],
)
def test_a_lease_shorter_than_a_claim_can_take_is_refused(
    delivery: dict[str, float], subscriber_timeout: float | None, named: str
) -> None:
    fa = {"url": "https://fa.example/hook", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
    if subscriber_timeout is not None:
        fa["timeout_s"] = subscriber_timeout  # type: ignore[assignment]
    with pytest.raises(ConfigError, match=r"delivery\.lease_s: .*") as caught:
        load_settings(None, delivery=delivery, subscribers={"FA": fa})
    assert named in str(caught.value)


def test_every_secret_in_a_url_is_masked_in_check_config(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "[database]\nurl = 'postgresql://relay:s3cr3t@db:5432/encore?sslpassword=pw2'\n"
        "[subscribers.FA]\nurl = 'https://tok3n@fa.example/hook?token=abc123&sig=def456'\n"
        "secret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'\n",
    )
    shown = str(masked(load_settings(path)))
    for secret in ("s3cr3t", "pw2", "tok3n", "abc123", "def456", "MfKQ9r8"):
        assert secret not in shown
    assert "https://***@fa.example/hook?token=***&sig=***" in shown
    assert "postgresql://relay:***@db:5432/encore?sslpassword=***" in shown


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        ("IT_RELAY_DELIVRY__CONCURRENCY", "unknown setting 'delivry'; did you mean delivery?"),
        ("IT_RELAY_DELIVERY__CONCURENCY", "unknown setting 'concurency'; did you mean concurrency?"),
        ("IT_RELAY_SUBSCRIBERS__PF11X__URL", "unknown subscriber 'pf11x'; expected one of PF-10"),
        ("IT_RELAY_SUBSCRIBERS__PF_10__ULR", "unknown setting 'ulr'; did you mean url?"),
        ("IT_RELAY_DELIVERY__TIMEOUT_S__X", "timeout_s is a value, not a section"),
    ],
)
def test_a_mistyped_environment_variable_is_named_with_a_suggestion(
    monkeypatch: pytest.MonkeyPatch, variable: str, message: str
) -> None:
    monkeypatch.setenv(variable, "3")
    with pytest.raises(ConfigError) as caught:
        load_settings(None)
    assert str(caught.value).startswith(f"environment variable {variable}: {message}")


@pytest.mark.parametrize("value", ["5,30", "[5, 30]", " 5 , 30 "])
def test_lists_from_the_environment_are_json_or_comma_separated(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("IT_RELAY_DELIVERY__RETRY_SCHEDULE_S", value)
    assert load_settings(None).delivery.retry_schedule_s == [5, 30]


def test_a_mistyped_key_is_reported_before_the_field_it_left_missing(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "[subscribers.FA]\nulr = 'https://fa.example/hook'\nsecret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'\n",
    )
    with pytest.raises(ConfigError, match=r"subscribers\.FA\.ulr: unknown key \(did you mean url\?\)"):
        load_settings(path)


def test_url_errors_say_what_is_expected(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "[subscribers.FA]\nurl = 'ftp://fa.example/hook'\nsecret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'\n",
    )
    with pytest.raises(ConfigError, match=r"subscribers\.FA\.url: URL scheme should be 'http' or 'https'"):
        load_settings(path)


def test_proxies_are_configured_explicitly_and_masked(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "[delivery]\nproxy = 'http://relay:pr0xyPW@proxy.internal:3128'\n"
        f"[subscribers.FA]\nurl = 'https://fa.example/hook'\nsecret = '{SECRET}'\nproxy = 'none'\n"
        f"[subscribers.GR]\nurl = 'https://gr.example/hook'\nsecret = '{SECRET}'\n"
        f"[subscribers.HR]\nurl = 'https://hr.example/hook'\nsecret = '{SECRET}'\n"
        "proxy = 'https://hr:hrPW@hr-proxy:8443'\n",
    )
    settings = load_settings(path)
    assert settings.subscriber_proxies() == {
        "https://fa.example/hook": None,
        "https://gr.example/hook": "http://relay:pr0xyPW@proxy.internal:3128",
        "https://hr.example/hook": "https://hr:hrPW@hr-proxy:8443",
    }
    shown = masked(settings)
    assert shown["delivery"]["proxy"] == "http://relay:***@proxy.internal:3128"
    assert shown["subscribers"]["HR"]["proxy"] == "https://hr:***@hr-proxy:8443"
    assert "pr0xyPW" not in str(shown) and "hrPW" not in str(shown)
    # The default is no proxy, "none" and an empty value say so explicitly.
    assert load_settings(None).delivery.proxy is None
    assert masked(load_settings(None))["delivery"]["proxy"] == "none"
    for none in ("none", "", " NONE "):
        assert load_settings(None, delivery={"proxy": none}).delivery.proxy is None


def test_a_proxy_from_the_environment_is_only_ever_the_relays_own_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://env-proxy:3128")
    assert load_settings(None).delivery.proxy is None
    monkeypatch.setenv("IT_RELAY_DELIVERY__PROXY", "http://chosen:3128")
    monkeypatch.setenv("IT_RELAY_SUBSCRIBERS__FA__URL", "https://fa.example/hook")
    monkeypatch.setenv("IT_RELAY_SUBSCRIBERS__FA__SECRET", SECRET)
    monkeypatch.setenv("IT_RELAY_SUBSCRIBERS__FA__PROXY", "none")
    settings = load_settings(None)
    assert settings.delivery.proxy == "http://chosen:3128"
    assert settings.subscriber_proxies() == {"https://fa.example/hook": None}


@pytest.mark.parametrize(
    ("proxy", "message"),
    [
        ("socks5://s3cr3t:pw@proxy:1080", "SOCKS is not supported"),
        ("socks5h://proxy:1080", "SOCKS is not supported"),
        ("ftp://proxy:21", "must be an http:// or https:// proxy URL"),
        ("proxy.internal:3128", "must be an http:// or https:// proxy URL"),
        ("http://s3cr3t:pw@proxy:99999", "port must be a number"),
        ("http://s3cr3t:pw@proxy:port", "port must be a number"),
        ("http://", "must be a proxy's address"),
        ("http://s3cr3t:pw@proxy:3128/path", "must be a proxy's address"),
        ("http://proxy:3128?token=s3cr3t", "must be a proxy's address"),
        ("http://proxy:3128#s3cr3t", "must be a proxy's address"),
    ],
)
@pytest.mark.parametrize("where", ["delivery", "subscriber"])
def test_a_bad_proxy_is_named_on_one_line_without_its_value(proxy: str, message: str, where: str) -> None:
    fa = {"url": "https://fa.example/hook", "secret": SECRET}
    delivery, key = (
        ({"proxy": proxy}, "delivery.proxy") if where == "delivery" else ({}, "subscribers.FA.proxy")
    )
    if where == "subscriber":
        fa["proxy"] = proxy
    with pytest.raises(ConfigError) as caught:
        load_settings(None, delivery=delivery, subscribers={"FA": fa})
    text = str(caught.value)
    assert text.startswith(f"config error: {key}: ") and message in text
    assert "\n" not in text and "s3cr3t" not in text and "s3cr3t" not in repr(caught.value)


def test_subscribers_sharing_a_url_share_its_proxy() -> None:
    one = {"url": "https://shared.example/hook", "secret": SECRET}
    with pytest.raises(ConfigError, match=r"subscribers\.GR\.proxy: differs from subscribers\.FA\.proxy"):
        load_settings(None, subscribers={"FA": one | {"proxy": "http://a:1"}, "GR": one})
    # The same effective proxy, spelled once through delivery.proxy, is fine.
    same = load_settings(
        None, delivery={"proxy": "http://a:1"}, subscribers={"FA": one | {"proxy": "http://a:1"}, "GR": one}
    )
    assert same.subscriber_proxies() == {"https://shared.example/hook": "http://a:1"}


# Broker subscribers (url = amqp:// or nats://): their keys, templates and credentials.
AMQP = "url = 'amqp://relay@mq.internal:5672/it'\nexchange = 'it.events'\n"
NATS = "url = 'nats://nats.internal:4222'\n"


def _broker(tmp_path: Path, keys: str) -> Settings:
    return load_settings(_write(tmp_path, f"[subscribers.IT-07]\nsecret = '{SECRET}'\n{keys}"))


@pytest.mark.parametrize(
    ("keys", "named"),
    [
        (AMQP, "subscribers.IT-07.routing_key: required for an amqp(s):// url"),
        (
            "url = 'amqp://mq/'\nrouting_key = '{event_type}'\n",
            "subscribers.IT-07.exchange: required for an amqp",
        ),
        (NATS, "subscribers.IT-07.subject: required for a nats:// (or tls://) url"),
        (NATS + "subject = 'it'\nexchange = 'x'\n", "subscribers.IT-07.exchange: only for an amqp(s):// url"),
        (AMQP + "routing_key = 'k'\nsubject = 'it'\n", "subscribers.IT-07.subject: only for a nats://"),
        ("url = 'https://a/'\nsubject = 'it'\n", "subscribers.IT-07.subject: only for a nats://"),
        ("url = 'https://a/'\npassword = 'x'\n", "subscribers.IT-07.password: only for a broker url"),
        (NATS + "subject = 'it'\nproxy = 'none'\n", "subscribers.IT-07.proxy: only for a webhook"),
        (AMQP + "routing_key = '{event}'\n", "subscribers.IT-07.routing_key: unknown placeholder {event};"),
        (NATS + "subject = 'it.{tenant}'\n", "subscribers.IT-07.subject: unknown placeholder {tenant};"),
        (NATS + "subject = 'it.{event_type!r}'\n", "takes no format or conversion"),
        (NATS + "subject = 'it.{0}'\n", "unknown placeholder {?}"),
        (NATS + "subject = 'it.{event_type'\n", "subscribers.IT-07.subject: not a template"),
        (NATS + "subject = 'it..{event_type}'\n", "subject: renders to a subject that has an empty token"),
        (NATS + "subject = 'it.>'\n", "contains a wildcard character"),
        (NATS + "subject = 'it {event_type}'\n", "contains whitespace"),
        (AMQP + f"routing_key = '{'k' * 256}'\n", "routing_key: rendered is longer than 255 bytes"),
        ("url = 'kafka://k:9092'\n", "subscribers.IT-07.url: URL scheme should be 'http' or 'https'"),
        ("url = 'nats://'\nsubject = 'it'\n", "subscribers.IT-07.url: the URL names no host"),
        (
            "url = 'amqp://u:inline@mq/'\nexchange = ''\nrouting_key = 'q'\npassword = 'other'\n",
            "give the password in url or in password",
        ),
    ],
)
def test_a_broker_subscribers_bad_key_is_named_on_one_line(tmp_path: Path, keys: str, named: str) -> None:
    with pytest.raises(ConfigError) as info:
        _broker(tmp_path, keys)
    assert named in str(info.value)
    assert "\n" not in str(info.value)


def test_the_url_scheme_chooses_the_destination(tmp_path: Path) -> None:
    amqp = _broker(tmp_path, AMQP + "routing_key = '{event_type}.{entity_key}'\n").subscribers["IT-07"]
    assert (amqp.kind, amqp.exchange, amqp.routing_key) == ("amqp", "it.events", "{event_type}.{entity_key}")
    nats = _broker(tmp_path, "url = 'tls://n:4222'\nsubject = 'it.{organization_id}'\n").subscribers["IT-07"]
    assert nats.kind == "nats"
    default_exchange = _broker(tmp_path, "url = 'amqps://mq/'\nexchange = ''\nrouting_key = 'q'\n")
    assert default_exchange.subscribers["IT-07"].exchange == ""
    assert _broker(tmp_path, "url = 'https://a/'\n").subscribers["IT-07"].kind == "http"


def test_a_broker_password_from_a_file_or_credential_is_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mq.password").write_text("p@ss:w/rd%\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "nats-password").write_text("n4tsPassw0rd")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    path = _write(
        tmp_path,
        f"[subscribers.IT-07]\nsecret = '{SECRET}'\n{AMQP}routing_key = 'k'\n"
        f"password_file = '{tmp_path / 'mq.password'}'\n"
        f"[subscribers.PF-11]\nsecret = '{SECRET}'\nurl = 'nats://relay@n:4222'\nsubject = 'it'\n"
        "password_credential = 'nats-password'\n"
        f"[subscribers.FA]\nsecret = '{SECRET}'\nurl = 'amqp://relay:inl1nePw@mq/'\nexchange = 'x'\n"
        "routing_key = 'k'\n",
    )
    settings = load_settings(path)
    assert settings.subscribers["IT-07"].broker_url() == "amqp://relay:p%40ss%3Aw%2Frd%25@mq.internal:5672/it"
    assert settings.subscribers["PF-11"].broker_url() == "nats://relay:n4tsPassw0rd@n:4222"
    assert settings.subscribers["FA"].broker_url() == "amqp://relay:inl1nePw@mq/"
    shown = json.dumps(masked(settings))
    assert not any(p in shown for p in ("p@ss", "p%40ss", "n4tsPassw0rd", "inl1nePw"))
    assert "amqp://relay:***@mq/" in shown


@given(st.text(max_size=60))
@hypothesis.settings(max_examples=300, deadline=None)
def test_any_subject_template_is_taken_or_named_on_one_line(text: str) -> None:
    message = ""
    try:
        load_settings(None, subscribers={"PF-11": {"url": "nats://n", "secret": SECRET, "subject": text}})
    except ConfigError as exc:
        message = str(exc)
    assert not message or message.startswith("config error: subscribers.PF-11.subject: ")
    assert "\n" not in message


_LITERAL = st.text(alphabet=st.characters(exclude_characters="{}", codec="utf-8"), max_size=8)


@given(
    st.lists(st.tuples(_LITERAL, st.sampled_from(broker_routes.PLACEHOLDERS)), max_size=5),
    _LITERAL,
    st.fixed_dictionaries({p: st.text(max_size=12) for p in broker_routes.PLACEHOLDERS}),
)
def test_a_template_renders_as_str_format_would(
    parts: list[tuple[str, str]], tail: str, values: dict[str, str]
) -> None:
    text = "".join(f"{literal}{{{name}}}" for literal, name in parts) + tail + "{{x}}"
    template = broker_routes.parse(text)
    assert template.render(values) == text.format(**values)
    assert template.names == {name for _, name in parts}


def test_the_examples_broker_subscribers_are_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The commented IT-07 and PF-11 tables of the example, uncommented, load as they are.
    text = EXAMPLE.read_text()
    tables = text[text.index("# [subscribers.IT-07]") :]
    uncommented = "\n".join(line.removeprefix("#").removeprefix(" ") for line in tables.splitlines())
    creds = tmp_path / "creds"
    creds.mkdir()
    for name in ("it07-amqp-password", "it07-webhook-secret", "pf11-webhook-secret"):
        (creds / name).write_text(SECRET if "webhook" in name else "mq-password")
    (creds / "n").write_text("nats-password")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    settings = load_settings(
        _write(tmp_path, uncommented.replace("/etc/it-relay/nats.password", str(creds / "n")))
    )
    assert settings.subscribers["IT-07"].kind == "amqp" and settings.subscribers["PF-11"].kind == "nats"
    assert settings.subscribers["IT-07"].broker_url() == "amqps://it-relay:mq-password@mq.internal:5671/it"
    assert settings.subscribers["PF-11"].broker_url() == "nats://it-relay:nats-password@nats.internal:4222"


# ─── Per-subscriber policy: filter, rate_limit_per_s, retry_schedule_s, retry_on_status, headers ───


def test_every_subscriber_key_is_documented_in_the_example() -> None:
    text = EXAMPLE.read_text()
    for key in SubscriberSettings.model_fields:
        assert f"{key} =" in text, f"subscribers.NAME.{key}"


def test_the_examples_policy_table_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = EXAMPLE.read_text()
    table = text[text.index("# [subscribers.GR]") : text.index("# A broker subscriber")]
    uncommented = "\n".join(line.removeprefix("#").removeprefix(" ") for line in table.splitlines())
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "gr-webhook-secret").write_text(SECRET)
    (creds / "gr-gateway-token").write_text("gateway-token-0042")
    (tmp_path / "key").write_text("api-key-0042\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    gr = load_settings(
        _write(tmp_path, uncommented.replace("/etc/it-relay/gr-api.key", str(tmp_path / "key")))
    )
    conf = gr.subscribers["GR"]
    assert conf.filter == {"severity": {"$in": ["critical", "high"]}}
    assert (conf.rate_limit_per_s, conf.retry_schedule(gr.delivery)) == (50, [1, 10, 60])
    assert conf.retryable_statuses() == {404, 408, 425, 429}
    assert conf.static_headers() == {
        "Authorization": "Bearer ...",
        "X-Api-Key": "api-key-0042",
        "X-Gateway-Token": "gateway-token-0042",
    }


def test_the_policy_defaults_are_todays() -> None:
    settings = load_settings(None, subscribers={"FA": {"url": "https://a/", "secret": SECRET}})
    fa = settings.subscribers["FA"]
    assert fa.retry_schedule(settings.delivery) == settings.delivery.retry_schedule_s
    assert fa.retryable_statuses() == {408, 425, 429}
    assert (fa.filter, fa.rate_limit_per_s, fa.static_headers()) == (None, None, {})


FA = f"[subscribers.FA]\nurl = 'https://a/'\nsecret = '{SECRET}'\n"


@pytest.mark.parametrize(
    ("keys", "named"),
    [
        ("filter = { license_key = 'x' }", "subscribers.FA.filter.license_key: names a licence key"),
        (
            "filter = { 'Licence-Key' = { '$exist' = true } }",
            "subscribers.FA.filter.Licence-Key: names a licence key",
        ),
        (
            "filter = { severity = 'high' }",
            "subscribers.FA.filter.severity: no event routed to FA has this field",
        ),
        (
            "filter = { asset_tag = { '$like' = 'A%' } }",
            "subscribers.FA.filter.asset_tag.$like: unknown operator",
        ),
        (
            "filter = { purchase_cost = { '$gt' = 'lots' } }",
            "subscribers.FA.filter.purchase_cost.$gt: 'lots' does not fit",
        ),
        (
            "filter = { asset_type = 'spaceship' }",
            "subscribers.FA.filter.asset_type: 'spaceship' does not fit",
        ),
        (
            "filter = { purchase_cost = { '$gt' = nan } }",
            "subscribers.FA.filter.purchase_cost.$gt: not a finite number",
        ),
        ("filter = 'everything'", "subscribers.FA.filter: Input should be a valid dictionary"),
        ("rate_limit_per_s = 0", "subscribers.FA.rate_limit_per_s: Input should be greater than 0"),
        (
            "rate_limit_per_s = 1e9",
            "subscribers.FA.rate_limit_per_s: Input should be less than or equal to 10000",
        ),
        ("retry_schedule_s = []", "subscribers.FA.retry_schedule_s: List should have at least 1 item"),
        (
            "retry_schedule_s = [-1]",
            "subscribers.FA.retry_schedule_s[0]: Input should be greater than or equal to 0",
        ),
        ("retry_on_status = [404, 503]", "subscribers.FA.retry_on_status: 503 is not a 4xx status"),
        ("retry_on_status = [200]", "subscribers.FA.retry_on_status: 200 is not a 4xx status"),
        (
            "headers = { Webhook-Signature = 'v1,x' }",
            "subscribers.FA.headers: Webhook-Signature is set by the relay",
        ),
        (
            "headers = { Content-Type = 'text/plain' }",
            "subscribers.FA.headers: Content-Type is set by the relay",
        ),
        (
            "headers = { x-it-event-type = 'x' }",
            "subscribers.FA.headers: x-it-event-type is set by the relay",
        ),
        ("headers = { ce-id = 'x' }", "subscribers.FA.headers: ce-id is set by the relay"),
        ("headers = { 'X Bad' = 'x' }", "subscribers.FA.headers: 'X Bad' is not a header name"),
        (
            'headers = { X-Token = "a\\nInjected: yes" }',
            "subscribers.FA: headers.X-Token: the value must be visible ASCII",
        ),
        ("headers = { X-Token = '' }", "subscribers.FA: headers.X-Token: the value is empty"),
        (
            "headers = { X-Token = 'a' }\nheaders_file = { x-token = '/x' }",
            "subscribers.FA: headers: x-token is named twice",
        ),
        (
            "headers_file = { X-Token = '/nonexistent/token' }",
            "subscribers.FA: cannot read headers_file.X-Token from",
        ),
        (
            "headers_credential = { X-Token = 'tok' }",
            "subscribers.FA: headers_credential.X-Token needs $CREDENTIALS_DIRECTORY",
        ),
    ],
)
def test_a_bad_policy_key_is_named_on_one_line(tmp_path: Path, keys: str, named: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, FA + keys + "\n"))
    assert named in str(info.value)
    assert "\n" not in str(info.value)


def test_a_header_value_is_never_shown_in_an_error_nor_by_check_config(tmp_path: Path) -> None:
    secret = "Bearer very-secret-token-123"
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, FA + f'headers = {{ X-Token = "{secret}\\u0007" }}\n'))
    assert "very-secret" not in str(info.value)
    shown = masked(load_settings(_write(tmp_path, FA + f"headers = {{ Authorization = '{secret}' }}\n")))
    assert shown["subscribers"]["FA"]["headers"] == {"Authorization": "**********"}
    assert "very-secret" not in json.dumps(shown)


def test_a_rate_limited_subscribers_lease_covers_its_wait_for_a_slot() -> None:
    fa = {"url": "https://a/", "secret": SECRET, "rate_limit_per_s": 5}
    with pytest.raises(ConfigError, match=r"2 s waiting for the rate limit.*use at least 13"):
        load_settings(None, delivery={"lease_s": 12.5, "inprocess_retries": 0}, subscribers={"FA": fa})
    assert load_settings(None, delivery={"lease_s": 13, "inprocess_retries": 0}, subscribers={"FA": fa})
