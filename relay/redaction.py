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

Text from outside that is stored or shown (responses, error texts, rejected notifications, log
lines) passes through `scrub_external`, which also reads it decoded (relay/scrub.py).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Mapping, MutableMapping
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

from relay.scrub import cut, find_spelled, mask, plain, spelled_start, views

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

MASK = "***"
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"'<>]+")
# Shorter known secrets are not searched for: they would mask ordinary words.
MIN_SECRET = 8
# How much of a secret's start (after whsec_) at the end of a text is masked as the secret: a cut
# inside it leaves that; fewer characters tell next to nothing of a secret.
_LEAST_TAIL = 4


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


def _may_spell_key(view: str) -> bool:
    """may_mention_licence for one view of a text: its escapes are read by another view."""
    return not view.isascii() or _MAY_MENTION.search(view.lower()) is not None


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
    """Text that may not be valid JSON (logs, rejected notifications), licence key values replaced,
    in the text as written and as its common encodings read (see scrub_external).

    When a licence key might survive the pattern (spelled with characters it does not know), the
    text is withheld whole: only its length and a hash are kept.
    """
    return _scrub(text, (), urls=False)


def scrub_external(text: str, secrets: Iterable[str] = (), limit: int | None = None) -> str:
    """Text from outside (a response, an error text, a notification) fit to store and show, cut to
    at most `limit` bytes of UTF-8 after masking; what is masked is said below."""
    # Licence-key values, the secrets given (8 characters or more; a whsec_ one also without its
    # prefix) and URL credentials, as written and as JSON escapes, percent-encoding, + for a space
    # and HTML references read them; NUL, which PostgreSQL text cannot hold. An end that spells
    # the start of a secret is masked too: the cut, or whoever cut the text before, split it.
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    forms = _forms(tuple(secrets))
    scrubbed = _scrub(text, forms, urls=True)
    if limit is not None:
        scrubbed = cut(scrubbed, limit)
    if forms and (at := _secret_at_end(scrubbed, forms)) is not None:
        scrubbed = scrubbed[:at] + MASK
    return scrubbed


def excerpt(body: bytes, limit: int, secrets: Iterable[str] = ()) -> str:
    """The start of a response body fit to store and show: scrub_external over enough of the body
    that a secret running past `limit`, each character encoded, is found whole before the cut."""
    secrets = tuple(secrets)
    window = limit + 12 * max(map(len, secrets), default=0) + 64
    return scrub_external(body[:window].decode("utf-8", errors="replace"), secrets, limit)


def scrub_bytes(data: bytes) -> str:
    """Decode bytes that may not be UTF-8 (undecodable bytes become U+FFFD), then scrub them."""
    return scrub_text(data.decode("utf-8", errors="replace"))


@lru_cache(maxsize=256)
def _forms(secrets: tuple[str, ...]) -> tuple[str, ...]:
    """What to search for: each secret, and a Standard Webhooks one also without whsec_."""
    found = {f for s in secrets for f in (s, s.removeprefix("whsec_")) if len(f) >= MIN_SECRET}
    return tuple(sorted(found, key=len, reverse=True))


def _scrub(text: str, forms: tuple[str, ...], *, urls: bool) -> str:
    if plain(text) and not _may_spell_key(text) and not (urls and "://" in text):
        for form in forms:
            if form in text:
                break
        else:
            return text  # the common case, checked per delivery: nothing to read twice
    spans: list[tuple[int, int, str]] = []
    suspect = False
    for view in views(text):
        spans += [(*view.span(a, b), MASK) for a, b in find_spelled(view.text, forms)]
        if _may_spell_key(view.text):
            suspect = True
            for match in _TEXT_PATTERN.finditer(view.text):
                spans.append((*view.span(*match.span("value")), f'"{REDACTED}"'))
        if urls and "://" in view.text:
            for match in _URL.finditer(view.text):
                for a, b in _url_secrets_at(match.group()):
                    if b > a:
                        spans.append((*view.span(match.start() + a, match.start() + b), MASK))
    if not spans and not suspect:
        return text
    masked = mask(text, spans)
    return withheld(text) if _remains(masked, forms) else masked


def _remains(text: str, forms: tuple[str, ...]) -> bool:
    """True when masked text still holds a secret or a licence key in any view."""
    for view in views(text):
        if next(find_spelled(view.text, forms), None):
            return True
        if _may_spell_key(view.text):
            residue = _SCRUBBED.sub("", view.text)
            folded = fold(_JSON_ESCAPE.sub(_decode_escape, residue))
            if _KEY_WORD.search(_NON_ALNUM.sub("", folded)) and _ASSIGNMENT.search(folded):
                return True
    return False


def _secret_at_end(text: str, forms: tuple[str, ...]) -> int | None:
    """Where the text's end (in any view) starts to spell a secret: a cut was made inside it. The
    whsec_ prefix is public: only a start of what follows it counts."""
    bodies = _bodies(forms)
    if plain(text):
        return spelled_start(text, bodies, _LEAST_TAIL)
    found = [
        view.position(at)
        for view in views(text)
        if (at := spelled_start(view.text, bodies, _LEAST_TAIL)) is not None
    ]
    return min(found, default=None)


@lru_cache(maxsize=256)
def _bodies(forms: tuple[str, ...]) -> tuple[str, ...]:
    return tuple({form.removeprefix("whsec_") for form in forms} - {""})


def withheld(text: str) -> str:
    """What is kept of text that cannot be shown: its length and a digest, never its content."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"[WITHHELD: {len(text)} characters that may hold a licence key or a secret; sha256 {digest}]"


def _decode_escape(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if not 0xD800 <= ord(char) <= 0xDFFF else ""


def _url_secrets_at(url: str) -> list[tuple[int, int]]:
    """Where a URL holds secrets: its password (or a bare userinfo, often a token) and each query
    value; the authority ends at the first /, ? or #."""
    begin = url.find("://")
    if begin < 0:
        return []
    begin += 3
    authority_end = min((at for at in (url.find(c, begin) for c in "/?#") if at >= 0), default=len(url))
    spans = []
    at = url.rfind("@", begin, authority_end)
    if at >= 0:
        colon = url.find(":", begin, at)
        spans.append((colon + 1 if colon >= 0 else begin, at))
    question = url.find("?", authority_end)
    if question >= 0:
        fragment = url.find("#", question)
        pos = question + 1
        for pair in url[pos : fragment if fragment >= 0 else len(url)].split("&"):
            if (eq := pair.find("=")) >= 0:
                spans.append((pos + eq + 1, pos + len(pair)))
            pos += len(pair) + 1
    return spans


def mask_url(url: str) -> str:
    """A URL fit to show: the password (or a bare userinfo, often a token) and every query value
    replaced by ***; scheme, host, path and query names kept."""
    out, pos = [], 0
    for start, end in _url_secrets_at(url):
        out += [url[pos:start], MASK]
        pos = end
    return "".join(out) + url[pos:]


def mask_urls(text: str) -> str:
    """Every URL in free text (an error message, a log line) passed through mask_url."""
    return _URL.sub(lambda m: mask_url(m.group(0)), text) if "://" in text else text


def url_secrets(url: str) -> list[str]:
    """The secrets a URL holds, as written and percent-decoded: known secrets for scrub_external,
    so that they are masked wherever a text repeats them, not only inside a URL."""
    found = [url[a:b] for a, b in _url_secrets_at(url) if b > a]
    return found + [d for d in map(unquote, found) if d not in found]


def structlog_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: redact licence keys in structured values and in free text."""
    for key, value in list(event_dict.items()):
        if is_sensitive_key(key):
            event_dict[key] = REDACTED
        elif isinstance(value, str):
            event_dict[key] = scrub_external(value)
        elif isinstance(value, Mapping | list | tuple):
            event_dict[key] = _scrub_nested(redact(value))
    return event_dict


def _scrub_nested(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _scrub_nested(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_nested(v) for v in value]
    if isinstance(value, str):
        return scrub_external(value)
    return value
