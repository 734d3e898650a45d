-- Operations: daily statistics against hand-computed numbers, retention into
-- notiflow_archive, alerts raised, deduplicated and resolved, Prometheus
-- metrics, health and the monitoring views, scheduling without pg_cron.
-- Rows are inserted directly with fixed timestamps and ids far above the
-- other tests'.
\set VERBOSITY default
\set SHOW_CONTEXT never
SET client_min_messages = warning;
SET timezone = 'UTC';
SET datestyle = 'ISO';

-- the library is loaded (it defines the notiflow.* settings) but not preloaded
SELECT notiflow.workers_preloaded() AS preloaded;

-- 1. daily statistics -----------------------------------------------------------
-- ops_a: E1 completed, E2 failed, E3 waiting on 2024-03-10 (UTC), E4 on 03-09;
-- ops_b: E5 cancelled on 03-10, E6 on 03-11.
INSERT INTO notiflow.executions (id, workflow_key, workflow_version, status, payload, created_at) VALUES
    (9100001, 'ops_a', 1, 'completed', '{}', '2024-03-10 08:00:00+00'),
    (9100002, 'ops_a', 1, 'failed',    '{}', '2024-03-10 10:00:00+00'),
    (9100003, 'ops_a', 1, 'waiting',   '{}', '2024-03-10 23:30:00+00'),
    (9100004, 'ops_a', 1, 'completed', '{}', '2024-03-09 23:59:00+00'),
    (9100005, 'ops_b', 1, 'cancelled', '{}', '2024-03-10 12:00:00+00'),
    (9100006, 'ops_b', 1, 'completed', '{}', '2024-03-11 00:00:00+00');
UPDATE notiflow.executions
   SET steps = '[[1, "start", "trigger", "completed", null, null, null, 0, null]]'
 WHERE id BETWEEN 9100001 AND 9100006;
-- D1 sent after 1.5 s, D2 delivered after 0.5 s, D3 fell back from ops-sg to ops-mg and failed,
-- D4 queued, D5 cancelled, D6 created on 03-09 and sent on 03-10, D7 delivered after 2.5 s
INSERT INTO notiflow.deliveries (id, execution_id, node_id, channel, provider, recipient, content, status,
                                 tried_providers, created_at, sent_at, finished_at) VALUES
    (9200001, 9100001, 'mail',  'email', 'ops-sg', 'a@example.com', '{}', 'sent',      '{}',       '2024-03-10 08:00:00+00', '2024-03-10 08:00:01.5+00', '2024-03-10 08:00:01.5+00'),
    (9200002, 9100001, 'text',  'sms',   'ops-tw', '+15550000001',  '{}', 'delivered', '{}',       '2024-03-10 08:00:00+00', '2024-03-10 08:00:00.5+00', '2024-03-10 08:00:00.5+00'),
    (9200003, 9100002, 'mail',  'email', 'ops-mg', 'b@example.com', '{}', 'failed',    '{ops-sg}', '2024-03-10 10:00:00+00', NULL, '2024-03-10 10:00:05+00'),
    (9200004, 9100003, 'mail',  'email', 'ops-sg', 'c@example.com', '{}', 'queued',    '{}',       '2024-03-10 23:30:00+00', NULL, NULL),
    (9200005, 9100005, 'mail',  'email', 'ops-sg', 'd@example.com', '{}', 'cancelled', '{}',       '2024-03-10 12:00:00+00', NULL, '2024-03-10 12:00:00+00'),
    (9200006, 9100004, 'mail',  'email', 'ops-sg', 'e@example.com', '{}', 'sent',      '{}',       '2024-03-09 23:59:00+00', '2024-03-10 00:00:30+00', '2024-03-10 00:00:30+00'),
    (9200007, 9100003, 'mail2', 'email', 'ops-sg', 'c@example.com', '{}', 'delivered', '{}',       '2024-03-10 23:30:00+00', '2024-03-10 23:30:02.5+00', '2024-03-10 23:30:02.5+00'),
    -- a test message (send_test: execution 0 lists the channel's other providers as tried): no fallback from ops-mg
    (9200008, 0,       'send_test', 'email', 'ops-sg', 't@example.com', '{}', 'sent', '{ops-mg}', '2024-03-10 09:00:00+00', '2024-03-10 09:00:00.2+00', '2024-03-10 09:00:00.2+00');
UPDATE notiflow.deliveries SET left_providers = tried_providers WHERE id = 9200003;
INSERT INTO notiflow.delivery_attempts (id, delivery_id, attempt, provider, status_code, latency_ms, error_class, created_at) VALUES
    (9300001, 9200001, 1, 'ops-sg', 503,  300, 'retry',        '2024-03-10 08:00:00.5+00'),
    (9300002, 9200001, 2, 'ops-sg', 202,  100, 'sent',         '2024-03-10 08:00:01.4+00'),
    (9300003, 9200003, 1, 'ops-sg', 400,  200, 'permanent',    '2024-03-10 10:00:00.2+00'),
    (9300004, 9200003, 1, 'ops-mg', 500,  400, 'retry',        '2024-03-10 10:00:01+00'),
    (9300005, 9200003, 2, 'ops-mg', 500,  600, 'retry',        '2024-03-10 10:00:05+00'),
    (9300006, 9200005, 1, 'ops-sg', NULL,   0, 'circuit_open', '2024-03-10 12:00:00+00'),
    (9300007, 9200006, 1, 'ops-sg', 202,  250, 'sent',         '2024-03-10 00:00:29+00'),
    (9300008, 9200002, 1, 'ops-tw', 201,   50, 'sent',         '2024-03-10 08:00:00.4+00'),
    (9300009, 9200007, 1, 'ops-sg', 202,  150, 'sent',         '2024-03-10 23:30:02+00'),
    (9300010, 9200008, 1, 'ops-sg', 202,   80, 'sent',         '2024-03-10 09:00:00.1+00'),
    -- refused before any request (the provider was gone): counted, not timed
    (9300011, 9200003, 1, 'ops-gone', NULL, 0, 'permanent',    '2024-03-10 10:00:00.1+00');
INSERT INTO notiflow.delivery_events (delivery_id, provider, provider_event, event, status_applied, raw, received_at)
VALUES (9200002, 'ops-tw', 'delivered', 'delivered', 'delivered', '{}', '2024-03-10 08:00:03+00');
INSERT INTO notiflow.dead_letters (id, source, reference, details, error, created_at) VALUES
    (9400001, 'delivery', '9200003',
     '{"delivery_id": 9200003, "execution_id": 9100002, "channel": "email", "providers": ["ops-sg", "ops-mg"]}',
     'gave up after 2 attempts: HTTP 500', '2024-03-10 10:00:06+00'),
    (9400002, 'kafka', 'orders/0/17', '{"topic": "orders"}', 'invalid JSON', '2024-03-10 15:00:00+00'),
    (9400003, 'kafka', 'orders/0/18', '{"topic": "orders"}', 'invalid JSON', '2024-03-11 15:00:00+00');

SELECT notiflow.aggregate_daily('2024-03-09') AS rows_03_09, notiflow.aggregate_daily('2024-03-10') AS rows_03_10,
       notiflow.aggregate_daily('2024-03-11') AS rows_03_11;
-- executions (rows with channel and provider '') and dead letters
SELECT day, workflow_key, channel, provider, executions, executions_completed AS completed, executions_failed AS failed,
       executions_cancelled AS cancelled, executions_active AS active, dead_letters
  FROM notiflow.daily_stats WHERE day BETWEEN '2024-03-09' AND '2024-03-11' ORDER BY 1, 2, 3, 4;
-- deliveries by the provider holding them; send latency = created → sent
SELECT day, workflow_key, channel, provider, deliveries, deliveries_pending AS pending, deliveries_sent AS sent,
       deliveries_delivered AS delivered, deliveries_failed AS failed, deliveries_cancelled AS cancelled,
       round(send_latency_p50_ms::numeric, 3) AS send_p50, round(send_latency_p95_ms::numeric, 3) AS send_p95,
       round(send_latency_p99_ms::numeric, 3) AS send_p99
  FROM notiflow.daily_stats WHERE day BETWEEN '2024-03-09' AND '2024-03-11' AND channel <> '' ORDER BY 1, 2, 3, 4;
-- attempts by the provider tried and the day they were made; fallbacks by the provider left
SELECT day, workflow_key, channel, provider, attempts, attempt_results, retries, fallbacks, timed_attempts AS timed,
       attempt_latency_sum_ms AS latency_sum, round(attempt_latency_p50_ms::numeric, 3) AS p50,
       round(attempt_latency_p95_ms::numeric, 3) AS p95, round(attempt_latency_p99_ms::numeric, 3) AS p99
  FROM notiflow.daily_stats WHERE day BETWEEN '2024-03-09' AND '2024-03-11' AND channel <> '' ORDER BY 1, 2, 3, 4;

-- running a day again gives the same rows (but for aggregated_at)
CREATE TEMP TABLE stats_before AS
SELECT to_jsonb(s) - 'aggregated_at' AS row FROM notiflow.daily_stats s WHERE s.day BETWEEN '2024-03-09' AND '2024-03-11';
CREATE VIEW pg_temp.stats_now AS
SELECT to_jsonb(s) - 'aggregated_at' AS row FROM notiflow.daily_stats s WHERE s.day BETWEEN '2024-03-09' AND '2024-03-11';
SELECT notiflow.aggregate_daily('2024-03-10') AS rows_again;
SELECT count(*) AS differences
  FROM ((SELECT row FROM stats_before EXCEPT ALL SELECT row FROM stats_now)
        UNION ALL (SELECT row FROM stats_now EXCEPT ALL SELECT row FROM stats_before)) d;
SELECT notiflow.aggregate_daily(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE

-- 2. retention --------------------------------------------------------------------
-- 240 finished executions one day apart over 8 months around the cutoff (now - 6 months):
-- 60 older, 180 newer; each with a step, a wait, a delivery, two attempts and an event;
-- dead letters for 10 old and 5 new deliveries; an alert resolved 7 months ago and one resolved now.
INSERT INTO notiflow.executions (id, workflow_key, workflow_version, status, payload, created_at, finished_at)
SELECT 9500000 + n, 'ops_gen', 1, 'completed', jsonb_build_object('n', n), t, t
  FROM generate_series(1, 240) n,
       LATERAL (SELECT now() - interval '6 months' + (n - 61 + 0.5) * interval '1 day' AS t) x;
UPDATE notiflow.executions
   SET steps = '[[1, "start", "trigger", "completed", null, null, null, 0, 0]]'
 WHERE workflow_key = 'ops_gen';
INSERT INTO notiflow.execution_waits (execution_id, node_id, correlation_key, events, status, created_at, finished_at)
SELECT id, 'wait', 'order-' || id, '{paid}', 'completed', created_at, created_at
  FROM notiflow.executions WHERE workflow_key = 'ops_gen';
INSERT INTO notiflow.deliveries (id, execution_id, node_id, channel, provider, recipient, content, status, created_at, sent_at, finished_at)
SELECT id + 100000, id, 'mail', 'email', 'ops-gen', 'gen@example.com', '{}', 'sent', created_at, created_at, created_at
  FROM notiflow.executions WHERE workflow_key = 'ops_gen';
INSERT INTO notiflow.delivery_attempts (id, delivery_id, attempt, provider, status_code, latency_ms, error_class, created_at)
SELECT d.id + 100000 + 1000 * a, d.id, a, 'ops-gen', CASE a WHEN 1 THEN 503 ELSE 202 END, 100 * a,
       CASE a WHEN 1 THEN 'retry' ELSE 'sent' END, d.created_at
  FROM notiflow.deliveries d, generate_series(1, 2) a WHERE d.provider = 'ops-gen';
INSERT INTO notiflow.delivery_events (delivery_id, provider, provider_event, event, raw, received_at)
SELECT id, 'ops-gen', 'open', 'opened', '{}', created_at FROM notiflow.deliveries WHERE provider = 'ops-gen';
INSERT INTO notiflow.dead_letters (id, source, reference, details, error, created_at)
SELECT d.id + 300000, 'delivery', d.id::text,
       jsonb_build_object('delivery_id', d.id, 'execution_id', d.execution_id, 'channel', 'email', 'providers', '["ops-gen"]'::jsonb),
       'test', d.created_at
  FROM notiflow.deliveries d
 WHERE d.provider = 'ops-gen' AND (d.id - 9600000) IN (1, 7, 13, 19, 25, 31, 37, 43, 49, 55, 61, 91, 121, 151, 181);
INSERT INTO notiflow.alerts (kind, subject, severity, raised_at, last_seen_at, resolved_at) VALUES
    ('circuit_open', 'ops-old', 'critical', now() - interval '7 months', now() - interval '7 months', now() - interval '7 months'),
    ('circuit_open', 'ops-recent', 'critical', now() - interval '1 day', now() - interval '1 day', now() - interval '1 hour');
-- test messages (send_test: execution 0), an old one and a recent one; a recent dead letter of an old delivery
INSERT INTO notiflow.deliveries (id, execution_id, node_id, channel, provider, recipient, content, status, created_at, sent_at, finished_at)
SELECT id, 0, 'send_test', 'email', 'ops-test', 'test@example.com', '{}', 'sent', t, t, t
  FROM (VALUES (9700001, now() - interval '7 months'), (9700002, now() - interval '1 day')) v(id, t);
-- and more old ones than four batches of 25 take: batches go on while test messages remain
INSERT INTO notiflow.deliveries (id, execution_id, node_id, channel, provider, recipient, content, status, created_at, sent_at, finished_at)
SELECT 9710000 + i, 0, 'send_test', 'email', 'ops-test', 'test@example.com', '{}', 'sent', t, t, t
  FROM generate_series(1, 110) i, LATERAL (SELECT date_trunc('day', now() - interval '7 months') + interval '6 hours' - i * interval '1 minute' AS t) x;  -- one day at any hour
INSERT INTO notiflow.dead_letters (id, source, reference, details, error, created_at)
VALUES (9390001, 'delivery', '9600001', '{"delivery_id": 9600001}', 'failed late', now() - interval '1 day');

-- the statistics of those days, before retention
SELECT sum(notiflow.aggregate_daily(d)) AS rows_written
  FROM (SELECT DISTINCT (created_at AT TIME ZONE 'UTC')::date AS d FROM notiflow.executions WHERE workflow_key = 'ops_gen') x;
CREATE TEMP TABLE gen_stats_before AS
SELECT sum(executions) AS executions, sum(deliveries) AS deliveries, sum(deliveries_sent) AS sent, sum(attempts) AS attempts,
       sum(retries) AS retries, sum(dead_letters) AS dead_letters
  FROM notiflow.daily_stats WHERE workflow_key = 'ops_gen';
SELECT * FROM gen_stats_before;

-- an execution created 7 months ago that finished an hour ago (a long delay) is not old yet
INSERT INTO notiflow.executions (id, workflow_key, workflow_version, status, payload, created_at, finished_at)
VALUES (9501000, 'ops_late', 1, 'completed', '{}', now() - interval '7 months', now() - interval '1 hour');
-- its delivery failed 7 months ago: the dead letter stays with the live delivery (it can still be replayed)
INSERT INTO notiflow.deliveries (id, execution_id, node_id, channel, provider, recipient, content, status, created_at, finished_at)
VALUES (9601000, 9501000, 'mail', 'email', 'ops-late', 'late@example.com', '{}', 'failed',
        now() - interval '7 months', now() - interval '7 months');
INSERT INTO notiflow.dead_letters (id, source, reference, details, error, created_at)
VALUES (9391000, 'delivery', '9601000',
        '{"delivery_id": 9601000, "execution_id": 9501000, "channel": "email", "providers": ["ops-late"]}', 'failed long ago', now() - interval '7 months');
-- batches of at most 25 rows of each kind: the 60 old executions and 5 of the fixed set (E3 still waits)
-- in three, then two more for the 111 old test messages
-- a retention without a unit is seconds: refused, nothing moved
SET notiflow.retention = '180';
CALL notiflow.apply_retention();
\echo SQLSTATE :LAST_ERROR_SQLSTATE
RESET notiflow.retention;
SET client_min_messages = notice;
CALL notiflow.apply_retention(batch_size => 25);
CALL notiflow.apply_retention();
SET client_min_messages = warning;
SELECT id IN (SELECT id FROM notiflow.executions) AS late_finisher_live FROM notiflow.executions_all WHERE id = 9501000;
SELECT id IN (SELECT id FROM notiflow.dead_letters) AS live_delivery_dead_letter_live FROM notiflow.dead_letters_all WHERE id = 9391000;

-- children went with their executions, to the archive
SELECT 'executions' AS relation,
       (SELECT count(*) FROM notiflow.executions WHERE workflow_key = 'ops_gen') AS live,
       (SELECT count(*) FROM notiflow_archive.executions WHERE workflow_key = 'ops_gen') AS archived,
       (SELECT count(*) FROM notiflow.executions_all WHERE workflow_key = 'ops_gen') AS all
UNION ALL
SELECT 'execution_steps',
       (SELECT count(*) FROM notiflow.execution_steps WHERE execution_id BETWEEN 9500001 AND 9500240),
       (SELECT count(*) FROM notiflow_archive.executions e, jsonb_array_elements(e.steps)
         WHERE e.id BETWEEN 9500001 AND 9500240),
       (SELECT count(*) FROM notiflow.execution_steps_all WHERE execution_id BETWEEN 9500001 AND 9500240)
UNION ALL
SELECT 'execution_waits',
       (SELECT count(*) FROM notiflow.execution_waits WHERE execution_id BETWEEN 9500001 AND 9500240),
       (SELECT count(*) FROM notiflow_archive.execution_waits WHERE execution_id BETWEEN 9500001 AND 9500240),
       (SELECT count(*) FROM notiflow.execution_waits_all WHERE execution_id BETWEEN 9500001 AND 9500240)
UNION ALL
SELECT 'deliveries',
       (SELECT count(*) FROM notiflow.deliveries WHERE provider = 'ops-gen'),
       (SELECT count(*) FROM notiflow_archive.deliveries WHERE provider = 'ops-gen'),
       (SELECT count(*) FROM notiflow.deliveries_all WHERE provider = 'ops-gen')
UNION ALL
SELECT 'delivery_attempts',
       (SELECT count(*) FROM notiflow.delivery_attempts WHERE provider = 'ops-gen'),
       (SELECT count(*) FROM notiflow_archive.delivery_attempts WHERE provider = 'ops-gen'),
       (SELECT count(*) FROM notiflow.delivery_attempts_all WHERE provider = 'ops-gen')
UNION ALL
SELECT 'delivery_events',
       (SELECT count(*) FROM notiflow.delivery_events WHERE provider = 'ops-gen'),
       (SELECT count(*) FROM notiflow_archive.delivery_events WHERE provider = 'ops-gen'),
       (SELECT count(*) FROM notiflow.delivery_events_all WHERE provider = 'ops-gen')
UNION ALL
SELECT 'dead_letters',
       (SELECT count(*) FROM notiflow.dead_letters WHERE id BETWEEN 9400001 AND 9999999),
       (SELECT count(*) FROM notiflow_archive.dead_letters WHERE id BETWEEN 9400001 AND 9999999),
       (SELECT count(*) FROM notiflow.dead_letters_all WHERE id BETWEEN 9400001 AND 9999999)
UNION ALL
SELECT 'alerts',
       (SELECT count(*) FROM notiflow.alerts WHERE subject IN ('ops-old', 'ops-recent')),
       (SELECT count(*) FROM notiflow_archive.alerts WHERE subject IN ('ops-old', 'ops-recent')),
       (SELECT count(*) FROM notiflow.alerts_all WHERE subject IN ('ops-old', 'ops-recent'));
-- test messages go by their own age; a dead letter goes with its delivery, however recent
SELECT d.id, d.id IN (SELECT id FROM notiflow.deliveries) AS live
  FROM notiflow.deliveries_all d WHERE d.id IN (9700001, 9700002) ORDER BY d.id;
SELECT count(*) FILTER (WHERE d.id IN (SELECT id FROM notiflow.deliveries)) AS live,
       count(*) FILTER (WHERE d.id IN (SELECT id FROM notiflow_archive.deliveries)) AS archived
  FROM notiflow.deliveries_all d WHERE d.id BETWEEN 9710001 AND 9710110;
SELECT l.id, l.id IN (SELECT id FROM notiflow.dead_letters) AS live, l.reference
  FROM notiflow.dead_letters_all l WHERE l.id = 9390001;
-- the cutoff: archived rows are older than 6 months, live ones newer
SELECT (SELECT max(created_at) FROM notiflow_archive.executions WHERE workflow_key = 'ops_gen') < now() - interval '6 months' AS archived_older,
       (SELECT min(created_at) FROM notiflow.executions WHERE workflow_key = 'ops_gen') > now() - interval '6 months' AS live_newer;
-- no child is left without its execution, no delivery without its children
SELECT (SELECT count(*) FROM notiflow.execution_steps s
         WHERE NOT EXISTS (SELECT FROM notiflow.executions e WHERE e.id = s.execution_id)) AS orphan_steps,
       (SELECT count(*) FROM notiflow.execution_waits w
         WHERE NOT EXISTS (SELECT FROM notiflow.executions e WHERE e.id = w.execution_id)) AS orphan_waits,
       (SELECT count(*) FROM notiflow.deliveries d  -- test messages (execution 0) belong to none
         WHERE d.execution_id <> 0 AND NOT EXISTS (SELECT FROM notiflow.executions e WHERE e.id = d.execution_id)) AS orphan_deliveries,
       (SELECT count(*) FROM notiflow.delivery_attempts a
         WHERE NOT EXISTS (SELECT FROM notiflow.deliveries d WHERE d.id = a.delivery_id)
           AND a.delivery_id BETWEEN 9200001 AND 9999999) AS orphan_attempts;
-- the fixed set: only the waiting execution (and its queued delivery) stays
SELECT e.id, e.status, e.id IN (SELECT id FROM notiflow.executions) AS live,
       (SELECT count(*) FROM notiflow.deliveries_all d WHERE d.execution_id = e.id) AS deliveries,
       (SELECT count(*) FROM notiflow.deliveries d WHERE d.execution_id = e.id) AS live_deliveries
  FROM notiflow.executions_all e WHERE e.id BETWEEN 9100001 AND 9100006 ORDER BY e.id;
-- archived rows keep their columns
SELECT id, execution_id, channel, provider, status, tried_providers, sent_at
  FROM notiflow.deliveries_all WHERE id IN (9200001, 9200003) ORDER BY id;

-- statistics are kept, and computing the days again from the archive gives the same numbers
SELECT count(*) FILTER (WHERE b IS DISTINCT FROM a) AS changed
  FROM gen_stats_before b,
       LATERAL (SELECT sum(executions) AS executions, sum(deliveries) AS deliveries, sum(deliveries_sent) AS sent,
                       sum(attempts) AS attempts, sum(retries) AS retries, sum(dead_letters) AS dead_letters
                  FROM notiflow.daily_stats WHERE workflow_key = 'ops_gen') a;
SELECT sum(notiflow.aggregate_daily(d)) AS rows_written
  FROM (SELECT DISTINCT (created_at AT TIME ZONE 'UTC')::date AS d FROM notiflow.executions_all WHERE workflow_key = 'ops_gen') x;
SELECT s.* = b.* AS same_totals
  FROM gen_stats_before b,
       LATERAL (SELECT sum(executions) AS executions, sum(deliveries) AS deliveries, sum(deliveries_sent) AS sent,
                       sum(attempts) AS attempts, sum(retries) AS retries, sum(dead_letters) AS dead_letters
                  FROM notiflow.daily_stats WHERE workflow_key = 'ops_gen') s;
SELECT notiflow.aggregate_daily('2024-03-10') AS rows_from_archive;
SELECT count(*) AS differences
  FROM ((SELECT row FROM stats_before EXCEPT ALL SELECT row FROM stats_now)
        UNION ALL (SELECT row FROM stats_now EXCEPT ALL SELECT row FROM stats_before)) d;

-- one batch in the caller's transaction
BEGIN;
SELECT executions, dead_letters, alerts, test_messages FROM notiflow.archive_batch(now() - interval '6 months', 10);
ROLLBACK;
-- batches go on from a position (workflow_key, created_at, id): executions that cannot move (still
-- running) are read by one batch, not by every one after it
BEGIN;
INSERT INTO notiflow.executions (id, workflow_key, workflow_version, status, payload, created_at, finished_at)
SELECT 9502000 + n, 'zz_keyset', 1, CASE WHEN n <= 2 THEN 'running' ELSE 'completed' END, '{}', t,
       CASE WHEN n > 2 THEN t END
  FROM generate_series(1, 6) n, LATERAL (SELECT now() - interval '7 months' + n * interval '1 minute' AS t) x;
SELECT executions, last_workflow, last_id - 9502000 AS last FROM notiflow.archive_batch(now() - interval '6 months', 2, 'zz_keyset', '-infinity', 0);
SELECT executions, last_workflow, last_id - 9502000 AS last
  FROM notiflow.archive_batch(now() - interval '6 months', 2, 'zz_keyset', (SELECT created_at FROM notiflow.executions_all WHERE id = 9502004), 9502004);
SELECT executions, last_workflow, last_id
  FROM notiflow.archive_batch(now() - interval '6 months', 2, 'zz_keyset', (SELECT created_at FROM notiflow.executions_all WHERE id = 9502006), 9502006);
SELECT string_agg((id - 9502000)::text, ',' ORDER BY id) AS still_live FROM notiflow.executions WHERE workflow_key = 'zz_keyset';
SELECT * FROM notiflow.archive_batch(now(), 1, 'zz_keyset');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
ROLLBACK;
-- an old execution whose delivery was replayed lately and failed again stays, with its new dead
-- letter; an old test message finished lately too
BEGIN;
INSERT INTO notiflow.executions (id, workflow_key, workflow_version, status, payload, created_at, finished_at)
VALUES (9503001, 'zz_replayed', 1, 'failed', '{}', now() - interval '7 months', now() - interval '7 months');
INSERT INTO notiflow.deliveries (id, execution_id, node_id, channel, provider, recipient, content, status, created_at, finished_at)
VALUES (9603001, 9503001, 'mail', 'email', 'ops-gen', 'gen@example.com', '{}', 'failed', now() - interval '7 months', now() - interval '1 minute'),
       (9703001, 0, 'send_test', 'email', 'ops-test', 'test@example.com', '{}', 'failed', now() - interval '7 months', now() - interval '1 minute');
INSERT INTO notiflow.dead_letters (id, source, reference, details, error, created_at)
VALUES (9393001, 'delivery', '9603001', '{"delivery_id": 9603001}', 'failed again after its replay', now());
SELECT executions, dead_letters, test_messages FROM notiflow.archive_batch(now() - interval '6 months', 100, 'zz_replayed', '-infinity', 0);
SELECT (SELECT count(*) FROM notiflow.executions WHERE id = 9503001) AS execution,
       (SELECT count(*) FROM notiflow.dead_letters WHERE id = 9393001) AS dead_letter,
       (SELECT count(*) FROM notiflow.deliveries WHERE id = 9703001) AS test_message;
ROLLBACK;
-- an archived execution still answers for its idempotency key (a topic read again, a late
-- retry): trigger() and trigger_many() return it and start nothing; a new key starts one
BEGIN;
SELECT count(*) AS stored
  FROM notiflow.put_provider('zz-hook', 'webhook', 'webhook', '{"url": "https://hooks.example.com/k", "secret": "s"}') p,
       notiflow.put_workflow('zz_keyed', '{"nodes": [{"id": "start", "type": "trigger"}, {"id": "hook", "type": "webhook"}],
                                           "edges": [{"from": "start", "to": "hook"}]}') w,
       notiflow.put_subscriber('zz-ann', '{"email": "ann@example.com"}') a,
       notiflow.put_subscriber('zz-bob', '{"email": "bob@example.com"}') b;
INSERT INTO notiflow.executions (id, workflow_key, workflow_version, status, payload, idempotency_key, created_at, finished_at)
VALUES (9504001, 'zz_keyed', 1, 'completed', '{}', 'order-1', now() - interval '7 months', now() - interval '7 months'),
       (9504002, 'zz_keyed', 1, 'completed', '{}', 'batch-7/zz-ann', now() - interval '7 months', now() - interval '7 months');
SELECT executions FROM notiflow.archive_batch(now() - interval '6 months', 100, 'zz_keyed', '-infinity', 0);
SELECT notiflow.trigger('zz_keyed', '{}', NULL, 'order-1') - 9504000 AS archived_one;
SELECT recipient, execution_id BETWEEN 9504001 AND 9504002 AS archived_one
  FROM notiflow.trigger_many('zz_keyed', '["zz-ann", "zz-bob"]', '{}', 'batch-7') ORDER BY recipient::text;
SELECT string_agg(idempotency_key, ',') AS started FROM notiflow.executions WHERE workflow_key = 'zz_keyed';
ROLLBACK;
SELECT * FROM notiflow.archive_batch(now(), 0);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM notiflow.archive_batch(NULL);

-- 3. alerts -----------------------------------------------------------------------
-- every raised alert starts the workflow named by notiflow.alert_workflow
SELECT notiflow.put_provider('ops-hook', 'webhook', 'webhook', '{"url": "https://hooks.example.com/ops", "secret": "s"}');
SELECT notiflow.put_workflow('ops_alert', '{"nodes": [{"id": "start", "type": "trigger"}, {"id": "hook", "type": "webhook"}],
                                            "edges": [{"from": "start", "to": "hook"}]}');
SET notiflow.alert_workflow = 'ops_alert';
-- ops-sg open for 10 minutes (over the 5 minute threshold), ops-mg for 1; 11 dead letters in 15 minutes (over 10)
SELECT notiflow.put_provider(p, 'webhook', 'webhook', '{"url": "https://hooks.example.com/x", "secret": "s"}', 5000)
  FROM unnest(ARRAY['ops-sg', 'ops-mg', 'ops-tw']) p;
INSERT INTO notiflow.provider_circuits (provider, state, consecutive_failures, opened_at, last_error) VALUES
    ('ops-sg', 'open', 5, now() - interval '10 minutes', 'HTTP 503'),
    ('ops-mg', 'open', 5, now() - interval '1 minute', 'HTTP 500'),
    ('ops-tw', 'closed', 0, NULL, NULL);
INSERT INTO notiflow.dead_letters (id, source, reference, details, error)
SELECT 9800000 + n, 'delivery', NULL, '{"channel": "email"}', 'test' FROM generate_series(1, 11) n;
CREATE VIEW pg_temp.my_alerts AS
SELECT * FROM notiflow.alerts WHERE subject IN ('ops-sg', 'ops-mg', 'ops-tw', 'delivery');
CREATE FUNCTION pg_temp.check() RETURNS TABLE (action text, kind text, subject text, severity text)
LANGUAGE sql AS $$
    SELECT c.action, c.kind, c.subject, c.severity FROM notiflow.check_alerts() c
     WHERE c.subject IN ('ops-sg', 'ops-mg', 'ops-tw', 'delivery') ORDER BY c.kind, c.subject
$$;

SELECT * FROM pg_temp.check();
SELECT kind, subject, severity, details - 'opened_at' AS details, resolved_at IS NULL AS open FROM my_alerts ORDER BY id;
SELECT payload ->> 'event' AS event, payload ->> 'kind' AS kind, payload ->> 'subject' AS subject,
       payload -> 'details' ->> 'state' AS state, idempotency_key ~ '^notiflow-alert-[0-9]+$' AS keyed
  FROM notiflow.executions WHERE workflow_key = 'ops_alert' ORDER BY id;
-- the conditions last: the same alerts, seen again, no new execution
SELECT * FROM pg_temp.check();
SELECT count(*) AS alerts, bool_and(last_seen_at > raised_at) AS seen_again FROM my_alerts;
SELECT count(*) AS alert_executions FROM notiflow.executions WHERE workflow_key = 'ops_alert';
-- ops-mg passes the threshold; ops-sg probes (half open) and opens again with a new opened_at: still one alert
UPDATE notiflow.provider_circuits SET opened_at = now() - interval '6 minutes' WHERE provider = 'ops-mg';
UPDATE notiflow.provider_circuits SET state = 'half_open' WHERE provider = 'ops-sg';
SELECT * FROM pg_temp.check();
UPDATE notiflow.provider_circuits SET state = 'open', opened_at = now() WHERE provider = 'ops-sg';
SELECT * FROM pg_temp.check();
-- the conditions clear: resolved
UPDATE notiflow.provider_circuits SET state = 'closed', opened_at = NULL, consecutive_failures = 0 WHERE provider = 'ops-sg';
UPDATE notiflow.dead_letters SET created_at = now() - interval '1 hour' WHERE id BETWEEN 9800001 AND 9800011;
SELECT * FROM pg_temp.check();
SELECT kind, subject, resolved_at IS NULL AS open, resolved_at >= raised_at AS resolved_after_raised FROM my_alerts ORDER BY id;
-- a condition that comes back is a new alert
UPDATE notiflow.provider_circuits SET state = 'open', opened_at = now() - interval '10 minutes' WHERE provider = 'ops-sg';
SELECT * FROM pg_temp.check();
SELECT subject, count(*) AS alerts, count(*) FILTER (WHERE resolved_at IS NULL) AS open FROM my_alerts GROUP BY subject ORDER BY subject;
SELECT count(*) AS alert_executions FROM notiflow.executions WHERE workflow_key = 'ops_alert';
-- an alert workflow that cannot start does not stop the alert
SET notiflow.alert_workflow = 'no_such_workflow';
UPDATE notiflow.dead_letters SET created_at = now() WHERE id BETWEEN 9800001 AND 9800011;
SELECT * FROM pg_temp.check();
RESET notiflow.alert_workflow;
-- a mistyped setting: an error naming it (not a bare cast error)
SET notiflow.alert_worker_down_after = '1 minuet';
SELECT * FROM pg_temp.check();
RESET notiflow.alert_worker_down_after;
SET notiflow.health_window = '15 minuets';
SELECT count(*) FROM notiflow.provider_health;
RESET notiflow.health_window;
UPDATE notiflow.provider_circuits SET state = 'closed', opened_at = NULL WHERE provider IN ('ops-sg', 'ops-mg');
DELETE FROM notiflow.dead_letters WHERE id BETWEEN 9800001 AND 9800011;
SELECT * FROM pg_temp.check();
SELECT count(*) FILTER (WHERE resolved_at IS NULL) AS open FROM my_alerts;
-- a disabled (or deleted) provider is not probed, so its circuit stays open: that is no alert
UPDATE notiflow.providers SET enabled = false WHERE name = 'ops-sg';
UPDATE notiflow.provider_circuits SET state = 'open', opened_at = now() - interval '10 minutes' WHERE provider = 'ops-sg';
SELECT * FROM pg_temp.check();
UPDATE notiflow.provider_circuits SET state = 'closed', opened_at = NULL WHERE provider = 'ops-sg';
DELETE FROM notiflow.providers WHERE name IN ('ops-sg', 'ops-mg', 'ops-tw');

-- 4. monitoring views and health ---------------------------------------------------
SELECT notiflow.put_provider('ops-q', 'webhook', 'webhook', '{"url": "https://hooks.example.com/q", "secret": "s"}', 1000);
INSERT INTO notiflow.delivery_attempts (delivery_id, attempt, provider, status_code, latency_ms, error_class, error)
VALUES (9899999, 1, 'ops-q', 200, 100, 'sent', NULL), (9899999, 1, 'ops-q', 200, 200, 'sent', NULL),
       (9899999, 1, 'ops-q', 200, 300, 'sent', NULL), (9899999, 2, 'ops-q', 503, 400, 'retry', 'HTTP 503'),
       (9899999, 3, 'ops-q', NULL, 0, 'circuit_open', 'circuit open');
SELECT provider, channel, "window" = interval '15 minutes' AS default_window, attempts, sent, failed, success_rate, latency_p50_ms, latency_p95_ms,
       circuit_state, last_error, last_success_at IS NOT NULL AS succeeded
  FROM notiflow.provider_health WHERE provider = 'ops-q';
-- an attempt refused before any request (the provider's request could not be built) counts, untimed
BEGIN;
SELECT notiflow.put_provider('ops-r', 'webhook', 'webhook', '{"url": "https://hooks.example.com/r", "secret": "s"}', 1001);
INSERT INTO notiflow.delivery_attempts (delivery_id, attempt, provider, status_code, latency_ms, error_class, error)
VALUES (9899998, 1, 'ops-r', 200, 100, 'sent', NULL), (9899998, 2, 'ops-r', NULL, 0, 'permanent', 'cannot build the request');
SELECT provider, attempts, sent, failed, success_rate, latency_p50_ms, latency_p95_ms, last_error
  FROM notiflow.provider_health WHERE provider = 'ops-r';
-- answers about the recipient (an invalid address, an opt-out) are the provider working, not failing;
-- an invalid address of the provider's own (a delivery without recipient: its configured webhook) is a failure
INSERT INTO notiflow.deliveries (id, execution_id, node_id, channel, provider, recipient, content, status, finished_at)
VALUES (9899997, 0, 'x', 'webhook', 'ops-r', 'https://hooks.example.com/gone', '{}', 'failed', now()),
       (9899995, 0, 'x', 'webhook', 'ops-r', NULL, '{}', 'failed', now());
INSERT INTO notiflow.delivery_attempts (delivery_id, attempt, provider, status_code, latency_ms, error_class, error)
VALUES (9899997, 1, 'ops-r', 404, 50, 'invalid_recipient', 'HTTP 404'),
       (9899996, 1, 'ops-r', 400, 50, 'rejected', 'HTTP 400: 21610'),
       (9899995, 1, 'ops-r', 404, 50, 'invalid_recipient', 'HTTP 404');
SELECT provider, attempts, sent, failed, refused, success_rate FROM notiflow.provider_health WHERE provider = 'ops-r';
ROLLBACK;
SELECT provider, circuit_state, consecutive_failures FROM notiflow.provider_health WHERE provider IN ('ops-hook');
SELECT sum(deliveries) = (SELECT count(*) FROM notiflow.deliveries WHERE status IN ('queued', 'sending')) AS consistent,
       bool_and(oldest_due_age >= interval '0') AS ages
  FROM notiflow.queue_health;
SELECT channel, status, due >= 1 AS has_due FROM notiflow.queue_health WHERE channel = 'email' AND status = 'queued';
-- not preloaded: no workers, no counters
SELECT count(*) AS workers FROM notiflow.worker_status;
SELECT count(*) AS dispatchers FROM notiflow.dispatcher_counters();
SELECT (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(h) k) AS keys, h -> 'workers' AS workers,
       h #>> '{database,name}' = current_database() AS this_database, h -> 'status' AS status
  FROM notiflow.health() h;
-- without the queue's counts (which read every queued delivery): the same status
SELECT (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(h) k) AS keys,
       h -> 'status' = (notiflow.health() -> 'status') AS same_status
  FROM notiflow.health(queue_counts => false) h;

-- 5. metrics ------------------------------------------------------------------------
CREATE TEMP TABLE metrics AS
SELECT n, line FROM regexp_split_to_table(rtrim(notiflow.metrics(), E'\n'), E'\n') WITH ORDINALITY AS m(line, n);
-- every line is a comment or a sample "name{labels} value"
SELECT count(*) FILTER (WHERE line !~ '^# (HELP|TYPE) [a-z_]+ .+$'
                                             AND line !~ '^[a-z_]+(\{[a-z_]+="([^"\\]|\\.)*"(,[a-z_]+="([^"\\]|\\.)*")*\})? -?[0-9]+(\.[0-9]+)?$') AS malformed
  FROM metrics;
-- the families: each HELP right before its TYPE
SELECT substring(t.line FROM '^# TYPE ([a-z_]+) ') AS family, substring(t.line FROM ' ([a-z]+)$') AS type,
       h.line LIKE '# HELP ' || substring(t.line FROM '^# TYPE ([a-z_]+) ') || ' %' AS help_first
  FROM metrics t JOIN metrics h ON h.n = t.n - 1
 WHERE t.line LIKE '# TYPE %' AND t.line NOT LIKE '# TYPE notiflow_kafka%' ORDER BY t.n;
-- every sample belongs to the family declared above it
SELECT count(*) AS strays
  FROM metrics s
 WHERE s.line NOT LIKE '#%'
   AND substring(s.line FROM '^([a-z_]+)') NOT IN (
       SELECT f || suffix FROM (SELECT substring(t.line FROM '^# TYPE ([a-z_]+) ') AS f FROM metrics t
                                 WHERE t.n = (SELECT max(x.n) FROM metrics x WHERE x.n < s.n AND x.line LIKE '# TYPE %')) y,
                               unnest(ARRAY['', '_sum', '_count']) suffix);
-- counters: past days from daily_stats, today from the tables
SELECT line FROM metrics
 WHERE line ~ '(workflow="ops_(a|b|alert)"|provider="ops-(sg|mg|tw|q)")' ORDER BY n;
SELECT rtrim(notiflow.metric_sample('m', ARRAY['a', 'say "hi"\' || E'\n', 'b', NULL, 'c', 'x'], 1.5), E'\n') AS escaped;
-- A day aggregated by hand at noon, days_ago days back: an execution of the workflow at 01:00
-- (ids first_id), counted, and one at 23:00 (first_id + 1), after the aggregation.
CREATE FUNCTION pg_temp.partial_day(first_id bigint, workflow text, days_ago integer) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    d date := (now() AT TIME ZONE 'UTC')::date - days_ago;
    aggregated boolean;
BEGIN
    INSERT INTO notiflow.executions (id, workflow_key, workflow_version, status, payload, created_at, updated_at, finished_at)
    SELECT first_id, workflow, 1, 'completed', '{}', t, t, t FROM (SELECT (d + time '01:00') AT TIME ZONE 'UTC' AS t) x;
    aggregated := notiflow.aggregate_daily(d) >= 1;
    UPDATE notiflow.daily_stats s SET aggregated_at = (d + time '12:00') AT TIME ZONE 'UTC' WHERE s.day = d;
    INSERT INTO notiflow.executions (id, workflow_key, workflow_version, status, payload, created_at, updated_at, finished_at)
    SELECT first_id + 1, workflow, 1, 'completed', '{}', t, t, t FROM (SELECT (d + time '23:00') AT TIME ZONE 'UTC' AS t) x;
    RETURN aggregated;
END $$;
-- a day aggregated before it ended (by hand, at noon) is counted from the tables, not from its
-- stats: what came after the aggregation (here at 23:00) is not missing from the counters
BEGIN;
SELECT pg_temp.partial_day(9800100, 'ops_partial', 1) AS aggregated;
SELECT line FROM regexp_split_to_table(notiflow.metrics(), E'\n') line
 WHERE line LIKE 'notiflow_executions_total{workflow="ops_partial"%';
ROLLBACK;
-- a replay starts the providers afresh (tried_providers) but keeps what the delivery fell back
-- from (left_providers): the fallbacks counter does not go down
BEGIN;
SELECT notiflow.put_provider('ops-f1', 'webhook', 'webhook', '{"url": "https://hooks.example.com/f1", "secret": "s"}', 1);
INSERT INTO notiflow.executions (id, workflow_key, workflow_version, status, payload, finished_at)
VALUES (9800200, 'ops_replay', 1, 'failed', '{}', now());
INSERT INTO notiflow.deliveries (id, execution_id, node_id, channel, provider, recipient, content, status,
                                 tried_providers, left_providers, finished_at)
VALUES (9800201, 9800200, 'x', 'webhook', 'ops-f2', NULL, '{}', 'failed', '{ops-f1}', '{ops-f1}', now());
INSERT INTO notiflow.dead_letters (id, source, reference, details, error) VALUES (9800202, 'delivery', '9800201', '{}', 'x');
SELECT line FROM regexp_split_to_table(notiflow.metrics(), E'\n') line
 WHERE line LIKE 'notiflow_delivery_fallbacks_total{provider="ops-f1"}%';
SELECT notiflow.replay_dead_letter(9800202) = 9800201 AS replayed;
SELECT status, provider, tried_providers, left_providers FROM notiflow.deliveries WHERE id = 9800201;
SELECT line FROM regexp_split_to_table(notiflow.metrics(), E'\n') line
 WHERE line LIKE 'notiflow_delivery_fallbacks_total{provider="ops-f1"}%';
ROLLBACK;

-- 6. scheduling without pg_cron ------------------------------------------------------
SELECT jobname ~ '^notiflow\.[a-z_]+@' AS named, schedule, command FROM notiflow.maintenance_jobs();
SET client_min_messages = notice;
SELECT jobname ~ '^notiflow\.[a-z_]+@' AS named, jobid FROM notiflow.schedule_maintenance();
SELECT notiflow.unschedule_maintenance() AS removed;
SELECT jobname ~ '^notiflow\.[a-z_]+@' AS named, jobid, up_to_date, last_status FROM notiflow.maintenance_status();
SET client_min_messages = warning;
SELECT notiflow.cron_database() IS NULL AS no_pg_cron;
-- the arguments of notiflow.cron_call() are checked
SELECT notiflow.cron_call('reschedule', '{}', '{}', '{}');
SELECT notiflow.cron_call('schedule', '{a,b}', '{"* * * * *"}', '{"SELECT 1"}');
SELECT notiflow.cron_call('schedule', '{a}', '{NULL}', '{"SELECT 1"}');
SELECT notiflow.cron_call('status', '{a}', '{""}', '{""}') IS NULL AS no_pg_cron;
-- what the jobs run works by hand
SELECT notiflow.aggregate_daily((now() AT TIME ZONE 'UTC')::date - n) >= 0 AS aggregated FROM generate_series(1, 2) n;
-- a night the job missed: the next run aggregates every day since the last one aggregated
INSERT INTO notiflow.executions (id, workflow_key, workflow_version, status, payload, created_at, updated_at, finished_at)
SELECT 9800001, 'ops_missed', 1, 'completed', '{}', t, t, t
  FROM (SELECT ((now() AT TIME ZONE 'UTC')::date - 5 + time '12:00') AT TIME ZONE 'UTC' AS t) x;
DELETE FROM notiflow.daily_stats WHERE day >= (now() AT TIME ZONE 'UTC')::date - 6;
SELECT notiflow.aggregate_pending() >= 1 AS aggregated;
SELECT day = (now() AT TIME ZONE 'UTC')::date - 5 AS missed_day, executions
  FROM notiflow.daily_stats WHERE workflow_key = 'ops_missed';
-- a night missed before a later day that was aggregated (by hand): the gap is filled too
INSERT INTO notiflow.executions (id, workflow_key, workflow_version, status, payload, created_at, updated_at, finished_at)
SELECT 9800002, 'ops_missed', 1, 'completed', '{}', t, t, t
  FROM (SELECT ((now() AT TIME ZONE 'UTC')::date - 3 + time '12:00') AT TIME ZONE 'UTC' AS t) x;
DELETE FROM notiflow.daily_stats WHERE day >= (now() AT TIME ZONE 'UTC')::date - 6;
SELECT notiflow.aggregate_daily((now() AT TIME ZONE 'UTC')::date - 3) >= 1 AS later_day_aggregated;
SELECT notiflow.aggregate_pending() >= 1 AS aggregated;
SELECT (now() AT TIME ZONE 'UTC')::date - day AS days_ago, executions
  FROM notiflow.daily_stats WHERE workflow_key = 'ops_missed' ORDER BY day;
DELETE FROM notiflow.executions WHERE id = 9800002;
SELECT notiflow.aggregate_daily((now() AT TIME ZONE 'UTC')::date - 3) >= 0 AS reaggregated;
-- a day aggregated before it ended (by hand, at noon), with later days aggregated since: the next
-- run aggregates it again, with what came after noon
BEGIN;
SELECT pg_temp.partial_day(9800003, 'ops_partial_old', 6) AS aggregated;
SELECT count(*) > 0 AS later_days_aggregated FROM notiflow.daily_stats WHERE day > (now() AT TIME ZONE 'UTC')::date - 6;
SELECT notiflow.aggregate_pending() >= 1 AS aggregated;
SELECT executions, aggregated_at >= ((now() AT TIME ZONE 'UTC')::date - 5)::timestamp AT TIME ZONE 'UTC' AS complete
  FROM notiflow.daily_stats WHERE workflow_key = 'ops_partial_old';
ROLLBACK;
-- forty nights missed: every one of them (nothing is given up after a month)
BEGIN;
UPDATE notiflow.executions SET created_at = created_at - interval '35 days' WHERE id = 9800001;
DELETE FROM notiflow.daily_stats WHERE day >= (now() AT TIME ZONE 'UTC')::date - 41;
SELECT notiflow.aggregate_pending() >= 1 AS aggregated;
SELECT day = (now() AT TIME ZONE 'UTC')::date - 40 AS missed_day, executions
  FROM notiflow.daily_stats WHERE workflow_key = 'ops_missed';
ROLLBACK;
-- the first run (daily_stats empty) starts at the first day anything was created, not two days back
BEGIN;
DELETE FROM notiflow.daily_stats;
SELECT notiflow.aggregate_pending() >= 1 AS aggregated;
SELECT min(day) = (SELECT (min(created_at) AT TIME ZONE 'UTC')::date FROM notiflow.executions_all) AS from_first_day,
       count(*) FILTER (WHERE workflow_key = 'ops_a' AND day = '2024-03-10' AND channel = '') AS ops_a_03_10
  FROM notiflow.daily_stats;
ROLLBACK;
SELECT count(*) >= 0 AS checked FROM notiflow.check_alerts();
