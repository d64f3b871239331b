-- PostgreSQL's share of a delivery, cut where it writes index entries nobody needs.
--
-- A claim changes only unindexed columns (lease, attempts): with room left on its page it is a HOT
-- update and writes no index entry at all. Deliveries are inserted together per routed batch and
-- claimed soon after, so each page keeps room for its rows' next versions.
ALTER TABLE it_relay.deliveries SET (fillfactor = 50);

-- The attempts history is appended in time order and read only by time range (the last hour's
-- counts): a BRIN index answers that, and costs next to nothing per row where a b-tree costs an
-- insert into a growing index.
DROP INDEX it_relay.attempts_recent_idx;
CREATE INDEX attempts_recent_idx ON it_relay.attempts USING brin (attempted_at);
