-- The scheduler's memory: one mark per (kind, entity, milestone) it has emitted, written in the
-- same transaction as the event, so a time-based event is emitted exactly once across restarts,
-- crashes and several instances; and the last known compliance level per licence.

CREATE TABLE it_relay.scheduler_marks (
    kind        text NOT NULL,
    entity_id   uuid NOT NULL,
    milestone   text NOT NULL,
    event_id    uuid NOT NULL,
    emitted_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (kind, entity_id, milestone)
);

-- A licence's last seen compliance: 'ok', or '<compliance_status>:<warning|critical>' while an
-- alert stands. episode counts the times it broke after being compliant; it is part of the alert's
-- mark, so a licence that recovers and breaks again is alerted again.
CREATE TABLE it_relay.compliance_state (
    license_id  uuid PRIMARY KEY,
    state       text NOT NULL,
    episode     integer NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
