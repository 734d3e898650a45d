-- notiflow 0.1 — delivery operations: waking the dispatchers, dead-letter replay, circuit state.

CREATE FUNCTION notiflow.wake_dispatchers() RETURNS void
    AS 'MODULE_PATHNAME', 'wake_dispatchers' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION notiflow.wake_dispatchers() IS
    'Wakes the dispatchers when the current transaction commits (for deliveries queued by hand).';

-- The lease a delivery of a provider gets (ms): notiflow.lease_time, or the provider's longest
-- request (config timeout_ms, default 10 s, read as the dispatcher reads it: a number, rounded,
-- at least 1) and a margin for the claim before it and the record after it, whichever is longer.
-- The dispatcher's claim and finish_delivery(id, 'sending') use it: a lease that ran out under a
-- request still waiting for its answer let the next claim send the delivery again.
CREATE FUNCTION notiflow.provider_lease_ms(config jsonb, lease_ms integer, margin_ms integer)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN jsonb_typeof(config -> 'timeout_ms') = 'number'
                 AND greatest(round((config ->> 'timeout_ms')::numeric), 1) > lease_ms - margin_ms
            THEN least(greatest(round((config ->> 'timeout_ms')::numeric), 1) + margin_ms, 2147483647)::integer
            WHEN jsonb_typeof(config -> 'timeout_ms') IS DISTINCT FROM 'number' AND 10000 > lease_ms - margin_ms
            THEN 10000 + margin_ms
            ELSE lease_ms END;
COMMENT ON FUNCTION notiflow.provider_lease_ms(jsonb, integer, integer) IS
    'The lease (ms) of a delivery whose provider has this config: lease_ms, or the provider''s timeout_ms (default 10000) plus margin_ms when that is longer.';

-- Sends a dead-lettered delivery again, from its channel's first provider.
CREATE FUNCTION notiflow.replay_dead_letter(id bigint) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dl notiflow.dead_letters;
    d  notiflow.deliveries;
    first_provider text;
BEGIN
    SELECT * INTO dl FROM notiflow.dead_letters x WHERE x.id = replay_dead_letter.id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown dead letter %', id USING ERRCODE = '42704', DETAIL = 'id: no dead letter has this id';
    END IF;
    IF dl.source <> 'delivery' THEN
        RAISE EXCEPTION 'dead letter % comes from %, not from a delivery', id, dl.source
            USING ERRCODE = '55000', HINT = 'Kafka dead letters are replayed by producing the message again.';
    END IF;
    -- a dead letter is replayed once: a replay that fails again files a dead letter of its own
    IF dl.replayed_at IS NOT NULL THEN
        RAISE EXCEPTION 'dead letter % was replayed already', id
            USING ERRCODE = '55000', DETAIL = format('replayed_at: %s', dl.replayed_at),
                  HINT = 'Should the replay have failed again, replay the dead letter it filed.';
    END IF;
    SELECT * INTO d FROM notiflow.deliveries x WHERE x.id = dl.reference::bigint FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the delivery of dead letter % no longer exists', id USING ERRCODE = '55000';
    END IF;
    IF d.status <> 'failed' THEN
        RAISE EXCEPTION 'the delivery of dead letter % is %, not failed', id, d.status
            USING ERRCODE = '55000', DETAIL = format('status: %s', d.status);
    END IF;
    SELECT p.name INTO first_provider
      FROM notiflow.providers p
      LEFT JOIN notiflow.providers last ON last.name = d.provider
     WHERE p.channel = d.channel AND p.enabled
       AND (d.channel NOT IN ('push', 'chat') OR p.kind = last.kind OR last.kind IS NULL)
     ORDER BY p.priority, p.name LIMIT 1;
    IF first_provider IS NULL THEN
        RAISE EXCEPTION 'no enabled % provider to replay dead letter %', d.channel, id
            USING ERRCODE = '55000', HINT = 'Enable or add a provider for the channel first.';
    END IF;
    UPDATE notiflow.deliveries x
       SET status = 'queued', provider = first_provider, tried_providers = '{}', provider_attempts = 0,
           next_attempt_at = now(), lease_expires_at = NULL, finished_at = NULL, updated_at = now(),
           -- a late answer to an earlier attempt may have left its message id: the replay's own is
           -- the one its status events will carry
           provider_message_id = NULL, sent_at = NULL
     WHERE x.id = d.id;
    UPDATE notiflow.dead_letters x SET replayed_at = now() WHERE x.id = dl.id;
    PERFORM notiflow.wake_dispatchers();
    RETURN d.id;
END;
$$;
COMMENT ON FUNCTION notiflow.replay_dead_letter(bigint) IS
    'Queues a dead-lettered delivery again from its channel''s first enabled provider; returns the delivery id.';

CREATE VIEW notiflow.provider_circuit_state AS
SELECT p.name AS provider, p.channel, p.kind, p.enabled,
       coalesce(c.state, 'closed') AS state,
       coalesce(c.consecutive_failures, 0) AS consecutive_failures,
       c.opened_at, c.last_error, c.updated_at
  FROM notiflow.providers p
  LEFT JOIN notiflow.provider_circuits c ON c.provider = p.name;
COMMENT ON VIEW notiflow.provider_circuit_state IS 'Circuit breaker state of every provider.';
