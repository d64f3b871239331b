"""A send error's text is stored (attempts, last_error) and printed (status, deliveries list,
send-test): whatever a client puts in it, it is one storable line, bounded, with no licence key
and no URL secret. What each transport does on the wire: tests/test_transport_conformance.py."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.error_text import REASON_CHARS
from relay.sender import SendError, describe

VALUE = "SECRETVALUE"

_KEYS = st.builds(
    lambda licence, sep, key, case: case(f"{licence}{sep}{key}"),
    st.sampled_from(["license", "licence", "lic\u00adense", "ｌｉｃｅｎｓｅ"]),  # noqa: RUF001 - a disguise
    st.text(alphabet="_- .", max_size=3),
    st.sampled_from(["key", "keys", "key_hash"]),
    st.sampled_from([str.lower, str.upper, str.title, lambda s: s]),
)
_ASSIGNS = st.sampled_from(["=", ": ", ":", " ", "=>", "\t", " = ", ""])
_VALUES = st.text(alphabet="ABCDEFGHJKMNPQRSTUVWXYZ0123456789", min_size=4, max_size=16).map(
    lambda t: VALUE + t
)
_JUNK = st.text(max_size=30).filter(lambda t: VALUE not in t)
# A client's own words around what it quotes: no quotes or escapes of their own.
_PROSE = st.text(st.characters(blacklist_characters="'\"\\"), max_size=30).filter(lambda t: VALUE not in t)


def _bytes_repr(raw: str) -> str:
    return repr(raw.encode("utf-8", "surrogatepass"))


# How clients quote what they could not parse: aiohttp b'...' (inside message="..." when raised
# as ClientResponseError), h11 bytearray(b'...'), aiohttp's pure-Python parser '...'.
_QUOTINGS = st.sampled_from(
    [
        _bytes_repr,
        lambda raw: f"bytearray({_bytes_repr(raw)})",
        repr,
        lambda raw: f"400, message={f'Bad status line:{chr(10)}  {_bytes_repr(raw)}{chr(10)}   ^'!r}",
        lambda raw: f"400, message={f'Bad status line {raw!r}'!r}, url='http://127.0.0.1:1/hook'",
    ]
)


@st.composite
def _client_messages(draw: st.DrawFn) -> tuple[str, str]:
    quote = draw(st.sampled_from(["", '"', "'"]))
    value = draw(_VALUES)
    raw = f"{draw(_JUNK)}{draw(_KEYS)}{draw(_ASSIGNS)}{quote}{value}{quote}{draw(_JUNK)}"
    message = f"{draw(_PROSE)}{draw(_QUOTINGS)(raw)}{draw(_PROSE)}"
    return message, value


@settings(max_examples=500, deadline=None)
@given(case=_client_messages())
def test_a_licence_key_a_client_quotes_never_reaches_a_send_error(case: tuple[str, str]) -> None:
    message, value = case
    for text in (str(SendError(message)), describe(ValueError(message))):
        assert value not in text and VALUE not in text, (message, text)


@settings(max_examples=300, deadline=None)
@given(
    before=st.text(max_size=40).filter(lambda t: VALUE not in t),
    key=st.sampled_from(["license_key", "Licence-Key", '"license_key"', "licenseKey"]),
    assign=st.sampled_from(["=", ": ", ":", "=>"]),
    value=_VALUES,
)
def test_an_unquoted_licence_key_assignment_is_scrubbed(
    before: str, key: str, assign: str, value: str
) -> None:
    text = str(SendError(f"{before} {key}{assign}{value} (os error 104)"))
    assert value not in text and VALUE not in text


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=6000))
def test_a_send_error_is_one_storable_bounded_line(message: str) -> None:
    text = str(SendError(message))
    assert len(text) <= REASON_CHARS
    assert "\n" not in text and "\r" not in text and "\x00" not in text
    text.encode("utf-8")  # no lone surrogate: PostgreSQL and every log line take it


@pytest.mark.parametrize("offset", [0, 250, 280, 295, 4080, 4090, 5000])
def test_where_a_key_falls_against_the_bounds_never_shows_its_value(offset: int) -> None:
    message = "x" * offset + f"b'license_key={VALUE}ABCDEFGH'" + "y" * 100
    assert VALUE not in str(SendError(message))
    assert VALUE not in str(SendError("x" * offset + f" license_key={VALUE}ABCDEFGH and more"))


def test_url_secrets_are_masked_in_send_errors() -> None:
    text = str(SendError("error sending request for url (https://hook:pa55word@fa.example/h?token=t0ken)"))
    assert "pa55word" not in text and "t0ken" not in text
    assert "https://hook:***@fa.example/h?token=***" in text


def test_a_plain_reason_is_kept_as_the_client_gave_it() -> None:
    assert str(SendError("ConnectError: Connection refused (os error 111)")) == (
        "ConnectError: Connection refused (os error 111)"
    )
    assert describe(OSError("Connection reset by peer")) == "OSError: Connection reset by peer"
    assert describe(TimeoutError()) == "TimeoutError: TimeoutError"
