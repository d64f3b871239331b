"""The published schemas are the validation: a corpus of good and bad payloads gets the same
verdict from the contract models and from the exported JSON Schemas (a JSON Schema validator with
format checking), event by event."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from relay import codec
from relay.contracts import EVENT_TYPES, Accepted, validate
from relay.contracts.examples import example
from relay.schemas import json_schemas

SCHEMAS = {name.removesuffix(".schema.json"): schema for name, schema in json_schemas().items()}
WRONG_VALUES: list[Any] = [
    None,
    True,
    7,
    -1,
    1.5,
    "x",
    "",
    [],
    {},
    "2026-02-30",
    "2026-1-5",
    "2026-11-27T09:30:00",
    "2026-11-27T25:30:00Z",
    "20260215",
    "12345678123456781234567812345678",
    "0b6f2a64-3c1e-4d57-9a0e-5f7b8c9d0e1",
    "not-a-uuid",
]


def _corpus(event_type: str) -> Iterator[tuple[str, dict[str, Any]]]:
    base = example(event_type)
    yield "example", base
    for field in base:
        if field == "event_type":
            continue
        without = {k: v for k, v in base.items() if k != field}
        yield f"without {field}", without
        for value in WRONG_VALUES:
            yield f"{field}={value!r}", base | {field: value}
        if isinstance(base[field], dict):
            for inner in base[field]:
                for value in WRONG_VALUES[:9]:
                    changed = copy.deepcopy(base)
                    changed[field][inner] = value
                    yield f"{field}.{inner}={value!r}", changed


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_models_and_exported_schemas_agree(event_type: str) -> None:
    validator = jsonschema.Draft202012Validator(
        SCHEMAS[event_type], format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    disagreements = []
    for label, payload in _corpus(event_type):
        # Both see the value the relay decodes (exact decimals), not Python's floats.
        value = codec.loads(codec.dumps(payload))
        by_model = isinstance(validate(value, "keep"), Accepted)
        by_schema = validator.is_valid(value)
        if by_model != by_schema:
            disagreements.append(f"{label}: model {'accepts' if by_model else 'rejects'}")
    assert not disagreements, disagreements
