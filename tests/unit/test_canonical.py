"""Canonical event ids: the same payload in any key order has the same id."""

from __future__ import annotations

import random
import uuid
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from relay import codec
from relay.codec import canonical_event_id
from relay.contracts.examples import all_examples, example

# Text the relay accepts: NUL and lone surrogates are rejected as invalid_text (PostgreSQL cannot
# hold them), tested in tests/unit/test_contracts.py.
storable = st.characters(codec="utf-8", exclude_characters="\x00")
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(storable, max_size=20)
    | st.decimals(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(storable, max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def _shuffled(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [_shuffled(v, rng) for v in value]
    return value


@given(payload=st.dictionaries(st.text(max_size=10), json_values, min_size=1, max_size=8), seed=st.integers())
def test_key_order_does_not_change_the_id(payload: dict[str, Any], seed: int) -> None:
    shuffled = _shuffled(payload, random.Random(seed))
    assert canonical_event_id(shuffled) == canonical_event_id(payload)
    assert canonical_event_id(payload).version == 5


@given(payload=st.dictionaries(st.text(storable, max_size=10), json_values, min_size=1, max_size=8))
def test_id_survives_a_trip_through_json_text(payload: dict[str, Any]) -> None:
    assert canonical_event_id(codec.loads(codec.dumps(payload))) == canonical_event_id(payload)


def test_event_id_field_is_not_part_of_the_identity() -> None:
    payload = example("it_ticket_created")
    assert canonical_event_id(payload | {"event_id": str(uuid.uuid4())}) == canonical_event_id(payload)


def test_different_events_have_different_ids() -> None:
    ids = {canonical_event_id(p) for p in all_examples()}
    assert len(ids) == 31
    changed = example("it_ticket_created") | {"subject": "other"}
    assert canonical_event_id(changed) != canonical_event_id(example("it_ticket_created"))
