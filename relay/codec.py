"""JSON in and out, exactly: decimals stay decimals, and one canonical form per payload.

`loads` keeps every JSON number with a fraction or exponent as a `Decimal`, so money written as
1999.99 is delivered as 1999.99; `dumps` writes those decimals back verbatim.
"""

from __future__ import annotations

import json
import re
import uuid
from decimal import Decimal
from typing import Any

import orjson

from relay.errors import RelayError

# Stable forever: changing it would change the id of every event journaled without an event_id.
EVENT_ID_NAMESPACE = uuid.UUID("6f1d3c52-8a0e-5b0e-9c1e-2d0f4e7a9b31")


class JSONError(RelayError, ValueError):
    """The text is not a JSON document this relay accepts (the message never quotes it)."""

    reason = "not_json"


class TooDeep(JSONError):
    """Containers nested beyond MAX_DEPTH."""

    reason = "too_deep"


class TooLarge(JSONError):
    """A document over MAX_DOCUMENT_BYTES, or a number with more than MAX_NUMBER_DIGITS digits."""

    reason = "too_large"


class InvalidText(JSONError):
    """Not text the relay can keep: invalid UTF-8, a lone surrogate, or NUL."""

    reason = "invalid_text"


# Contract payloads are a few levels deep; anything far deeper is hostile, and orjson (the
# serialiser) refuses beyond 255 levels. Checked before any serialisation of untrusted input.
MAX_DEPTH = 64


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True when a decoded JSON value nests containers more than `limit` levels (iteratively)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _reject_constant(name: str) -> Any:
    raise JSONError(f"{name} is not a JSON number")


_INT64 = range(-(2**63), 2**63)
# An event is a few kilobytes; a megabyte of JSON is hostile, and so is a number longer than
# PostgreSQL writes any double as (1e308 comes back from jsonb as 309 digits) and shorter than
# Python's refusal to convert (4,300 digits), which would otherwise surface as a traceback.
MAX_DOCUMENT_BYTES = 1024 * 1024
MAX_NUMBER_DIGITS = 4000
# What could decode to a lone surrogate or NUL: the characters themselves, or their escapes.
_SUSPECT_TEXT = re.compile(r"[\ud800-\udfff\x00]|\\u(?:[dD][89a-fA-F][0-9a-fA-F]{2}|0000)")


def _number(text: str, make: Any) -> Any:
    if len(text) > MAX_NUMBER_DIGITS:
        raise TooLarge(f"a number with more than {MAX_NUMBER_DIGITS} digits")
    return make(text)


def _parse_int(text: str) -> int | Decimal:
    # Integers beyond 64 bits stay exact as Decimal, which `dumps` can write (orjson cannot).
    value = _number(text, int)
    return value if value in _INT64 else Decimal(text)


def _parse_float(text: str) -> Decimal:
    return _number(text, Decimal)  # type: ignore[no-any-return]


def loads(data: str | bytes) -> Any:
    """Parse JSON, keeping non-integer numbers as exact decimals; NaN/Infinity are rejected.

    Raises JSONError, or the subclass saying why: TooDeep, TooLarge, InvalidText.
    """
    if len(data) > MAX_DOCUMENT_BYTES:
        raise TooLarge(f"more than {MAX_DOCUMENT_BYTES} bytes")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidText("not valid UTF-8") from None
    try:
        value = json.loads(
            data, parse_float=_parse_float, parse_int=_parse_int, parse_constant=_reject_constant
        )
    except JSONError:
        raise
    except RecursionError:
        raise TooDeep("nested too deeply") from None
    except json.JSONDecodeError as exc:
        # exc.msg is the parser's reason without the document; the position is safe to show.
        raise JSONError(f"{exc.msg.removesuffix(' at')} (position {exc.pos})") from None
    if _suspect(data) and not _storable(value):
        raise InvalidText("a lone surrogate or NUL in a string")
    return value


def _suspect(text: str) -> bool:
    """Whether the text could decode to a lone surrogate or NUL. Two substring scans and an ASCII
    check settle nearly every document; only the rest meet the regex (a scan a tenth as fast)."""
    if "\\u" not in text and "\x00" not in text and text.isascii():
        return False
    return _SUSPECT_TEXT.search(text) is not None


def _storable(value: Any) -> bool:
    """No string (key or value) holds a lone surrogate or NUL; only asked when the text hints so."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and not _storable_str(item):
            return False
    return True


def _storable_str(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def storable_text(text: str) -> str:
    """Text PostgreSQL can hold: lone surrogates and NUL written as escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\u0000")


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise TypeError("non-finite decimal")
        return orjson.Fragment(str(value))
    if isinstance(value, uuid.UUID):
        # asyncpg returns its own UUID subclass, which orjson does not recognise.
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(value: Any, *, sort_keys: bool = False, indent: bool = False) -> bytes:
    """Serialise to compact JSON bytes; decimals, uuids, dates and datetimes included."""
    option = (orjson.OPT_SORT_KEYS if sort_keys else 0) | (orjson.OPT_INDENT_2 if indent else 0)
    try:
        return orjson.dumps(value, default=_default, option=option)
    except orjson.JSONEncodeError as exc:
        if "64-bit" not in str(exc):
            raise
        return orjson.dumps(_wide_ints(value), default=_default, option=option)


def _wide_ints(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if value in _INT64 else Decimal(value)
    if isinstance(value, dict):
        return {k: _wide_ints(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_wide_ints(v) for v in value]
    return value


def canonical_json(payload: Any) -> bytes:
    """The canonical form: sorted keys at every depth, no whitespace."""
    return dumps(payload, sort_keys=True)


def canonical_event_id(payload: dict[str, Any]) -> uuid.UUID:
    """UUIDv5 of the canonical JSON of a payload without its `event_id`.

    Callers pass the redacted payload, so the id never depends on (or leaks) a licence key.
    """
    body = {k: v for k, v in payload.items() if k != "event_id"}
    return uuid.uuid5(EVENT_ID_NAMESPACE, canonical_json(body).decode())


def uuid_or_none(value: Any) -> uuid.UUID | None:
    """A UUID given as a string, or None for anything else."""
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            return None
    return None
