-- The delivery path reads its rows by index, whatever the planner's statistics say.
--
-- A relay started on a new database makes its plans while the journal holds a few rows, and a
-- session keeps a statement's generic plan until the tables are analysed (autovacuum's first look
-- is up to a minute away, and later ones wait for 10 % more rows). Planned on a page or two, a
-- sequential scan is the cheapest way to find a row by its key; kept while the table grows, it
-- reads every row for each claim, each outcome and each confirmation of an announcement. At 200
-- events/s from an empty journal the outcome alone took ~700 µs of server time per call, half of
-- PostgreSQL's CPU (docs/benchmarks.md). Each statement of the path that finds rows by key is
-- now a function that may not scan sequentially: the only plans left are the indexes'.
-- SECURITY INVOKER, as claim_due: the caller's own grants on the tables apply.

ALTER FUNCTION it_relay.claim_due(text, text, integer, double precision) SET enable_seqscan = off;

-- Outcomes of many attempts and the attempts' history (write_results in relay/sql/queries.sql,
-- which calls this). Only the lease holder may write: a lease that expired and was claimed by
-- another instance is theirs now (and so is the history of an attempt whose outcome is not
-- written). Each array is read through a sub-select, so no plan knows its length (given them,
-- PostgreSQL planned a one-row batch again on every call: tests/test_plan_once.py).
CREATE FUNCTION it_relay.write_outcomes(
    p_event_ids uuid[], p_subscribers text[], p_statuses text[], p_attempts integer[],
    p_failed_rounds integer[], p_retry_in_s double precision[], p_last_statuses integer[],
    p_last_errors text[], p_owner text,
    p_tried_event_ids uuid[], p_tried_subscribers text[], p_tried_attempts integer[],
    p_tried_at timestamptz[], p_tried_statuses integer[], p_tried_errors text[],
    p_tried_durations double precision[], p_tried_excerpts text[], p_holds boolean[])
RETURNS TABLE (event_id uuid, subscriber text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH written AS (
        UPDATE it_relay.deliveries d
           SET status = r.status,
               attempts = r.attempts,
               failed_rounds = r.failed_rounds,
               next_attempt_at = CASE WHEN r.retry_in_s IS NULL THEN d.next_attempt_at
                                      ELSE clock_timestamp() + make_interval(secs => r.retry_in_s) END,
               last_status = r.last_status,
               last_error = r.last_error,
               delivered_at = CASE WHEN r.status = 'delivered' THEN clock_timestamp() END,
               updated_at = clock_timestamp(),
               lease_owner = NULL,
               lease_expires_at = NULL,
               holds = r.status = 'dead' AND r.hold AND d.entity_key IS NOT NULL
          FROM unnest((SELECT p_event_ids), (SELECT p_subscribers), (SELECT p_statuses),
                      (SELECT p_attempts), (SELECT p_failed_rounds), (SELECT p_retry_in_s),
                      (SELECT p_last_statuses), (SELECT p_last_errors), (SELECT p_holds))
               AS r(event_id, subscriber, status, attempts, failed_rounds, retry_in_s, last_status,
                    last_error, hold)
         WHERE d.event_id = r.event_id AND d.subscriber = r.subscriber AND d.lease_owner = p_owner
        RETURNING d.event_id, d.subscriber, d.entity_key, d.seq, d.holds
    ), held AS (
        -- A head gone dead under on_exhausted = "hold": its entity's later deliveries wait for an operator.
        -- Gated on there being one (a one-time filter): planned on a small table, the join read
        -- every pending delivery per outcome write, first, and only then looked for a dead head.
        UPDATE it_relay.deliveries h SET status = 'held', updated_at = clock_timestamp()
          FROM written w
         WHERE (SELECT bool_or(x.holds) FROM written x)
           AND w.holds AND h.subscriber = w.subscriber AND h.entity_key = w.entity_key AND h.seq > w.seq
           AND h.status = 'pending' AND h.lease_owner IS NULL
    ), history AS (
        INSERT INTO it_relay.attempts (event_id, subscriber, attempt, attempted_at, http_status, error,
                                       duration_ms, response_excerpt)
        SELECT a.event_id, a.subscriber, a.attempt, a.attempted_at, a.http_status, a.error,
               a.duration_ms, a.excerpt
          FROM unnest((SELECT p_tried_event_ids), (SELECT p_tried_subscribers),
                      (SELECT p_tried_attempts), (SELECT p_tried_at), (SELECT p_tried_statuses),
                      (SELECT p_tried_errors), (SELECT p_tried_durations), (SELECT p_tried_excerpts))
               AS a(event_id, subscriber, attempt, attempted_at, http_status, error, duration_ms, excerpt)
          JOIN written w ON w.event_id = a.event_id AND w.subscriber = a.subscriber
    )
    SELECT w.event_id, w.subscriber FROM written w;
END
$$;

-- Which of these events the journal holds (the listener's check of announced ids).
CREATE FUNCTION it_relay.journaled(p_ids uuid[]) RETURNS SETOF uuid
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
AS $$
BEGIN
    RETURN QUERY SELECT e.event_id FROM it_relay.events e WHERE e.event_id = ANY (p_ids);
END
$$;

-- What claimed deliveries take from their events when this instance did not route them.
CREATE FUNCTION it_relay.event_parts(p_ids uuid[])
RETURNS TABLE (event_id uuid, body text, created_at timestamptz, organization_id uuid, traceparent text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
AS $$
BEGIN
    RETURN QUERY SELECT e.event_id, e.payload::text, e.created_at, e.organization_id, e.traceparent
                   FROM it_relay.events e WHERE e.event_id = ANY (p_ids);
END
$$;

-- The seq of an entity's oldest unrouted event, if any: asked per head by an ordered claim, and by
-- a routing before it leases an ordered lane a head. Statistics of a hot entity (most events about
-- one asset) estimate half the journal behind the probe of events_unrouted_entity_idx, so a
-- generic plan read every event per head; here the ordered probe is the only plan. STABLE: it
-- runs in its caller's snapshot, so a routing still sees its own batch as unrouted.
CREATE FUNCTION it_relay.oldest_unrouted(p_entity text) RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_sort = off
AS $$
BEGIN
    RETURN (SELECT u.seq FROM it_relay.events u
             WHERE u.entity_key = p_entity AND u.routed_at IS NULL
             ORDER BY u.seq LIMIT 1);
END
$$;

-- Whether an entity has a delivery to this subscriber still unfinished (pending, in flight, held):
-- asked by a routing before it leases an ordered lane a head. Statistics of a hot entity's backlog
-- (thousands pending for one asset) made any entity look as if it had rows there, so a generic
-- plan's search for the first one was a sequential scan, which for any other entity reads the
-- whole table. STABLE, as oldest_unrouted: its caller's snapshot.
CREATE FUNCTION it_relay.entity_unfinished(p_subscriber text, p_entity text) RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM it_relay.deliveries h
                    WHERE h.subscriber = p_subscriber AND h.entity_key = p_entity
                      AND h.status IN ('pending', 'held'));
END
$$;
