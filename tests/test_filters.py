"""Subscriber filters: the evaluator (every operator, Outpost's semantics), held to a reference model
over generated filters and payloads, total on anything; and what check-config refuses."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.contracts.examples import example
from relay.filter_check import problem
from relay.filters import LOGICAL, OPERATORS, matches

EVENT = {
    "severity": "high",
    "count": 5,
    "score": Decimal("7.5"),
    "flag": False,
    "nothing": None,
    "tags": ["red", "blue"],
    "place": {"site": "HQ", "floor": 2},
    "items": [{"sku": "A-1", "qty": 1}, {"sku": "B-2", "qty": 9}],
}


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"severity": "high"}, True),
        ({"severity": "low"}, False),
        ({"count": 5.0}, True),
        ({"flag": 0}, False),  # a bool is never a number
        ({"nothing": None}, True),
        ({"tags": "red"}, True),  # an array holding it
        ({"tags": ["blue", "red"]}, True),  # holding each
        ({"tags": ["red", "green"]}, False),
        ({"place": {"site": "HQ"}}, True),
        ({"items": {"sku": "B-2"}}, True),  # some element of an array of objects
        ({"items": {"sku": "B-2", "qty": 1}}, False),  # ... one element matching all of it
        ({"severity": {"$eq": "high"}}, True),
        ({"tags": {"$eq": ["red", "blue"]}}, True),
        ({"tags": {"$eq": "red"}}, False),  # operators see the whole array
        ({"severity": {"$neq": "high"}}, False),
        ({"count": {"$neq": "5"}}, True),
        ({"count": {"$gt": 4}}, True),
        ({"count": {"$gt": 5}}, False),
        ({"count": {"$gte": 5, "$lt": 6}}, True),
        ({"score": {"$lte": 7.5}}, True),  # a decimal against a float as written
        ({"score": {"$lt": 7.5}}, False),
        ({"severity": {"$gt": "c"}}, True),  # strings by code point
        ({"severity": {"$gt": 1}}, False),  # mixed types never compare
        ({"severity": {"$in": ["critical", "high"]}}, True),
        ({"severity": {"$in": "ig"}}, True),  # a substring
        ({"tags": {"$in": "red"}}, True),  # an element
        ({"place": {"$in": ["HQ"]}}, False),
        ({"severity": {"$nin": ["low", "medium"]}}, True),
        ({"severity": {"$nin": "ig"}}, False),
        ({"count": {"$nin": "5"}}, False),  # wrong type: no match, $nin included
        ({"count": {"$nin": ["5"]}}, True),
        ({"severity": {"$startsWith": "hi"}}, True),
        ({"severity": {"$startsWith": ["x", "h"]}}, True),
        ({"severity": {"$endsWith": "gh"}}, True),
        ({"count": {"$endsWith": "5"}}, False),
        ({"nothing": {"$exist": True}}, True),  # null is there
        ({"absent": {"$exist": False}}, True),
        ({"absent": {"$exist": True}}, False),
        ({"absent": {"$not": {"$eq": 1}}}, False),  # an absent field fails all but $exist: false
        ({"$and": [{"severity": "high"}, {"count": 5}]}, True),
        ({"$and": [{"severity": "high"}, {"count": 6}]}, False),
        ({"$or": [{"severity": "low"}, {"count": 5}]}, True),
        ({"$or": [{"severity": "low"}, {"count": 6}]}, False),
        ({"$not": {"severity": "low"}}, True),
        ({"severity": {"$not": {"$in": ["low", "high"]}}}, False),
        ({"severity": {"$or": ["low", {"$startsWith": "h"}]}}, True),
        ({"place": {"floor": {"$gte": 2}, "$not": {"site": "Annex"}}}, True),
        ({}, True),
        ({"place": {}}, True),
        ({"severity": {}}, False),
    ],
)
def test_each_operator(condition: dict[str, Any], expected: bool) -> None:
    assert matches(condition, EVENT) is expected
    assert matches({"$not": condition}, EVENT) is (not expected)


# ─── A reference model: the semantics written out plainly, case by case ─────────────────────────

ABSENT = object()


def _num(x: Any) -> Decimal | None:
    if isinstance(x, bool) or not isinstance(x, int | float | Decimal):
        return None
    d = Decimal(repr(x)) if isinstance(x, float) else Decimal(x)
    return d if d.is_finite() else None


def _scalar(x: Any) -> bool:
    return x is None or isinstance(x, str | bool | int | float | Decimal)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return set(a) == set(b) and all(_same(a[k], b[k]) for k in a)
    if not (_scalar(a) and _scalar(b)):
        return False
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    x, y = _num(a), _num(b)
    return x is not None and y is not None and x == y


def _in(v: Any, c: Any) -> bool | None:
    if isinstance(c, list):
        return any(_scalar(i) and _same(v, i) for i in c) if _scalar(v) else None
    if isinstance(v, str):
        return (c in v) if isinstance(c, str) else None
    if isinstance(v, list):
        return _scalar(c) and any(_scalar(i) and _same(i, c) for i in v)
    return None


def _op(op: str, v: Any, c: Any) -> bool:
    if op == "$exist":
        return c is True
    if op in ("$eq", "$neq"):
        return _same(v, c) == (op == "$eq")
    if op in ("$gt", "$gte", "$lt", "$lte"):
        if isinstance(v, str) and isinstance(c, str):
            a, b = v, c
        elif _num(v) is not None and _num(c) is not None:
            a, b = _num(v), _num(c)  # type: ignore[assignment]
        else:
            return False
        return {"$gt": a > b, "$gte": a >= b, "$lt": a < b, "$lte": a <= b}[op]
    if op in ("$in", "$nin"):
        found = _in(v, c)
        return found is not None and found == (op == "$in")
    if not isinstance(v, str):
        return False
    options = [c] if isinstance(c, str) else c if isinstance(c, list) else []
    for o in options:
        if not isinstance(o, str):
            return False
        if v.startswith(o) if op == "$startsWith" else v.endswith(o):
            return True
    return False


def reference(cond: Any, v: Any) -> bool:
    if isinstance(cond, dict):
        if v is ABSENT:
            return cond.get("$exist") is False
        names = {k: c for k, c in cond.items() if not k.startswith("$")}
        for k, c in cond.items():
            if k == "$and" and not (isinstance(c, list) and all(reference(x, v) for x in c)):
                return False
            if k == "$or" and not (isinstance(c, list) and any(reference(x, v) for x in c)):
                return False
            if k == "$not" and reference(c, v):
                return False
            if k.startswith("$") and k not in LOGICAL and (k not in OPERATORS or not _op(k, v, c)):
                return False
        if cond and not names:
            return True
        objects = (
            [v]
            if isinstance(v, dict)
            else [x for x in v if isinstance(x, dict)]
            if isinstance(v, list)
            else []
        )
        return any(all(reference(c, o.get(k, ABSENT)) for k, c in names.items()) for o in objects)
    if v is ABSENT:
        return False
    if isinstance(cond, list):
        return isinstance(v, list) and all(any(reference(c, x) for x in v) for c in cond)
    if isinstance(v, list):
        return any(reference(cond, x) for x in v)
    return _scalar(v) and _same(v, cond)


# ─── Generated filters and payloads ─────────────────────────────────────────────────────────────

KEYS = st.sampled_from(["a", "b", "c"])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2),
    st.sampled_from([Decimal("1.5"), Decimal("-0"), 1.5, 2.0, float("nan"), float("inf")]),
    st.sampled_from(["", "a", "b", "ab", "ba", "abc"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=3)),
    max_leaves=8,
)
PAYLOADS = st.dictionaries(KEYS, VALUES, max_size=3)
OPERANDS = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), VALUES)


def _conditions(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(inner, max_size=2),
        st.dictionaries(KEYS, inner, min_size=1, max_size=2),
        st.dictionaries(st.sampled_from([*sorted(OPERATORS), "$bogus"]), OPERANDS, min_size=1, max_size=2),
        st.builds(lambda c: {"$not": c}, inner),
        st.builds(lambda k, cs: {k: cs}, st.sampled_from(["$and", "$or"]), st.lists(inner, max_size=3)),
    )


CONDITIONS = st.recursive(SCALARS, _conditions, max_leaves=10)
FILTERS = st.dictionaries(st.one_of(KEYS, st.sampled_from(["$and", "$or", "$not"])), CONDITIONS, max_size=3)


@given(FILTERS, PAYLOADS)
@settings(max_examples=3000, deadline=None)
def test_the_evaluator_agrees_with_the_reference_model(
    condition: dict[str, Any], payload: dict[str, Any]
) -> None:
    assert matches(condition, payload) is reference(condition, payload)


ANYTHING = st.recursive(
    st.one_of(SCALARS, st.text(max_size=3), st.binary(max_size=2), st.floats(), st.integers()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner, inner),
        st.dictionaries(
            st.one_of(st.text(max_size=4), st.sampled_from(sorted(OPERATORS | LOGICAL)), st.integers()),
            inner,
            max_size=3,
        ),
    ),
    max_leaves=12,
)


@given(ANYTHING, ANYTHING)
@settings(max_examples=2000, deadline=None)
def test_it_never_raises_whatever_the_filter_and_the_payload(condition: Any, payload: Any) -> None:
    assert matches(condition, payload) in (True, False)


def test_a_filter_nested_past_any_sense_matches_nothing_and_does_not_raise() -> None:
    deep: Any = {"a": 1}
    for _ in range(5000):
        deep = {"$not": deep}
    assert matches(deep, {"a": 1}) is False
    nested: Any = 1
    for _ in range(5000):
        nested = [nested]
    assert matches({"a": {"$eq": nested}}, {"a": nested}) in (True, False)


# ─── check-config ───────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("subscriber", "condition"),
    [
        ("GR", {"severity": {"$in": ["critical", "high"]}}),
        ("GR", {"$or": [{"severity": "critical"}, {"event_type": "it_asset_disposed"}]}),
        ("GR", {"cvss_score": {"$gte": 7}, "affected_asset_ids": {"$exist": True}}),
        ("GR", {"severity": {"$not": {"$in": ["low"]}}}),
        ("FM", {"location": {"site_id": {"$exist": True}}}),
        ("PF-10", {"event_type": {"$startsWith": "it_ticket_"}}),
        ("PF-10", {"priority": "high"}),
        ("FA", {}),
    ],
)
def test_filters_that_fit_the_contracts_are_taken(subscriber: str, condition: dict[str, Any]) -> None:
    assert problem(condition, subscriber) is None


@pytest.mark.parametrize(
    ("subscriber", "condition", "named"),
    [
        ("GR", {"license_key": {"$exist": True}}, "license_key: names a licence key"),
        ("FA", {"License-Key": "x"}, "License-Key: names a licence key"),
        ("FA", {"$or": [{"licence_key_hash": "x"}]}, "$or[0].licence_key_hash: names a licence key"),
        (
            "GR",
            {"description": {"$in": "license_key=ABCD-1234"}},
            "description.$in: its value gives a licence key",
        ),
        ("GR", {"severity": ['{"licence-key": "ABCD"}']}, "severity[0]: its value gives a licence key"),
        ("GR", {"license_key=ABCD": float("nan")}, "(a key): its value gives a licence key"),
        ("GR", {"priority": "high"}, "priority: no event routed to GR has this field"),
        ("FM", {"location": {"floor": 1}}, "location.floor: no event routed to FM has this field"),
        ("GR", {"severity": {"$like": "h%"}}, "severity.$like: unknown operator"),
        ("GR", {"$nor": []}, "$nor: unknown operator"),
        ("GR", {"severity": {"$gt": 3}}, "severity.$gt: 3 does not fit the field, which is one of low,"),
        ("GR", {"severity": {"$in": ["critical", "urgent"]}}, "severity.$in[1]: 'urgent' does not fit"),
        ("GR", {"severity": "urgent"}, "severity: 'urgent' does not fit"),
        ("GR", {"cvss_score": {"$startsWith": "9"}}, "cvss_score.$startsWith: '9' does not fit"),
        ("GR", {"cvss_score": {"$gte": "9"}}, "cvss_score.$gte: '9' does not fit"),
        ("GR", {"severity": {"$exist": 1}}, "severity.$exist: takes true or false"),
        ("GR", {"severity": {"$gt": True}}, "severity.$gt: takes a number or a string"),
        (
            "GR",
            {"severity": {"$endsWith": []}},
            "severity.$endsWith: takes a string or a non-empty list of strings",
        ),
        ("GR", {"$and": []}, "$and: takes a non-empty list of conditions"),
        ("GR", {"severity": {"$eq": "high", "x": 1}}, "severity: mixes operators ($eq) and field names (x)"),
        ("GR", {"$eq": "high"}, "$eq: an operator applies to a field"),
        ("GR", {"severity": ["high"]}, "severity: a list matches an array field"),
        ("GR", {"severity": {"level": 1}}, "severity.level: the field above is one of low"),
        ("GR", {"severity": {"$in": [["high"]]}}, "severity.$in[0]: the list holds values"),
        ("GR", {"event_type": "it_ticket_created"}, "event_type: 'it_ticket_created' does not fit"),
    ],
)
def test_a_filter_that_cannot_work_is_refused_naming_the_key(
    subscriber: str, condition: dict[str, Any], named: str
) -> None:
    found = problem(condition, subscriber)
    assert found is not None and found.startswith(named), found
    assert "\n" not in found and "ABCD" not in found


def test_a_filter_too_deep_is_refused() -> None:
    deep: Any = {"severity": "high"}
    for _ in range(40):
        deep = {"$not": deep}
    assert "nested deeper than" in (problem(deep, "GR") or "")


def test_the_examples_pass_the_filters_written_for_them() -> None:
    incident = example("it_security_incident_created")
    assert matches({"severity": {"$in": ["critical", "high"]}}, incident)
    assert not matches({"severity": "critical"}, incident)
