"""Text the journal cannot hold is refused, whichever way a document spells it, and only that text."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from relay import codec

# Any character, and the ones PostgreSQL refuses (NUL, lone surrogates) often.
characters = st.characters() | st.sampled_from(["\x00", "\ud800", "\udbff", "\udc00", "\udfff"])
# Joined from a list: st.text leaves lone surrogates out whatever its alphabet.
texts = st.lists(characters, max_size=30).map("".join)


def _unholdable(text: str) -> bool:
    return any(c == "\x00" or "\ud800" <= c <= "\udfff" for c in text)


@given(key=texts, value=texts, ascii_only=st.booleans(), as_bytes=st.booleans())
# Found by CI: the escaped pair is one character; raw, the two are lone surrogates.
@example(key="", value="\ud800\udc00", ascii_only=False, as_bytes=True)
@example(key="", value="\ud800\udc00", ascii_only=False, as_bytes=False)
def test_a_document_is_refused_exactly_when_a_string_holds_nul_or_a_lone_surrogate(
    key: str, value: str, ascii_only: bool, as_bytes: bool
) -> None:
    text = json.dumps({key: [value, {"inner": value}]}, ensure_ascii=ascii_only)
    data: str | bytes = text
    escaped = ascii_only
    if as_bytes:
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            # A raw lone surrogate has no UTF-8 form: such bytes cannot arrive, only the escape.
            data = json.dumps({key: [value, {"inner": value}]}).encode()
            escaped = True
    # Escaped, a high surrogate then a low one is a pair: one character, which the journal holds.
    key, value = (json.loads(json.dumps(t)) if escaped else t for t in (key, value))
    if _unholdable(key) or _unholdable(value):
        with pytest.raises(codec.InvalidText):
            codec.loads(data)
    else:
        assert codec.loads(data) == {key: [value, {"inner": value}]}


@pytest.mark.parametrize(
    "text",
    [
        '{"a": "\\uD800"}',  # upper-case hex
        '{"a": "\\uDc00x"}',  # mixed case
        '{"\\u0000": 1}',  # in a key
        '{"a": "\\ud83d\udc00"}',  # a high escape, then a raw low surrogate
        '{"a": ["ok", {"b": "\\uDBFF"}]}',
    ],
)
def test_escapes_json_dumps_never_writes_are_refused_too(text: str) -> None:
    with pytest.raises(codec.InvalidText):
        codec.loads(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('{"a": "\\\\u0000"}', {"a": "\\u0000"}),  # an escaped backslash, then the letters u0000
        ('{"a": "\\ud83d\\ude00"}', {"a": "\U0001f600"}),  # a surrogate pair is one character
        ('{"a": "caf\u00e9 \\u00e9"}', {"a": "caf\u00e9 \u00e9"}),
    ],
)
def test_text_that_only_looks_suspect_is_kept(text: str, value: object) -> None:
    assert codec.loads(text) == value
