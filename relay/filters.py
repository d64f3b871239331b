"""Subscriber filters: Hookdeck Outpost's JSON operator language, evaluated on a payload. Pure.

A filter is a table of conditions on the validated, redacted payload (the webhook body). Every
key of a table must hold:

- a field name: the condition under it holds for that field's value. A condition is a value
  (implicit equality: equal to a scalar; for an array field, some element equal; a list: every
  item matched by some element), a table of operators, or a table of field names (a nested object;
  for an array of objects, some element matches). A field the event does not have fails every
  condition except `{"$exist": false}`.
- `$and` / `$or`: a list of conditions on the same value, all / any of which hold.
- `$not`: a condition that does not hold.
- `$eq $neq` (deep equality), `$gt $gte $lt $lte` (numbers with numbers, strings with strings),
  `$in` (the value is in the list; or the string contains the operand; or the array holds it),
  `$nin` (not `$in`), `$startsWith $endsWith` (a string, or any of a list of strings), `$exist`.

As in Outpost, an operator applied to a value of the wrong type does not hold, `$nin` included
(`{"$nin": "x"}` on a number holds for nothing; `{"$nin": ["x"]}` on a number holds: it is not in
the list). `matches` is total: it returns a bool
for any filter and any payload, never raises (tests/test_filters.py holds it to a reference model).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, Final

LOGICAL: Final = frozenset({"$and", "$or", "$not"})
OPERATORS: Final = frozenset(
    {"$eq", "$neq", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$startsWith", "$endsWith", "$exist"}
)
# Filters are configuration, checked to be far shallower (relay.filter_check); a deeper one (or a
# payload nested past it) simply does not match.
MAX_DEPTH: Final = 32


class _TooDeep(Exception):
    pass


class _Missing:
    """The value of a field the payload does not have."""

    __slots__ = ()


MISSING: Final = _Missing()


def matches(condition: Any, payload: Any) -> bool:
    """True when `payload` satisfies the filter `condition`."""
    try:
        return _holds(condition, payload, 0)
    except (_TooDeep, RecursionError):
        # A filter nested past MAX_DEPTH, or values past the interpreter's limit (deep equality):
        # the whole filter matches nothing (a `$not` above the cut must not turn it into "all").
        return False


def _holds(cond: Any, value: Any, depth: int) -> bool:
    if depth > MAX_DEPTH:
        raise _TooDeep
    if isinstance(cond, Mapping):
        if value is MISSING:
            return cond.get("$exist") is False
        return _table(cond, value, depth + 1)
    if value is MISSING:
        return False
    if isinstance(cond, list):
        # Every item of the list is matched by some element of an array.
        return _is_array(value) and all(any(_holds(c, v, depth + 1) for v in value) for c in cond)
    if _is_array(value):
        return any(_holds(cond, v, depth + 1) for v in value)
    return _is_scalar(value) and _scalar_equal(value, cond)


def _table(cond: Mapping[Any, Any], value: Any, depth: int) -> bool:
    fields = {}
    for key, sub in cond.items():
        if isinstance(key, str) and key.startswith("$"):
            if not _keyword(key, sub, value, depth):
                return False
        else:
            fields[key] = sub
    if not fields and cond:
        return True
    # Field names (or an empty table, which Outpost reads as an object with no conditions).
    if isinstance(value, Mapping):
        return _object(fields, value, depth)
    if _is_array(value):
        return any(isinstance(v, Mapping) and _object(fields, v, depth) for v in value)
    return False


def _keyword(key: str, sub: Any, value: Any, depth: int) -> bool:
    """Whether one `$` key of a table holds for the value (an unknown operator holds for nothing)."""
    if key == "$and":
        return isinstance(sub, list) and all(_holds(c, value, depth) for c in sub)
    if key == "$or":
        return isinstance(sub, list) and any(_holds(c, value, depth) for c in sub)
    if key == "$not":
        return not _holds(sub, value, depth)
    return key in OPERATORS and _operator(key, value, sub)


def _object(fields: Mapping[Any, Any], value: Mapping[Any, Any], depth: int) -> bool:
    return all(_holds(sub, value.get(key, MISSING), depth) for key, sub in fields.items())


def _operator(op: str, value: Any, operand: Any) -> bool:
    if op == "$eq":
        return _equal(value, operand)
    if op == "$neq":
        return not _equal(value, operand)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        return _order(op, value, operand)
    if op == "$in":
        return _within(value, operand) is True
    if op == "$nin":
        return _within(value, operand) is False
    if op in ("$startsWith", "$endsWith"):
        return _affix(op, value, operand)
    # $exist on a value that is there.
    return operand is True


def _order(op: str, value: Any, operand: Any) -> bool:
    if isinstance(value, str) and isinstance(operand, str):
        a: Any = value
        b: Any = operand
    else:
        a, b = _number(value), _number(operand)
        if a is None or b is None:
            return False
    if op == "$gt":
        return bool(a > b)
    if op == "$gte":
        return bool(a >= b)
    if op == "$lt":
        return bool(a < b)
    return bool(a <= b)


def _within(value: Any, operand: Any) -> bool | None:
    """$in: True or False, or None when the types do not fit (then $nin does not hold either)."""
    if isinstance(operand, list):
        if not _is_scalar(value):
            return None
        return any(_is_scalar(item) and _scalar_equal(value, item) for item in operand)
    if isinstance(value, str):
        return operand in value if isinstance(operand, str) else None
    if _is_array(value):
        return _is_scalar(operand) and any(_is_scalar(v) and _scalar_equal(v, operand) for v in value)
    return None


def _affix(op: str, value: Any, operand: Any) -> bool:
    if not isinstance(value, str):
        return False
    candidates = [operand] if isinstance(operand, str) else operand if isinstance(operand, list) else None
    if candidates is None:
        return False
    for item in candidates:
        if not isinstance(item, str):
            return False  # Outpost: a non-string in the list is a type error, no match
        if value.startswith(item) if op == "$startsWith" else value.endswith(item):
            return True
    return False


def _equal(a: Any, b: Any) -> bool:
    """Deep equality of JSON values: numbers by value (1 == 1.0), never a bool for a number."""
    if _is_scalar(a) and _is_scalar(b):
        return _scalar_equal(a, b)
    if _is_array(a) and _is_array(b):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return False


def _scalar_equal(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    x, y = _number(a), _number(b)
    if x is not None and y is not None:
        return bool(x == y)
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    if isinstance(a, bool) and isinstance(b, bool):
        return a is b
    return False


def _number(value: Any) -> int | Decimal | None:
    """A finite JSON number as an exact value (a float as it was written: 0.1 is 0.1), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        if isinstance(value, float):
            value = Decimal(repr(value))
        if isinstance(value, Decimal) and value.is_finite():
            return value
    except (InvalidOperation, ValueError):
        pass
    return None


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | bool | int | float | Decimal)


def _is_array(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray)
