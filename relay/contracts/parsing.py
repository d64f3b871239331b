"""The one entry point from raw input to a valid event or a rejection with reasons.

Order matters for safety: the payload is redacted *before* it is validated, so nothing derived
from validation (errors, models, logs) can ever contain a licence key; error messages are rebuilt
from pydantic's templates without the parts that would quote the input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast
from uuid import UUID

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from relay import codec
from relay.contracts.registry import EventContract, contract_for
from relay.model import REJECTION_REASONS, Rejection, RejectionReason
from relay.redaction import may_mention_licence, redact, scrub_bytes, scrub_text

UnknownFields = Literal["keep", "drop", "reject"]
# One rejection type for every layer (relay.model); the parse-level names stay for callers.
RejectReason = RejectionReason
REJECT_REASONS = REJECTION_REASONS
Rejected = Rejection


@dataclass(frozen=True, slots=True)
class Accepted:
    contract: EventContract
    # The payload's own event_id, or None when it arrived without one.
    event_id: UUID | None
    # Validated and redacted; decimals, uuids, dates as Python objects (relay.codec serialises them).
    payload: dict[str, Any]

    @property
    def event_type(self) -> str:
        return self.contract.event_type


ParseResult = Accepted | Rejection


def parse_event(raw: str | bytes | Mapping[str, Any], unknown_fields: UnknownFields = "keep") -> ParseResult:
    """Parse JSON text (or an already-decoded object) into an accepted event or a rejection."""
    if isinstance(raw, str | bytes):
        try:
            value = codec.loads(raw)
        except codec.JSONError as exc:
            scrubbed = scrub_bytes(raw) if isinstance(raw, bytes) else scrub_text(raw)
            reason = cast(RejectionReason, exc.reason)
            what = "not valid JSON" if reason == "not_json" else reason.replace("_", " ")
            return Rejection(
                reason=reason, errors=(f"$: {what} ({exc})",), payload=codec.storable_text(scrubbed)
            )
        # Text that cannot spell a licence key needs no walk through every value.
        return validate(value, unknown_fields, redacted=not may_mention_licence(raw))
    return validate(raw, unknown_fields)


def validate(value: Any, unknown_fields: UnknownFields = "keep", *, redacted: bool = False) -> ParseResult:
    """Validate a decoded JSON value against its contract (by its event_type)."""
    if codec.too_deep(value):
        # Before redact(), which recurses: a hostile depth must not reach any recursive walk.
        return Rejection(reason="too_deep", errors=(f"$: nested deeper than {codec.MAX_DEPTH} levels",))
    if not redacted:
        value = redact(value)
    if not isinstance(value, Mapping):
        return Rejection(reason="not_an_object", errors=("$: an event must be a JSON object",), payload=value)
    event_type = value.get("event_type")
    event_id = codec.uuid_or_none(value.get("event_id"))
    if not isinstance(event_type, str):
        return Rejection(
            reason="schema",
            errors=("event_type: field required (a string)",),
            payload=value,
            event_id=event_id,
        )
    contract = contract_for(event_type)
    if contract is None:
        return Rejection(
            reason="unknown_event_type",
            errors=("event_type: not an event of the IT contracts",),
            payload=value,
            event_id=event_id,
        )
    try:
        model = contract.model.model_validate(value)
    except ValidationError as exc:
        return Rejection(
            reason="schema",
            errors=tuple(format_errors(exc.errors())),
            payload=value,
            event_type=event_type,
            event_id=event_id,
        )
    nulls, extras = _inspect(model, ())
    if contract.derived:
        # A derived contract is this project's reading, not the producer's: what it does not
        # name is kept whatever the policy, so a real payload is never refused or cut for it.
        unknown_fields = "keep"
    if extras and unknown_fields == "reject":
        errors = tuple(f"{_path(p)}: unknown field (validation.unknown_fields = reject)" for p in extras)
        return Rejection(
            reason="schema", errors=errors, payload=value, event_type=event_type, event_id=event_id
        )
    # The contract's `x?: T` is "absent or T": a null given for an optional field is accepted and
    # left out, so subscribers see what the contract says.
    payload = model.model_dump(mode="python", exclude_unset=True, exclude=nulls or None)
    if extras and unknown_fields == "drop":
        for path in extras:
            _delete(payload, path)
    return Accepted(contract, model.event_id, payload)


def _inspect(
    model: BaseModel, prefix: tuple[str | int, ...]
) -> tuple[dict[Any, Any], list[tuple[str | int, ...]]]:
    """One walk over what the input set: an exclude spec for model_dump (every declared field given
    as null, at any depth) and the paths of fields no contract declares."""
    nulls: dict[Any, Any] = {}
    extras: list[tuple[str | int, ...]] = [(*prefix, key) for key in model.__pydantic_extra__ or ()]
    # In declaration order (the order of the errors); fields left unset hold their defaults,
    # which carry neither a null given nor an unknown field.
    given = model.__pydantic_fields_set__
    for name, value in model.__dict__.items():
        if name not in given:
            continue
        if value is None:
            nulls[name] = True
        elif isinstance(value, BaseModel):
            inner, more = _inspect(value, (*prefix, name))
            if inner:
                nulls[name] = inner
            extras += more
        elif isinstance(value, list):
            items: dict[int, Any] = {}
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    inner, more = _inspect(item, (*prefix, name, i))
                    if inner:
                        items[i] = inner
                    extras += more
            if items:
                nulls[name] = items
    return nulls, extras


def _delete(payload: Any, path: tuple[str | int, ...]) -> None:
    *parents, last = path
    for step in parents:
        payload = payload[step]
    del payload[last]


def _path(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "$"


# Context values that are the contract's own (bounds, patterns, expected literals), never input.
_SAFE_CTX = frozenset(
    {
        "gt",
        "ge",
        "lt",
        "le",
        "multiple_of",
        "min_length",
        "max_length",
        "expected_plural",
        "field_type",
        "pattern",
        "expected",
        "max_digits",
        "decimal_places",
        "whole_digits",
        "expected_version",
        "tz_expected",
        "class_name",
        # The schemes and limits a URL must meet: the field's rule, never the input.
        "expected_schemes",
        "max_length_url",
    }
)
# value_error's {error} is the message of one of this project's own validators.
_OWN_MESSAGES = frozenset({"value_error", "assertion_error"})
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_TRAILING = re.compile(r"(?:[,:]?\s*(?:not|got|error:?)?\s*)$")


def format_errors(errors: list[ErrorDetails]) -> list[str]:
    """Pydantic errors as `field.path: message`, built so that no input value can appear."""
    return [f"{_path(tuple(e['loc']))}: {_message(e)}" for e in errors]


def _message(error: ErrorDetails) -> str:
    if error["type"] == "missing":
        return "field required"
    if error["type"] == "extra_forbidden":
        return "unknown key"
    ctx = error.get("ctx") or {}
    if error["type"] in _OWN_MESSAGES:
        return str(ctx.get("error", "invalid value"))
    template = _template(error["type"]) or "invalid value"
    unsafe = next((m for m in _PLACEHOLDER.finditer(template) if m.group(1) not in _SAFE_CTX), None)
    if unsafe is not None:
        template = _TRAILING.sub("", template[: unsafe.start()]) or "invalid value"
    return _PLACEHOLDER.sub(lambda m: str(ctx.get(m.group(1), "")), template)


def _template(error_type: str) -> str | None:
    return _TEMPLATES.get(error_type)


def _load_templates() -> dict[str, str]:
    from pydantic_core._pydantic_core import list_all_errors

    return {e["type"]: e["message_template_python"] for e in list_all_errors()}


_TEMPLATES = _load_templates()
