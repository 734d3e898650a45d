-- Query plans: with 100,000 executions and deliveries loaded, the hot queries
-- (idempotency lookup, executions by workflow and time, due deliveries,
-- the next lease to run out, due executions, deliveries of an execution, the
-- attempts of a delivery (one B-tree for the table), status events by message id, the
-- steps of an execution, the dispatcher's claim with its generic plan) use
-- their indexes, and the claim is a HOT update.  ANALYZE leaves out the
-- documents and errors (no planner statistics on them).
\set ON_ERROR_STOP 1
\set QUIET 1
SET client_min_messages = warning;
BEGIN;
SELECT plan(31);

-- 100,000 executions over 20 workflows and 30 days (inserted in time order, as
-- they are in life), 2% still waiting
INSERT INTO notiflow.executions (workflow_key, workflow_version, status, payload, idempotency_key, wake_at, created_at)
SELECT 'wf' || (i % 20), 1,
       CASE WHEN i % 50 = 0 THEN 'waiting' ELSE 'completed' END,
       jsonb_build_object('order_id', i),
       CASE WHEN i % 2 = 0 THEN 'key-' || i END,
       CASE WHEN i % 50 = 0 THEN now() + (i % 7) * interval '1 hour' END,
       now() - interval '30 days' + i * interval '25 seconds'
  FROM generate_series(1, 100000) i;
-- one delivery per execution, 1% queued, 0.5% sending (half of those with their lease run out)
INSERT INTO notiflow.deliveries (execution_id, node_id, channel, provider, recipient, content, status,
                                 next_attempt_at, lease_expires_at, created_at, finished_at)
SELECT e.id, 'mail', 'email', 'mail', 'user' || e.id || '@example.com', '{"subject": "s"}',
       CASE WHEN e.id % 100 = 0 THEN 'queued' WHEN e.id % 200 = 1 THEN 'sending' ELSE 'sent' END,
       e.created_at, CASE WHEN e.id % 200 = 1 THEN now() + (e.id % 400 - 200) * interval '1 second' END,
       e.created_at, CASE WHEN e.id % 100 <> 0 AND e.id % 200 <> 1 THEN e.created_at END
  FROM notiflow.executions e;
ANALYZE notiflow.executions;
ANALYZE notiflow.deliveries;
SELECT is((SELECT count(*) FROM notiflow.deliveries), 100000::bigint, '100,000 deliveries loaded');
SELECT is((SELECT string_agg(tablename || '.' || attname, ', ' ORDER BY tablename, attname)
             FROM pg_stats WHERE schemaname = 'notiflow' AND tablename IN ('executions', 'deliveries')),
           'deliveries.attempts, deliveries.channel, deliveries.created_at, deliveries.execution_id, '
           'deliveries.finished_at, deliveries.id, deliveries.lease_expires_at, deliveries.next_attempt_at, '
           'deliveries.node_id, deliveries.provider, deliveries.provider_attempts, '
           'deliveries.provider_message_id, deliveries.recipient, deliveries.sent_at, deliveries.status, '
           'deliveries.tried_providers, deliveries.updated_at, executions.created_at, executions.finished_at, '
           'executions.id, executions.idempotency_key, executions.status, executions.subscriber_id, '
           'executions.updated_at, executions.wake_at, executions.workflow_key, executions.workflow_version',
           'ANALYZE keeps statistics on the columns queries filter on, none on documents and errors');

CREATE FUNCTION pg_temp.plan_of(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE line text; result text := '';
BEGIN
    FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || q LOOP
        result := result || line || E'\n';
    END LOOP;
    RETURN result;
END $$;

SELECT matches(pg_temp.plan_of($$SELECT id FROM notiflow.executions WHERE workflow_key = 'wf4' AND idempotency_key = 'key-4'$$),
               'Index (Only )?Scan using executions_idempotency',
               'idempotency lookup uses executions_idempotency');
SELECT matches(pg_temp.plan_of($$SELECT id, status FROM notiflow.executions
                                 WHERE workflow_key = 'wf3' AND created_at >= now() - interval '1 day'
                                 ORDER BY created_at DESC LIMIT 50$$),
               'Index Scan Backward using executions_workflow_created',
               'executions by workflow and time use executions_workflow_created');
SELECT matches(pg_temp.plan_of($$SELECT id FROM notiflow.deliveries
                                 WHERE finished_at IS NULL AND next_attempt_at <= now()
                                   AND (status = 'queued' OR lease_expires_at < now())
                                 ORDER BY next_attempt_at LIMIT 100 FOR UPDATE SKIP LOCKED$$),
               'Index Scan using deliveries_due',
               'due deliveries and expired leases use the partial index deliveries_due');
SELECT matches(pg_temp.plan_of($$SELECT min(lease_expires_at) FROM notiflow.deliveries
                                 WHERE finished_at IS NULL AND next_attempt_at <= now() AND status = 'sending'$$),
               'Index Scan using deliveries_due|Bitmap Index Scan on deliveries_due',
               'the next lease to run out is read through deliveries_due');
SELECT matches(pg_temp.plan_of($$SELECT id FROM notiflow.executions
                                 WHERE status = 'waiting' AND wake_at <= now() ORDER BY wake_at LIMIT 100$$),
               'Index Scan using executions_due|Bitmap Index Scan on executions_due',
               'due executions use the partial index executions_due');
SELECT matches(pg_temp.plan_of($$SELECT * FROM notiflow.deliveries WHERE execution_id = 4242$$),
               'Index Scan using deliveries_execution|Bitmap Index Scan on deliveries_execution',
               'deliveries of an execution use deliveries_execution');
-- two attempts for each of 20,000 deliveries
INSERT INTO notiflow.delivery_attempts (delivery_id, attempt, provider, status_code, latency_ms, error_class)
SELECT d.id, a, 'mail', CASE a WHEN 1 THEN 503 ELSE 202 END, 1.5, CASE a WHEN 1 THEN 'retry' ELSE 'sent' END
  FROM notiflow.deliveries d, generate_series(1, 2) a WHERE d.id <= 20000;
ANALYZE notiflow.delivery_attempts;
SELECT matches(pg_temp.plan_of($$SELECT * FROM notiflow_api.delivery_attempts WHERE delivery_id = 4242 ORDER BY id$$),
               '^Index Scan using delivery_attempts_pkey',
               'the attempts of a delivery, in order, are read through delivery_attempts_pkey');
SELECT doesnt_match(pg_temp.plan_of($$SELECT * FROM notiflow_api.delivery_attempts WHERE delivery_id = 4242 ORDER BY id$$),
                    'Sort', 'and need no sort');
SELECT is((SELECT array_agg(am.amname::text ORDER BY am.amname)
             FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
            WHERE i.indrelid = 'notiflow.delivery_attempts'::regclass),
          ARRAY['brin', 'btree'], 'recording an attempt maintains one B-tree (and a BRIN)');
SELECT matches(pg_temp.plan_of($$SELECT count(*) FROM notiflow.executions WHERE created_at < now() - interval '27 days'$$),
               'executions_created',
               'retention by age uses executions_created (BRIN: rows arrive in time order)');

SELECT matches(pg_temp.plan_of($$SELECT * FROM notiflow.execution_steps WHERE execution_id = 4242$$),
               'Index Scan using executions_pkey',
               'the steps of an execution (a view over executions.steps) are read through executions_pkey');

-- the claim as the dispatcher runs it (src/delivery_repo.c, claim_stmt): always its generic
-- plan, which must fetch the claimed rows by the versions it locked whatever it guesses
-- for LIMIT $1
SET LOCAL plan_cache_mode = force_generic_plan;
PREPARE claim(int, int, timestamptz, int8, int) AS
WITH slow AS MATERIALIZED (SELECT name, notiflow.provider_lease_ms(config, $2, $5) AS ms
                             FROM notiflow.providers WHERE notiflow.provider_lease_ms(config, $2, $5) > $2)
UPDATE notiflow.deliveries d
   SET status = 'sending',
       lease_expires_at = clock_timestamp()
                          + coalesce((SELECT ms FROM slow WHERE name = d.provider), $2) * interval '1 millisecond',
       updated_at = now()
 WHERE d.ctid = ANY (ARRAY(
         SELECT ctid FROM notiflow.deliveries
          WHERE finished_at IS NULL AND next_attempt_at <= now()
            AND (next_attempt_at, id) > ($3, $4)
            AND (status = 'queued' OR lease_expires_at < now())
          ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED))
 RETURNING d.id, d.execution_id, d.channel, d.provider, d.recipient, d.content, d.attempts,
           d.provider_attempts, d.ctid, d.next_attempt_at;
SELECT matches(pg_temp.plan_of($$EXECUTE claim(200, 60000, '-infinity', 0, 5000)$$), 'Index Scan using deliveries_due',
               'the claim''s generic plan finds due deliveries through deliveries_due');
SELECT matches(pg_temp.plan_of($$EXECUTE claim(200, 60000, '-infinity', 0, 5000)$$),
               'Index Cond: .*ROW\(next_attempt_at, id\) > ROW\(\$3, \$4\)',
               'starting at the queue position it is given');
SELECT doesnt_match(pg_temp.plan_of($$EXECUTE claim(200, 60000, '-infinity', 0, 5000)$$), 'Sort',
                    'in the index''s order');
SELECT matches(pg_temp.plan_of($$EXECUTE claim(200, 60000, '-infinity', 0, 5000)$$), 'Tid Scan on deliveries',
               'and fetches them by the row versions it locked');
SELECT doesnt_match(pg_temp.plan_of($$EXECUTE claim(200, 60000, '-infinity', 0, 5000)$$), 'Seq Scan on deliveries|Hash Join',
                    'not by a join over the table');

-- marking sent (delivery_repo.c, mark_sent_stmt) and writing back resumed executions
-- (execution_repo.c, update_many_stmt) fetch their rows by version too: a TID scan for
-- each row of the values, not a join over the table or over the values
PREPARE mark_sent(int8[], text[], tid[]) AS
UPDATE notiflow.deliveries d
   SET status = 'sent', attempts = d.attempts + 1, provider_attempts = d.provider_attempts + 1,
       provider_message_id = coalesce(d.provider_message_id, t.m), updated_at = now(),
       lease_expires_at = NULL, sent_at = coalesce(d.sent_at, now()),
       finished_at = coalesce(d.finished_at, now())
  FROM unnest($1::int8[], $2::text[], $3::tid[]) AS t(id, m, v)
 WHERE d.ctid = t.v AND d.id = t.id AND d.status = 'sending'
 RETURNING d.id;
SELECT matches(pg_temp.plan_of($$EXECUTE mark_sent('{1}', '{m}', '{"(0,1)"}')$$), 'TID Cond: \(ctid = t\.v\)',
               'marking sent fetches the deliveries by the versions their claims left');
SELECT doesnt_match(pg_temp.plan_of($$EXECUTE mark_sent('{1}', '{m}', '{"(0,1)"}')$$), 'Seq Scan|Index|Join Filter|Hash',
                    'with no scan of the table or an index');
PREPARE update_many(int8[], text[], jsonb[], text[], timestamptz[], jsonb[], tid[]) AS
UPDATE notiflow.executions x
   SET status = t.s, context = t.c, error = t.err, wake_at = t.w, steps = t.st, updated_at = now()
  FROM unnest($1::int8[], $2::text[], $3::jsonb[], $4::text[], $5::timestamptz[], $6::jsonb[],
              $7::tid[]) AS t(id, s, c, err, w, st, v)
 WHERE x.ctid = t.v AND x.id = t.id;
SELECT matches(pg_temp.plan_of($$EXECUTE update_many('{1}', '{completed}', '{"{}"}', '{NULL}', '{NULL}', '{"[]"}', '{"(0,1)"}')$$),
               'TID Cond: \(ctid = t\.v\)', 'resumed executions are written back by the versions locked');
SELECT doesnt_match(pg_temp.plan_of($$EXECUTE update_many('{1}', '{completed}', '{"{}"}', '{NULL}', '{NULL}', '{"[]"}', '{"(0,1)"}')$$),
                    'Seq Scan|Index|Join Filter|Hash', 'with no scan of the table or an index');

-- the claim takes every queued delivery and every run-out lease, leaves the other
-- leases alone, and changes no indexed column: every claimed row is a HOT update
CREATE TEMP TABLE leases_left AS
SELECT id, lease_expires_at FROM notiflow.deliveries WHERE status = 'sending' AND lease_expires_at >= now();
SELECT count(*) FILTER (WHERE status = 'queued' OR lease_expires_at < now()) AS claimable
  FROM notiflow.deliveries WHERE finished_at IS NULL \gset
SELECT n_tup_upd AS upd0, n_tup_hot_upd AS hot0 FROM pg_stat_xact_user_tables
 WHERE relid = 'notiflow.deliveries'::regclass \gset
EXECUTE claim(100000, 60000, '-infinity', 0, 5000) \g /dev/null
SELECT is((SELECT n_tup_upd - :upd0 FROM pg_stat_xact_user_tables WHERE relid = 'notiflow.deliveries'::regclass),
          :claimable::bigint, 'the claim takes the queued deliveries and those whose lease ran out');
SELECT is((SELECT n_tup_hot_upd - :hot0 FROM pg_stat_xact_user_tables WHERE relid = 'notiflow.deliveries'::regclass),
          :claimable::bigint, 'every claim is a HOT update');
SELECT is((SELECT count(*)::int FROM leases_left l JOIN notiflow.deliveries d USING (id)
            WHERE d.lease_expires_at IS DISTINCT FROM l.lease_expires_at), 0,
          'a lease that has not run out is left alone');

-- the claim returns the version it left, and marking sent finds the rows by it
-- (the dispatcher's fast path; a row not found is recorded by id, more slowly)
UPDATE notiflow.deliveries SET status = 'queued', lease_expires_at = NULL
 WHERE id IN (SELECT id FROM notiflow.deliveries WHERE status = 'sending' ORDER BY id LIMIT 50);
CREATE TEMP TABLE claimed AS
WITH c AS (
    UPDATE notiflow.deliveries d
       SET status = 'sending', lease_expires_at = clock_timestamp() + interval '1 minute', updated_at = now()
     WHERE d.ctid = ANY (ARRAY(
             SELECT ctid FROM notiflow.deliveries
              WHERE finished_at IS NULL AND next_attempt_at <= now()
                AND (status = 'queued' OR lease_expires_at < now())
              ORDER BY next_attempt_at LIMIT 50 FOR UPDATE SKIP LOCKED))
    RETURNING d.id, d.ctid AS version)
SELECT * FROM c;
SELECT is((SELECT count(*)::int FROM claimed c JOIN notiflow.deliveries d ON d.id = c.id AND d.ctid = c.version), 50,
          'the claim returns the row versions it left');
SELECT is((SELECT count(*)::int FROM (
             SELECT * FROM notiflow.deliveries d
               JOIN unnest((SELECT array_agg(id) FROM claimed), (SELECT array_agg('m' || id) FROM claimed),
                           (SELECT array_agg(version) FROM claimed)) AS t(id, m, v)
                 ON d.ctid = t.v AND d.id = t.id AND d.status = 'sending') s), 50,
          'marking sent matches every row by the version the claim returned');

-- a claim after a queue position takes the deliveries after it, in the queue's order
UPDATE notiflow.deliveries SET status = 'queued', lease_expires_at = NULL WHERE status = 'sending';
CREATE TEMP TABLE due_order AS
SELECT row_number() OVER (ORDER BY next_attempt_at, id) AS n, id, next_attempt_at
  FROM notiflow.deliveries WHERE finished_at IS NULL AND next_attempt_at <= now();
SELECT next_attempt_at AS front_at, id AS front_id FROM due_order WHERE n = 10 \gset
EXECUTE claim(5, 60000, :'front_at', :front_id, 5000) \g /dev/null
SELECT is((SELECT array_agg(o.n ORDER BY o.n) FROM notiflow.deliveries d JOIN due_order o USING (id)
            WHERE d.status = 'sending'),
          '{11,12,13,14,15}'::bigint[],
          'a claim after a queue position takes the next deliveries after it, none before');

-- the lease a claim gives: notiflow.lease_time ($2), or, for a provider whose timeout_ms comes
-- within the margin ($5) of it, timeout_ms and the margin (a slow answer is not claimed again)
SELECT is(ARRAY[notiflow.provider_lease_ms('{}', 60000, 5000),
                notiflow.provider_lease_ms('{"timeout_ms": 55000}', 60000, 5000),
                notiflow.provider_lease_ms('{"timeout_ms": 55001}', 60000, 5000),
                notiflow.provider_lease_ms('{"timeout_ms": 90000}', 60000, 5000),
                notiflow.provider_lease_ms('{}', 3000, 5000),
                notiflow.provider_lease_ms('{"timeout_ms": "90000"}', 3000, 5000),
                notiflow.provider_lease_ms('{"timeout_ms": 2.5}', 3000, 5000),
                notiflow.provider_lease_ms('{"timeout_ms": -7}', 3000, 5000),
                notiflow.provider_lease_ms('{"timeout_ms": 1e400}', 60000, 5000)],
          ARRAY[60000, 60000, 60001, 95000, 15000, 15000, 5003, 5001, 2147483647],
          'provider_lease_ms: the lease, or timeout_ms (default 10000, a number, rounded, at least 1) and the margin');
INSERT INTO notiflow.providers (name, channel, kind, config) VALUES ('mail', 'email', 'sendgrid', '{"timeout_ms": 90000}');
UPDATE notiflow.deliveries SET status = 'queued', lease_expires_at = NULL WHERE status = 'sending';
EXECUTE claim(5, 60000, '-infinity', 0, 5000) \g /dev/null
SELECT ok((SELECT bool_and(lease_expires_at BETWEEN clock_timestamp() + interval '90 seconds'
                                               AND clock_timestamp() + interval '95 seconds')
             FROM notiflow.deliveries WHERE status = 'sending'),
          'a claim gives the deliveries of a provider with timeout_ms 90 s a lease of 95 s');

-- a provider's status event finds its deliveries by message id (record_delivery_event)
UPDATE notiflow.deliveries SET provider_message_id = 'msg-' || id WHERE status = 'sent';
ANALYZE notiflow.deliveries;
SELECT matches(pg_temp.plan_of($$SELECT d.id FROM notiflow.deliveries d
                                 WHERE d.provider = 'mail' AND d.provider_message_id IS NOT NULL
                                   AND d.provider_message_id = ANY ('{msg-4242,msg-77}'::text[]) ORDER BY d.id$$),
               'Index Scan using deliveries_provider_message|Bitmap Index Scan on deliveries_provider_message',
               'status events find deliveries by message id through deliveries_provider_message');

SELECT * FROM finish();
ROLLBACK;
