"""Redaction of `license_key`: in parsed payloads, in raw text that is not JSON, and in log events.

Pure functions, no I/O. Every path that stores, logs or sends data goes through one of these, and
one rule decides what a licence key is, here and in SQL (`it_relay.fold()` and friends in
relay/sql/migrations/0004_redaction.sql apply the same steps; a shared corpus test holds them
together):

- text is *folded*: Unicode NFKD (compatibility forms and accents come apart), ß and ẞ become ss,
  invisible characters (soft hyphen, combining marks, zero-width and BOM) are dropped, and ASCII
  letters are lower-cased (never locale-dependent: a C-locale database folds the same way);
- a mapping key is a licence key when its fold, without anything but [0-9a-z], contains
  `licensekey` or `licencekey` (so `License-Key`, `licence_key`, `license_keys`,
  `LİCENSE_KEY`, `licence_key_hash`, fullwidth letters and `lic\u200bense_key` all are);
- a string value that assigns one (`license_key=...`, `"licence-key": "..."`, JSON inside a
  string) is replaced whole; prose that only mentions a licence key is kept.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Mapping, MutableMapping
from functools import lru_cache
from typing import Any

REDACTED = "[REDACTED]"

_INVISIBLE = re.compile("[\u00ad\u0300-\u036f\u200b-\u200f\u2060-\u2064\ufeff]")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_NON_ALNUM = re.compile(r"[^0-9a-z]+")
_KEY_WORD = re.compile(r"licen[cs]ekey")
# In folded text: the key's letters (any run of separators between them, as is_sensitive_key
# allows), any suffix, an optional closing quote or escape, then ':' or '='. The same expression is
# in the SQL (relay/sql/migrations/0008_redaction_separators.sql). Linear: a separator is never a
# letter or a digit, so each run is matched one way.
_S = r"[^0-9a-z]*"
# After "key": the rest of the key's name (up to 32 letters and digits, any runs of separators
# around them), then quotes, escapes or spaces.
_REST = r"""(?:[^0-9a-z"'\n:=]*[0-9a-z]){0,32}[^0-9a-z"'\n:=]*["'\\\s]{0,4}"""
_ASSIGNMENT = re.compile(rf"l{_S}i{_S}c{_S}e{_S}n{_S}[cs]{_S}e{_S}k{_S}e{_S}y{_REST}[:=]")
# Anything that could fold to the start of a licence key: non-ASCII text, escapes, or the
# letters l, i, c, e, n in order with anything but letters and digits between them. Text without
# any of these provably holds no licence key by the rules above (a cheap skip, never a guess).
# Checked in three steps, cheapest first; the letters on ASCII text folded to lower case, which for
# ASCII is exactly the case-insensitive match (measured 20x faster than one case-insensitive regex).
_LETTERS = r"l[^0-9a-z]*i[^0-9a-z]*c[^0-9a-z]*e[^0-9a-z]*n"
_MAY_MENTION = re.compile(_LETTERS)
_MAY_MENTION_BYTES = re.compile(_LETTERS.encode())

# For text that is not JSON: a key spelled with ASCII letters (any case, any run of separators or
# JSON \u escapes between them), an optional closing quote, a separator, then the value up to the
# end of its quoted string (or of the text when the quote is never closed) or the next delimiter.
_SEP = r"""(?:[^0-9a-z"'\n]|\\u[0-9a-f]{4})*"""
_TEXT_KEY = _SEP.join(["l", "i", "c", "e", "n", "[cs]", "e", "k", "e", "y"]) + _REST + r"(?:=>|[:=])\s*"
_TEXT_PATTERN = re.compile(
    f"(?P<key>{_TEXT_KEY})"
    r"""(?P<value>"(?:[^"\\]|\\.)*(?:"|\\?$)|'(?:[^'\\]|\\.)*(?:'|\\?$)|[^\s,;&}\]]+)""",
    re.IGNORECASE | re.DOTALL,
)
# What the pattern leaves behind for each key it scrubbed.
_SCRUBBED = re.compile(_TEXT_KEY + r'"\[REDACTED\]"', re.IGNORECASE)
_JSON_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")


def fold(text: str) -> str:
    """The folded form every licence-key rule reads (see the module's docstring)."""
    text = unicodedata.normalize("NFKD", text).replace("ß", "ss").replace("ẞ", "ss")
    return _INVISIBLE.sub("", text).translate(_ASCII_LOWER)


@lru_cache(maxsize=4096)
def is_sensitive_key(key: str) -> bool:
    """True when a mapping key names a licence key (either spelling, any suffix, any disguise)."""
    return _KEY_WORD.search(_NON_ALNUM.sub("", fold(key))) is not None


def assigns_key(text: str) -> bool:
    """True when a string gives a licence key a value (`license_key=...`, embedded JSON, ...)."""
    return may_mention_licence(text) and _ASSIGNMENT.search(fold(text)) is not None


def may_mention_licence(text: str | bytes) -> bool:
    """Cheap pre-check, implied by the rules: False only for text that cannot hold a licence key."""
    if not text.isascii():
        return True
    if isinstance(text, bytes):
        return b"\\" in text or _MAY_MENTION_BYTES.search(text.lower()) is not None
    return "\\" in text or _MAY_MENTION.search(text.lower()) is not None


def redact(value: Any) -> Any:
    """A deep copy of a JSON-like value: every licence key's value, and every string assigning
    one, replaced (REDACTED for strings; see _redacted for the rest)."""
    if isinstance(value, Mapping):
        return {
            k: (_redacted(v) if isinstance(k, str) and is_sensitive_key(k) else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str) and assigns_key(value):
        return REDACTED
    return value


def _redacted(value: Any) -> Any:
    """What a licence key's value becomes: REDACTED for a string, null stays null (an absent key),
    and anything else a marker of its JSON type, so `license_key: 12345` still fails validation."""
    if isinstance(value, str):
        return REDACTED
    if value is None:
        return None
    return {"redacted": _json_type(value)}


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return "number"


def scrub_text(text: str) -> str:
    """Text that may not be valid JSON (logs, rejected notifications), licence key values replaced.

    When a licence key might survive the pattern (spelled with characters it does not know), the
    text is withheld whole: only its length and a hash are kept.
    """
    if not may_mention_licence(text):
        return text
    scrubbed = _TEXT_PATTERN.sub(lambda m: f'{m.group("key")}"{REDACTED}"', text)
    residue = _SCRUBBED.sub("", scrubbed)
    folded = fold(_JSON_ESCAPE.sub(_decode_escape, residue))
    if _KEY_WORD.search(_NON_ALNUM.sub("", folded)) and _ASSIGNMENT.search(folded):
        return withheld(text)
    return scrubbed


def withheld(text: str) -> str:
    """What is kept of text that cannot be shown: its length and a digest, never its content."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"[WITHHELD: {len(text)} characters that may hold a licence key; sha256 {digest}]"


def _decode_escape(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if not 0xD800 <= ord(char) <= 0xDFFF else ""


_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"'<>]+")
MASK = "***"


def mask_url(url: str) -> str:
    """A URL fit to show: the password (or a bare userinfo, often a token) and every query value
    replaced by ***; scheme, host, path and query names kept."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, tail = rest.partition("/")
    if "@" in authority:
        userinfo, _, host = authority.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        authority = f"{user}:{MASK}@{host}" if colon else f"{MASK}@{host}"
    path, question, query = (slash + tail).partition("?")
    if question:
        query, hash_, fragment = query.partition("#")
        pairs = [p.partition("=") for p in query.split("&")]
        query = "&".join(f"{k}={MASK}" if eq else k for k, eq, _ in pairs) + hash_ + fragment
    return f"{scheme}://{authority}{path}{question}{query}"


def mask_urls(text: str) -> str:
    """Every URL in free text (an error message, a log line) passed through mask_url."""
    return _URL.sub(lambda m: mask_url(m.group(0)), text) if "://" in text else text


def excerpt(body: bytes, limit: int, secrets: Iterable[str] = ()) -> str:
    """The start of a response body fit to store and show: the caller's secrets, URL secrets
    and licence keys masked; NUL (which PostgreSQL text cannot hold) replaced."""
    text = body[:limit].decode("utf-8", errors="replace").replace("\x00", "\ufffd")
    for secret in secrets:
        # A signing secret echoed back, whole or without its whsec_ prefix.
        for form in (secret, secret.removeprefix("whsec_")):
            if len(form) >= 8:
                text = text.replace(form, MASK)
    return mask_urls(scrub_text(text))


def scrub_bytes(data: bytes) -> str:
    """Decode bytes that may not be UTF-8 (undecodable bytes become U+FFFD), then scrub them."""
    return scrub_text(data.decode("utf-8", errors="replace"))


def structlog_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: redact licence keys in structured values and in free text."""
    for key, value in list(event_dict.items()):
        if is_sensitive_key(key):
            event_dict[key] = REDACTED
        elif isinstance(value, str):
            event_dict[key] = mask_urls(scrub_text(value))
        elif isinstance(value, Mapping | list | tuple):
            event_dict[key] = _scrub_nested(redact(value))
    return event_dict


def _scrub_nested(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _scrub_nested(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_nested(v) for v in value]
    if isinstance(value, str):
        return mask_urls(scrub_text(value))
    return value
