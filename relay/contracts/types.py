"""Field types of the contracts document, strict where the document is.

The document's `number`, `date`, `timestamptz`, `uuid` and `string` map to types that refuse the
coercions pydantic would otherwise allow (a string for a number, a naive timestamp, a unix time
for a date), so a payload that violates the contract is rejected rather than silently reshaped.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    WithJsonSchema,
)

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# RFC 3339: a date, T (or a space), a time with optional fraction, and an offset. pydantic alone
# would also read "20260215", "0" or "-1" as Unix times.
TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"
_TIMESTAMP = re.compile(TIMESTAMP_PATTERN)
# The canonical 8-4-4-4-12 form, as JSON Schema's "uuid" format requires (pydantic alone would
# also take 32 bare hex digits or braces).
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_UUID = re.compile(UUID_PATTERN)


def _is_date_text(value: Any) -> Any:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        raise ValueError("must be a date in the form YYYY-MM-DD")
    return value


def _is_timestamp_text(value: Any) -> Any:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _TIMESTAMP.match(value):
        raise ValueError("must be an RFC 3339 timestamp with a UTC offset (YYYY-MM-DDThh:mm:ssZ)")
    return value


def _is_number(value: Any) -> Any:
    # bool is an int subclass in Python, and a JSON string is never a number.
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ValueError("must be a JSON number")
    return value


def _is_uuid_text(value: Any) -> Any:
    if isinstance(value, UUID):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a UUID string")
    if not _UUID.match(value):
        raise ValueError("must be a UUID in the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx")
    return value


Text = StrictStr
Uuid = Annotated[
    UUID,
    BeforeValidator(_is_uuid_text),
    WithJsonSchema({"type": "string", "format": "uuid", "pattern": UUID_PATTERN}),
]
Date = Annotated[
    date,
    BeforeValidator(_is_date_text),
    WithJsonSchema({"type": "string", "format": "date", "pattern": DATE_PATTERN}),
]
# ISO 8601 with an offset; a naive timestamp (no offset) is rejected by AwareDatetime.
Timestamp = Annotated[
    AwareDatetime,
    BeforeValidator(_is_timestamp_text),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": TIMESTAMP_PATTERN}),
]
Flag = StrictBool
Count = Annotated[StrictInt, Field(ge=0)]
SignedInt = StrictInt
# Exact decimals: 1999.99 stays 1999.99 on the way out (relay.codec writes Decimal verbatim).
_NUMBER_SCHEMA = WithJsonSchema({"type": "number"})
Money = Annotated[
    Decimal,
    BeforeValidator(_is_number),
    Field(ge=0, allow_inf_nan=False),
    WithJsonSchema({"type": "number", "minimum": 0}),
]
Number = Annotated[Decimal, BeforeValidator(_is_number), Field(allow_inf_nan=False), _NUMBER_SCHEMA]
# A CVSS base score: 0 to 10.
Score = Annotated[
    Decimal,
    BeforeValidator(_is_number),
    Field(ge=0, le=10, allow_inf_nan=False),
    WithJsonSchema({"type": "number", "minimum": 0, "maximum": 10}),
]
UuidList = list[Uuid]

Priority = Literal["low", "medium", "high", "critical"]
Severity = Literal["low", "medium", "high", "critical"]


class ContractModel(BaseModel):
    """Base of every payload model.

    Unknown fields are allowed here and handled by the `validation.unknown_fields` policy in
    `relay.contracts.parse`; errors never echo input (hide_input_in_errors).
    """

    model_config = ConfigDict(
        extra="allow",
        frozen=True,
        hide_input_in_errors=True,
        populate_by_name=False,
        str_strip_whitespace=False,
    )


class EventModel(ContractModel):
    """Fields every event carries besides its own."""

    event_id: Uuid | None = None
    organization_id: Uuid
    timestamp: Timestamp


class Location(ContractModel):
    site_id: Uuid
    building: Text | None = None
    room: Text | None = None
