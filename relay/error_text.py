"""Error text fit to store and print: what a client's error message may show of a subscriber.

Pure functions, no I/O. HTTP clients quote the bytes they could not parse (aiohttp `b'...'`,
h11 `bytearray(b'...')`), so a subscriber's malformed status line or header reaches the message
verbatim; the text lands in attempts, last_error, `status --json` and `send-test` output.
"""

from __future__ import annotations

import ast
import re

from relay.redaction import REDACTED, fold, mask_urls, scrub_text

REASON_CHARS = 300
# At most this much of a message is read: enough for any real reason, and a bound on the
# scrubber's work when a client quotes a huge response line.
_SCANNED_CHARS = 4096
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SPACE = re.compile(r"\s+")
# A quoted run as repr() writes one, unclosed when the message was cut: bytes first (the
# innermost, the subscriber's), then strings (aiohttp's pure-Python parser quotes str).
_QUOTED_BYTES = re.compile(r"""(?<![0-9A-Za-z_])b(?:'(?:[^'\\]|\\.)*(?:'|$)|"(?:[^"\\]|\\.)*(?:"|$))""")
_QUOTED = re.compile(r"""'(?:[^'\\]|\\.)*(?:'|$)|"(?:[^"\\]|\\.)*(?:"|$)""")
_KEY_WORD = re.compile(r"licen[cs]ekey")
_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def safe_reason(text: str) -> str:
    """One line, no NUL or lone surrogate (PostgreSQL stores neither), quoted bytes that name a
    licence key dropped, other licence keys scrubbed and URL secrets masked; then cut."""
    text = text[:_SCANNED_CHARS].encode("utf-8", "replace").decode("utf-8")
    # Control characters become U+FFFD rather than vanish, so they never join a key to its value.
    text = _SPACE.sub(" ", _CONTROL.sub("\ufffd", text)).strip()
    text = _QUOTED.sub(_drop_if_naming_a_key, _QUOTED_BYTES.sub(_drop_if_naming_a_key, text))
    # Scrubbed whole before the cut: a cut first could leave the start of a value unrecognised.
    return mask_urls(scrub_text(text))[:REASON_CHARS]


def _drop_if_naming_a_key(match: re.Match[str]) -> str:
    # Quoted raw bytes are the subscriber's, not prose: a header line `License-Key SECRET` has
    # lost the colon that would make it an assignment, so any mention of the key drops the run.
    quoted = match.group(0)
    return f"'{REDACTED}'" if _names_key(quoted) or _names_key(_unquoted(quoted)) else quoted


def _unquoted(quoted: str) -> str:
    """The text a repr() stands for (escapes such as \\xc2\\xad decoded), or '' if it is not one."""
    try:
        value = ast.literal_eval(quoted)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) else ""


def _names_key(text: str) -> bool:
    return _KEY_WORD.search(_NON_ALNUM.sub("", fold(text))) is not None
