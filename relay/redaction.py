"""Redaction of `license_key`: in parsed payloads, in raw text that is not JSON, and in log events.

Pure functions, no I/O. Every path that stores, logs or sends data goes through one of these.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping
from functools import lru_cache
from typing import Any

REDACTED = "[REDACTED]"

# Key names are compared after lower-casing and dropping everything but letters and digits, so
# `license_key`, `License-Key`, `LICENSEKEY` and `licenseKey` are all the same sensitive key.
_SENSITIVE = frozenset({"licensekey"})
_NON_ALNUM = re.compile(r"[^0-9a-z]+")

# For text that is not JSON: a key spelled in any of the ways above (or with JSON \u escapes
# between the words), an optional closing quote, a separator, then the value up to the end of
# its quoted string (or the end of the text when the quote is never closed) or the next
# delimiter when unquoted.
_TEXT_PATTERN = re.compile(
    r"""(?P<key>license(?:[^0-9a-z"'\n]|\\u[0-9a-f]{4}){0,8}key["']?\s*[:=]\s*)"""
    r"""(?P<value>"(?:[^"\\]|\\.)*(?:"|\\?$)|'(?:[^'\\]|\\.)*(?:'|\\?$)|[^\s,;&}\]]+)""",
    re.IGNORECASE | re.DOTALL,
)


@lru_cache(maxsize=4096)
def is_sensitive_key(key: str) -> bool:
    """True when a mapping key names the licence key in any casing or separator style."""
    return _NON_ALNUM.sub("", key.lower()) in _SENSITIVE


def may_mention_licence(text: str | bytes) -> bool:
    """Cheap pre-check: text that never spells 'licen' in any case has no licence key to redact.

    JSON can escape letters as \\uXXXX, so a backslash-u also counts as a possible mention.
    """
    if isinstance(text, bytes):
        raw = text.lower()
        return b"licen" in raw or b"\\u" in raw
    lowered = text.lower()
    return "licen" in lowered or "\\u" in lowered


def redact(value: Any) -> Any:
    """A deep copy of a JSON-like value with every licence key's value replaced by REDACTED."""
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if isinstance(k, str) and is_sensitive_key(k) else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def scrub_text(text: str) -> str:
    """Replace licence key values in text that may not be valid JSON (logs, rejected payloads)."""
    return _TEXT_PATTERN.sub(lambda m: f'{m.group("key")}"{REDACTED}"', text)


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
            event_dict[key] = scrub_text(value)
        elif isinstance(value, Mapping | list | tuple):
            event_dict[key] = _scrub_nested(redact(value))
    return event_dict


def _scrub_nested(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _scrub_nested(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_nested(v) for v in value]
    if isinstance(value, str):
        return scrub_text(value)
    return value
