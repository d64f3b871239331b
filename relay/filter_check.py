"""What `check-config` refuses in a subscriber's filter, judged against the contracts. Pure.

A filter may name only fields that some contract routed to the subscriber has (nested ones
included), never `license_key` in any spelling the redaction rule knows (it is redacted before a
filter sees it); only known operators, each with an operand of the shape it takes and of a type
the field can have (a string against a string field, one of an enumeration's values, ...).
`problem()` returns the first of these as "<path>: <what is wrong>", or None.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from relay.contracts import REGISTRY
from relay.filters import LOGICAL, OPERATORS
from relay.redaction import assigns_key, is_sensitive_key

# Conditions nest this deep at most (the evaluator gives up at twice as deep).
MAX_NESTING: Final = 16
_ORDER = frozenset({"$gt", "$gte", "$lt", "$lte"})
_AFFIX = frozenset({"$startsWith", "$endsWith"})
_NUMBER = frozenset({"number", "integer"})


@dataclass(frozen=True, slots=True)
class Alt:
    """One schema a value may have: a JSON Schema without anyOf or $ref (None: anything)."""

    schema: Mapping[str, Any] | None
    defs: Mapping[str, Any]

    @property
    def kind(self) -> str:
        return "any" if self.schema is None else str(self.schema.get("type", "any"))

    @property
    def enum(self) -> list[Any] | None:
        if self.schema is None:
            return None
        if "const" in self.schema:
            return [self.schema["const"]]
        values = self.schema.get("enum")
        return list(values) if isinstance(values, list) else None

    def items(self) -> list[Alt]:
        if self.kind == "any":
            return [Alt(None, self.defs)]
        item = self.schema.get("items") if self.kind == "array" and self.schema else None
        return _alts(item, self.defs) if isinstance(item, Mapping) else []

    def field(self, name: str) -> list[Alt] | None:
        """The alternatives of a field of this object (None: it has no such field)."""
        if self.kind == "any":
            return [Alt(None, self.defs)]
        props = self.schema.get("properties") if self.schema else None
        if isinstance(props, Mapping):
            prop = props.get(name)
            return None if prop is None else _alts(prop, self.defs)
        extra = self.schema.get("additionalProperties") if self.schema else None
        # A mapping without named fields (dict[str, X]) has any field.
        return _alts(extra, self.defs) if isinstance(extra, Mapping) else [Alt(None, self.defs)]


def _alts(schema: Mapping[str, Any] | None, defs: Mapping[str, Any]) -> list[Alt]:
    if schema is None:
        return [Alt(None, defs)]
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return _alts(defs.get(ref.rsplit("/", 1)[-1]), defs)
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            return [alt for sub in schema[key] for alt in _alts(sub, defs)]
    return [Alt(schema, defs)]


@lru_cache(maxsize=64)
def routed_fields(subscriber: str) -> Mapping[str, tuple[Alt, ...]]:
    """Every top-level field of the events routed to `subscriber`, with the schemas it has."""
    fields: dict[str, list[Alt]] = {}
    for contract in REGISTRY.values():
        if subscriber not in contract.subscribers:
            continue
        schema = contract.model.model_json_schema(mode="serialization")
        defs = schema.get("$defs", {})
        for name, prop in schema.get("properties", {}).items():
            fields.setdefault(name, []).extend(_alts(prop, defs))
    return {name: tuple(alts) for name, alts in fields.items()}


def problem(condition: Any, subscriber: str) -> str | None:
    """The first reason to refuse `condition` as `subscriber`'s filter, as "<path>: <why>"."""
    if not isinstance(condition, Mapping):
        return ': a filter is a table of conditions, e.g. { severity = { "$in" = ["high"] } }'
    # Checked before any message could quote it: a value that gives a licence key is never shown.
    licence = _found(condition, "", lambda v: isinstance(v, str) and assigns_key(v))
    if licence is not None:
        return f"{licence}: its value gives a licence key, which is redacted before any filter sees it"
    infinite = _found(condition, "", lambda v: isinstance(v, float) and not math.isfinite(v))
    if infinite is not None:
        return f"{infinite}: not a finite number (nan and inf match nothing)"
    return _Check(subscriber).table(condition, None, "", 0)


def _found(value: Any, path: str, bad: Callable[[Any], bool]) -> str | None:
    """The path of the first value (a key too) in `value` that is `bad`."""
    if bad(value):
        return path or "(filter)"
    if isinstance(value, Mapping):
        items: list[tuple[Any, Any]] = list(value.items())
    elif isinstance(value, list):
        items = list(enumerate(value))
    else:
        return None
    for key, sub in items:
        if isinstance(key, int):
            at = f"{path}[{key}]"
        else:
            # A key that is itself bad is named by its place, never shown.
            name = "(a key)" if bad(key) else str(key)
            at = f"{path}.{name}" if path else name
            if bad(key):
                return at
        if (found := _found(sub, at, bad)) is not None:
            return found
    return None


class _Check:
    def __init__(self, subscriber: str) -> None:
        self.subscriber = subscriber

    def condition(self, cond: Any, alts: list[Alt] | None, path: str, depth: int) -> str | None:
        """`alts` None: the payload itself (the events routed to the subscriber)."""
        if depth > MAX_NESTING:
            return f"{path}: nested deeper than {MAX_NESTING} levels"
        if isinstance(cond, Mapping):
            return self.table(cond, alts, path, depth + 1)
        if alts is None:
            return f"{path}: the payload is an object; give a table of conditions"
        if isinstance(cond, list):
            arrays = [i for a in alts if a.kind in ("array", "any") for i in a.items()]
            if not arrays:
                return f"{path}: a list matches an array field, and this is {_describe(alts)}"
            for index, item in enumerate(cond):
                if (why := self.condition(item, arrays, f"{path}[{index}]", depth + 1)) is not None:
                    return why
            return None
        # A scalar: equal to the field, or to some element of an array field.
        if _fits(cond, alts + [i for a in alts if a.kind == "array" for i in a.items()]):
            return None
        return _mismatch(path, cond, alts)

    def table(self, cond: Mapping[Any, Any], alts: list[Alt] | None, path: str, depth: int) -> str | None:
        ops = [k for k in cond if isinstance(k, str) and k in OPERATORS]
        names = [k for k in cond if not (isinstance(k, str) and k.startswith("$"))]
        if ops and names:
            return f"{path or '(filter)'}: mixes operators ({ops[0]}) and field names ({names[0]}); use $and"
        for key, sub in cond.items():
            at = f"{path}.{key}" if path else str(key)
            if not isinstance(key, str):
                return f"{at}: not a field name"
            if key in LOGICAL:
                why = self.logical(key, sub, alts, at, depth)
            elif key in OPERATORS:
                why = None  # judged below, once the table is known to hold only operators
            elif key.startswith("$"):
                return f"{at}: unknown operator (known: {', '.join(sorted(OPERATORS | LOGICAL))})"
            else:
                why = self.field(key, sub, alts, at, depth)
            if why is not None:
                return why
        for op in ops:
            at = f"{path}.{op}" if path else op
            if alts is None:
                return f"{at}: an operator applies to a field; name the field first"
            if (why := _operand(op, cond[op], alts, at)) is not None:
                return why
        return None

    def logical(self, key: str, sub: Any, alts: list[Alt] | None, at: str, depth: int) -> str | None:
        if key == "$not":
            return self.condition(sub, alts, at, depth)
        if not isinstance(sub, list) or not sub:
            return f"{at}: takes a non-empty list of conditions"
        for index, item in enumerate(sub):
            if (why := self.condition(item, alts, f"{at}[{index}]", depth)) is not None:
                return why
        return None

    def field(self, name: str, sub: Any, alts: list[Alt] | None, at: str, depth: int) -> str | None:
        if is_sensitive_key(name):
            return f"{at}: names a licence key, which is redacted before any filter sees it"
        if alts is None:
            found = list(routed_fields(self.subscriber).get(name, ()))
            if not found:
                return f"{at}: no event routed to {self.subscriber} has this field"
        else:
            objects = [a for a in alts if a.kind in ("object", "any")]
            objects += [
                i for a in alts if a.kind == "array" for i in a.items() if i.kind in ("object", "any")
            ]
            if not objects:
                return f"{at}: the field above is {_describe(alts)}, not an object"
            found = [alt for o in objects for alt in (o.field(name) or [])]
            if not found:
                return f"{at}: no event routed to {self.subscriber} has this field"
        return self.condition(sub, found, at, depth)


def _operand(op: str, operand: Any, alts: list[Alt], at: str) -> str | None:
    if op == "$exist":
        return None if isinstance(operand, bool) else f"{at}: takes true or false"
    if op in ("$eq", "$neq"):
        if isinstance(operand, list):
            ok = any(a.kind in ("array", "any") for a in alts)
        elif isinstance(operand, Mapping):
            ok = any(a.kind in ("object", "any") for a in alts)
        else:
            return None if _fits(operand, alts) else _mismatch(at, operand, alts)
        return None if ok else _mismatch(at, operand, alts)
    if op in _ORDER:
        if not _is_number(operand) and not isinstance(operand, str):
            return f"{at}: takes a number or a string"
        wanted = _NUMBER if _is_number(operand) else {"string"}
        ok = any(a.kind in wanted or a.kind == "any" for a in alts)
        return None if ok else _mismatch(at, operand, alts)
    if op in _AFFIX:
        texts = operand if isinstance(operand, list) else [operand]
        if not texts or not all(isinstance(t, str) for t in texts):
            return f"{at}: takes a string or a non-empty list of strings"
        ok = any(a.kind in ("string", "any") for a in alts)
        return None if ok else _mismatch(at, operand, alts)
    return _membership(operand, alts, at)


def _membership(operand: Any, alts: list[Alt], at: str) -> str | None:
    """$in and $nin: a list the (scalar) field's value is in, or what a string or array field holds."""
    if isinstance(operand, list):
        for index, item in enumerate(operand):
            if isinstance(item, list | Mapping):
                return f"{at}[{index}]: the list holds values, not lists or tables"
            if not _fits(item, alts):
                return _mismatch(f"{at}[{index}]", item, alts)
        return None
    if isinstance(operand, Mapping):
        return f"{at}: takes a list of values, a substring, or a value an array field holds"
    if isinstance(operand, str) and any(a.kind in ("string", "any") for a in alts):
        return None
    elements = [i for a in alts if a.kind in ("array", "any") for i in a.items()]
    return None if _fits(operand, elements) else _mismatch(at, operand, alts)


def _fits(value: Any, alts: list[Alt]) -> bool:
    """Whether a scalar can be equal to a value of one of these schemas."""
    for alt in alts:
        kind = alt.kind
        if kind == "any":
            return True
        if value is None:
            ok = kind == "null"
        elif isinstance(value, bool):
            ok = kind == "boolean"
        elif _is_number(value):
            ok = kind in _NUMBER
        elif isinstance(value, str):
            ok = kind == "string"
        else:
            ok = False
        enum = alt.enum
        if ok and (enum is None or value in enum):
            return True
    return False


def _mismatch(at: str, value: Any, alts: list[Alt]) -> str:
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:39] + "…"
    return f"{at}: {shown} does not fit the field, which is {_describe(alts)}"


def _describe(alts: list[Alt]) -> str:
    parts: list[str] = []
    enum: list[Any] = []
    for alt in alts:
        kind = alt.kind
        if alt.enum is not None and kind != "array":
            enum += [v for v in alt.enum if v not in enum]
            continue
        if kind == "array":
            inner = sorted({i.kind for i in alt.items()})
            text = f"an array of {' or '.join(inner) or 'values'}"
        else:
            text = {"integer": "a number", "number": "a number", "any": "any value", "null": "null"}.get(
                kind, f"a {kind}"
            )
        if text not in parts:
            parts.append(text)
    if enum:
        shown = ", ".join(map(str, enum[:12])) + (", ..." if len(enum) > 12 else "")
        parts.insert(0, f"one of {shown}")
    return " or ".join(parts) or "never present"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
