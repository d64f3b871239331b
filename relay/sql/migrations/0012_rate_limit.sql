-- A rate limit shared by every instance (subscribers.NAME.rate_limit_per_s; relay/ratelimit.py).
--
-- Each rate-limited subscriber has one row: `next_slot`, the earliest time its next request may
-- start. A token is a time slot; take_tokens() hands out consecutive slots 1/rate apart from
-- max(next_slot, now), at most `horizon` ahead, and moves next_slot past them, in one locked
-- statement. An idle bucket saves nothing up (no burst after a pause); a 429 with Retry-After
-- moves next_slot to the end of the wait, which holds the subscriber for every instance.
CREATE TABLE it_relay.rate_limits (
    subscriber text PRIMARY KEY,
    next_slot  timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Tokens for up to p_want requests at p_rate per second. granted = 0: none before the horizon
-- (wait_s says when to ask again). first_in_s: the first slot, from now_s (this server's clock at
-- the grant, epoch seconds); spacing_s: between slots; next_slot: the bucket after this grant
-- (give unused tokens back while it is unchanged).
-- The clock is read after the row is locked, so a wait for the lock never hands out past slots.
CREATE FUNCTION it_relay.take_tokens(
    p_subscriber text, p_want integer, p_rate double precision, p_horizon_s double precision,
    OUT granted integer, OUT first_in_s double precision, OUT spacing_s double precision,
    OUT wait_s double precision, OUT next_slot timestamptz, OUT now_s double precision)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_slot  timestamptz;
    v_now   timestamptz;
    v_start timestamptz;
    v_ahead double precision;
BEGIN
    SELECT r.next_slot INTO v_slot FROM it_relay.rate_limits r WHERE r.subscriber = p_subscriber FOR UPDATE;
    IF NOT FOUND THEN
        -- The subscriber's first grant: its row, made once whoever comes first.
        INSERT INTO it_relay.rate_limits (subscriber) VALUES (p_subscriber) ON CONFLICT (subscriber) DO NOTHING;
        SELECT r.next_slot INTO v_slot FROM it_relay.rate_limits r WHERE r.subscriber = p_subscriber FOR UPDATE;
    END IF;
    v_now := clock_timestamp();
    now_s := extract(epoch FROM v_now);
    v_start := greatest(v_slot, v_now);
    v_ahead := extract(epoch FROM (v_now - v_start)) + p_horizon_s;
    spacing_s := 1.0 / p_rate;
    IF p_want <= 0 OR v_ahead < 0 THEN
        granted := 0;
        first_in_s := 0;
        wait_s := -v_ahead;
        next_slot := v_slot;
        RETURN;
    END IF;
    granted := least(p_want, floor(v_ahead * p_rate)::integer + 1);
    first_in_s := extract(epoch FROM (v_start - v_now));
    wait_s := 0;
    next_slot := v_start + make_interval(secs => granted / p_rate);
    UPDATE it_relay.rate_limits r SET next_slot = take_tokens.next_slot WHERE r.subscriber = p_subscriber;
END
$$;
