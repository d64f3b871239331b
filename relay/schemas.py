"""Export the contracts as JSON Schema documents or one AsyncAPI 3.0 document. Pure."""

from __future__ import annotations

from typing import Any

from relay import __version__
from relay.contracts import REGISTRY, EventContract
from relay.contracts.examples import example
from relay.redaction import redact

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schema(contract: EventContract) -> dict[str, Any]:
    """One self-contained JSON Schema (2020-12) for an event's payload."""
    schema = contract.model.model_json_schema(mode="validation")
    schema["title"] = contract.event_type
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"urn:it-relay:schema:{contract.event_type}",
        **schema,
        "x-publisher": contract.publisher,
        "x-subscribers": list(contract.subscribers),
        "x-emitter": contract.emitter,
        "x-derived": contract.derived,
    }


def json_schemas() -> dict[str, dict[str, Any]]:
    """File name → schema, one per event type."""
    return {f"{c.event_type}.schema.json": json_schema(c) for c in REGISTRY.values()}


def asyncapi(channel: str = "it_events") -> dict[str, Any]:
    """An AsyncAPI 3.0 document: the channel, one message per event, one operation per subscriber."""
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for contract in REGISTRY.values():
        schema = contract.model.model_json_schema(
            mode="validation", ref_template="#/components/schemas/{model}"
        )
        for name, definition in schema.pop("$defs", {}).items():
            schemas[name] = definition
        schema["title"] = contract.event_type
        schemas[contract.event_type] = schema
        messages[contract.event_type] = {
            "name": contract.event_type,
            "title": contract.event_type,
            "summary": (contract.model.__doc__ or "").strip(),
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{contract.event_type}"},
            "examples": [{"name": "example", "payload": redact(example(contract.event_type))}],
            "x-publisher": contract.publisher,
            "x-subscribers": list(contract.subscribers),
            "x-emitter": contract.emitter,
            "x-derived": contract.derived,
        }
        message_ref = {"$ref": f"#/channels/{channel}/messages/{contract.event_type}"}
        operations[f"publish_{contract.event_type}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": f"{contract.publisher} publishes {contract.event_type}",
            "messages": [message_ref],
        }
        for subscriber in contract.subscribers:
            operations[f"deliver_{contract.event_type}_to_{subscriber}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{channel}"},
                "summary": f"it-relay delivers {contract.event_type} to {subscriber}'s webhook",
                "messages": [message_ref],
                "x-subscriber": subscriber,
            }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "IT core module integration events",
            "version": __version__,
            "description": "Events published on PostgreSQL channel it_events and relayed to webhooks "
            "by it-relay (signed with the Standard Webhooks scheme).",
        },
        "defaultContentType": "application/json",
        "channels": {
            channel: {
                "address": channel,
                "description": "PostgreSQL LISTEN/NOTIFY channel; the journal it_relay.events is the truth.",
                "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in messages},
            }
        },
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }
