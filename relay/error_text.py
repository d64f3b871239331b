"""Error text fit to store and print: what a client's error message may show of a subscriber.

Pure functions, no I/O. HTTP clients quote the bytes they could not parse (aiohttp `b'...'`,
h11 `bytearray(b'...')`), so a subscriber's malformed status line or header reaches the message
verbatim; the text lands in attempts, last_error, `status --json` and `send-test` output.
"""

from __future__ import annotations

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
_ESCAPE = re.compile(rb"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|.)", re.DOTALL)
_SIMPLE = {b"n": b"\n", b"r": b"\r", b"t": b"\t"}
_KEY_WORD = re.compile(r"licen[cs]ekey")
_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def safe_reason(text: str) -> str:
    """One line, no NUL or lone surrogate (PostgreSQL stores neither), licence keys scrubbed,
    quoted runs that name one dropped, URL secrets masked; then cut to REASON_CHARS."""
    text = text[:_SCANNED_CHARS].encode("utf-8", "replace").decode("utf-8")
    # Control characters become U+FFFD rather than vanish, so they never join a key to its value.
    text = _SPACE.sub(" ", _CONTROL.sub("\ufffd", text)).strip()
    # Assignments first (a quoted key name is what marks its value), then quoted runs; all of it
    # before the cut, which could otherwise leave the start of a value unrecognised.
    text = scrub_text(text)
    text = _QUOTED.sub(_drop_if_naming_a_key, _QUOTED_BYTES.sub(_drop_if_naming_a_key, text))
    return mask_urls(text)[:REASON_CHARS]


def _drop_if_naming_a_key(match: re.Match[str]) -> str:
    # Quoted raw bytes are the subscriber's, not prose: a header line `License-Key SECRET` has
    # lost the colon that would make it an assignment, so any mention of the key drops the run.
    quoted = match.group(0)
    return f"'{REDACTED}'" if any(_names_key(text) for text in _readings(quoted)) else quoted


def _readings(quoted: str) -> set[str]:
    """The run as written, and read with one and two levels of repr() escapes undone (a bytes
    repr inside a str repr doubles them), each \\xNN read as a UTF-8 byte and as U+00NN."""
    forms = {quoted.encode("utf-8", "replace")}
    for _ in range(2):
        forms |= {_unescaped(f, code_points) for f in forms if b"\\" in f for code_points in (False, True)}
    return {f.decode("utf-8", "replace") for f in forms}


def _unescaped(data: bytes, code_points: bool) -> bytes:
    def one(match: re.Match[bytes]) -> bytes:
        escape = match.group(1)
        if len(escape) == 1:
            return _SIMPLE.get(escape, escape)
        code = int(escape[1:], 16)
        if escape[:1] == b"x" and not code_points:
            return bytes([code])
        return chr(code).encode("utf-8", "replace")

    return _ESCAPE.sub(one, data)


def _names_key(text: str) -> bool:
    return _KEY_WORD.search(_NON_ALNUM.sub("", fold(text))) is not None
