"""license_key never survives: payloads, rejections, raw text, log lines, exception messages."""

from __future__ import annotations

import html
import io
import json
import random
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay import codec, logs
from relay.contracts import Accepted, UnknownFields, parse_event, validate
from relay.contracts.examples import example
from relay.redaction import REDACTED, excerpt, is_sensitive_key, may_mention_licence, redact, scrub_text

# Keys carry markers so that "the key appears" cannot be a coincidence with other text.
keys = st.text(min_size=1, max_size=200).map(lambda s: f"LKEY{s}YEKL") | st.text(
    alphabet="\"\\'{}[]:,= \n\t\u00e9\u4e2d\U0001f511", min_size=1, max_size=10_000
).map(lambda s: f"LKEY{s}YEKL")
key_names = st.sampled_from(
    [
        "license_key",
        "License_Key",
        "LICENSE-KEY",
        "licenseKey",
        "license key",
        # Any run of separators, as is_sensitive_key allows (issue 22, finding 10).
        "license" + "_" * 20 + "key",
        "licence_-_. _-_.-_key",
        "l__i__c__e__n__s__e____k__e__y",
    ]
)


def _forms(key: str) -> list[str]:
    """The key as written, as JSON escapes it, and as JSON escapes it with ensure_ascii."""
    return [key, json.dumps(key)[1:-1], json.dumps(key, ensure_ascii=False)[1:-1]]


def _leaks(key: str, text: str) -> bool:
    return any(form in text for form in _forms(key))


@st.composite
def nested(draw: st.DrawFn, key: str) -> Any:
    """A JSON value with the key somewhere below a random path of dicts and lists."""
    value: Any = {draw(key_names): key}
    for _ in range(draw(st.integers(0, 6))):
        value = draw(st.sampled_from([[value], {"wrap": value}, {"a": 1, "b": [0, value]}]))
    return value


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_key_never_survives_validation(data: st.DataObject) -> None:
    key = data.draw(keys)
    payload = example("it_license_created") | {"license_key": key, "extra": data.draw(nested(key))}
    policies: tuple[UnknownFields, ...] = ("keep", "drop", "reject")
    for policy in policies:
        result = validate(payload, policy)
        stored = codec.dumps(result.payload).decode()
        assert not _leaks(key, stored)
        if isinstance(result, Accepted):
            assert result.payload["license_key"] == REDACTED
        else:
            assert not _leaks(key, "\n".join(result.errors))


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(key=keys, broken=st.sampled_from(["int", "enum", "uuid"]))
def test_key_never_appears_in_rejections(key: str, broken: str) -> None:
    bad = {"int": {"license_count": key}, "enum": {"license_type": key}, "uuid": {"vendor_id": key}}[broken]
    payload = example("it_license_created") | {"license_key": key} | bad
    result = parse_event(codec.dumps(payload))
    assert not isinstance(result, Accepted)
    if result.reason == "invalid_text":  # a NUL in the key: kept as scrubbed text
        assert isinstance(result.payload, str)
        assert '"license_key":"[REDACTED]"' in result.payload
        assert not _leaks(key, "\n".join(result.errors))
        return
    text = "\n".join(result.errors) + codec.dumps(result.payload).decode()
    # The key was also put into another field, which the rejection keeps verbatim; only the
    # licence key field must be redacted, and errors must never quote any input.
    assert codec.loads(codec.dumps(result.payload))["license_key"] == REDACTED
    assert not _leaks(key, "\n".join(result.errors))
    assert text


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(key=keys, name=key_names, cut=st.floats(0, 1))
def test_key_is_scrubbed_from_text_that_is_not_json(key: str, name: str, cut: float) -> None:
    document = codec.dumps(example("it_license_created") | {name: key}).decode()
    start = document.index(json.dumps(name)) + len(json.dumps(name))
    # Cut the document anywhere from just after the key's name to its end: never valid JSON.
    end = start + int(cut * (len(document) - start))
    broken = document[:end] if end < len(document) else document[:-1]
    result = parse_event(broken.encode())
    assert not isinstance(result, Accepted)
    assert isinstance(result.payload, str)
    assert "LKEY" not in result.payload
    assert not _leaks(key, "\n".join(result.errors))


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(key=keys, name=key_names)
def test_key_never_reaches_a_log_line(key: str, name: str) -> None:
    out = io.StringIO()
    logs.configure("DEBUG", "json", stream=out)
    log = logs.get_logger("test")
    log.info(
        "event received", payload=example("it_license_created") | {name: key}, **{name.replace(" ", "_"): key}
    )
    log.info(f"free text mentions license_key={json.dumps(key)} inline")
    try:
        raise RuntimeError(f'failed on {{"license_key": {json.dumps(key)}}}')
    except RuntimeError:
        log.exception("delivery failed")
    text = out.getvalue()
    assert text.count("\n") == 3
    assert not _leaks(key, text)
    assert REDACTED in text


@given(key=keys)
def test_exceptions_from_parsing_never_carry_the_key(key: str) -> None:
    with pytest.raises(codec.JSONError) as info:
        codec.loads(f'{{"license_key": {json.dumps(key)}, oops')
    assert not _leaks(key, str(info.value))
    assert not _leaks(key, repr(info.value))


def test_redact_is_deep_and_covers_suffixed_keys() -> None:
    value = {"a": [{"LicenseKey": "s"}, {"license_keys": "s2"}], "b": {"license-key": {"x": 1}}}
    assert redact(value) == {
        "a": [{"LicenseKey": REDACTED}, {"license_keys": REDACTED}],
        "b": {"license-key": {"redacted": "object"}},  # not a string: still fails validation
    }
    assert is_sensitive_key("LICENSE_KEY") and not is_sensitive_key("license")


def test_scrub_text_handles_shapes_seen_in_logs() -> None:
    assert scrub_text("license_key=ABC-123 next") == f'license_key="{REDACTED}" next'
    assert scrub_text("{'license_key': 'A\\'B'}") == f"{{'license_key': \"{REDACTED}\"}}"
    assert scrub_text('"licenseKey" : "abc') == f'"licenseKey" : "{REDACTED}"'
    assert scrub_text("the license key rotates yearly") == "the license key rotates yearly"


def test_random_bytes_never_break_scrubbing() -> None:
    rng = random.Random(7)
    for _ in range(500):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        result = parse_event(b'{"license_key": "LKEYsecretYEKL' + blob)
        assert not isinstance(result, Accepted)
        assert "LKEYsecret" not in str(result.payload)


@settings(max_examples=200)
@given(data=st.data())
def test_the_cheap_precheck_never_skips_a_payload_that_needs_redaction(data: st.DataObject) -> None:
    key = data.draw(keys)
    payload = data.draw(nested(key))
    text = codec.dumps(payload).decode()
    escaped = json.dumps(payload, default=str)  # ensure_ascii: every non-ASCII letter as \uXXXX
    for form in (text, escaped, escaped.replace("license", "\\u006cicense")):
        try:
            value = codec.loads(form)
        except codec.InvalidText:
            continue  # rejected as invalid_text before any redaction matters
        if redact(value) != value:
            assert may_mention_licence(form)
            assert may_mention_licence(form.encode())


def test_depth_limit_is_checked_without_recursion() -> None:
    deep: Any = {"license_key": "LKEYdeepYEKL"}
    for _ in range(100_000):
        deep = [deep]
    assert codec.too_deep(deep)
    assert not codec.too_deep(example("it_purchase_request_received"))
    result = validate({"event_type": "it_ticket_created", "extra": deep})
    assert not isinstance(result, Accepted)
    assert result.errors == ("$: nested deeper than 64 levels",)
    assert "LKEY" not in str(result.payload)


@given(
    user=st.text(alphabet="abcdefgh", min_size=1, max_size=8),
    # Letters first: a bare digit string could also occur in a log line's timestamp.
    secret=st.text(alphabet="XYZ0123456789", min_size=4, max_size=12).map(lambda s: f"SeCr{s}"),
    name=st.sampled_from(["token", "api_key", "sig", "x"]),
)
def test_urls_in_error_text_and_logs_lose_their_secrets(user: str, secret: str, name: str) -> None:
    from relay.redaction import mask_urls
    from relay.sender import describe

    url = f"https://{user}:{secret}@hooks.example/in?{name}={secret}&other={secret}"
    for text in (mask_urls(f"cannot connect to {url} (refused)"), describe(OSError(f"refused: {url}"))):
        assert secret not in text
        assert "hooks.example/in?" in text
    out = io.StringIO()
    logs.configure("DEBUG", "json", stream=out)
    logs.get_logger("test").warning("delivery failed", url=url, error=f"to {url}")
    assert secret not in out.getvalue()


SIGNING = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD/w=="


@pytest.mark.parametrize("kept", [6, 8, 12, 20, 30, len(SIGNING) - 1])
def test_a_secret_straddling_the_excerpt_cut_is_masked_before_the_cut(kept: int) -> None:
    # Issue 22, finding 2: the cut came first, so the part of the secret before it was kept.
    body = b"." * (1024 - kept) + SIGNING.encode() + b" and more"
    out = excerpt(body, 1024, [SIGNING])
    assert SIGNING[:kept] not in out and SIGNING[6 : max(kept, 10)] not in out
    assert len(out.encode()) <= 1024 and out.startswith("." * 100)


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"echo": SIGNING}).replace("/", "\\/"),  # JSON with / escaped
        '{"echo": "' + "".join(f"\\u{ord(c):04x}" for c in SIGNING) + '"}',
        "secret=" + SIGNING.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D"),
        "secret=" + SIGNING.replace("+", "%2b").replace("/", "%2f"),
        "<p>" + SIGNING.replace("+", "&#43;").replace("/", "&#x2F;") + "</p>",
    ],
)
def test_an_encoded_secret_is_masked_in_excerpts(body: str) -> None:
    # Issue 22, finding 3: only the raw spelling was masked.
    out = excerpt(body.encode(), 1024, [SIGNING])
    for reading in (out, unquote(out), html.unescape(out), out.encode().decode("unicode_escape")):
        assert "C2FVsBQIhrscChlQIMV" not in reading and "b5sSYspob7oD" not in reading


@pytest.mark.parametrize(
    "body",
    [
        "licence%20key=LKEYrawYEKL&next=1",
        "licence+key=LKEYrawYEKL&next=1",
        "license%5Fkey%3DLKEYrawYEKL",
        "%7B%22license_key%22%3A%20%22LKEYrawYEKL%22%7D",
        "{&quot;license_key&quot;: &quot;LKEYrawYEKL&quot;}",
        "{&#34;licence-key&#34;:&#34;LKEYrawYEKL&#34;}",
        '{"license' + "_" * 20 + 'key": "LKEYrawYEKL", broken',
    ],
)
def test_an_encoded_licence_key_is_masked_in_excerpts_and_rejections(body: str) -> None:
    assert "LKEYraw" not in excerpt(body.encode(), 1024)
    assert "LKEYraw" not in scrub_text(body)


@pytest.mark.parametrize("separators", ["_" * 20, "_-_. -_" * 4, " " * 12, "-" * 40])
def test_a_key_name_with_a_long_separator_run_is_scrubbed_from_text(separators: str) -> None:
    # Issue 22, finding 10: the text pattern allowed 8 separators, the normaliser any run.
    name = f"license{separators}key"
    assert is_sensitive_key(name)
    for text in (f'{{"{name}": "LKEYrawYEKL", broken', f"{name}=LKEYrawYEKL", f"{{'{name}': 'LKEYrawYEKL'"):
        assert "LKEYraw" not in scrub_text(text)
        result = parse_event(text.encode())
        assert "LKEYraw" not in str(result.payload)


def test_a_url_without_a_path_loses_its_query_values() -> None:
    from relay.redaction import mask_url, mask_urls

    assert mask_url("https://hooks.example?token=SECRET1") == "https://hooks.example?token=***"
    assert "SECRET1" not in mask_urls("to https://u:SECRET1@hooks.example#frag now")
