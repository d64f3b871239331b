"""Signatures are Standard Webhooks signatures: the reference library computes the same bytes."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook

from relay import signing

SECRETS = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"]


@given(
    # Webhook bodies are JSON (the receiver's library parses what it verified), any characters.
    body=st.dictionaries(st.text(), st.text() | st.integers()).map(
        lambda d: json.dumps(d, ensure_ascii=False).encode()
    ),
    msg_id=st.uuids().map(str),
    at=st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
)
def test_every_signature_is_what_standardwebhooks_computes_and_verifies(
    body: bytes, msg_id: str, at: datetime
) -> None:
    at = at.replace(microsecond=0)
    ours = signing.signature(SECRETS, msg_id, at, body).split(" ")
    assert ours == [Webhook(s).sign(msg_id, at, body.decode()) for s in SECRETS]
    # And a receiver verifies the headers of an attempt made now (verification checks the clock).
    headers = signing.headers(
        event_id=msg_id,
        event_type="it_ticket_created",
        body=body,
        secrets=SECRETS,
        attempt=1,
        at=datetime.now(UTC),
    )
    for secret in SECRETS:
        Webhook(secret).verify(body, headers)
