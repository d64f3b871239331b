"""The webhook request headers: Standard Webhooks signature, event headers, CloudEvents. Pure."""

from __future__ import annotations

import base64
import hmac
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache

from standardwebhooks import Webhook

from relay import __version__

USER_AGENT = f"it-relay/{__version__}"


@lru_cache(maxsize=256)
def _key(secret: str) -> bytes:
    # The key as standardwebhooks derives it (whsec_ prefix off, base64 decoded), once per secret.
    return bytes(Webhook(secret)._whsecret)


def signature(secrets: Sequence[str], msg_id: str, at: datetime, body: bytes) -> str:
    """`v1,<base64>` for each secret, space-separated (several during a secret rotation).

    The Standard Webhooks scheme (HMAC-SHA256 over `id.timestamp.body`), computed over the body's
    bytes as they are sent: no decode and re-encode of the body per attempt. The tests verify
    every signature with standardwebhooks itself.
    """
    prefix = f"{msg_id}.{int(at.timestamp())}.".encode()
    return " ".join(
        # hmac.digest: OpenSSL's one-shot HMAC, no HMAC object per signature.
        "v1," + base64.b64encode(hmac.digest(_key(s), prefix + body, "sha256")).decode()
        for s in secrets
    )


def headers(
    *,
    event_id: str,
    event_type: str,
    body: bytes,
    secrets: Sequence[str],
    attempt: int,
    at: datetime,
    cloudevents: bool = False,
    publisher: str = "",
    journaled_at: datetime | None = None,
) -> dict[str, str]:
    """Every header of one attempt; the timestamp is this attempt's, so each retry is re-signed."""
    at = at.astimezone(UTC).replace(microsecond=0)
    out = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": event_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature(secrets, event_id, at, body),
        "x-it-event-type": event_type,
        "x-it-delivery-attempt": str(attempt),
    }
    if cloudevents:
        out |= {
            "ce-specversion": "1.0",
            "ce-id": event_id,
            "ce-type": event_type,
            "ce-source": f"urn:it-relay:{publisher or 'it'}",
            "ce-time": (journaled_at or at).astimezone(UTC).isoformat().replace("+00:00", "Z"),
        }
    return out
