"""The IT module's 31 integration event contracts, one module per IT spec, and their registry."""

from relay.contracts.parsing import (
    REJECT_REASONS,
    Accepted,
    ParseResult,
    Rejected,
    RejectReason,
    UnknownFields,
    format_errors,
    parse_event,
    validate,
)
from relay.contracts.registry import (
    EVENT_TYPES,
    REGISTRY,
    SUBSCRIBERS,
    EventContract,
    contract_for,
    routed_subscribers,
)

__all__ = [
    "EVENT_TYPES",
    "REGISTRY",
    "REJECT_REASONS",
    "SUBSCRIBERS",
    "Accepted",
    "EventContract",
    "ParseResult",
    "RejectReason",
    "Rejected",
    "UnknownFields",
    "contract_for",
    "format_errors",
    "parse_event",
    "routed_subscribers",
    "validate",
]
