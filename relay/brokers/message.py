"""A webhook request as a broker message: its headers, its id, its routing values. Pure.

The body and the signed headers are the webhook's, so a consumer verifies a message exactly as a
webhook (standardwebhooks over `webhook-id`, `webhook-timestamp` and the body). What changes per
broker is where the CloudEvents attributes go: AMQP's binding puts them in application properties
prefixed `cloudEvents_` (RabbitMQ's headers table), NATS's keeps HTTP's `ce-` headers.
"""

from __future__ import annotations

from typing import Final

from relay.request import Request

CONTENT_TYPE: Final = "application/json"
_CE = "ce-"
_AMQP_CE = "cloudEvents_"
# Carried by the AMQP message's own properties (content_type), not repeated as a header.
_AMQP_PROPERTIES: Final = frozenset({"content-type"})


def amqp_headers(request: Request) -> dict[str, str]:
    """The message's headers table: the webhook's headers, CloudEvents attributes as `cloudEvents_*`."""
    out: dict[str, str] = {}
    for name, value in request.headers.items():
        if name in _AMQP_PROPERTIES:
            continue
        out[_AMQP_CE + name[len(_CE) :] if name.startswith(_CE) else name] = value
    return out


def nats_msg_id(request: Request, subscriber: str) -> str:
    """`<event_id>:<subscriber>:<replay generation>`: JetStream drops a retry's duplicate within
    its window, and stores a replay (a new generation) again."""
    return f"{request.event_id}:{subscriber}:{request.generation}"


def nats_headers(request: Request, subscriber: str) -> dict[str, str]:
    """The webhook's headers (CloudEvents' `ce-*` as they are) and `Nats-Msg-Id`."""
    return {**request.headers, "Nats-Msg-Id": nats_msg_id(request, subscriber)}


def route_values(request: Request, subscriber: str) -> dict[str, str]:
    """What a routing template's placeholders stand for in this message."""
    return {
        "event_type": request.event_type,
        "subscriber": subscriber,
        "entity_key": request.entity_key,
        "organization_id": request.organization_id,
    }
