"""Prometheus metrics. Labels are bounded: event types, subscribers, reasons, outcomes; never ids."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from relay import __version__
from relay.contracts import REGISTRY, REJECT_REASONS

# No `*_created` series beside every counter and histogram: half of /metrics, and Prometheus
# reads the text format's resets without them. Global in prometheus_client: set before any metric.
disable_created_metrics()  # type: ignore[no-untyped-call]

_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)


class Metrics:
    """One set of the relay's metrics in its own registry (tests and the demo run several)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # process_* (CPU, memory, file descriptors) and python_info, as the default registry has.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.events_received = Counter(
            "it_relay_events_received", "Events journaled or heard, by source.", ["source"], registry=r
        )
        self.events_rejected = Counter(
            "it_relay_events_rejected", "Events rejected, by reason.", ["reason"], registry=r
        )
        self.deliveries = Counter(
            "it_relay_deliveries",
            "Delivery rounds by outcome (delivered, retry, dead).",
            ["subscriber", "outcome"],
            registry=r,
        )
        self.delivery_duration = Histogram(
            "it_relay_delivery_duration_seconds",
            "Duration of one webhook request.",
            ["subscriber"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.event_latency = Histogram(
            "it_relay_event_latency_seconds",
            "From journal to delivered.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.event_loop_lag = Histogram(
            "it_relay_event_loop_lag_seconds",
            "How late the event loop ran a step that was due (waiting for a core, or a blocking call).",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.backlog = Gauge(
            "it_relay_backlog", "Pending deliveries, by subscriber.", ["subscriber"], registry=r
        )
        self.oldest_pending = Gauge(
            "it_relay_oldest_pending_seconds",
            "Age of the oldest pending delivery, by subscriber (0: none pending).",
            ["subscriber"],
            registry=r,
        )
        self.dead = Gauge(
            "it_relay_dead", "Dead deliveries now (replayable), by subscriber.", ["subscriber"], registry=r
        )
        self.unrouted = Gauge(
            "it_relay_unrouted_events", "Journaled events not routed yet (all instances).", registry=r
        )
        self.instances = Gauge(
            "it_relay_instances", "Relay instances alive (recorded within three poll intervals).", registry=r
        )
        self.entities_held = Gauge(
            "it_relay_entities_held",
            "Entities whose deliveries are held behind a dead head (ordered, on_exhausted = hold).",
            ["subscriber"],
            registry=r,
        )
        self.entities_held_oldest = Gauge(
            "it_relay_entities_held_oldest_seconds",
            "How long the longest-held entity has waited for `it-relay release` or a replay.",
            ["subscriber"],
            registry=r,
        )
        self.listener_connected = Gauge(
            "it_relay_listener_connected", "1 while the LISTEN connection is up.", registry=r
        )
        self.scheduler_emitted = Counter(
            "it_relay_scheduler_emitted", "Time-based events emitted, by type.", ["event_type"], registry=r
        )
        self.unconfigured = Counter(
            "it_relay_unconfigured_deliveries",
            "Events routed to a subscriber not served here (no config): no delivery is created.",
            ["subscriber"],
            registry=r,
        )
        self.events_filtered = Counter(
            "it_relay_events_filtered",
            "Events routed to a subscriber that its filter dropped: no delivery is created.",
            ["subscriber"],
            registry=r,
        )
        self.paused = Gauge(
            "it_relay_subscriber_paused",
            "1 while a subscriber is paused (its deliveries are held; the backlog alert ignores it).",
            ["subscriber"],
            registry=r,
        )
        self.circuit_open = Gauge(
            "it_relay_circuit_open",
            "1 while a subscriber's circuit breaker is open.",
            ["subscriber"],
            registry=r,
        )
        self.build_info = Info("it_relay_build", "it-relay version.", registry=r)
        self.trace_spans_dropped = Counter(
            "it_relay_trace_spans_dropped",
            "Trace spans not exported, by reason: queue_full (the exporter slow or down), export_failed.",
            ["reason"],
            registry=r,
        )
        self.schema_current = Gauge(
            "it_relay_schema_current",
            "1 while the database schema is at least this code's version.",
            registry=r,
        )
        self.scheduler_leading = Gauge(
            "it_relay_scheduler_leading", "1 while this instance leads the scheduler.", registry=r
        )

    def prepare(self, subscribers: Iterable[str]) -> None:
        """Create every bounded label set up front, so each series exists (at 0) from the start."""
        for source in ("publish", "notify"):
            self.events_received.labels(source)
        for reason in REJECT_REASONS:
            self.events_rejected.labels(reason)
        for name in subscribers:
            for outcome in ("delivered", "retry", "dead"):
                self.deliveries.labels(name, outcome)
            self.delivery_duration.labels(name)
            self.backlog.labels(name)
            self.oldest_pending.labels(name)
            self.dead.labels(name)
            self.entities_held.labels(name)
            self.entities_held_oldest.labels(name)
            self.circuit_open.labels(name)
            self.paused.labels(name)
            self.events_filtered.labels(name)
        for event_type, contract in REGISTRY.items():
            if contract.emitter == "scheduler":
                self.scheduler_emitted.labels(event_type)
        for dropped in ("queue_full", "export_failed"):
            self.trace_spans_dropped.labels(dropped)
        self.build_info.info({"version": __version__})
