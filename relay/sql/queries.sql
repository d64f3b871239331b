-- Named queries of it-relay. Each starts with a "-- name: <name>" line; relay/sql/__init__.py loads them.

-- name: schema_version
SELECT coalesce(max(version), 0) FROM it_relay.schema_version;

-- name: schema_exists
SELECT to_regclass('it_relay.schema_version') IS NOT NULL;

-- name: warm_types
-- Every array type the named queries bind or return, in one statement. asyncpg looks up a type it
-- has no built-in codec for with a catalogue query, per connection, on the first statement that
-- uses it (mark_routed's first call on a new connection: 11-15 ms instead of 0.3). Prepared as
-- each pool connection opens (relay/database.py), so no delivery pays for the look-ups;
-- tests/test_pool.py keeps this list complete.
SELECT $1::uuid[], $2::jsonb[], $3::xid[], $4::int[], $5::float8[], $6::bool[], $7::timestamptz[];

-- name: warm_functions
-- The delivery path's PL/pgSQL functions, each run once on nothing as a pool connection opens:
-- PostgreSQL compiles a function and plans its statements on its first call in a session, which
-- the first delivery on each new connection otherwise paid for (its first event 10 -> 19 ms in the
-- bench once the outcome became a function). Nothing matches, nothing is written.
SELECT (SELECT count(*) FROM it_relay.write_outcomes('{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '',
                                                     '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}')),
       (SELECT count(*) FROM it_relay.claim_due('', '', 0, 0)),
       (SELECT count(*) FROM it_relay.journaled('{}')),
       (SELECT count(*) FROM it_relay.event_parts('{}')),
       it_relay.oldest_unrouted(NULL),
       it_relay.entity_unfinished(NULL, NULL);

-- name: publish
SELECT it_relay.publish($1::jsonb);

-- name: journal_notified
-- Events heard on the channel without a journal row (legacy producers); already-journaled ids are
-- no-ops, so two instances that hear the same notification journal it once.
INSERT INTO it_relay.events (event_id, event_type, payload, source, organization_id, entity_key, traceparent)
SELECT r.event_id, r.event_type, r.payload, 'notify', r.organization_id, it_relay.entity_key(r.payload),
       r.traceparent
  FROM unnest($1::uuid[], $2::text[], $3::jsonb[], $4::uuid[], $5::text[])
       AS r(event_id, event_type, payload, organization_id, traceparent)
ON CONFLICT (event_id) DO NOTHING;

-- name: set_traceparent
-- The trace context publish() keeps for this transaction's events (a scheduler emission's span).
SELECT set_config('it_relay.traceparent', $1, true);

-- name: durable_commit
-- This transaction waits for the WAL flush, whatever the connection's setting (the daemon's pool
-- commits asynchronously): it writes what exists nowhere else once committed (journal.sole_record).
SET LOCAL synchronous_commit TO on;

-- name: journaled_ids
-- By key whatever the statistics (0021_plans_by_index.sql).
SELECT event_id FROM it_relay.journaled($1::uuid[]) AS j(event_id);

-- name: record_rejected
INSERT INTO it_relay.rejected_events (event_id, event_type, reason, errors, payload, raw_text, source)
SELECT r.event_id, r.event_type, r.reason, ARRAY(SELECT jsonb_array_elements_text(r.errors)), r.payload, r.raw_text, r.source
  FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::jsonb[], $6::text[], $7::text[])
       AS r(event_id, event_type, reason, errors, payload, raw_text, source)
ON CONFLICT (event_id) WHERE event_id IS NOT NULL DO NOTHING;

-- name: claim_events
-- Held FOR UPDATE until the routing transaction commits; other instances skip these rows. Used
-- while another instance is seen routing the same events (see peek_events).
SELECT event_id, payload::text AS payload, source, traceparent, xmin AS version
  FROM it_relay.events
 WHERE status = 'pending'
 ORDER BY created_at
 LIMIT (SELECT $1::int)
   FOR UPDATE SKIP LOCKED;

-- name: peek_events
-- Pending events read without a lock or a transaction: mark_routed and mark_rejected take each
-- one only if it is still pending and unchanged since (its xmin), so a routing needs two round
-- trips, not four. Two instances that read the same events route each one once.
-- The limit is a sub-select so that the statement is planned once (a plain $1 was re-planned on
-- every call, ~90 µs of planning for a ~35 µs read): the plan is the same for any limit, a walk of
-- the partial index of pending events.
SELECT event_id, payload::text AS payload, source, traceparent, xmin AS version
  FROM it_relay.events
 WHERE status = 'pending'
 ORDER BY created_at
 LIMIT (SELECT $1::int);

-- name: mark_routed
-- The routing of a batch in one statement: each event's validated payload, and one delivery row
-- per served subscriber ($6..$8, pairs of event and subscriber). An event that came without a
-- trace context keeps its routing span's ($9), so its deliveries join that trace.
-- Only events still pending and unchanged since they were read ($14, their xmin) are taken, and
-- none that another routing holds (SKIP LOCKED: no wait, no deadlock between instances); one row
-- comes back per event taken (so what another instance routed is counted there, not here), with
-- its body as the journal keeps it, and one per delivery row written, leased or waiting for a
-- claim (this instance's claims take the body from here: relay/event_cache.py).
-- Lanes that are caught up ask for their next rows here ($12 subscribers, $13 how many each): those
-- rows are inserted already leased to $10 for $11 seconds, their first attempt counted, and
-- returned (with the body) for the lanes to send at once — one transaction between a producer's
-- commit and the POST, no claim. A row behind a head held under on_exhausted = "hold" starts
-- held, never leased. For an ordered subscriber ($15) only an entity's head is leased: no
-- unfinished delivery of its entity to that subscriber and no earlier event of it unrouted (this
-- statement's snapshot still shows its own batch as unrouted, so only an entity's first event in
-- the batch can be its head). Two routings racing on one entity each see the other's event as
-- unrouted, or its delivery as unfinished: neither leases past the other.
-- Each array it unnests is read through a sub-select (PLAN ONCE, as in 0021_plans_by_index.sql).
WITH mine AS (
    -- Each event's routing beside its row, locked: the input unnested once and joined by its key,
    -- the version compared on the way (so the planner never rescans the payloads per event).
    SELECT r.*
      FROM unnest((SELECT $1::uuid[]), (SELECT $2::jsonb[]), (SELECT $3::text[]),
                  (SELECT $4::text[]), (SELECT $5::uuid[]), (SELECT $9::text[]), (SELECT $14::xid[]))
           AS r(event_id, payload, entity_key, event_type, organization_id, traceparent, version)
      JOIN it_relay.events e ON e.event_id = r.event_id
     WHERE e.status = 'pending' AND e.xmin = r.version
       FOR UPDATE OF e SKIP LOCKED
), routed AS (
    UPDATE it_relay.events e
       SET status = 'routed', routed_at = clock_timestamp(), payload = r.payload, entity_key = r.entity_key,
           event_type = r.event_type,
           organization_id = r.organization_id,
           traceparent = coalesce(e.traceparent, r.traceparent)
      FROM mine r
     WHERE e.event_id = r.event_id
    RETURNING e.event_id, e.seq, e.created_at, e.traceparent, e.entity_key, e.payload
), planned AS (
    SELECT p.event_id, p.subscriber, p.event_type, r.entity_key, r.seq,
           r.entity_key IS NOT NULL AND EXISTS (
               SELECT 1 FROM it_relay.deliveries h
                WHERE h.holds AND h.subscriber = p.subscriber AND h.entity_key = r.entity_key) AS held,
           row_number() OVER (PARTITION BY p.subscriber ORDER BY r.seq) AS place
      FROM unnest((SELECT $6::uuid[]), (SELECT $7::text[]), (SELECT $8::text[]))
           AS p(event_id, subscriber, event_type)
      JOIN routed r ON r.event_id = p.event_id
), added AS (
    INSERT INTO it_relay.deliveries (event_id, subscriber, event_type, entity_key, seq, status,
                                     lease_owner, lease_expires_at, attempts)
    SELECT x.event_id, x.subscriber, x.event_type, x.entity_key, x.seq,
           CASE WHEN x.held THEN 'held' ELSE 'pending' END,
           CASE WHEN x.leased THEN $10::text END,
           CASE WHEN x.leased THEN clock_timestamp() + make_interval(secs => $11::float8) END,
           CASE WHEN x.leased THEN 1 ELSE 0 END
      FROM (SELECT p.*,
                   -- CASE: the head checks run only for rows a caught-up ordered lane asked for.
                   CASE WHEN p.held OR p.place > coalesce(c.n, 0) THEN false
                        WHEN p.entity_key IS NULL OR p.subscriber <> ALL($15::text[]) THEN true
                        -- Each a probe per row by index, whatever the statistics (0021_plans_by_index.sql).
                        ELSE NOT it_relay.entity_unfinished(p.subscriber, p.entity_key)
                         AND coalesce(it_relay.oldest_unrouted(p.entity_key), p.seq) >= p.seq
                   END AS leased
              FROM planned p
              LEFT JOIN unnest((SELECT $12::text[]), (SELECT $13::int[])) AS c(subscriber, n) USING (subscriber)) x
    ON CONFLICT (event_id, subscriber) DO NOTHING
    RETURNING event_id, subscriber, lease_owner IS NOT NULL AS leased
)
-- One row per event taken (subscriber NULL), then one per delivery row written: a UNION, not a
-- join, which the planner would run as a nested loop over the two CTEs.
SELECT r.event_id, NULL::text AS subscriber, NULL::bool AS leased, r.payload::text AS body, r.created_at,
       r.seq, r.traceparent
  FROM routed r
UNION ALL
SELECT a.event_id, a.subscriber, a.leased, NULL, NULL, NULL, NULL
  FROM added a;

-- name: mark_rejected
-- Rejected events, each only if still pending and unchanged since it was read (see mark_routed);
-- returns those taken, whose rejections are recorded in the same transaction.
UPDATE it_relay.events e SET status = 'rejected', routed_at = clock_timestamp()
 WHERE e.event_id IN (
        SELECT e2.event_id
          FROM it_relay.events e2
          JOIN unnest($1::uuid[], $2::xid[]) AS v(event_id, version) ON v.event_id = e2.event_id
         WHERE e2.status = 'pending' AND e2.xmin = v.version
           FOR UPDATE OF e2 SKIP LOCKED)
RETURNING e.event_id;

-- name: claim_deliveries
-- Due deliveries of one subscriber, leased to this instance (0019_claim_in_index_order.sql: a
-- function, so its plan reads the due index in order whatever the statistics). First attempts go
-- out in journal order (the function returns its rows in table order: sorted here, a batch at
-- most). The claim counts the attempt it is for, so x-it-delivery-attempt stays
-- true after a crash or an expired lease. No join with the events: their bodies come from the
-- routing that wrote these rows, else from event_parts.
SELECT event_id, event_type, attempts, failed_rounds, replays, entity_key, seq
  FROM it_relay.claim_due($1, $2, $3, $4)
 ORDER BY seq;

-- name: event_parts
-- What claimed deliveries take from their events when the claiming instance did not route them
-- (relay/event_cache.py): claims read only the deliveries table.
-- By key whatever the statistics (0021_plans_by_index.sql).
SELECT event_id, body, created_at, organization_id, traceparent FROM it_relay.event_parts($1::uuid[]);

-- name: claim_ordered
-- As claim_deliveries, for a subscriber with ordering = "entity": only an entity's head — no
-- earlier delivery of its entity to this subscriber unfinished (pending, in flight, held), no
-- earlier event of its entity still unrouted — so one per entity is in flight, in journal order.
-- The heads are found entity by entity (a skip scan of deliveries_entity_idx: one probe per
-- entity), never by reading the rows queued behind them, so a hot entity's backlog costs nothing.
-- The walk starts after $5, the entity this lane's last claim ended at, wraps around once, and
-- stops once it has locked $3 heads: entities take turns, and a claim costs the heads it passes
-- (in flight, in a retry, held, or locked by another instance's claim), not every entity with a
-- backlog. Rows without an entity are claimed as unordered ones. Every step reaches a row by a key
-- or its ctid, through the one index that fits: statistics taken while the table was small (a
-- fresh journal, a burst) once made a generic plan read every pending row per head.
WITH RECURSIVE heads AS (
    (   (SELECT 1 AS lap, 1 AS walk, h.ctid, h.entity_key, h.seq, h.status, h.next_attempt_at, h.lease_expires_at
           FROM it_relay.deliveries h
          WHERE h.subscriber = $1 AND h.status IN ('pending', 'held') AND h.entity_key IS NOT NULL AND h.entity_key > $5
          ORDER BY h.entity_key, h.seq
          LIMIT 1)
        UNION ALL
        (SELECT 2, 1, h.ctid, h.entity_key, h.seq, h.status, h.next_attempt_at, h.lease_expires_at
           FROM it_relay.deliveries h
          WHERE h.subscriber = $1 AND h.status IN ('pending', 'held') AND h.entity_key IS NOT NULL AND h.entity_key <= $5
          ORDER BY h.entity_key, h.seq
          LIMIT 1)
        LIMIT 1)
    UNION ALL
    -- Each step one probe: on in the first lap; past the last entity, around to the first; on in
    -- the second lap up to where the walk began (each range an index condition, the lap a gate).
    SELECT n.*
      FROM heads p
     CROSS JOIN LATERAL (
            (SELECT 1, p.walk + 1, h.ctid, h.entity_key, h.seq, h.status, h.next_attempt_at, h.lease_expires_at
               FROM it_relay.deliveries h
              WHERE p.lap = 1 AND h.subscriber = $1 AND h.status IN ('pending', 'held') AND h.entity_key IS NOT NULL AND h.entity_key > p.entity_key
              ORDER BY h.entity_key, h.seq
              LIMIT 1)
            UNION ALL
            (SELECT 2, p.walk + 1, h.ctid, h.entity_key, h.seq, h.status, h.next_attempt_at, h.lease_expires_at
               FROM it_relay.deliveries h
              WHERE p.lap = 1 AND h.subscriber = $1 AND h.status IN ('pending', 'held') AND h.entity_key IS NOT NULL AND h.entity_key <= $5
              ORDER BY h.entity_key, h.seq
              LIMIT 1)
            UNION ALL
            (SELECT 2, p.walk + 1, h.ctid, h.entity_key, h.seq, h.status, h.next_attempt_at, h.lease_expires_at
               FROM it_relay.deliveries h
              WHERE p.lap = 2 AND h.subscriber = $1 AND h.status IN ('pending', 'held') AND h.entity_key IS NOT NULL AND h.entity_key > p.entity_key AND h.entity_key <= $5
              ORDER BY h.entity_key, h.seq
              LIMIT 1)
            LIMIT 1) n
), taken AS (
    -- Locked as the walk goes (by ctid; a row changed since this statement's snapshot is checked
    -- again or passed over, never taken stale), so a head another instance holds is passed over
    -- and the walk goes on until it has locked $3.
    SELECT c.ctid AS row_id, x.walk, c.next_attempt_at, c.seq
      FROM heads x
     CROSS JOIN LATERAL (
            SELECT c.ctid, c.next_attempt_at, c.seq
              FROM it_relay.deliveries c
             WHERE c.ctid = x.ctid AND c.subscriber = $1
               -- As the walk saw it: a row held since this statement's snapshot was taken (its
               -- head went dead meanwhile, a hold this snapshot cannot see) is passed over.
               AND c.status = x.status
               AND c.next_attempt_at <= clock_timestamp()
               AND (c.lease_expires_at IS NULL OR c.lease_expires_at < clock_timestamp())
               FOR UPDATE SKIP LOCKED) c
     WHERE x.next_attempt_at <= clock_timestamp()
       AND (x.lease_expires_at IS NULL OR x.lease_expires_at < clock_timestamp())
       -- Whatever the head's status, no dead head holds its entity (on_exhausted = "hold"). A
       -- routing judges "held" by its own snapshot, so one racing a head's fall can write a row
       -- pending behind it (it waits here), and one racing a release can write a row held with
       -- nothing holding it (taken here, and made pending): never out of order, never stuck.
       -- OFFSET 0: a probe per head, checked before the head is locked (as an anti-join above the
       -- lock, every held head the walk passed was row-locked on every claim, then dropped).
       AND NOT EXISTS (SELECT 1 FROM it_relay.deliveries o
                        WHERE o.holds AND o.subscriber = $1 AND o.entity_key = x.entity_key
                       OFFSET 0)
       -- The entity's oldest unrouted event, if any, is not older than the head: an ordered probe
       -- of events_unrouted_entity_idx (a plain index scan, which marks the dead entries it passes;
       -- the only plan the function has, 0021_plans_by_index.sql).
       AND coalesce(it_relay.oldest_unrouted(x.entity_key), x.seq) >= x.seq
     LIMIT $3
), loose AS (
    SELECT c.ctid AS row_id, NULL::int AS walk, c.next_attempt_at, c.seq
      FROM it_relay.deliveries c
     WHERE c.subscriber = $1 AND c.entity_key IS NULL
       AND c.status = 'pending'
       AND c.next_attempt_at <= clock_timestamp()
       AND (c.lease_expires_at IS NULL OR c.lease_expires_at < clock_timestamp())
     ORDER BY c.next_attempt_at, c.seq
     LIMIT $3
       FOR UPDATE SKIP LOCKED
)
UPDATE it_relay.deliveries d
   SET status = 'pending', lease_owner = $2, lease_expires_at = clock_timestamp() + make_interval(secs => $4),
       attempts = d.attempts + 1
  FROM (SELECT * FROM taken UNION ALL SELECT * FROM loose ORDER BY next_attempt_at, walk, seq LIMIT $3) k
 WHERE d.ctid = k.row_id
RETURNING d.event_id, d.event_type, d.attempts, d.failed_rounds, d.replays, d.entity_key, d.seq, k.walk;

-- name: release_entity
-- `it-relay release`: an entity held behind its dead head goes on; the head stays dead (replayable).
-- The event named for the lanes' wake-up is a released row's, else the freed head's: a routing
-- that raced the hold wrote its row pending, not held (until housekeeping's hold_stragglers), and
-- it waits behind the head all the same.
WITH freed AS (
    UPDATE it_relay.deliveries SET holds = false, updated_at = clock_timestamp()
     WHERE subscriber = $1 AND entity_key = $2 AND holds
    RETURNING event_id, event_type
), released AS (
    UPDATE it_relay.deliveries SET status = 'pending', next_attempt_at = clock_timestamp(),
           updated_at = clock_timestamp()
     WHERE subscriber = $1 AND entity_key = $2 AND status = 'held'
    RETURNING event_id, event_type
), named AS (
    (SELECT event_id, event_type FROM released LIMIT 1) UNION ALL (SELECT event_id, event_type FROM freed LIMIT 1)
     LIMIT 1
)
SELECT (SELECT count(*) FROM freed) AS heads, (SELECT count(*) FROM released) AS released,
       (SELECT event_id FROM named) AS event_id, (SELECT event_type FROM named) AS event_type,
       ARRAY(SELECT event_id FROM freed UNION ALL (SELECT event_id FROM released LIMIT $3)) AS sample;

-- name: hold_stragglers
-- Rows a routing wrote pending while their entity's head went dead under on_exhausted = "hold"
-- (its snapshot could not see the hold; the claim kept them waiting all the same) made held like
-- their neighbours, so `deliveries list --status held`, `release` and the gauges count them.
-- Nothing here waits: a head that a release or a replay is changing is passed over (so the hold
-- is never set again from an older snapshot), and so is a row another statement holds; the next
-- round finds what is left. Never waiting, it can never deadlock with an operator's command.
-- Only heads with a straggler behind them are locked (a lock is a write): a round over held
-- entities with none costs one probe per holding head.
WITH heads AS (
    SELECT h.subscriber, h.entity_key, h.seq
      FROM it_relay.deliveries h
     WHERE h.holds
       AND EXISTS (SELECT 1 FROM it_relay.deliveries p
                    WHERE p.subscriber = h.subscriber AND p.entity_key = h.entity_key AND p.seq > h.seq
                      AND p.status = 'pending' AND p.lease_owner IS NULL)
       FOR SHARE OF h SKIP LOCKED
), stragglers AS (
    SELECT p.ctid AS row_id
      FROM it_relay.deliveries p
      JOIN heads h ON p.subscriber = h.subscriber AND p.entity_key = h.entity_key AND p.seq > h.seq
     WHERE p.status = 'pending' AND p.lease_owner IS NULL
       FOR UPDATE OF p SKIP LOCKED
), held AS (
    UPDATE it_relay.deliveries SET status = 'held', updated_at = clock_timestamp()
     WHERE ctid = ANY(ARRAY(SELECT row_id FROM stragglers))
    RETURNING 1
)
SELECT count(*) FROM held;

-- name: lock_holding_heads
-- Before a release: its entity's holding heads locked, so the release's own statement starts
-- after any straggler round that held them and counts the rows that round made held.
SELECT 1 FROM it_relay.deliveries WHERE subscriber = $1 AND entity_key = $2 AND holds FOR UPDATE;

-- name: entities_held
-- Per subscriber: entities held behind a dead head, and since when (the oldest).
SELECT subscriber, count(*) AS entities,
       extract(epoch FROM clock_timestamp() - min(updated_at))::float8 AS oldest_s
  FROM it_relay.deliveries
 WHERE holds
 GROUP BY subscriber;

-- name: next_due
-- Seconds until the next delivery of a subscriber becomes due, by the database's clock (NULL when
-- none is pending), so retries never depend on the relay host's clock agreeing with the server's.
SELECT extract(epoch FROM min(greatest(next_attempt_at, coalesce(lease_expires_at, next_attempt_at)))
                          - clock_timestamp())::float8
  FROM it_relay.deliveries
 WHERE subscriber = $1 AND status = 'pending';

-- name: write_results
-- Outcomes of many attempts, and the attempts' history, in one round trip: a function that finds
-- its rows by key whatever the statistics (0021_plans_by_index.sql, which states the rules). Only
-- the lease holder ($9) may write.
SELECT event_id, subscriber
  FROM it_relay.write_outcomes($1::uuid[], $2::text[], $3::text[], $4::int[], $5::int[], $6::float8[],
                               $7::int[], $8::text[], $9::text, $10::uuid[], $11::text[], $12::int[],
                               $13::timestamptz[], $14::int[], $15::text[], $16::float8[], $17::text[],
                               $18::bool[]);

-- name: release_leases
-- Claimed but never attempted (shutdown): back to the queue, the claim's attempt not counted.
UPDATE it_relay.deliveries
   SET lease_owner = NULL, lease_expires_at = NULL, attempts = attempts - 1
 WHERE lease_owner = $1 AND status = 'pending'
   AND (event_id, subscriber) IN (SELECT * FROM unnest($2::uuid[], $3::text[]));

-- name: replay
-- Deliveries back to pending, due now, with a fresh retry schedule and the same event_id; with $7
-- (a dry run) only counted. Per subscriber: how many, one of their events (for the wake-up), and
-- at most $8 of them (for the audit record).
-- Each replay is a new generation (a broker stores it again instead of dropping a duplicate). A
-- replayed head that held its entity frees it: the head goes first (journal order), the rest follow.
WITH chosen AS (
    SELECT event_id, subscriber, event_type, entity_key, holds
      FROM it_relay.deliveries
     WHERE ($1::uuid IS NULL OR event_id = $1)
       AND ($2::text[] IS NULL OR subscriber = ANY($2))
       AND ($3::text IS NULL OR status = $3)
       AND ($4::text IS NULL OR event_type = $4)
       AND ($5::timestamptz IS NULL OR created_at >= $5)
       AND ($6::timestamptz IS NULL OR created_at < $6)
), requeued AS (
    UPDATE it_relay.deliveries d
       SET status = 'pending', next_attempt_at = clock_timestamp(), failed_rounds = 0, replays = d.replays + 1,
           lease_owner = NULL, lease_expires_at = NULL, delivered_at = NULL, updated_at = clock_timestamp(),
           holds = false
      FROM chosen c
     WHERE NOT $7::bool AND d.event_id = c.event_id AND d.subscriber = c.subscriber
    RETURNING d.event_id, d.subscriber, d.event_type
), unheld AS (
    UPDATE it_relay.deliveries h
       SET status = 'pending', next_attempt_at = clock_timestamp(), updated_at = clock_timestamp()
      FROM chosen c
     WHERE NOT $7::bool AND c.holds AND h.subscriber = c.subscriber AND h.entity_key = c.entity_key
       AND h.status = 'held'
)
SELECT subscriber, count(*) AS n, (array_agg(event_id))[1] AS event_id, (array_agg(event_type))[1] AS event_type,
       (array_agg(event_id))[1:$8] AS sample
  FROM (SELECT event_id, subscriber, event_type FROM chosen WHERE $7::bool
        UNION ALL SELECT event_id, subscriber, event_type FROM requeued) x
 GROUP BY subscriber
 ORDER BY subscriber;

-- name: backfill
-- Deliveries for a subscriber added later: routed events of its types journaled in [$3, $4)
-- that it has no delivery for. Dry run: the same rows, counted, nothing written ($5). At most $6
-- of each type's events come back (for the audit record).
-- Each carries its entity and journal place, so an ordered subscriber gets them in journal order.
WITH wanted AS (
    SELECT e.event_id, e.event_type, e.entity_key, e.seq
      FROM it_relay.events e
     WHERE e.status = 'routed' AND e.event_type = ANY($2::text[])
       AND e.created_at >= $3 AND ($4::timestamptz IS NULL OR e.created_at < $4)
       AND NOT EXISTS (SELECT FROM it_relay.deliveries d WHERE d.event_id = e.event_id AND d.subscriber = $1)
), added AS (
    INSERT INTO it_relay.deliveries (event_id, subscriber, event_type, entity_key, seq)
    SELECT event_id, $1, event_type, entity_key, seq FROM wanted WHERE NOT $5::bool
    ON CONFLICT (event_id, subscriber) DO NOTHING
    RETURNING event_id, event_type
)
SELECT event_type, count(*) AS n, (array_agg(event_id))[1] AS event_id, (array_agg(event_id))[1:$6] AS sample
  FROM (SELECT event_id, event_type FROM wanted WHERE $5::bool UNION ALL SELECT event_id, event_type FROM added) x
 GROUP BY event_type
 ORDER BY event_type;

-- name: subscriber_states
SELECT subscriber, paused, changed_at, changed_by, circuit, circuit_changed_at
  FROM it_relay.subscriber_state;

-- name: set_paused
-- `subscribers pause|resume`: every instance reads it within database.poll_interval_s.
INSERT INTO it_relay.subscriber_state (subscriber, paused, changed_at, changed_by)
VALUES ($1, $2, clock_timestamp(), $3)
ON CONFLICT (subscriber) DO UPDATE
   SET paused = excluded.paused, changed_at = excluded.changed_at, changed_by = excluded.changed_by;

-- name: set_circuit
INSERT INTO it_relay.subscriber_state (subscriber, circuit, circuit_changed_at)
VALUES ($1, $2, clock_timestamp())
ON CONFLICT (subscriber) DO UPDATE
   SET circuit = excluded.circuit, circuit_changed_at = excluded.circuit_changed_at
 WHERE it_relay.subscriber_state.circuit <> excluded.circuit;

-- name: subscriber_stats
-- Per subscriber, for `status`: backlog, its oldest row and next attempt; dead now; attempts that
-- succeeded or failed in the last 5 and 60 minutes; journal-to-delivered latency of the last hour;
-- the last success and the last error.
WITH pending AS (
    SELECT subscriber, count(*) AS backlog, min(created_at) AS oldest_pending,
           min(next_attempt_at) AS next_attempt
      FROM it_relay.deliveries WHERE status = 'pending' GROUP BY subscriber
), dead AS (
    SELECT subscriber, count(*) AS dead FROM it_relay.deliveries WHERE status = 'dead' GROUP BY subscriber
), tried AS (
    SELECT subscriber,
           count(*) FILTER (WHERE ok AND attempted_at > clock_timestamp() - interval '5 minutes') AS ok_5m,
           count(*) FILTER (WHERE NOT ok AND attempted_at > clock_timestamp() - interval '5 minutes') AS failed_5m,
           count(*) FILTER (WHERE ok) AS ok_60m,
           count(*) FILTER (WHERE NOT ok) AS failed_60m
      FROM (SELECT subscriber, attempted_at, coalesce(http_status BETWEEN 200 AND 299, false) AS ok
              FROM it_relay.attempts
             WHERE attempted_at > clock_timestamp() - interval '60 minutes') a
     GROUP BY subscriber
), delivered AS (
    SELECT d.subscriber,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM d.delivered_at - e.created_at)) AS p50_s,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM d.delivered_at - e.created_at)) AS p99_s
      FROM it_relay.deliveries d JOIN it_relay.events e USING (event_id)
     WHERE d.status = 'delivered' AND d.updated_at > clock_timestamp() - interval '60 minutes'
     GROUP BY d.subscriber
), last_ok AS (
    SELECT subscriber, max(updated_at) AS last_success
      FROM it_relay.deliveries WHERE status = 'delivered' GROUP BY subscriber
), last_error AS (
    SELECT DISTINCT ON (subscriber) subscriber, last_error, updated_at AS last_error_at
      FROM it_relay.deliveries
     WHERE last_error IS NOT NULL
     ORDER BY subscriber, updated_at DESC
), names AS (
    SELECT subscriber FROM pending UNION SELECT subscriber FROM tried UNION SELECT subscriber FROM last_ok
    UNION SELECT subscriber FROM last_error UNION SELECT subscriber FROM it_relay.subscriber_state
    UNION SELECT subscriber FROM dead
)
SELECT n.subscriber, coalesce(p.backlog, 0) AS backlog, p.oldest_pending,
       coalesce(t.ok_5m, 0) AS delivered_5m, coalesce(t.failed_5m, 0) AS failed_5m,
       coalesce(t.ok_60m, 0) AS delivered_60m, coalesce(t.failed_60m, 0) AS failed_60m,
       dl.p50_s, dl.p99_s, o.last_success, le.last_error, le.last_error_at,
       s.paused, s.circuit, s.circuit_changed_at, clock_timestamp() AS now,
       coalesce(x.dead, 0) AS dead, p.next_attempt
  FROM names n
  LEFT JOIN pending p USING (subscriber)
  LEFT JOIN dead x USING (subscriber)
  LEFT JOIN tried t USING (subscriber)
  LEFT JOIN delivered dl USING (subscriber)
  LEFT JOIN last_ok o USING (subscriber)
  LEFT JOIN last_error le USING (subscriber)
  LEFT JOIN it_relay.subscriber_state s USING (subscriber);

-- name: event_journey
SELECT event_id, event_type, status, source, payload, created_at, routed_at
  FROM it_relay.events WHERE event_id = $1;

-- name: event_attempts
SELECT subscriber, attempt, attempted_at, http_status, error, duration_ms, response_excerpt
  FROM it_relay.attempts WHERE event_id = $1
 ORDER BY subscriber, attempted_at, id;

-- name: follow_deliveries
-- Outcomes written after $1 (the last one seen), oldest first, for `deliveries list --follow`.
SELECT d.event_id, d.event_type, d.subscriber, d.status, d.attempts, d.last_status, d.last_error,
       d.created_at, d.updated_at, d.next_attempt_at, d.delivered_at
  FROM it_relay.deliveries d
 WHERE d.updated_at > $1
   AND ($2::text IS NULL OR d.status = $2)
   AND ($3::text IS NULL OR d.subscriber = $3)
   AND ($4::text IS NULL OR d.event_type = $4)
   AND d.updated_at < clock_timestamp() - interval '50 milliseconds'
 ORDER BY d.updated_at, d.event_id, d.subscriber
 LIMIT 1000;

-- name: list_rejections
-- Newest first; republished ones only with $4, dismissed ones only with $6.
SELECT id, event_id, event_type, reason, errors, source, received_at, resolved_at, resolved_event_id,
       dismissed_at, dismissed_by
  FROM it_relay.rejected_events
 WHERE ($1::text IS NULL OR reason = $1)
   AND ($2::text IS NULL OR event_type = $2)
   AND ($3::timestamptz IS NULL OR received_at >= $3)
   AND ($4::bool OR resolved_at IS NULL)
   AND ($6::bool OR dismissed_at IS NULL)
 ORDER BY received_at DESC, id DESC
 LIMIT $5;

-- name: rejection
-- By its id, or else the event_id it was recorded under or republished as.
SELECT id, event_id, event_type, reason, errors, source, received_at, resolved_at, resolved_event_id,
       dismissed_at, dismissed_by, payload, raw_text
  FROM it_relay.rejected_events
 WHERE id = $1 OR ($2::uuid IS NOT NULL AND (event_id = $2 OR resolved_event_id = $2))
 ORDER BY id
 LIMIT 1;

-- name: dismiss_rejection
-- `rejections dismiss`: set aside, unless republished or dismissed already (then no row back).
UPDATE it_relay.rejected_events SET dismissed_at = clock_timestamp(), dismissed_by = $2
 WHERE id = $1 AND resolved_at IS NULL AND dismissed_at IS NULL
RETURNING event_id;

-- name: lock_rejection
-- The rejection a republish resolves, locked until it commits: a second republish of it waits,
-- then finds it resolved.
SELECT id, event_id, resolved_event_id
  FROM it_relay.rejected_events
 WHERE id = $1
   FOR UPDATE;

-- name: event_id_holders
-- What holds an event_id ($2) besides rejection $1: its journal row, and another rejection
-- (recorded under it, or republished as it).
SELECT (SELECT status FROM it_relay.events WHERE event_id = $2) AS journal_status,
       (SELECT min(id) FROM it_relay.rejected_events
         WHERE id <> $1 AND (event_id = $2 OR resolved_event_id = $2)) AS rejection_id;

-- name: republish
-- A corrected event journaled under its event_id, stored as publish() stores it (redacted, by
-- the relay already: redacting twice would change a non-string key's marker; the event_id
-- canonical) with publish()'s digest of it, so the producer's retry of the corrected payload is a
-- duplicate and of the old one an error. A new row; or, only for the rejection's own event ($5)
-- and only while rejected, that row made pending with the corrected payload (the router
-- validates it once more). No row back: the id is someone else's, or already routed.
WITH corrected AS (
    SELECT jsonb_set($3::jsonb, '{event_id}', to_jsonb($1::uuid::text)) AS payload
)
-- Its entity is named as publish() names it, so that until it is routed an ordered subscriber's
-- later events of that entity wait for it (the unrouted checks find events by entity).
INSERT INTO it_relay.events (event_id, event_type, payload, source, organization_id, published_digest,
                             entity_key)
SELECT $1, $2, c.payload, 'publish', $4, it_relay.payload_digest(c.payload), it_relay.entity_key(c.payload)
  FROM corrected c
ON CONFLICT (event_id) DO UPDATE
   SET event_type = excluded.event_type, payload = excluded.payload, status = 'pending',
       organization_id = excluded.organization_id, routed_at = NULL,
       published_digest = excluded.published_digest, entity_key = excluded.entity_key
 WHERE $5::bool AND it_relay.events.status = 'rejected'
RETURNING event_id;

-- name: resolve_rejection
UPDATE it_relay.rejected_events SET resolved_at = clock_timestamp(), resolved_event_id = $2 WHERE id = $1;

-- name: prune_unserved
-- Pending deliveries of subscribers no longer served (removed from the configuration), once older
-- than the dead-letter retention: nobody will deliver them, and they would keep their events.
DELETE FROM it_relay.deliveries
 WHERE ctid = ANY(ARRAY(
       SELECT ctid FROM it_relay.deliveries
        WHERE status = 'pending' AND NOT (subscriber = ANY($1::text[]))
          AND created_at < clock_timestamp() - make_interval(secs => $2)
        LIMIT $3));

-- name: wake
SELECT pg_notify($1, $2);

-- name: channel
SELECT value FROM it_relay.settings WHERE name = 'channel';

-- name: set_channel
-- The channel publish() notifies on: the database's own setting, written by `db upgrade`.
INSERT INTO it_relay.settings (name, value) VALUES ('channel', $1)
ON CONFLICT (name) DO UPDATE SET value = excluded.value WHERE it_relay.settings.value <> excluded.value
RETURNING value;

-- name: backend_roles
-- The login role of each notifying backend still connected (for ingest.legacy_senders).
SELECT pid, usename::text AS role FROM pg_stat_activity WHERE pid = ANY($1::int[]);

-- name: list_deliveries
SELECT d.event_id, d.event_type, d.subscriber, d.status, d.attempts, d.last_status, d.last_error,
       d.created_at, d.updated_at, d.next_attempt_at, d.delivered_at
  FROM it_relay.deliveries d
 WHERE ($1::text IS NULL OR d.status = $1)
   AND ($2::text IS NULL OR d.subscriber = $2)
   AND ($3::text IS NULL OR d.event_type = $3)
   AND ($4::uuid IS NULL OR d.event_id = $4)
 ORDER BY d.updated_at DESC, d.event_id, d.subscriber
 LIMIT $5;

-- name: backlog
SELECT subscriber, count(*) FROM it_relay.deliveries WHERE status = 'pending' GROUP BY subscriber;

-- name: subscriber_gauges
-- Per subscriber, for the gauges: pending (the backlog), dead now, the oldest pending's age. Index
-- scans of the pending and finished partial indexes, whatever the history's size.
SELECT subscriber,
       count(*) FILTER (WHERE status = 'pending') AS pending,
       count(*) FILTER (WHERE status = 'dead') AS dead,
       coalesce(extract(epoch FROM clock_timestamp() - min(created_at) FILTER (WHERE status = 'pending')), 0)::float8
           AS oldest_pending_s
  FROM it_relay.deliveries
 WHERE status IN ('pending', 'dead')
 GROUP BY subscriber;

-- name: unrouted_events
SELECT count(*) FROM it_relay.events WHERE status = 'pending';

-- name: instance_heartbeat
-- This instance is alive (once per poll interval); returns how many instances are alive now.
WITH me AS (
    INSERT INTO it_relay.instances (owner, host, pid, version, config, subscribers, scheduler_leader)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    ON CONFLICT (owner) DO UPDATE
       SET heartbeat_at = clock_timestamp(), config = excluded.config, subscribers = excluded.subscribers,
           scheduler_leader = excluded.scheduler_leader, version = excluded.version
)
SELECT count(*) + 1 FROM it_relay.instances
 WHERE owner <> $1 AND heartbeat_at > clock_timestamp() - make_interval(secs => $8);

-- name: live_instances
-- The instances that recorded themselves within $1 seconds, for `status`.
SELECT host, pid, version, config, subscribers, scheduler_leader, started_at,
       extract(epoch FROM clock_timestamp() - heartbeat_at)::float8 AS heartbeat_age_s
  FROM it_relay.instances
 WHERE heartbeat_at > clock_timestamp() - make_interval(secs => $1)
 ORDER BY host, pid;

-- name: audit_record
-- An operator's action, in the action's own transaction; db_role is the session's login.
INSERT INTO it_relay.audit (action, os_user, host, arguments, count, event_ids, subscriber, reason)
VALUES ($1, $2, $3, $4::jsonb, $5, $6::uuid[], $7, $8);

-- name: audit_list
-- Newest first, for `audit list`.
SELECT id, at, action, db_role, os_user, host, arguments::text AS arguments, count, event_ids,
       subscriber, reason
  FROM it_relay.audit
 WHERE ($1::timestamptz IS NULL OR at >= $1)
 ORDER BY at DESC, id DESC
 LIMIT $2;

-- name: audit_of_event
-- The actions that touched one event (the index on event_ids), oldest first, for `deliveries show`;
-- of the events each touched, only this one.
SELECT id, at, action, db_role, os_user, host, arguments::text AS arguments, count,
       ARRAY[$1::uuid] AS event_ids, subscriber, reason
  FROM it_relay.audit
 WHERE event_ids @> ARRAY[$1::uuid]
 ORDER BY at, id;

-- name: instance_gone
DELETE FROM it_relay.instances WHERE owner = $1;

-- name: prune_instances
-- Instances silent for a day are gone (a crash leaves its row behind).
DELETE FROM it_relay.instances WHERE heartbeat_at < clock_timestamp() - interval '1 day';

-- name: prune_deliveries
-- Retention, in bounded batches so a large prune never holds long locks. A dead head that holds
-- its entity (on_exhausted = "hold") is kept however old: pruning it would release the entity
-- with no operator's act on record.
DELETE FROM it_relay.deliveries
 WHERE ctid = ANY(ARRAY(
       SELECT ctid FROM it_relay.deliveries
        WHERE (status = 'delivered' AND updated_at < clock_timestamp() - make_interval(secs => $1))
           OR (status = 'dead' AND NOT holds AND updated_at < clock_timestamp() - make_interval(secs => $2))
        LIMIT $3));

-- name: prune_events
-- Events whose deliveries are all gone (pruned) or that were rejected long ago.
DELETE FROM it_relay.events e
 WHERE e.event_id = ANY(ARRAY(
       SELECT e2.event_id FROM it_relay.events e2
        WHERE ((e2.status = 'routed' AND e2.routed_at < clock_timestamp() - make_interval(secs => $1))
               OR (e2.status = 'rejected' AND e2.routed_at < clock_timestamp() - make_interval(secs => $2)))
          AND NOT EXISTS (SELECT 1 FROM it_relay.deliveries d WHERE d.event_id = e2.event_id)
        LIMIT $3));

-- name: prune_rejected
DELETE FROM it_relay.rejected_events
 WHERE id = ANY(ARRAY(
       SELECT id FROM it_relay.rejected_events
        WHERE received_at < clock_timestamp() - make_interval(secs => $1)
        LIMIT $2));

-- name: scheduler_try_lead
SELECT pg_try_advisory_lock($1);

-- name: scheduler_mark
-- The unique mark that makes an emission happen once; no row back means it already happened.
INSERT INTO it_relay.scheduler_marks (kind, entity_id, milestone, event_id)
VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING
RETURNING event_id;

-- name: scheduler_marked
SELECT kind, entity_id, milestone FROM it_relay.scheduler_marks WHERE entity_id = ANY($1::uuid[]);

-- name: contract_expirations
SELECT contract_id, contract_number, vendor_id, vendor_name, contract_type, expiration_date,
       contract_value, auto_renew, organization_id
  FROM it_relay.contract_expirations
 WHERE expiration_date BETWEEN $1::date AND $1::date + $2::int;

-- name: license_expirations
SELECT license_id, software_name, software_vendor, license_type, expiration_date, license_count,
       renewal_cost, organization_id
  FROM it_relay.license_expirations
 WHERE expiration_date BETWEEN $1::date AND $1::date + $2::int;

-- name: patch_backlog
SELECT patch_id, patch_name, severity, target_date, affected_asset_ids, affected_asset_count, organization_id
  FROM it_relay.patch_backlog
 WHERE target_date < $1::date;

-- name: ticket_clocks
-- Tickets whose clocks may still matter at the pass's time $1: open ones, and ones resolved in
-- the 30 days before it (a ticket resolved late is a breach the scheduler may not have reported).
-- Created after $1 they did not exist yet.
SELECT ticket_id, ticket_number, priority, status, assigned_to_id, organization_id, created_at,
       first_response_at, resolved_at, pending_since, pending_seconds
  FROM it_relay.ticket_clocks
 WHERE created_at <= $1 AND (resolved_at IS NULL OR resolved_at > $1 - interval '30 days');

-- name: license_compliance
SELECT license_id, software_name, license_count, usage_count, compliance_status, variance,
       variance_percent, organization_id
  FROM it_relay.license_compliance;

-- name: compliance_threshold
-- For this pass only (the transaction): it_relay.license_compliance reads it.
SELECT set_config('it.license_under_utilized_percent', $1, true);

-- name: compliance_states
SELECT license_id, state, episode FROM it_relay.compliance_state;

-- name: compliance_set_state
INSERT INTO it_relay.compliance_state (license_id, state, episode) VALUES ($1, $2, $3)
ON CONFLICT (license_id) DO UPDATE SET state = excluded.state, episode = excluded.episode,
                                       updated_at = clock_timestamp()
 WHERE (it_relay.compliance_state.state, it_relay.compliance_state.episode)
       IS DISTINCT FROM (excluded.state, excluded.episode);

-- name: prune_marks
-- Expiry marks more than 30 days past their date, in a bounded batch: nothing is emitted once
-- expired, so they can never fire again.
DELETE FROM it_relay.scheduler_marks m
 USING (SELECT kind, entity_id, milestone FROM it_relay.scheduler_marks
         WHERE kind IN ('contract_expiring', 'license_expiring')
           AND split_part(milestone, ':', 1)::date < current_date - 30
         LIMIT $1) d
 WHERE (m.kind, m.entity_id, m.milestone) = (d.kind, d.entity_id, d.milestone);

-- name: prune_closed_marks
-- Marks of entities the scheduler's views say can never emit again, in a bounded batch: SLA marks
-- of tickets resolved more than 30 days ago, or gone (their clocks stopped; the scheduler no
-- longer reads them); patch marks of patches no asset still waits for, or gone. Marks of open
-- tickets and of patches still undeployed stay: without them those would be emitted again.
DELETE FROM it_relay.scheduler_marks m
 USING (SELECT kind, entity_id, milestone FROM it_relay.scheduler_marks s
         WHERE (s.kind = 'sla_breached' AND NOT EXISTS (
                    SELECT FROM it_relay.ticket_clocks t
                     WHERE t.ticket_id = s.entity_id
                       AND (t.resolved_at IS NULL OR t.resolved_at > clock_timestamp() - interval '30 days')))
            OR (s.kind = 'patch_overdue' AND NOT EXISTS (
                    SELECT FROM it_relay.patch_backlog p WHERE p.patch_id = s.entity_id))
         LIMIT $1) d
 WHERE (m.kind, m.entity_id, m.milestone) = (d.kind, d.entity_id, d.milestone);

-- name: scheduler_views_exist
SELECT to_regclass('it_relay.ticket_clocks') IS NOT NULL AND to_regclass('it_relay.patch_backlog') IS NOT NULL;

-- name: migration_lock
-- Two instances upgrading at once: the second waits here, then finds nothing to do.
SELECT pg_advisory_xact_lock($1);

-- name: record_migration
INSERT INTO it_relay.schema_version (version, name) VALUES ($1, $2);

-- name: probe
SELECT 1;

-- name: database_now
SELECT clock_timestamp();

-- name: reference_version
SELECT coalesce(max(version), 0) FROM it_relay.reference_version;

-- name: record_reference_migration
INSERT INTO it_relay.reference_version (version, name) VALUES ($1, $2);

-- name: reference_installed
-- The reference schema's tables, with or without a recorded version.
SELECT to_regclass('public.it_assets') IS NOT NULL;


-- name: take_tokens
-- Slots of a subscriber's shared rate limit (0012_rate_limit.sql; relay/ratelimit.py).
SELECT granted, first_in_s, spacing_s, wait_s, next_slot, now_s FROM it_relay.take_tokens($1, $2, $3, $4);

-- name: return_tokens
-- The unused tail of a grant back to the bucket, only while nobody took a slot after it ($2).
UPDATE it_relay.rate_limits
   SET next_slot = next_slot - make_interval(secs => $3::int / $4::float8)
 WHERE subscriber = $1 AND next_slot = $2;

-- name: hold_tokens
-- A 429 with Retry-After: no slot before the end of the wait, for every instance.
INSERT INTO it_relay.rate_limits AS r (subscriber, next_slot)
VALUES ($1, clock_timestamp() + make_interval(secs => $2))
ON CONFLICT (subscriber) DO UPDATE SET next_slot = greatest(r.next_slot, excluded.next_slot);

-- name: backfill_candidates
-- What a backfill for a subscriber with a filter judges, in journal order from after $5: routed
-- events of its types journaled in [$3, $4) that it has no delivery for (as `backfill`).
SELECT e.event_id, e.seq, e.payload::text AS payload
  FROM it_relay.events e
 WHERE e.status = 'routed' AND e.event_type = ANY($2::text[])
   AND e.created_at >= $3 AND ($4::timestamptz IS NULL OR e.created_at < $4)
   AND e.seq > $5
   AND NOT EXISTS (SELECT FROM it_relay.deliveries d WHERE d.event_id = e.event_id AND d.subscriber = $1)
 ORDER BY e.seq
 LIMIT $6;

-- name: backfill_chosen
-- As `backfill`, for the events its filter let through ($6) only; at most $7 of each type's events
-- come back (for the audit record).
WITH wanted AS (
    SELECT e.event_id, e.event_type, e.entity_key, e.seq
      FROM it_relay.events e
     WHERE e.event_id = ANY($6::uuid[]) AND e.status = 'routed' AND e.event_type = ANY($2::text[])
       AND e.created_at >= $3 AND ($4::timestamptz IS NULL OR e.created_at < $4)
       AND NOT EXISTS (SELECT FROM it_relay.deliveries d WHERE d.event_id = e.event_id AND d.subscriber = $1)
), added AS (
    INSERT INTO it_relay.deliveries (event_id, subscriber, event_type, entity_key, seq)
    SELECT event_id, $1, event_type, entity_key, seq FROM wanted WHERE NOT $5::bool
    ON CONFLICT (event_id, subscriber) DO NOTHING
    RETURNING event_id, event_type
)
SELECT event_type, count(*) AS n, (array_agg(event_id))[1] AS event_id, (array_agg(event_id))[1:$7] AS sample
  FROM (SELECT event_id, event_type FROM wanted WHERE $5::bool UNION ALL SELECT event_id, event_type FROM added) x
 GROUP BY event_type
 ORDER BY event_type;
