-- What operators need to see and steer: every HTTP attempt, subscribers paused at run time (and
-- the circuit each instance last reported), rejections marked resolved once republished.

-- One row per HTTP attempt, written with the delivery's outcome in the same round trip and pruned
-- with its delivery. The excerpt is the start of the response body, scrubbed before it is stored.
CREATE TABLE it_relay.attempts (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id         uuid NOT NULL,
    subscriber       text NOT NULL,
    attempt          integer NOT NULL,
    attempted_at     timestamptz NOT NULL,
    http_status      integer,
    error            text,
    duration_ms      double precision NOT NULL,
    response_excerpt text,
    FOREIGN KEY (event_id, subscriber) REFERENCES it_relay.deliveries (event_id, subscriber) ON DELETE CASCADE
);
CREATE INDEX attempts_delivery_idx ON it_relay.attempts (event_id, subscriber);
CREATE INDEX attempts_recent_idx ON it_relay.attempts (attempted_at);

-- Run-time state per subscriber, shared by every instance. paused NULL: as configured
-- (subscribers.NAME.enabled); true or false: set by `it-relay subscribers pause|resume`.
CREATE TABLE it_relay.subscriber_state (
    subscriber          text PRIMARY KEY,
    paused              boolean,
    changed_at          timestamptz,
    changed_by          text,
    circuit             text NOT NULL DEFAULT 'closed' CHECK (circuit IN ('closed', 'open')),
    circuit_changed_at  timestamptz
);

ALTER TABLE it_relay.rejected_events
    ADD COLUMN resolved_at timestamptz,
    ADD COLUMN resolved_event_id uuid;

-- Deliveries of one event in time order, for `deliveries show` and backfills by time.
CREATE INDEX events_created_idx ON it_relay.events (created_at);
