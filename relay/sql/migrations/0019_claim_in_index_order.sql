-- An unordered claim reads the rows it takes, whatever statistics the planner holds.
--
-- A deliveries table never analysed, or analysed while its rows were all delivered, is estimated
-- to hold a row or two pending per subscriber (two default equality selectivities multiplied),
-- while tens of thousands wait. Planned on that, a bitmap scan plus a sort of every pending row
-- looked as cheap as reading the index in order, and each claim of 64 sorted the whole backlog
-- (30,000 rows, 1,700 buffers, 30 ms; docs/benchmarks.md) until autovacuum analysed the table.
--
-- The due index now holds the claim's whole order (journal order among rows due at the same
-- time), and the claim is a function whose plan may neither sort nor build a bitmap: the only plan
-- left reads the index in order and stops once it has locked enough rows.
DROP INDEX it_relay.deliveries_due_idx;
CREATE INDEX deliveries_due_idx ON it_relay.deliveries (subscriber, next_attempt_at, seq)
    WHERE status = 'pending';

-- Due deliveries of one subscriber, leased to p_owner for p_lease_s (see claim_deliveries in
-- relay/sql/queries.sql). A lease that expired (its instance died) is claimed again; the claim
-- counts the attempt it is for. SECURITY INVOKER: the caller's own grants on the table apply.
CREATE FUNCTION it_relay.claim_due(p_subscriber text, p_owner text, p_limit integer, p_lease_s double precision)
RETURNS TABLE (event_id uuid, event_type text, attempts integer, failed_rounds integer,
               replays integer, entity_key text, seq bigint)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET enable_sort = off
SET enable_bitmapscan = off
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    UPDATE it_relay.deliveries d
       SET lease_owner = p_owner, lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_s),
           attempts = d.attempts + 1
      FROM (SELECT c.ctid AS row_id
              FROM it_relay.deliveries c
             WHERE c.subscriber = p_subscriber
               AND c.status = 'pending'
               AND c.next_attempt_at <= clock_timestamp()
               AND (c.lease_expires_at IS NULL OR c.lease_expires_at < clock_timestamp())
             ORDER BY c.next_attempt_at, c.seq
             LIMIT p_limit
               FOR UPDATE SKIP LOCKED) k
     WHERE d.ctid = k.row_id
    RETURNING d.event_id, d.event_type, d.attempts, d.failed_rounds, d.replays, d.entity_key, d.seq;
END
$$;
