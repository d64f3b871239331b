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
-- left reads the index in order and stops once it has locked enough rows. The index of rows
-- without an entity (an ordered claim's `loose` part) gets the same order, so that part never
-- prefers walking every pending row of the subscriber in order to skip the ones with an entity.
--
-- Built before the old ones are dropped: the builds let reads go on (writes wait); the drops take
-- their brief exclusive locks last (docs/operations.md, Upgrading).
CREATE INDEX deliveries_due_order_idx ON it_relay.deliveries (subscriber, next_attempt_at, seq)
    WHERE status = 'pending';
CREATE INDEX deliveries_due_no_entity_order_idx ON it_relay.deliveries (subscriber, next_attempt_at, seq)
    WHERE status = 'pending' AND entity_key IS NULL;
DROP INDEX it_relay.deliveries_due_idx;
DROP INDEX it_relay.deliveries_due_no_entity_idx;
ALTER INDEX it_relay.deliveries_due_order_idx RENAME TO deliveries_due_idx;
ALTER INDEX it_relay.deliveries_due_no_entity_order_idx RENAME TO deliveries_due_no_entity_idx;

-- Due deliveries of one subscriber, leased to p_owner for p_lease_s (see claim_deliveries in
-- relay/sql/queries.sql). A lease that expired (its instance died) is claimed again; the claim
-- counts the attempt it is for. SECURITY INVOKER: the caller's own grants on the table apply.
-- The locked rows are updated by their ctids, as an array: a TID scan whatever the planner
-- estimates (a join could hash every pending row). A row changed by another transaction since
-- this statement's snapshot is locked but passed over (its new version is not in the snapshot):
-- the next claim takes it, never a stale version of it.
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
     WHERE d.ctid = ANY (ARRAY(
            SELECT c.ctid
              FROM it_relay.deliveries c
             WHERE c.subscriber = p_subscriber
               AND c.status = 'pending'
               AND c.next_attempt_at <= clock_timestamp()
               AND (c.lease_expires_at IS NULL OR c.lease_expires_at < clock_timestamp())
             ORDER BY c.next_attempt_at, c.seq
             LIMIT p_limit
               FOR UPDATE SKIP LOCKED))
    RETURNING d.event_id, d.event_type, d.attempts, d.failed_rounds, d.replays, d.entity_key, d.seq;
END
$$;
