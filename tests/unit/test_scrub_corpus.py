"""A generated corpus of encodings: every secret the relay knows and every licence key, spelled
raw, JSON-escaped, percent-encoded, form-encoded and HTML-escaped (and nestings of these), alone or
cut at the excerpt's limit at every offset; nothing of them survives the text scrubber, however
its output is decoded."""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Callable
from urllib.parse import quote, quote_plus, unquote, unquote_plus, urlencode

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from relay.model import EXCERPT_BYTES
from relay.redaction import REDACTED, excerpt, scrub_external, scrub_text

Encoder = Callable[[str], str]


def _json(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)[1:-1]


def _json_slash(s: str) -> str:
    return json.dumps(s)[1:-1].replace("/", "\\/")


def _json_u(s: str) -> str:
    return "".join(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else c for c in s)


def _pct_all(s: str) -> str:
    return "".join(f"%{b:02X}" for b in s.encode())


def _pct_lower(s: str) -> str:
    return "".join(f"%{b:02x}" if not chr(b).isalnum() else chr(b) for b in s.encode())


def _html_dec(s: str) -> str:
    return "".join(f"&#{ord(c)};" for c in s)


def _html_hex(s: str) -> str:
    # The semicolon left out where the next reference ends the number anyway.
    return "".join(f"&#x{ord(c):X}" + (";" if i % 2 or i == len(s) - 1 else "") for i, c in enumerate(s))


def _html_named(s: str) -> str:
    named = {"+": "&plus;", "/": "&sol;", "=": "&equals;", "_": "&lowbar;", " ": "&#32;"}
    return "".join(named.get(c, c) for c in html.escape(s))


ENCODINGS: dict[str, Encoder] = {
    "raw": lambda s: s,
    "json": _json,
    "json_slash": _json_slash,
    "json_u": _json_u,
    "json_twice": lambda s: _json(_json_slash(s)),
    "percent": lambda s: quote(s, safe=""),
    "percent_all": _pct_all,
    "percent_lower": _pct_lower,
    "form": lambda s: quote_plus(s, safe=""),
    "html": html.escape,
    "html_decimal": _html_dec,
    "html_hex": _html_hex,
    "html_named": _html_named,
    "percent_of_json": lambda s: quote(_json_slash(s), safe=""),
    "html_of_json": lambda s: html.escape(json.dumps(s)[1:-1]),
    "json_of_percent": lambda s: _json_u(quote(s, safe="")),
    "percent_twice": lambda s: quote(quote(s, safe=""), safe=""),
}

_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
# JSON's escapes, and JavaScript's \x and \' (what a subscriber's framework writes).
_JSON_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|x([0-9a-fA-F]{2})|([\\/\"'bfnrt]))")


def _json_unescape(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        if m.group(1) or m.group(2):
            return chr(int(m.group(1) or m.group(2), 16))
        return _ESCAPES.get(m.group(3), m.group(3))

    return _JSON_ESCAPE.sub(one, text)


DECODERS: tuple[Encoder, ...] = (_json_unescape, unquote, unquote_plus, html.unescape)


def decodings(text: str, depth: int = 3) -> set[str]:
    """The text and what it reads as under every chain of up to `depth` common decodings."""
    seen = {text}
    frontier = {text}
    for _ in range(depth):
        frontier = {d(t) for t in frontier for d in DECODERS} - seen
        seen |= frontier
    return seen


def fragments(secret: str, size: int = 6) -> set[str]:
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


def assert_masked(out: str, secret: str, context: str = "") -> None:
    """Neither the secret nor any six characters of it in any reading of the output (but for
    characters the text around it has anyway)."""
    body = secret.removeprefix("whsec_")
    pieces = fragments(body) | fragments(body.replace("+", " "))
    pieces = {p for p in pieces if not any(p in r for r in decodings(context))}
    for reading in decodings(out):
        assert secret not in reading and body not in reading, (out, reading)
        assert not any(p in reading for p in pieces), (out, reading)


def whsec(raw: bytes) -> str:
    return "whsec_" + base64.b64encode(raw).decode()


# Signing secrets with every character base64 has that an encoder changes (+, /, =).
SIGNING = [
    whsec(bytes.fromhex("fbff bf3e ffef be00 1234 5678 9abc def0 fbef".replace(" ", ""))),
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD/w==",
]
# A header value: spaces, quotes, an ampersand, a percent sign, a backslash.
HEADER = 'Bearer tok+en/x=1 & "q" 100%\\ok'
FILLER = "~"

signing_secrets = st.binary(min_size=16, max_size=40).map(whsec)
header_values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=10, max_size=40
).filter(lambda s: s.strip() == s and len(set(s)) > 6)
known_secrets = signing_secrets | header_values
hostile = st.text(alphabet=" .,:;{}[]\"'=&%#\\/+xyzAF019\n", max_size=40)
encodings = st.sampled_from(sorted(ENCODINGS))


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_a_secret_cut_by_the_excerpt_at_every_offset_is_masked(name: str) -> None:
    for secret in [*SIGNING, HEADER]:
        spelled = ENCODINGS[name](secret)
        for offset in range(len(spelled) + 1):
            body = (FILLER * (EXCERPT_BYTES - offset) + spelled + FILLER * 50).encode()
            out = excerpt(body, EXCERPT_BYTES, [secret])
            assert len(out.encode()) <= EXCERPT_BYTES
            assert_masked(out, secret)
            # The same body ended by a response cap inside the secret: its start is masked too.
            assert_masked(excerpt(body[: EXCERPT_BYTES - 1], EXCERPT_BYTES, [secret]), secret)


def test_a_long_secret_is_masked_in_every_encoding_and_cut() -> None:
    # A bearer token of 400 characters: found as each view spells it (not in mixed spellings).
    secret = "eyJ" + base64.urlsafe_b64encode(bytes(range(256)) + bytes(range(40))).decode()[:397]
    for encode in ENCODINGS.values():
        spelled = encode(secret)
        for offset in [*range(0, len(spelled), 37), len(spelled) - 1, len(spelled)]:
            body = (FILLER * (EXCERPT_BYTES - offset) + spelled + FILLER * 50).encode()
            assert_masked(excerpt(body, EXCERPT_BYTES, [secret]), secret)
            assert_masked(excerpt(body[: EXCERPT_BYTES - 1], EXCERPT_BYTES, [secret]), secret)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    secret=known_secrets,
    name=encodings,
    before=hostile,
    after=hostile,
    around=st.sampled_from([" ", '"', ",", "=", "\n", "<p>", "~"]),
    limit=st.integers(8, 300),
)
@example(secret=SIGNING[2], name="json_slash", before="\\", after="", around=" ", limit=300)
@example(secret=SIGNING[2], name="percent", before="%25", after="%", around='"', limit=300)
def test_no_encoding_of_a_known_secret_survives(
    secret: str, name: str, before: str, after: str, around: str, limit: int
) -> None:
    before, after = before + around, around + after
    text = before + ENCODINGS[name](secret) + after
    context = before + "\n" + after
    out = scrub_external(text, [secret], limit)
    assert len(out.encode()) <= limit
    assert_masked(out, secret, context)
    assert_masked(scrub_external(text, [secret], None), secret, context)
    # Cut by whoever produced the text, anywhere: what is left of the secret is masked.
    cut = text[: len(before) + limit % (len(text) - len(before) + 1)]
    assert_masked(scrub_external(cut, [secret], None), secret, context)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(secret=known_secrets, name=encodings, before=hostile, after=hostile)
def test_no_reading_shows_a_secret_whatever_touches_it(
    secret: str, name: str, before: str, after: str
) -> None:
    # A stray escape next to the secret can change how its first or last character reads: no
    # reading of the output may show the secret whole (how much of a part is masked depends on it).
    out = scrub_external(before + ENCODINGS[name](secret) + after, [secret], None)
    body = secret.removeprefix("whsec_")
    assert not any(body in reading for reading in decodings(out)), out


def _licence_forms(name: str, value: str) -> dict[str, str]:
    obj = json.dumps({"status": "bad", name: value})
    return {
        "assignment": f"{name}={value}",
        "colon": f"{name}: {value}",
        "json": obj,
        "json_in_a_string": json.dumps(obj),
        "json_u": _json_u(obj),
        "form": urlencode({"a": "1", name: value}),
        "query": "?" + urlencode({name: value, "b": "2"}, quote_via=quote),
        "percent_json": quote(obj, safe=""),
        "percent_json_plus": quote_plus(obj),
        "html_json": html.escape(obj),
        "html_decimal_json": _html_dec(obj),
        "percent_twice_json": quote(quote(obj, safe=""), safe=""),
        "json_of_form": json.dumps({"echo": urlencode({name: value})}),
    }


LICENCE_NAMES = [
    "license_key",
    "licence key",
    "License-Key",
    "licenseKey",
    "LICENCE_KEY",
    "license" + "_" * 20 + "key",
    "licence_-_. _-_.-key",
    "l_i_c_e_n_s_e___k_e_y",
    "old_license__________key_hash",
]
VALUE = "LKEY-7Q2W-9ZX3-YEKL"


def assert_no_licence(out: str, value: str, context: str = "") -> None:
    pieces = {p for p in fragments(value) if not any(p in r for r in decodings(context))}
    for reading in decodings(out):
        assert "LKEY" not in reading and "YEKL" not in reading, (out, reading)
        assert not any(p in reading for p in pieces), (out, reading)


@pytest.mark.parametrize("name", LICENCE_NAMES)
def test_a_licence_key_in_any_encoding_is_masked_at_every_cut(name: str) -> None:
    for form, spelled in _licence_forms(name, VALUE).items():
        assert_no_licence(scrub_text(spelled), VALUE)
        for offset in range(0, len(spelled) + 1):
            body = (FILLER * (EXCERPT_BYTES - offset) + spelled + FILLER * 40).encode()
            out = excerpt(body, EXCERPT_BYTES)
            assert len(out.encode()) <= EXCERPT_BYTES, form
            assert_no_licence(out, VALUE)
            assert_no_licence(excerpt(body[: EXCERPT_BYTES - 1], EXCERPT_BYTES), VALUE)


licence_values = st.text(alphabet="ABCDEFGHJKMNPQRSTVWXYZ0123456789-", min_size=6, max_size=24).map(
    lambda s: f"LKEY{s}YEKL"
)
separators = st.lists(st.sampled_from(["_", "-", ".", " ", "__", "_-_", "\u200b"]), max_size=24).map("".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    value=licence_values,
    spelling=st.sampled_from(["license", "licence", "License", "LICENCE"]),
    sep=separators,
    form=st.sampled_from(sorted(_licence_forms("k", "v"))),
    before=hostile,
    limit=st.integers(16, 400),
)
def test_no_encoding_of_a_licence_key_survives(
    value: str, spelling: str, sep: str, form: str, before: str, limit: int
) -> None:
    text = before + " " + _licence_forms(f"{spelling}{sep}key", value)[form]
    assert_no_licence(scrub_external(text, (), limit), value, before)
    assert_no_licence(scrub_external(text, (), None), value, before)
    assert_no_licence(scrub_text(text), value, before)


@pytest.mark.parametrize(
    "text",
    [
        'failed: {"url": "https:\\/\\/relay:PASSWORD1@hooks.example\\/in?token=TOKEN123"}',
        "next=https%3A%2F%2Frelay%3APASSWORD1%40hooks.example%2Fin%3Ftoken%3DTOKEN123",
        '<a href="https://relay:PASSWORD1@hooks.example/in?x=1&amp;token=TOKEN123">',
        "see https://PASSWORD1@hooks.example?token=TOKEN123",
    ],
)
def test_url_credentials_in_any_encoding_are_masked(text: str) -> None:
    out = scrub_external(text, (), None)
    for reading in decodings(out):
        assert "PASSWORD1" not in reading and "TOKEN123" not in reading, out
    assert "hooks.example" in out


@settings(max_examples=200)
@given(text=st.text(alphabet=st.characters(exclude_characters="\x00"), max_size=300))
def test_text_without_anything_to_mask_passes_unchanged(text: str) -> None:
    if "://" in text or set(text) & set("\\%&:="):
        return  # a URL, an encoding or an assignment: covered above
    assert scrub_external(text, [SIGNING[1]], None) == text
    assert scrub_external(text, [SIGNING[1]], len(text.encode("utf-8", "surrogatepass"))) == text


def test_nul_is_replaced_and_prose_kept() -> None:
    assert scrub_external("a\x00b", (), None) == "a\ufffdb"
    prose = "Renew the licence key for Visio by 50% & more"
    assert scrub_external(prose, [SIGNING[1]], None) == prose
    assert scrub_external("license_key=ABC next", (), None) == f'license_key="{REDACTED}" next'
