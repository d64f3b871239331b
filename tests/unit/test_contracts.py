"""Every contract: valid examples pass, required fields and enums are enforced, money is exact."""

from __future__ import annotations

import types
import typing
from decimal import Decimal
from typing import Any, Literal

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from relay import codec
from relay.contracts import EVENT_TYPES, REGISTRY, Accepted, Rejected, UnknownFields, parse_event, validate
from relay.contracts.examples import example
from relay.model import Rejection

MONEY_FIELDS = {
    "purchase_cost",
    "total_cost",
    "cost_per_license",
    "renewal_cost",
    "estimated_cost",
    "contract_value",
    "disposal_value",
}


def _accepted(result: object) -> Accepted:
    assert isinstance(result, Accepted), getattr(result, "errors", result)
    return result


def _rejected(result: object) -> Rejected:
    assert isinstance(result, Rejected), result
    return result


def _literals(annotation: Any) -> tuple[str, ...]:
    """The literal values of a field annotation (through Optional/Annotated), else ()."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        return tuple(v for a in typing.get_args(annotation) for v in _literals(a))
    return ()


def test_there_are_31_events_with_the_documents_subscribers() -> None:
    assert len(REGISTRY) == 31
    assert REGISTRY["it_account_deactivated"].subscribers == ("PF-10", "Audit", "GR")
    assert REGISTRY["it_change_rolled_back"].subscribers == ("PF-10", "GR", "IT-02")
    assert REGISTRY["it_sla_breached"].subscribers == ("PF-10", "IT-02")
    scheduled = {t for t, c in REGISTRY.items() if c.emitter == "scheduler"}
    assert scheduled == {
        "it_sla_breached",
        "it_contract_expiring",
        "it_license_expiring",
        "it_license_compliance_alert",
        "it_patch_deployment_overdue",
    }
    assert sum(c.derived for c in REGISTRY.values()) == 13


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_valid_example_passes(event_type: str) -> None:
    accepted = _accepted(parse_event(codec.dumps(example(event_type))))
    assert accepted.event_type == event_type
    assert accepted.contract.publisher.startswith("IT-0")


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_each_required_field_is_named_when_missing(event_type: str) -> None:
    model = REGISTRY[event_type].model
    required = [name for name, f in model.model_fields.items() if f.is_required() and name != "event_type"]
    assert required, "every contract has required fields"
    for name in required:
        payload = example(event_type)
        payload.pop(name, None)
        rejected = _rejected(validate(payload))
        assert rejected.reason == "schema"
        assert f"{name}: field required" in rejected.errors


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_enum_value_passes_and_an_unknown_one_is_named(event_type: str) -> None:
    model = REGISTRY[event_type].model
    for name, info in model.model_fields.items():
        values = _literals(info.annotation)
        if not values or name == "event_type":
            continue
        for value in values:
            payload = example(event_type) | {name: value}
            _accepted(validate(payload))
        rejected = _rejected(validate(example(event_type) | {name: "not-a-member"}))
        assert any(e.startswith(f"{name}: Input should be") for e in rejected.errors), rejected.errors
        assert not any("not-a-member" in e for e in rejected.errors)


@pytest.mark.parametrize(
    "event_type", [t for t in EVENT_TYPES if MONEY_FIELDS & REGISTRY[t].model.model_fields.keys()]
)
@given(amount=st.decimals(min_value=0, max_value=Decimal("1e12"), places=2, allow_nan=False))
def test_money_round_trips_exactly(event_type: str, amount: Decimal) -> None:
    fields = MONEY_FIELDS & REGISTRY[event_type].model.model_fields.keys()
    payload = example(event_type) | dict.fromkeys(fields, amount)
    text = codec.dumps(payload)
    out = codec.dumps(_accepted(parse_event(text)).payload)
    for name in fields:
        assert f'"{name}":{amount}'.encode() in out
        assert codec.loads(out)[name] == amount


def test_money_keeps_its_written_digits() -> None:
    text = codec.dumps(example("it_asset_purchased")).replace(b"1999.99", b"1999.990")
    out = codec.dumps(_accepted(parse_event(text)).payload)
    assert b'"purchase_cost":1999.990' in out


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("timestamp", "2026-11-27T09:30:00", "timestamp: "),
        ("timestamp", 1764235800, "timestamp: must be an RFC 3339 timestamp"),
        # Digit strings pydantic alone reads as Unix times.
        ("timestamp", "20260215", "timestamp: must be an RFC 3339 timestamp"),
        ("timestamp", "0", "timestamp: must be an RFC 3339 timestamp"),
        ("timestamp", "-1", "timestamp: must be an RFC 3339 timestamp"),
        ("timestamp", "2026-11-27", "timestamp: must be an RFC 3339 timestamp"),
        ("purchase_date", "2026-1-5", "purchase_date: must be a date in the form YYYY-MM-DD"),
        ("purchase_date", "2026-02-30", "purchase_date: "),
        ("purchase_cost", "1999.99", "purchase_cost: must be a JSON number"),
        ("purchase_cost", True, "purchase_cost: must be a JSON number"),
        ("purchase_cost", -1, "purchase_cost: Input should be greater than or equal to 0"),
        ("warranty_months", 1.5, "warranty_months: "),
        ("warranty_months", "12", "warranty_months: "),
        ("asset_id", "ABC-not-a-uuid", "asset_id: must be a UUID in the form"),
        ("asset_id", "12345678123456781234567812345678", "asset_id: must be a UUID in the form"),
        ("asset_id", 12, "asset_id: must be a UUID string"),
        ("vendor_name", 7, "vendor_name: Input should be a valid string"),
    ],
)
def test_wrong_types_are_rejected_without_echoing_input(field: str, value: object, fragment: str) -> None:
    rejected = _rejected(validate(example("it_asset_purchased") | {field: value}))
    assert any(e.startswith(fragment) for e in rejected.errors), rejected.errors
    for error in rejected.errors:
        assert str(value) not in error.split(": ", 1)[1]


def test_nested_paths_are_named() -> None:
    payload = example("it_purchase_request_received")
    payload["items_received"][1]["quantity"] = "two"
    del payload["items_received"][0]["item_description"]
    errors = _rejected(validate(payload)).errors
    assert "items_received[0].item_description: field required" in errors
    assert any(e.startswith("items_received[1].quantity: ") for e in errors)
    location = example("it_asset_assigned")
    location["location"]["site_id"] = "nope"
    assert any(e.startswith("location.site_id: ") for e in _rejected(validate(location)).errors)


def test_uuid_arrays_are_checked_element_by_element() -> None:
    payload = example("it_security_incident_created") | {
        "affected_asset_ids": [example("it_asset_purchased")["asset_id"], "bad"]
    }
    assert any(e.startswith("affected_asset_ids[1]: ") for e in _rejected(validate(payload)).errors)


def test_event_id_is_optional_and_must_be_a_uuid() -> None:
    eid = "a1b2c3d4-0000-4000-8000-000000000001"
    assert str(_accepted(validate(example("it_ticket_created") | {"event_id": eid})).event_id) == eid
    assert _accepted(validate(example("it_ticket_created"))).event_id is None
    assert (
        "event_id: must be a UUID in the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
        in _rejected(validate(example("it_ticket_created") | {"event_id": "nope"})).errors
    )


def test_unknown_fields_policy() -> None:
    payload = example("it_asset_assigned") | {"extra_top": 1}
    payload["location"]["floor"] = 3
    kept = _accepted(validate(payload, "keep")).payload
    assert kept["extra_top"] == 1 and kept["location"]["floor"] == 3
    dropped = _accepted(validate(payload, "drop")).payload
    assert "extra_top" not in dropped and "floor" not in dropped["location"]
    assert dropped["location"]["site_id"]
    rejected = _rejected(validate(payload, "reject"))
    assert set(rejected.errors) == {
        "extra_top: unknown field (validation.unknown_fields = reject)",
        "location.floor: unknown field (validation.unknown_fields = reject)",
    }


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe not utf-8", "invalid_text"),
        (b"{not json", "not_json"),
        (b"[1, 2]", "not_an_object"),
        (b'"text"', "not_an_object"),
        (b'{"event_type": "it_coffee_brewed"}', "unknown_event_type"),
        (b'{"no_type": 1}', "schema"),
        (b"[" * 100_000, "too_deep"),
        (b'{"event_type": "it_ticket_created", "x": NaN}', "not_json"),
    ],
)
def test_rejection_reasons(raw: bytes, reason: str) -> None:
    rejected = _rejected(parse_event(raw))
    assert rejected.reason == reason
    assert rejected.errors


def test_optional_fields_absent_stay_absent_and_nulls_are_left_out() -> None:
    payload = example("it_asset_purchased")
    del payload["po_number"]
    payload["serial_number"] = None
    out = orjson.loads(codec.dumps(_accepted(validate(payload)).payload))
    assert "po_number" not in out and "serial_number" not in out


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('["\\ud800"]', "invalid_text"),  # a lone surrogate, escaped
        ('{"event_type": "it_ticket_created", "subject": "a\\u0000b"}', "invalid_text"),
        (b'{"event_type": "\xff"}', "invalid_text"),  # not UTF-8
        ("[" + "1" * 5000 + "]", "too_large"),  # Python refuses such an int: never a traceback
        (" " * (1024 * 1024 + 1), "too_large"),
        ("[" * 300 + "]" * 300, "too_deep"),
        ("[" * 10_000 + "]" * 10_000, "too_deep"),  # beyond the parser's own recursion
        ('{"a": 1', "not_json"),
    ],
)
def test_bad_text_has_its_own_reason_and_a_one_line_error(text: str | bytes, reason: str) -> None:
    result = parse_event(text)
    assert isinstance(result, Rejected)
    assert result.reason == reason
    assert len(result.errors) == 1 and "\n" not in result.errors[0]


def test_null_for_an_optional_field_is_accepted_and_left_out() -> None:
    # The contract's `x?: T` is "absent or T": subscribers never see a null there.
    payload = example("it_ticket_created") | {"affected_asset_id": None, "subcategory": None}
    accepted = _accepted(validate(payload))
    assert "affected_asset_id" not in accepted.payload and "subcategory" not in accepted.payload
    nested = example("it_asset_assigned")
    if isinstance(nested.get("location"), dict):
        accepted = _accepted(validate(nested | {"location": nested["location"] | {"room": None}}))
        assert "room" not in accepted.payload["location"]
    # A required field is not optional: null is a schema error naming it.
    rejected = _rejected(validate(example("it_ticket_created") | {"subject": None}))
    assert rejected.errors == ("subject: Input should be a valid string",)


@pytest.mark.parametrize("key", [12345, {"k": "v"}, ["A", "B"], True])
def test_a_licence_key_that_is_not_a_string_is_a_schema_error_that_quotes_nothing(key: object) -> None:
    rejected = _rejected(validate(example("it_license_created") | {"license_key": key}))
    assert rejected.errors == ("license_key: Input should be a valid string",)
    assert "12345" not in str(rejected.payload) and "'v'" not in str(rejected.payload)


def test_a_null_licence_key_is_no_key_at_all() -> None:
    accepted = _accepted(validate(example("it_license_created") | {"license_key": None}))
    assert "license_key" not in accepted.payload


IDENTIFYING = {"event_type", "organization_id", "timestamp"}
ENTITY_IDS = {"instance_id", "account_id", "change_id", "report_run_id"}


@pytest.mark.parametrize("event_type", sorted(t for t, c in REGISTRY.items() if c.derived))
def test_a_derived_contract_requires_only_what_identifies_the_fact(event_type: str) -> None:
    model = REGISTRY[event_type].model
    required = {name for name, f in model.model_fields.items() if f.is_required()}
    (entity,) = required - IDENTIFYING
    assert entity in ENTITY_IDS and required == IDENTIFYING | {entity}
    minimal = {k: example(event_type)[k] for k in required}
    assert isinstance(parse_event(minimal), Accepted)
    # Open vocabularies, unknown fields kept whatever the policy: a real producer is not refused.
    richer = minimal | {"new_status": "on_hold", "format": "docx", "change_type": "major", "vendor_note": "x"}
    policies: tuple[UnknownFields, ...] = ("keep", "drop", "reject")
    for policy in policies:
        accepted = parse_event(richer, policy)
        assert isinstance(accepted, Accepted), policy
        assert accepted.payload["vendor_note"] == "x"
    # What it names is still checked when present, by the document's conventions.
    for field, bad in (
        ("changed_by", "bob"),
        ("start_date", "2026-01-05T00:00:00Z"),
        ("cab_meeting_date", "soon"),
    ):
        if field in model.model_fields:
            rejected = parse_event(minimal | {field: bad})
            assert isinstance(rejected, Rejection) and rejected.errors[0].startswith(f"{field}:")
    missing = parse_event({k: v for k, v in minimal.items() if k != entity})
    assert isinstance(missing, Rejection) and missing.errors == (f"{entity}: field required",)


def test_specified_contracts_still_refuse_unknown_fields_under_reject() -> None:
    result = parse_event(example("it_ticket_created") | {"vendor_note": "x"}, "reject")
    assert isinstance(result, Rejection)
    assert result.errors == ("vendor_note: unknown field (validation.unknown_fields = reject)",)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The contract model an annotation holds (itself, in a list, or optional), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for a in typing.get_args(annotation) if (m := _model_of(a)) is not None), None)


def _objects(model: type[BaseModel], value: dict[str, Any], path: tuple[str | int, ...] = ()) -> list[Any]:
    """(path, model) of every JSON object in `value` that validates as a contract model."""
    found: list[Any] = [(path, model)]
    for name, field in model.model_fields.items():
        inner, child = _model_of(field.annotation), value.get(name)
        if inner is None:
            continue
        items = list(enumerate(child)) if isinstance(child, list) else [(None, child)]
        for i, item in items:
            if isinstance(item, dict):
                found += _objects(inner, item, (*path, name) if i is None else (*path, name, i))
    return found


def _at(payload: Any, path: tuple[str | int, ...]) -> Any:
    for step in path:
        payload = payload[step]
    return payload


def _spelled(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


@given(data=st.data(), event_type=st.sampled_from(sorted(EVENT_TYPES)))
def test_unknown_fields_and_nulls_at_any_depth(data: st.DataObject, event_type: str) -> None:
    """Unknown fields anywhere are kept, dropped or named exactly as the policy says; a null given
    for an optional field anywhere is left out, whatever the policy."""
    payload = example(event_type)
    objects = _objects(REGISTRY[event_type].model, payload)
    unknown = data.draw(st.lists(st.sampled_from(objects), unique_by=lambda o: o[0], max_size=4))
    nullable = [
        (path, name)
        for path, model in objects
        for name, field in model.model_fields.items()
        if not field.is_required() and _model_of(field.annotation) is None
    ]
    nulled = data.draw(st.lists(st.sampled_from(nullable), unique=True, max_size=4)) if nullable else []
    for path, _ in unknown:
        _at(payload, path)["x_unknown"] = [1, None]
    for path, name in nulled:
        _at(payload, path)[name] = None
    added = {(*path, "x_unknown") for path, _ in unknown}
    kept = orjson.loads(codec.dumps(_accepted(validate(payload, "keep")).payload))
    for path in added:
        assert _at(kept, path) == [1, None]
    for path, name in nulled:
        assert name not in _at(kept, path)
    dropped = orjson.loads(codec.dumps(_accepted(validate(payload, "drop")).payload))
    if REGISTRY[event_type].derived:
        assert dropped == kept  # a derived contract keeps what it does not name
        return
    for path in added:
        _at(kept, path[:-1]).pop("x_unknown")
    assert dropped == kept
    rejected = validate(payload, "reject")
    if added:
        assert set(_rejected(rejected).errors) == {
            f"{_spelled(p)}: unknown field (validation.unknown_fields = reject)" for p in added
        }
    else:
        _accepted(rejected)
