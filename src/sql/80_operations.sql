-- notiflow 0.1 — operations: daily statistics, retention with an archive,
-- monitoring views, Prometheus metrics, alerts, and their pg_cron schedule
-- (docs/operations.md).
--
-- Data flow: aggregate_daily(day) condenses one UTC day of executions,
-- deliveries, attempts and dead letters into daily_stats (reading the archive
-- too, so a day gives the same rows before and after retention).
-- apply_retention() moves finished executions older than notiflow.retention,
-- with their children, into schema notiflow_archive, batch by batch, one
-- transaction each; the *_all views read live and archived rows together.
-- metrics() adds daily_stats of past days to what happened since.
-- check_alerts() samples conditions into alert_samples, raises an alert when
-- a condition has held long enough, keeps one open alert per condition and
-- resolves it when the condition clears.  schedule_maintenance() registers
-- the three in pg_cron.

-- Settings ---------------------------------------------------------------------

-- Reads a setting; the fallback when it is unset or empty.
CREATE FUNCTION notiflow.setting(name text, fallback text) RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(nullif(current_setting(name, true), ''), fallback)
$$;
COMMENT ON FUNCTION notiflow.setting(text, text) IS
    'The value of a setting, or the fallback when it is not set or empty.';

-- A setting read as an interval or a number: a typo gets an error naming the setting
-- (a bare cast error names nothing, and check_alerts would fail every minute with it).
CREATE FUNCTION notiflow.setting_checked(name text, fallback text, as_type text) RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    value text := notiflow.setting(name, fallback);
    finite boolean;
BEGIN
    -- as_type is interval or numeric (the callers below); a threshold must be finite
    EXECUTE format('SELECT %L::%s::text NOT IN (''NaN'', ''Infinity'', ''-Infinity'')', value, as_type) INTO finite;
    IF NOT finite THEN
        RAISE invalid_text_representation;
    END IF;
    RETURN value;
EXCEPTION WHEN data_exception THEN
    RAISE EXCEPTION 'setting % is not %', name, CASE as_type WHEN 'interval' THEN 'an interval' ELSE 'a number' END
        USING ERRCODE = '22023', DETAIL = format('%s: %s', name, value),
              HINT = format('Set it to %s such as %s.', CASE as_type WHEN 'interval' THEN 'an interval' ELSE 'a number' END,
                            CASE as_type WHEN 'interval' THEN quote_literal(fallback) ELSE fallback END);
END;
$$;
COMMENT ON FUNCTION notiflow.setting_checked(text, text, text) IS
    'A setting''s value (the fallback when not set), checked to be an interval or a finite numeric; SQLSTATE 22023 naming the setting when it is not.';

-- Statistics -------------------------------------------------------------------

CREATE TABLE notiflow.daily_stats (
    day                    date NOT NULL,
    workflow_key           text NOT NULL,
    channel                text NOT NULL,
    provider               text NOT NULL,
    executions             bigint NOT NULL DEFAULT 0,
    executions_completed   bigint NOT NULL DEFAULT 0,
    executions_failed      bigint NOT NULL DEFAULT 0,
    executions_cancelled   bigint NOT NULL DEFAULT 0,
    executions_active      bigint NOT NULL DEFAULT 0,
    deliveries             bigint NOT NULL DEFAULT 0,
    deliveries_pending     bigint NOT NULL DEFAULT 0,
    deliveries_sent        bigint NOT NULL DEFAULT 0,
    deliveries_delivered   bigint NOT NULL DEFAULT 0,
    deliveries_failed      bigint NOT NULL DEFAULT 0,
    deliveries_cancelled   bigint NOT NULL DEFAULT 0,
    send_latency_p50_ms    double precision,
    send_latency_p95_ms    double precision,
    send_latency_p99_ms    double precision,
    attempts               bigint NOT NULL DEFAULT 0,
    attempt_results        jsonb NOT NULL DEFAULT '{}',
    retries                bigint NOT NULL DEFAULT 0,
    fallbacks              bigint NOT NULL DEFAULT 0,
    timed_attempts         bigint NOT NULL DEFAULT 0,
    attempt_latency_sum_ms double precision NOT NULL DEFAULT 0,
    attempt_latency_p50_ms double precision,
    attempt_latency_p95_ms double precision,
    attempt_latency_p99_ms double precision,
    dead_letters           bigint NOT NULL DEFAULT 0,
    aggregated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (day, workflow_key, channel, provider)
);
COMMENT ON TABLE notiflow.daily_stats IS
    'Metrics per UTC day, workflow, channel and provider, written by notiflow.aggregate_daily(); kept by retention.  '
    'Execution counts are in the rows with channel and provider ''''.';
COMMENT ON COLUMN notiflow.daily_stats.channel IS '''''for execution counts and dead letters of other sources.';
COMMENT ON COLUMN notiflow.daily_stats.provider IS
    'Deliveries: the provider holding the delivery; attempts: the provider tried; fallbacks: the provider left.';
COMMENT ON COLUMN notiflow.daily_stats.executions IS 'Executions created that day (and the statuses they have now).';
COMMENT ON COLUMN notiflow.daily_stats.executions_active IS 'Of those, still running or waiting.';
COMMENT ON COLUMN notiflow.daily_stats.deliveries IS 'Deliveries created that day (and the statuses they have now).';
COMMENT ON COLUMN notiflow.daily_stats.deliveries_pending IS 'Of those, still queued or sending.';
COMMENT ON COLUMN notiflow.daily_stats.send_latency_p50_ms IS 'Median time from a delivery''s creation to its hand-over (sent_at).';
COMMENT ON COLUMN notiflow.daily_stats.attempts IS 'Attempts made that day, whatever their result.';
COMMENT ON COLUMN notiflow.daily_stats.attempt_results IS 'Attempts made that day by error class: {"sent": n, "retry": n, ...}.';
COMMENT ON COLUMN notiflow.daily_stats.retries IS 'Attempts with a provider after the first one with that provider.';
COMMENT ON COLUMN notiflow.daily_stats.fallbacks IS 'How often deliveries created that day left this provider for the next one (again after a replay).';
COMMENT ON COLUMN notiflow.daily_stats.timed_attempts IS
    'Requests made that got an answer or a transfer error (sent, retry, permanent, invalid_recipient, rejected): those the latencies are over.';
COMMENT ON COLUMN notiflow.daily_stats.attempt_latency_p50_ms IS 'Median latency of the timed attempts.';
COMMENT ON COLUMN notiflow.daily_stats.dead_letters IS 'Dead letters written that day.';
SELECT pg_catalog.pg_extension_config_dump('notiflow.daily_stats', '');

-- Alerts table (check_alerts() is below) ----------------------------------------

CREATE TABLE notiflow.alerts (
    id           bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('circuit_open', 'dead_letters', 'worker_down', 'kafka_lag')),
    subject      text NOT NULL,
    severity     text NOT NULL CHECK (severity IN ('warning', 'critical')),
    details      jsonb NOT NULL DEFAULT '{}',
    raised_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    resolved_at  timestamptz
);
CREATE UNIQUE INDEX alerts_open ON notiflow.alerts (kind, subject) WHERE resolved_at IS NULL;
CREATE INDEX alerts_resolved ON notiflow.alerts (resolved_at);
COMMENT ON TABLE notiflow.alerts IS
    'Alerts raised by notiflow.check_alerts(): one open row per condition (kind, subject) while it lasts, resolved_at once it clears.';
COMMENT ON COLUMN notiflow.alerts.kind IS 'circuit_open (subject: provider), dead_letters (source), worker_down (database), kafka_lag (subscription).';
COMMENT ON COLUMN notiflow.alerts.last_seen_at IS 'The last check that found the condition still there.';
SELECT pg_catalog.pg_extension_config_dump('notiflow.alerts', '');

-- Archive ----------------------------------------------------------------------

CREATE SCHEMA notiflow_archive;
COMMENT ON SCHEMA notiflow_archive IS
    'Rows moved out of notiflow by notiflow.apply_retention(), with the same columns; read them through the notiflow.*_all views.';

CREATE TABLE notiflow_archive.executions (LIKE notiflow.executions);
CREATE INDEX ON notiflow_archive.executions (id);
CREATE INDEX ON notiflow_archive.executions (created_at);
CREATE INDEX ON notiflow_archive.executions (workflow_key, created_at);
-- an archived execution still answers for its idempotency key (execution_repo.c)
CREATE INDEX ON notiflow_archive.executions (workflow_key, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE TABLE notiflow_archive.execution_waits (LIKE notiflow.execution_waits);
CREATE INDEX ON notiflow_archive.execution_waits (execution_id);
CREATE TABLE notiflow_archive.deliveries (LIKE notiflow.deliveries);
CREATE INDEX ON notiflow_archive.deliveries (id);
CREATE INDEX ON notiflow_archive.deliveries (execution_id);
CREATE INDEX ON notiflow_archive.deliveries (created_at);
CREATE TABLE notiflow_archive.delivery_attempts (LIKE notiflow.delivery_attempts);
CREATE INDEX ON notiflow_archive.delivery_attempts (delivery_id);
CREATE INDEX ON notiflow_archive.delivery_attempts (created_at);
CREATE TABLE notiflow_archive.delivery_events (LIKE notiflow.delivery_events);
CREATE INDEX ON notiflow_archive.delivery_events (delivery_id);
CREATE TABLE notiflow_archive.dead_letters (LIKE notiflow.dead_letters);
CREATE INDEX ON notiflow_archive.dead_letters (id);
CREATE INDEX ON notiflow_archive.dead_letters (created_at);
CREATE TABLE notiflow_archive.alerts (LIKE notiflow.alerts);
CREATE INDEX ON notiflow_archive.alerts (id);
SELECT pg_catalog.pg_extension_config_dump('notiflow_archive.executions', '');
SELECT pg_catalog.pg_extension_config_dump('notiflow_archive.execution_waits', '');
SELECT pg_catalog.pg_extension_config_dump('notiflow_archive.deliveries', '');
SELECT pg_catalog.pg_extension_config_dump('notiflow_archive.delivery_attempts', '');
SELECT pg_catalog.pg_extension_config_dump('notiflow_archive.delivery_events', '');
SELECT pg_catalog.pg_extension_config_dump('notiflow_archive.dead_letters', '');
SELECT pg_catalog.pg_extension_config_dump('notiflow_archive.alerts', '');

CREATE VIEW notiflow.executions_all AS
    SELECT * FROM notiflow.executions UNION ALL SELECT * FROM notiflow_archive.executions;
-- steps live in their execution's row (executions.steps): archived with it
CREATE VIEW notiflow.execution_steps_all AS
SELECT s.* FROM notiflow.executions_all e, notiflow.step_rows(e.id, e.created_at, e.steps) AS s;
CREATE VIEW notiflow.execution_waits_all AS
    SELECT * FROM notiflow.execution_waits UNION ALL SELECT * FROM notiflow_archive.execution_waits;
CREATE VIEW notiflow.deliveries_all AS
    SELECT * FROM notiflow.deliveries UNION ALL SELECT * FROM notiflow_archive.deliveries;
CREATE VIEW notiflow.delivery_attempts_all AS
    SELECT * FROM notiflow.delivery_attempts UNION ALL SELECT * FROM notiflow_archive.delivery_attempts;
CREATE VIEW notiflow.delivery_events_all AS
    SELECT * FROM notiflow.delivery_events UNION ALL SELECT * FROM notiflow_archive.delivery_events;
CREATE VIEW notiflow.dead_letters_all AS
    SELECT * FROM notiflow.dead_letters UNION ALL SELECT * FROM notiflow_archive.dead_letters;
CREATE VIEW notiflow.alerts_all AS
    SELECT * FROM notiflow.alerts UNION ALL SELECT * FROM notiflow_archive.alerts;
COMMENT ON VIEW notiflow.executions_all IS 'Executions, live and archived.';
COMMENT ON VIEW notiflow.execution_steps_all IS 'Execution steps, live and archived.';
COMMENT ON VIEW notiflow.execution_waits_all IS 'Wait nodes of executions, live and archived.';
COMMENT ON VIEW notiflow.deliveries_all IS 'Deliveries, live and archived.';
COMMENT ON VIEW notiflow.delivery_attempts_all IS 'Delivery attempts, live and archived.';
COMMENT ON VIEW notiflow.delivery_events_all IS 'Provider status events, live and archived.';
COMMENT ON VIEW notiflow.dead_letters_all IS 'Dead letters, live and archived.';
COMMENT ON VIEW notiflow.alerts_all IS 'Alerts, live and archived.';

-- Computes the daily_stats rows of what was created in [since, until); day is the UTC date of since.
-- Whether an attempt was a request made to its provider, whose latency counts: not one refused
-- before (no provider, a request that could not be built, an open circuit).  One definition for
-- daily_stats, the metrics' counters and their latency quantiles.
CREATE FUNCTION notiflow.attempt_was_request(error_class text, status_code integer, curl_code integer)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT error_class IN ('sent', 'retry', 'permanent', 'invalid_recipient', 'rejected')
       AND (status_code IS NOT NULL OR curl_code IS NOT NULL)
$$;
COMMENT ON FUNCTION notiflow.attempt_was_request(text, integer, integer) IS
    'Whether a delivery attempt was a request made to its provider (its latency counts), not one refused before it.';

CREATE FUNCTION notiflow.stats_between(since timestamptz, until timestamptz)
RETURNS SETOF notiflow.daily_stats
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
-- a day takes milliseconds; compiling this many expressions with JIT takes seconds
SET jit = off
AS $$
BEGIN
RETURN QUERY
WITH ex AS (
    SELECT e.workflow_key, ''::text AS channel, ''::text AS provider,
           count(*) AS executions,
           count(*) FILTER (WHERE e.status = 'completed') AS completed,
           count(*) FILTER (WHERE e.status = 'failed') AS failed,
           count(*) FILTER (WHERE e.status = 'cancelled') AS cancelled,
           count(*) FILTER (WHERE e.status IN ('running', 'waiting')) AS active
      FROM notiflow.executions_all e
     WHERE e.created_at >= since AND e.created_at < until
     GROUP BY e.workflow_key
),
d_day AS MATERIALIZED (
    SELECT coalesce(e.workflow_key, '') AS workflow_key, d.channel, coalesce(d.provider, '') AS provider,
           d.status, d.left_providers,
           (extract(epoch FROM d.sent_at - d.created_at) * 1000)::double precision AS send_ms
      FROM notiflow.deliveries_all d
      LEFT JOIN notiflow.executions_all e ON e.id = d.execution_id
     WHERE d.created_at >= since AND d.created_at < until
),
dl AS (
    SELECT workflow_key, channel, provider,
           count(*) AS deliveries,
           count(*) FILTER (WHERE status IN ('queued', 'sending')) AS pending,
           count(*) FILTER (WHERE status = 'sent') AS sent,
           count(*) FILTER (WHERE status = 'delivered') AS delivered,
           count(*) FILTER (WHERE status = 'failed') AS failed,
           count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
           percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY send_ms) AS send_ms
      FROM d_day
     GROUP BY workflow_key, channel, provider
),
fb AS (
    SELECT d.workflow_key, d.channel, t.provider, count(*) AS fallbacks
      FROM d_day d, unnest(d.left_providers) AS t(provider)
     GROUP BY d.workflow_key, d.channel, t.provider
),
a_day AS MATERIALIZED (
    SELECT coalesce(e.workflow_key, '') AS workflow_key, coalesce(d.channel, '') AS channel, a.provider,
           a.error_class, a.attempt, a.latency_ms,
           notiflow.attempt_was_request(a.error_class, a.status_code, a.curl_code) AS timed
      FROM notiflow.delivery_attempts_all a
      LEFT JOIN notiflow.deliveries_all d ON d.id = a.delivery_id
      LEFT JOIN notiflow.executions_all e ON e.id = d.execution_id
     WHERE a.created_at >= since AND a.created_at < until
),
att AS (
    SELECT workflow_key, channel, provider,
           count(*) AS attempts,
           count(*) FILTER (WHERE timed AND attempt > 1) AS retries,
           count(latency_ms) FILTER (WHERE timed) AS timed_attempts,
           coalesce(sum(latency_ms) FILTER (WHERE timed), 0) AS latency_sum,
           percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY latency_ms) FILTER (WHERE timed) AS latency
      FROM a_day
     GROUP BY workflow_key, channel, provider
),
ar AS (
    SELECT workflow_key, channel, provider, jsonb_object_agg(error_class, n) AS results
      FROM (SELECT workflow_key, channel, provider, error_class, count(*) AS n
              FROM a_day GROUP BY workflow_key, channel, provider, error_class) c
     GROUP BY workflow_key, channel, provider
),
dq AS (
    SELECT coalesce(e.workflow_key, x.details ->> 'workflow_key', '') AS workflow_key,
           coalesce(x.details ->> 'channel', '') AS channel,
           coalesce(x.details -> 'providers' ->> -1, '') AS provider,
           count(*) AS dead_letters
      FROM notiflow.dead_letters_all x
      LEFT JOIN notiflow.executions_all e
             ON jsonb_typeof(x.details -> 'execution_id') = 'number'
            AND e.id = (x.details ->> 'execution_id')::bigint
     WHERE x.created_at >= since AND x.created_at < until
     GROUP BY 1, 2, 3
),
keys AS (
    SELECT workflow_key, channel, provider FROM ex
    UNION SELECT workflow_key, channel, provider FROM dl
    UNION SELECT workflow_key, channel, provider FROM fb
    UNION SELECT workflow_key, channel, provider FROM att
    UNION SELECT workflow_key, channel, provider FROM dq
)
SELECT (since AT TIME ZONE 'UTC')::date, k.workflow_key, k.channel, k.provider,
       coalesce(ex.executions, 0), coalesce(ex.completed, 0), coalesce(ex.failed, 0),
       coalesce(ex.cancelled, 0), coalesce(ex.active, 0),
       coalesce(dl.deliveries, 0), coalesce(dl.pending, 0), coalesce(dl.sent, 0), coalesce(dl.delivered, 0),
       coalesce(dl.failed, 0), coalesce(dl.cancelled, 0),
       dl.send_ms[1], dl.send_ms[2], dl.send_ms[3],
       coalesce(att.attempts, 0), coalesce(ar.results, '{}'), coalesce(att.retries, 0), coalesce(fb.fallbacks, 0),
       coalesce(att.timed_attempts, 0), coalesce(att.latency_sum, 0),
       att.latency[1], att.latency[2], att.latency[3],
       coalesce(dq.dead_letters, 0),
       now()
  FROM keys k
  LEFT JOIN ex USING (workflow_key, channel, provider)
  LEFT JOIN dl USING (workflow_key, channel, provider)
  LEFT JOIN fb USING (workflow_key, channel, provider)
  LEFT JOIN att USING (workflow_key, channel, provider)
  LEFT JOIN ar USING (workflow_key, channel, provider)
  LEFT JOIN dq USING (workflow_key, channel, provider);
END;
$$;
COMMENT ON FUNCTION notiflow.stats_between(timestamptz, timestamptz) IS
    'The daily_stats rows of what was created in [since, until), live and archived, without storing them.';

-- The counters metrics() adds to daily_stats for the hours not aggregated yet, without what
-- metrics() does not show: no percentiles (a sort of the day's rows), and no workflow of a
-- delivery or an attempt (a join of each one with its execution, live and archived: 4 s a scrape
-- for 200,000 of each).  Each source gives its own rows (metrics() sums them by its labels).
CREATE FUNCTION notiflow.metric_counts_between(since timestamptz, until timestamptz)
RETURNS TABLE (workflow_key text, channel text, provider text,
               executions bigint, completed bigint, failed bigint, cancelled bigint,
               deliveries bigint, deliveries_sent bigint, deliveries_delivered bigint,
               deliveries_failed bigint, deliveries_cancelled bigint,
               attempt_results jsonb, retries bigint, fallbacks bigint, timed_attempts bigint,
               attempt_latency_sum_ms double precision, dead_letters bigint)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
    SELECT e.workflow_key, '', '', count(*),
           count(*) FILTER (WHERE e.status = 'completed'), count(*) FILTER (WHERE e.status = 'failed'),
           count(*) FILTER (WHERE e.status = 'cancelled'),
           0, 0, 0, 0, 0, '{}'::jsonb, 0, 0, 0, 0, 0
      FROM notiflow.executions_all e
     WHERE e.created_at >= since AND e.created_at < until
     GROUP BY e.workflow_key
    UNION ALL
    SELECT '', d.channel, coalesce(d.provider, ''), 0, 0, 0, 0,
           count(*), count(*) FILTER (WHERE d.status = 'sent'), count(*) FILTER (WHERE d.status = 'delivered'),
           count(*) FILTER (WHERE d.status = 'failed'), count(*) FILTER (WHERE d.status = 'cancelled'),
           '{}', 0, 0, 0, 0, 0
      FROM notiflow.deliveries_all d
     WHERE d.created_at >= since AND d.created_at < until
     GROUP BY d.channel, coalesce(d.provider, '')
    UNION ALL
    SELECT '', d.channel, t.provider, 0, 0, 0, 0, 0, 0, 0, 0, 0, '{}', 0, count(*), 0, 0, 0
      FROM notiflow.deliveries_all d, unnest(d.left_providers) AS t(provider)
     WHERE d.created_at >= since AND d.created_at < until
     GROUP BY d.channel, t.provider
    UNION ALL
    SELECT '', '', a.provider, 0, 0, 0, 0, 0, 0, 0, 0, 0,
           jsonb_object_agg(a.error_class, a.n), sum(a.retries)::bigint, 0, sum(a.timed)::bigint,
           sum(a.latency_sum), 0
      FROM (SELECT x.provider, x.error_class, count(*) AS n,
                   count(*) FILTER (WHERE x.timed AND x.attempt > 1) AS retries,
                   count(x.latency_ms) FILTER (WHERE x.timed) AS timed,
                   coalesce(sum(x.latency_ms) FILTER (WHERE x.timed), 0)::double precision AS latency_sum
              FROM (SELECT a.provider, a.error_class, a.attempt, a.latency_ms,
                           notiflow.attempt_was_request(a.error_class, a.status_code, a.curl_code) AS timed
                      FROM notiflow.delivery_attempts_all a
                     WHERE a.created_at >= since AND a.created_at < until) x
             GROUP BY x.provider, x.error_class) a
     GROUP BY a.provider
    UNION ALL
    SELECT '', coalesce(x.details ->> 'channel', ''), coalesce(x.details -> 'providers' ->> -1, ''),
           0, 0, 0, 0, 0, 0, 0, 0, 0, '{}', 0, 0, 0, 0, count(*)
      FROM notiflow.dead_letters_all x
     WHERE x.created_at >= since AND x.created_at < until
     GROUP BY 2, 3
$$;
COMMENT ON FUNCTION notiflow.metric_counts_between(timestamptz, timestamptz) IS
    'The counters of what was created in [since, until) that metrics() shows, one set of rows per source (executions by '
    'workflow; deliveries, fallbacks, attempts and dead letters by channel and provider), without percentiles.';

-- Replaces the daily_stats rows of one UTC day; returns how many it wrote.
CREATE FUNCTION notiflow.aggregate_daily(day date) RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    written integer;
BEGIN
    IF day IS NULL THEN
        RAISE EXCEPTION 'day must not be NULL' USING ERRCODE = '22023', DETAIL = 'day: required';
    END IF;
    -- two runs for one day wait for each other instead of colliding on the primary key
    PERFORM pg_advisory_xact_lock(hashtextextended('notiflow.aggregate_daily', day - date '2000-01-01'));
    DELETE FROM notiflow.daily_stats s WHERE s.day = aggregate_daily.day;
    INSERT INTO notiflow.daily_stats
    SELECT * FROM notiflow.stats_between(day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
    GET DIAGNOSTICS written = ROW_COUNT;
    RETURN written;
END;
$$;
COMMENT ON FUNCTION notiflow.aggregate_daily(date) IS
    'Recomputes the daily_stats rows of one UTC day from live and archived rows (same result when run again); returns the rows written.';

-- Whether anything was created or attempted on a UTC day (live or archived).
CREATE FUNCTION notiflow.day_has_activity(day date) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH r AS (SELECT day::timestamp AT TIME ZONE 'UTC' AS since, (day + 1)::timestamp AT TIME ZONE 'UTC' AS until)
    SELECT EXISTS (SELECT 1 FROM r, notiflow.executions_all e WHERE e.created_at >= r.since AND e.created_at < r.until)
        OR EXISTS (SELECT 1 FROM r, notiflow.deliveries_all d WHERE d.created_at >= r.since AND d.created_at < r.until)
        OR EXISTS (SELECT 1 FROM r, notiflow.delivery_attempts_all a WHERE a.created_at >= r.since AND a.created_at < r.until)
        OR EXISTS (SELECT 1 FROM r, notiflow.dead_letters_all l WHERE l.created_at >= r.since AND l.created_at < r.until)
$$;
COMMENT ON FUNCTION notiflow.day_has_activity(date) IS
    'Whether any execution, delivery, attempt or dead letter (live or archived) was created on that UTC day.';

-- What the nightly job runs: yesterday and the day before, and every day since the last one
-- aggregated that has anything created or attempted, so that a night the job did not run (or
-- failed) leaves no day out (a day without activity writes no row: an idle database does not go
-- back further every night).  The first run, with daily_stats empty, starts at the first day
-- anything was created (metrics() counts the days before the last aggregated one from
-- daily_stats alone).
CREATE FUNCTION notiflow.aggregate_pending() RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    yesterday date := (now() AT TIME ZONE 'UTC')::date - 1;
    first     date := yesterday - 1;
    last      date;
    since     timestamptz;
    n         integer;
BEGIN
    SELECT max(s.day) INTO last FROM notiflow.daily_stats s WHERE s.day < yesterday;
    IF last IS NULL OR last + 1 < first THEN
        -- nights the job did not run (or the first run): from the first day with anything created
        -- since the last day aggregated; the days before it have nothing to count
        since := CASE WHEN last IS NULL THEN '-infinity'::timestamptz ELSE (last + 1)::timestamp AT TIME ZONE 'UTC' END;
        SELECT least(first, (min(c) AT TIME ZONE 'UTC')::date) INTO first
          FROM (SELECT min(e.created_at) FROM notiflow.executions_all e WHERE e.created_at >= since
                UNION ALL SELECT min(d.created_at) FROM notiflow.deliveries_all d WHERE d.created_at >= since
                UNION ALL SELECT min(a.created_at) FROM notiflow.delivery_attempts_all a WHERE a.created_at >= since
                UNION ALL SELECT min(l.created_at) FROM notiflow.dead_letters_all l WHERE l.created_at >= since) x(c);
    END IF;
    -- and a day from 31 days before yesterday up to those that has activity but no row (a night
    -- the job failed, followed by a later day aggregated, by hand or by a later night), or whose
    -- rows were written before it ended (aggregate_daily of that day, by hand): they miss the rest
    -- of the day, and metrics() reads them once a later day is complete
    SELECT coalesce(sum(notiflow.aggregate_daily(d)), 0)::integer INTO n
      FROM (SELECT g::date AS d FROM generate_series(yesterday - 31, first - 1, interval '1 day') g
             WHERE (NOT EXISTS (SELECT 1 FROM notiflow.daily_stats s WHERE s.day = g::date)
                    AND notiflow.day_has_activity(g::date))
                OR EXISTS (SELECT 1 FROM notiflow.daily_stats s
                            WHERE s.day = g::date AND s.aggregated_at < (g::date + 1)::timestamp AT TIME ZONE 'UTC')
            UNION ALL
            SELECT g::date FROM generate_series(first, yesterday, interval '1 day') g
            ORDER BY 1) x;
    RETURN n;
END
$$;
COMMENT ON FUNCTION notiflow.aggregate_pending() IS
    'Aggregates yesterday and the day before (UTC), and every day since the last day in daily_stats that has anything '
    'created or attempted (with daily_stats empty, every day since the first execution, delivery, attempt or dead letter), '
    'and any day since 31 days before yesterday with activity and no daily_stats row, or whose rows were written before it ended; '
    'returns the rows written.  The nightly pg_cron job.';

-- Retention --------------------------------------------------------------------

-- Moves one batch of old rows into notiflow_archive: finished executions with their children, dead letters, resolved alerts.
-- Executions are read in (workflow_key, created_at, id) order from after the given position; the
-- position of the last one this batch looked at comes back (NULL when it looked at none), so that
-- the next batch does not read again the old executions that cannot move (still waiting, say).
CREATE FUNCTION notiflow.archive_batch(older_than timestamptz, batch_size integer DEFAULT 10000,
                                       after_workflow text DEFAULT NULL, after_created timestamptz DEFAULT NULL,
                                       after_id bigint DEFAULT NULL)
RETURNS TABLE (executions integer, dead_letters integer, alerts integer, test_messages integer,
               last_workflow text, last_created timestamptz, last_id bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    ids  bigint[];
    dids bigint[];
    tids bigint[];
    dls  bigint[];
    busy text[];
    n_executions integer;
    n_dead_letters integer;
    n_alerts integer;
    n_test_messages integer;
    l_workflow text;
    l_created timestamptz;
    l_id bigint;
BEGIN
    IF older_than IS NULL THEN
        RAISE EXCEPTION 'older_than must not be NULL' USING ERRCODE = '22023', DETAIL = 'older_than: required';
    END IF;
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'invalid batch size'
            USING ERRCODE = '22023', DETAIL = format('batch_size: expected a positive integer, got %s', coalesce(batch_size::text, 'NULL'));
    END IF;
    IF after_workflow IS NOT NULL AND (after_created IS NULL OR after_id IS NULL) THEN
        RAISE EXCEPTION 'incomplete position'
            USING ERRCODE = '22023', DETAIL = 'after_created, after_id: required with after_workflow';
    END IF;
    -- Finished executions without a delivery on its way; rows others hold are left for the next run.
    -- executions_created is a BRIN index (no order): the B-tree on (workflow_key, created_at) is read
    -- workflow by workflow (a loose index scan), so a batch stops after batch_size rows.
    -- The candidates are a prefix of that order (the workflows come in order, each one's rows in
    -- order), so the last of them is where the next batch starts.
    SELECT coalesce(array_agg(c.id), '{}'),
           (array_agg(c.key ORDER BY c.key DESC, c.created_at DESC, c.id DESC))[1],
           (array_agg(c.created_at ORDER BY c.key DESC, c.created_at DESC, c.id DESC))[1],
           (array_agg(c.id ORDER BY c.key DESC, c.created_at DESC, c.id DESC))[1]
      INTO ids, l_workflow, l_created, l_id
      FROM (WITH RECURSIVE workflow AS (
            (SELECT e.workflow_key AS key FROM notiflow.executions e
              WHERE e.workflow_key >= coalesce(after_workflow, '')  -- an index bound in a generic plan too
              ORDER BY e.workflow_key LIMIT 1)
            UNION ALL
            SELECT (SELECT e.workflow_key FROM notiflow.executions e
                     WHERE e.workflow_key > w.key ORDER BY e.workflow_key LIMIT 1)
              FROM workflow w WHERE w.key IS NOT NULL
        )
        SELECT x.id, w.key, x.created_at
          FROM workflow w,
               LATERAL (SELECT e.id, e.created_at FROM notiflow.executions e
                         WHERE e.workflow_key = w.key AND e.created_at < older_than
                           AND e.created_at >= CASE WHEN w.key = after_workflow THEN after_created
                                                    ELSE '-infinity' END
                           AND (w.key IS DISTINCT FROM after_workflow OR (e.created_at, e.id) > (after_created, after_id))
                           AND e.status IN ('completed', 'failed', 'cancelled')
                           -- one that ended lately (after a long delay) is not old: its last deliveries are new
                           AND coalesce(e.finished_at, e.created_at) < older_than
                           AND NOT EXISTS (SELECT 1 FROM notiflow.deliveries d  -- queued or sending
                                            WHERE d.execution_id = e.id AND d.finished_at IS NULL)
                         ORDER BY e.created_at, e.id
                         LIMIT batch_size
                         FOR UPDATE OF e SKIP LOCKED) x
         LIMIT batch_size) c;
    -- Their deliveries are locked before anything moves, and an execution keeps out of the batch
    -- when one of them is not finished before the cutoff (a dead letter replayed lately) or is held by another
    -- transaction (a provider's status event: it locks the delivery, then the execution, the other
    -- way round; waiting for it could deadlock).  Events and replays that come later wait for the
    -- batch, so nothing is added to a delivery while it moves.
    -- (counted per execution, with hash joins: comparing each delivery with the array of those
    -- held would be quadratic in the batch size)
    ids := ARRAY(
        WITH held AS (
            -- (one that finished lately, after a replay, is not old either: its new dead letter stays)
            SELECT d.execution_id FROM notiflow.deliveries d
             WHERE d.execution_id = ANY (ids) AND d.finished_at < older_than
               FOR UPDATE SKIP LOCKED
        ),
        held_n AS (SELECT h.execution_id, count(*) AS n FROM held h GROUP BY h.execution_id),
        all_n AS (SELECT d.execution_id, count(*) AS n FROM notiflow.deliveries d
                   WHERE d.execution_id = ANY (ids) GROUP BY d.execution_id)
        SELECT u.id FROM unnest(ids) AS u(id)
          LEFT JOIN all_n a ON a.execution_id = u.id
          LEFT JOIN held_n h ON h.execution_id = u.id
         WHERE coalesce(a.n, 0) = coalesce(h.n, 0));
    dids := ARRAY(SELECT d.id FROM notiflow.deliveries d WHERE d.execution_id = ANY (ids));
    -- test messages (send_test) belong to no execution: they go by their own age
    tids := ARRAY(SELECT d.id FROM notiflow.deliveries d
                   WHERE d.execution_id = 0 AND d.created_at < older_than AND d.finished_at < older_than
                   ORDER BY d.created_at LIMIT batch_size
                   FOR UPDATE SKIP LOCKED);
    -- The dead letters of those deliveries go with them.  One another transaction holds (a replay:
    -- it locks the dead letter, then its delivery) keeps its delivery, and that delivery's
    -- execution, out of the batch: else the replay would fail and the dead letter stay behind.
    dls := ARRAY(SELECT y.id FROM notiflow.dead_letters y
                  WHERE y.source = 'delivery' AND y.reference = ANY ((dids || tids)::text[])
                    FOR UPDATE SKIP LOCKED);
    busy := ARRAY(SELECT y.reference FROM notiflow.dead_letters y
                   WHERE y.source = 'delivery' AND y.reference = ANY ((dids || tids)::text[])
                     AND NOT y.id = ANY (dls));
    IF cardinality(busy) > 0 THEN
        ids := ARRAY(SELECT u.id FROM unnest(ids) AS u(id)
                      WHERE NOT EXISTS (SELECT 1 FROM notiflow.deliveries d
                                         WHERE d.execution_id = u.id AND d.id::text = ANY (busy)));
        tids := ARRAY(SELECT t.id FROM unnest(tids) AS t(id) WHERE NOT t.id::text = ANY (busy));
        dids := ARRAY(SELECT d.id FROM notiflow.deliveries d WHERE d.execution_id = ANY (ids));
        dls := ARRAY(SELECT y.id FROM notiflow.dead_letters y
                      WHERE y.id = ANY (dls) AND y.reference = ANY ((dids || tids)::text[]));
    END IF;
    n_test_messages := cardinality(tids);
    dids := dids || tids;

    -- children first: nothing points from them to their parents, and nothing may be left behind
    WITH moved AS (DELETE FROM notiflow.delivery_events x WHERE x.delivery_id = ANY (dids) RETURNING x.*)
    INSERT INTO notiflow_archive.delivery_events SELECT * FROM moved;
    WITH moved AS (DELETE FROM notiflow.delivery_attempts x WHERE x.delivery_id = ANY (dids) RETURNING x.*)
    INSERT INTO notiflow_archive.delivery_attempts SELECT * FROM moved;
    WITH moved AS (DELETE FROM notiflow.deliveries x WHERE x.id = ANY (dids) RETURNING x.*)
    INSERT INTO notiflow_archive.deliveries SELECT * FROM moved;
    WITH moved AS (DELETE FROM notiflow.execution_waits x WHERE x.execution_id = ANY (ids) RETURNING x.*)
    INSERT INTO notiflow_archive.execution_waits SELECT * FROM moved;
    WITH moved AS (DELETE FROM notiflow.executions x WHERE x.id = ANY (ids) RETURNING x.*)
    INSERT INTO notiflow_archive.executions SELECT * FROM moved;
    GET DIAGNOSTICS n_executions = ROW_COUNT;

    -- dead letters by age, and those of the deliveries just moved (they could not be replayed)
    -- (a delivery's dead letter stays while its delivery does: it goes with its execution, and until
    -- then it can still be replayed)
    dls := dls || ARRAY(SELECT y.id FROM notiflow.dead_letters y WHERE y.created_at < older_than
                           AND NOT EXISTS (SELECT 1 FROM notiflow.deliveries d
                                            WHERE y.source = 'delivery'
                                              AND d.id = CASE WHEN y.reference ~ '^[0-9]{1,18}$' THEN y.reference::bigint END)
                         ORDER BY y.created_at LIMIT batch_size FOR UPDATE SKIP LOCKED);
    WITH moved AS (
        DELETE FROM notiflow.dead_letters x WHERE x.id = ANY (dls)  -- by the primary key, no scan
        RETURNING x.*)
    INSERT INTO notiflow_archive.dead_letters SELECT * FROM moved;
    GET DIAGNOSTICS n_dead_letters = ROW_COUNT;

    WITH moved AS (
        DELETE FROM notiflow.alerts x
         WHERE x.id IN (SELECT y.id FROM notiflow.alerts y WHERE y.resolved_at < older_than
                         ORDER BY y.resolved_at LIMIT batch_size FOR UPDATE SKIP LOCKED)
        RETURNING x.*)
    INSERT INTO notiflow_archive.alerts SELECT * FROM moved;
    GET DIAGNOSTICS n_alerts = ROW_COUNT;

    RETURN QUERY SELECT n_executions, n_dead_letters, n_alerts, n_test_messages, l_workflow, l_created, l_id;
END;
$$;
COMMENT ON FUNCTION notiflow.archive_batch(timestamptz, integer, text, timestamptz, bigint) IS
    'Moves up to batch_size finished executions created before older_than (with steps, waits, deliveries, attempts, events), '
    'dead letters, resolved alerts and test messages (send_test) into notiflow_archive, in the caller''s transaction; returns how many of each, '
    'and the position (workflow_key, created_at, id) of the last execution it looked at, where the next batch goes on (after_*).';

-- Archives everything older than notiflow.retention, one committed transaction per batch.
-- A procedure without SET options, so that it may COMMIT: pg_cron CALLs it;
-- inside a transaction block use notiflow.archive_batch() instead.
CREATE PROCEDURE notiflow.apply_retention(batch_size integer DEFAULT 10000, max_batches integer DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
    setting text := notiflow.setting('notiflow.retention', '6 months');
    retention interval := notiflow.setting_checked('notiflow.retention', '6 months', 'interval')::interval;
    cutoff timestamptz := pg_catalog.now() - retention;
    b record;
    batches integer := 0;
    executions bigint := 0;
    dead_letters bigint := 0;
    alerts bigint := 0;
    test_messages bigint := 0;
    at_workflow text;
    at_created timestamptz;
    at_id bigint;
BEGIN
    -- a number without a unit is seconds: '180' meant as days archived every finished execution
    -- at once, with the sent deliveries whose delivered or bounce events were still to come
    IF retention < interval '1 day' THEN
        RAISE EXCEPTION 'notiflow.retention must be at least 1 day'
            USING ERRCODE = '22023', DETAIL = format('notiflow.retention: %s (a number without a unit is seconds)', setting),
                  HINT = 'Give it a unit, such as ''6 months'' or ''180 days''.';
    END IF;
    WHILE max_batches IS NULL OR batches < max_batches LOOP
        -- each batch goes on after the last execution the one before looked at
        SELECT * INTO b FROM notiflow.archive_batch(cutoff, batch_size, at_workflow, at_created, at_id);
        EXIT WHEN b.executions + b.dead_letters + b.alerts + b.test_messages = 0 AND b.last_id IS NULL;
        IF b.last_id IS NOT NULL THEN
            at_workflow := b.last_workflow;
            at_created := b.last_created;
            at_id := b.last_id;
        END IF;
        batches := batches + 1;
        executions := executions + b.executions;
        dead_letters := dead_letters + b.dead_letters;
        alerts := alerts + b.alerts;
        test_messages := test_messages + b.test_messages;
        COMMIT;
    END LOOP;
    RAISE NOTICE 'notiflow retention (%): archived % executions, % dead letters, % alerts and % test messages in % batches',
        setting, executions, dead_letters, alerts, test_messages, batches;
END;
$$;
COMMENT ON PROCEDURE notiflow.apply_retention(integer, integer) IS
    'Moves finished executions (with their children), dead letters, resolved alerts and test messages older than notiflow.retention '
    'into notiflow_archive, committing after each batch; daily_stats are kept.  CALL it outside a transaction block.';

-- Monitoring -------------------------------------------------------------------

CREATE FUNCTION notiflow.dispatcher_counters(OUT slot integer, OUT pid integer, OUT started_at timestamptz,
                                             OUT claimed bigint, OUT sent bigint, OUT retried bigint,
                                             OUT failed bigint, OUT in_flight bigint,
                                             OUT claimed_after_front bigint, OUT record_retries bigint)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'dispatcher_counters' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION notiflow.dispatcher_counters() IS
    'The shared-memory counters of every live dispatcher since it started (no rows unless the library was preloaded).';

CREATE FUNCTION notiflow.workers_preloaded() RETURNS boolean
    AS 'MODULE_PATHNAME', 'workers_preloaded' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION notiflow.workers_preloaded() IS
    'Whether notiflow is in shared_preload_libraries, i.e. whether the delivery workers can run.';

CREATE VIEW notiflow.worker_status AS
SELECT coalesce(a.pid, c.pid) AS pid,
       coalesce(a.backend_type, 'notiflow dispatcher') AS backend_type,
       -- a role without pg_read_all_stats sees no backend_type of the workers' sessions (they are
       -- the bootstrap superuser's): their shared-memory counters still say a dispatcher runs, and
       -- dispatchers run only in notiflow.database_name
       coalesce(a.datname, CASE WHEN c.pid IS NOT NULL THEN current_setting('notiflow.database_name', true) END)
           AS database,
       a.state, a.wait_event_type, a.wait_event, a.query AS activity,
       a.backend_start, a.state_change,
       c.slot, c.started_at, c.claimed, c.sent, c.retried, c.failed, c.in_flight, c.claimed_after_front,
       c.record_retries
  FROM (SELECT * FROM pg_catalog.pg_stat_activity WHERE backend_type LIKE 'notiflow%') a
  FULL JOIN notiflow.dispatcher_counters() c ON c.pid = a.pid;
COMMENT ON VIEW notiflow.worker_status IS
    'The notiflow workers running (pg_stat_activity) with the counters of each dispatcher (shared memory).';

CREATE VIEW notiflow.queue_health AS
SELECT d.channel, d.status,
       count(*) AS deliveries,
       count(*) FILTER (WHERE d.status = 'queued' AND d.next_attempt_at <= now()) AS due,
       min(d.next_attempt_at) FILTER (WHERE d.status = 'queued' AND d.next_attempt_at <= now()) AS oldest_due_at,
       now() - min(d.next_attempt_at) FILTER (WHERE d.status = 'queued' AND d.next_attempt_at <= now()) AS oldest_due_age,
       count(*) FILTER (WHERE d.status = 'sending' AND d.lease_expires_at < now()) AS expired_leases,
       min(d.created_at) AS oldest_created_at
  FROM notiflow.deliveries d
 WHERE d.finished_at IS NULL  -- queued or sending (deliveries_finished): read through deliveries_due
 GROUP BY d.channel, d.status;
COMMENT ON VIEW notiflow.queue_health IS
    'Deliveries waiting or on their way, per channel and status: how many, how many are due, how long the oldest due one has waited.';

CREATE VIEW notiflow.provider_health AS
WITH w AS (
    SELECT notiflow.setting_checked('notiflow.health_window', '15 minutes', 'interval')::interval AS span
),
a AS (
    SELECT a.provider,
           count(*) AS attempts,
           count(*) FILTER (WHERE a.error_class = 'sent') AS sent,
           -- answers about the recipient (an invalid address, an opt-out): the provider worked, as the
           -- circuit counts them; not an invalid address of the provider's own (no recipient: a chat
           -- provider's configured webhook_url that is gone)
           count(*) FILTER (WHERE a.error_class = 'rejected' OR
                                  (a.error_class = 'invalid_recipient' AND
                                   EXISTS (SELECT 1 FROM notiflow.deliveries d
                                            WHERE d.id = a.delivery_id AND d.recipient IS NOT NULL))) AS refused,
           -- the latency of the requests made (not of attempts refused before one, with no provider
           -- or a request that could not be built: those count as failed attempts)
           percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY a.latency_ms)
             FILTER (WHERE a.status_code IS NOT NULL OR a.curl_code IS NOT NULL) AS latency,
           max(a.created_at) FILTER (WHERE a.error_class = 'sent') AS last_success_at
      FROM notiflow.delivery_attempts a, w
     WHERE a.created_at > now() - w.span AND a.error_class IN ('sent', 'retry', 'permanent', 'invalid_recipient', 'rejected')
     GROUP BY a.provider
),
e AS (
    SELECT DISTINCT ON (a.provider) a.provider, a.error, a.created_at
      FROM notiflow.delivery_attempts a, w
     WHERE a.created_at > now() - w.span AND a.error_class IN ('retry', 'permanent', 'invalid_recipient', 'rejected')
     ORDER BY a.provider, a.created_at DESC, a.id DESC
)
SELECT p.name AS provider, p.channel, p.kind, p.enabled, w.span AS window,
       coalesce(a.attempts, 0) AS attempts, coalesce(a.sent, 0) AS sent,
       coalesce(a.attempts - a.sent - a.refused, 0) AS failed,
       coalesce(a.refused, 0) AS refused,
       round(a.sent::numeric / nullif(a.attempts - a.refused, 0), 4) AS success_rate,
       a.latency[1] AS latency_p50_ms, a.latency[2] AS latency_p95_ms,
       coalesce(c.state, 'closed') AS circuit_state, coalesce(c.consecutive_failures, 0) AS consecutive_failures,
       c.opened_at AS circuit_opened_at,
       coalesce(e.error, c.last_error) AS last_error, e.created_at AS last_error_at,
       a.last_success_at
  FROM notiflow.providers p
 CROSS JOIN w
  LEFT JOIN a ON a.provider = p.name
  LEFT JOIN e ON e.provider = p.name
  LEFT JOIN notiflow.provider_circuits c ON c.provider = p.name;
COMMENT ON VIEW notiflow.provider_health IS
    'Every provider over the last notiflow.health_window (15 minutes): attempts answered, success rate (sent of the attempts '
    'not refused for their recipient), p50/p95 latency, '
    'circuit state and the last error.';

-- Reports whether deliveries can leave: workers, queue, open critical alerts.
-- The status reads a few index entries; the queue's counts (queue_counts) read
-- every queued delivery, and are left out for callers without credentials
-- (notiflow_api.health), for whom a large backlog made every call a scan of it.
CREATE FUNCTION notiflow.health(queue_counts boolean DEFAULT true) RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    preloaded boolean := notiflow.workers_preloaded();
    expected  integer := 0;
    running   bigint;
    queue     jsonb;
    due_now   boolean;
    critical  bigint;
BEGIN
    IF preloaded THEN
        expected := current_setting('notiflow.dispatch_workers')::integer;
    END IF;
    SELECT count(*) INTO running FROM notiflow.worker_status w
     WHERE w.backend_type = 'notiflow dispatcher' AND w.database = current_database();
    -- the queue's index in due order: the deliveries in flight come first, then the first due one
    SELECT EXISTS (SELECT 1 FROM notiflow.deliveries d
                    WHERE d.status = 'queued' AND d.finished_at IS NULL AND d.next_attempt_at <= now())
      INTO due_now;
    IF queue_counts THEN
        SELECT jsonb_build_object('queued', count(*), 'due', count(*) FILTER (WHERE d.next_attempt_at <= now()),
                                  'oldest_due_seconds',
                                  round(extract(epoch FROM now() - min(d.next_attempt_at) FILTER (WHERE d.next_attempt_at <= now())), 3))
          INTO queue
          FROM notiflow.deliveries d WHERE d.status = 'queued' AND d.finished_at IS NULL;  -- the queue's index
    END IF;
    SELECT count(*) INTO critical FROM notiflow.alerts a WHERE a.resolved_at IS NULL AND a.severity = 'critical';
    RETURN jsonb_build_object(
        'status', CASE WHEN critical > 0 OR (running = 0 AND (expected > 0 OR due_now))
                       THEN 'degraded' ELSE 'ok' END,
        'database', jsonb_build_object('name', current_database(), 'in_recovery', pg_is_in_recovery()),
        'workers', jsonb_build_object('preloaded', preloaded, 'expected', expected, 'dispatchers', running))
        || CASE WHEN queue_counts THEN jsonb_build_object('queue', queue) ELSE '{}' END;
END;
$$;
COMMENT ON FUNCTION notiflow.health(boolean) IS
    'Health summary: status ok, or degraded when a critical alert is open or no dispatcher serves this database while '
    'dispatchers are configured or deliveries are due; database, workers (expected: notiflow.dispatch_workers when preloaded), '
    'and with queue_counts (the default) queue: queued, due, oldest_due_seconds.';

-- Metrics ----------------------------------------------------------------------

-- Formats one Prometheus sample line; labels are name/value pairs, those with a NULL value left out.
CREATE FUNCTION notiflow.metric_sample(name text, labels text[], value numeric) RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT name
           || coalesce('{' || (SELECT string_agg(format('%s="%s"', labels[i],
                                                        replace(replace(replace(labels[i + 1], '\', '\\'), '"', '\"'), E'\n', '\n')),
                                                 ',' ORDER BY i)
                                 FROM generate_subscripts(labels, 1) AS i
                                WHERE i % 2 = 1 AND labels[i + 1] IS NOT NULL) || '}', '')
           || ' ' || value::text || E'\n'
$$;
COMMENT ON FUNCTION notiflow.metric_sample(text, text[], numeric) IS
    'One Prometheus sample line: name{label="value",...} value, label values escaped.';

-- Formats one Prometheus metric family: HELP, TYPE and its sample lines.
CREATE FUNCTION notiflow.metric_family(name text, type text, help text, samples text) RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format(E'# HELP %s %s\n# TYPE %s %s\n', name, help, name, type) || coalesce(samples, '')
$$;
COMMENT ON FUNCTION notiflow.metric_family(text, text, text, text) IS 'One Prometheus metric family: # HELP, # TYPE, then its samples.';

-- Renders notiflow's metrics in the Prometheus text exposition format.
CREATE FUNCTION notiflow.metrics() RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    -- past days come from daily_stats, what happened since from the tables themselves; a day
    -- aggregated before it ended (aggregate_daily of today, by hand) is not complete: counted from
    -- its stats, its later activity would be missing until the next aggregation, and every
    -- counter would drop, then jump (a counter reset, to Prometheus)
    live_day date := least(coalesce((SELECT max(s.day) FROM notiflow.daily_stats s
                                      WHERE s.aggregated_at >= (s.day + 1)::timestamp AT TIME ZONE 'UTC') + 1,
                                    '-infinity'),
                           (now() AT TIME ZONE 'UTC')::date);
    span interval := notiflow.setting_checked('notiflow.health_window', '15 minutes', 'interval')::interval;
    body text;
    lag  text;
BEGIN
    WITH t AS (
        SELECT s.workflow_key, s.channel, s.provider, s.executions, s.executions_completed, s.executions_failed,
               s.executions_cancelled, s.deliveries, s.deliveries_sent, s.deliveries_delivered, s.deliveries_failed,
               s.deliveries_cancelled, s.attempt_results, s.retries, s.fallbacks, s.timed_attempts,
               s.attempt_latency_sum_ms, s.dead_letters
          FROM notiflow.daily_stats s WHERE s.day < live_day
        UNION ALL
        SELECT * FROM notiflow.metric_counts_between(live_day::timestamp AT TIME ZONE 'UTC', 'infinity')
    ),
    by_workflow AS (
        SELECT t.workflow_key, sum(t.executions) AS executions, sum(t.executions_completed) AS completed,
               sum(t.executions_failed) AS failed, sum(t.executions_cancelled) AS cancelled
          FROM t WHERE t.executions > 0 GROUP BY t.workflow_key
    ),
    by_delivery AS (
        SELECT t.channel, t.provider, sum(t.deliveries_sent) AS sent, sum(t.deliveries_delivered) AS delivered,
               sum(t.deliveries_failed) AS failed, sum(t.deliveries_cancelled) AS cancelled
          FROM t WHERE t.deliveries > 0 GROUP BY t.channel, t.provider
    ),
    by_provider AS (
        SELECT t.provider, sum(t.retries) AS retries, sum(t.fallbacks) AS fallbacks,
               sum(t.timed_attempts) AS timed, sum(t.attempt_latency_sum_ms) AS latency_sum
          FROM t WHERE t.provider <> '' GROUP BY t.provider
    ),
    by_result AS (
        SELECT t.provider, r.key AS result, sum(r.value::bigint) AS n
          FROM t, jsonb_each_text(t.attempt_results) r GROUP BY t.provider, r.key
    ),
    quantiles AS (
        SELECT a.provider,
               percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY a.latency_ms) AS q
          FROM notiflow.delivery_attempts a
         WHERE a.created_at > now() - span AND notiflow.attempt_was_request(a.error_class, a.status_code, a.curl_code)
         GROUP BY a.provider
    ),
    families (ord, text) AS (
        SELECT 1, notiflow.metric_family('notiflow_triggers_total', 'counter', 'Executions started, by workflow.',
               (SELECT string_agg(notiflow.metric_sample('notiflow_triggers_total', ARRAY['workflow', w.workflow_key],
                                                         w.executions), '' ORDER BY w.workflow_key)
                  FROM by_workflow w))
        UNION ALL
        SELECT 2, notiflow.metric_family('notiflow_executions_total', 'counter',
               'Executions that ended, by workflow and status (completed, failed, cancelled).',
               (SELECT string_agg(notiflow.metric_sample('notiflow_executions_total',
                                                         ARRAY['workflow', w.workflow_key, 'status', s.status], s.n),
                                  '' ORDER BY w.workflow_key, s.status)
                  FROM by_workflow w,
                       LATERAL (VALUES ('completed', w.completed), ('failed', w.failed), ('cancelled', w.cancelled)) s(status, n)))
        UNION ALL
        SELECT 3, notiflow.metric_family('notiflow_deliveries_total', 'counter',
               'Deliveries that ended, by channel, provider and status (sent, delivered, failed, cancelled); '
               'a sent delivery moves to delivered when the provider confirms it.',
               (SELECT string_agg(notiflow.metric_sample('notiflow_deliveries_total',
                                                         ARRAY['channel', d.channel, 'provider', d.provider, 'status', s.status], s.n),
                                  '' ORDER BY d.channel, d.provider, s.status)
                  FROM by_delivery d,
                       LATERAL (VALUES ('sent', d.sent), ('delivered', d.delivered), ('failed', d.failed),
                                       ('cancelled', d.cancelled)) s(status, n)))
        UNION ALL
        SELECT 4, notiflow.metric_family('notiflow_delivery_attempts_total', 'counter',
               'Attempts to hand deliveries to providers, by provider and result (sent or the error class).',
               (SELECT string_agg(notiflow.metric_sample('notiflow_delivery_attempts_total',
                                                         ARRAY['provider', r.provider, 'result', r.result], r.n),
                                  '' ORDER BY r.provider, r.result)
                  FROM by_result r))
        UNION ALL
        SELECT 5, notiflow.metric_family('notiflow_delivery_retries_total', 'counter',
               'Attempts with a provider after the first one with it, by provider.',
               (SELECT string_agg(notiflow.metric_sample('notiflow_delivery_retries_total', ARRAY['provider', p.provider],
                                                         p.retries), '' ORDER BY p.provider)
                  FROM by_provider p))
        UNION ALL
        SELECT 6, notiflow.metric_family('notiflow_delivery_fallbacks_total', 'counter',
               'Deliveries that left a provider for the next one, by the provider left.',
               (SELECT string_agg(notiflow.metric_sample('notiflow_delivery_fallbacks_total', ARRAY['provider', p.provider],
                                                         p.fallbacks), '' ORDER BY p.provider)
                  FROM by_provider p))
        UNION ALL
        SELECT 7, notiflow.metric_family('notiflow_dead_letters_total', 'counter',
               'Dead letters written, by channel (empty for Kafka and execution dead letters).',
               (SELECT string_agg(notiflow.metric_sample('notiflow_dead_letters_total', ARRAY['channel', x.channel], x.n),
                                  '' ORDER BY x.channel)
                  FROM (SELECT t.channel, sum(t.dead_letters) AS n FROM t GROUP BY t.channel HAVING sum(t.dead_letters) > 0) x))
        UNION ALL
        SELECT 8, notiflow.metric_family('notiflow_delivery_attempt_duration_seconds', 'summary',
               'Provider response time of attempts, by provider; quantiles over notiflow.health_window.',
               (SELECT string_agg(s.line, '' ORDER BY s.provider, s.ord)
                  FROM (SELECT q.provider, i AS ord,
                               notiflow.metric_sample('notiflow_delivery_attempt_duration_seconds',
                                                      ARRAY['provider', q.provider, 'quantile', (ARRAY['0.5', '0.95', '0.99'])[i]],
                                                      trim_scale(round((q.q[i] / 1000)::numeric, 6))) AS line
                          FROM quantiles q, generate_series(1, 3) i
                        UNION ALL
                        SELECT p.provider, 4,
                               notiflow.metric_sample('notiflow_delivery_attempt_duration_seconds_sum',
                                                      ARRAY['provider', p.provider], trim_scale(round((p.latency_sum / 1000)::numeric, 6)))
                          FROM by_provider p WHERE p.timed > 0
                        UNION ALL
                        SELECT p.provider, 5,
                               notiflow.metric_sample('notiflow_delivery_attempt_duration_seconds_count',
                                                      ARRAY['provider', p.provider], p.timed)
                          FROM by_provider p WHERE p.timed > 0) s))
        UNION ALL
        SELECT 9, notiflow.metric_family('notiflow_dead_letters_pending', 'gauge', 'Dead letters not replayed.',
               (SELECT notiflow.metric_sample('notiflow_dead_letters_pending', NULL, count(*))
                  FROM notiflow.dead_letters x WHERE x.replayed_at IS NULL))
        UNION ALL
        SELECT 10, notiflow.metric_family('notiflow_queue_depth', 'gauge', 'Deliveries queued or sending, by channel and status.',
               (SELECT string_agg(notiflow.metric_sample('notiflow_queue_depth', ARRAY['channel', q.channel, 'status', q.status],
                                                         q.deliveries), '' ORDER BY q.channel, q.status)
                  FROM notiflow.queue_health q))
        UNION ALL
        SELECT 11, notiflow.metric_family('notiflow_queue_oldest_due_seconds', 'gauge',
               'How long the oldest due delivery has waited, by channel.',
               (SELECT string_agg(notiflow.metric_sample('notiflow_queue_oldest_due_seconds', ARRAY['channel', q.channel],
                                                         trim_scale(round(extract(epoch FROM q.oldest_due_age), 3))), '' ORDER BY q.channel)
                  FROM notiflow.queue_health q WHERE q.status = 'queued' AND q.due > 0))
        UNION ALL
        SELECT 12, notiflow.metric_family('notiflow_provider_circuit_open', 'gauge',
               'Whether a provider''s circuit breaker is open or half open (1) or closed (0).',
               (SELECT string_agg(notiflow.metric_sample('notiflow_provider_circuit_open', ARRAY['provider', c.provider],
                                                         CASE WHEN c.state = 'closed' THEN 0 ELSE 1 END), '' ORDER BY c.provider)
                  FROM notiflow.provider_circuit_state c))
        UNION ALL
        SELECT 13, notiflow.metric_family('notiflow_alerts_open', 'gauge', 'Open alerts, by kind and severity.',
               (SELECT string_agg(notiflow.metric_sample('notiflow_alerts_open', ARRAY['kind', x.kind, 'severity', x.severity],
                                                         x.n), '' ORDER BY x.kind, x.severity)
                  FROM (SELECT a.kind, a.severity, count(*) AS n FROM notiflow.alerts a
                         WHERE a.resolved_at IS NULL GROUP BY a.kind, a.severity) x))
        UNION ALL
        SELECT 14, notiflow.metric_family('notiflow_workers', 'gauge', 'notiflow background workers running, by type.',
               (SELECT string_agg(notiflow.metric_sample('notiflow_workers', ARRAY['type', x.type], x.n), '' ORDER BY x.type)
                  FROM (SELECT replace(w.backend_type, 'notiflow ', '') AS type, count(*) AS n
                          FROM notiflow.worker_status w GROUP BY 1) x))
        UNION ALL
        SELECT 15, notiflow.metric_family('notiflow_dispatcher_deliveries_total', 'counter',
               'Deliveries each dispatcher claimed, sent, retried and failed since it started.',
               (SELECT string_agg(notiflow.metric_sample('notiflow_dispatcher_deliveries_total',
                                                         ARRAY['slot', c.slot::text, 'event', e.event], e.n),
                                  '' ORDER BY c.slot, e.event)
                  FROM notiflow.dispatcher_counters() c,
                       LATERAL (VALUES ('claimed', c.claimed), ('sent', c.sent), ('retried', c.retried),
                                       ('failed', c.failed)) e(event, n)))
        UNION ALL
        SELECT 16, notiflow.metric_family('notiflow_dispatcher_in_flight', 'gauge', 'Requests each dispatcher has in flight.',
               (SELECT string_agg(notiflow.metric_sample('notiflow_dispatcher_in_flight', ARRAY['slot', c.slot::text],
                                                         c.in_flight), '' ORDER BY c.slot)
                  FROM notiflow.dispatcher_counters() c))
    )
    SELECT string_agg(f.text, '' ORDER BY f.ord) INTO body FROM families f;

    -- notiflow.kafka_lag comes with the Kafka consumer: one row per partition, a lag column and label columns
    IF to_regclass('notiflow.kafka_lag') IS NOT NULL THEN
        EXECUTE $q$
            SELECT notiflow.metric_family('notiflow_kafka_consumer_lag', 'gauge',
                       'Messages not consumed yet, by subscription, topic and partition.',
                       string_agg(notiflow.metric_sample('notiflow_kafka_consumer_lag',
                                      ARRAY['subscription', r ->> 'subscription', 'topic', r ->> 'topic',
                                            'partition', r ->> 'partition'],
                                      (r ->> 'lag')::numeric),
                                  '' ORDER BY r ->> 'subscription', r ->> 'topic', (r ->> 'partition')))
              FROM notiflow.kafka_lag k, to_jsonb(k) r
             WHERE r ->> 'lag' IS NOT NULL$q$ INTO lag;
        body := body || lag;
    END IF;
    RETURN body;
END;
$$;
COMMENT ON FUNCTION notiflow.metrics() IS
    'notiflow''s metrics in the Prometheus text format: triggers, executions, deliveries, attempts, retries, fallbacks, '
    'dead letters, latency, queue depth, circuits, alerts, workers, Kafka consumer lag.';

-- Alerts -----------------------------------------------------------------------

CREATE TABLE notiflow.alert_samples (
    kind            text NOT NULL,
    subject         text NOT NULL,
    value           numeric,
    condition_since timestamptz,
    sampled_at      timestamptz NOT NULL,
    PRIMARY KEY (kind, subject)
);
COMMENT ON TABLE notiflow.alert_samples IS
    'What the last notiflow.check_alerts() saw of each condition: the value measured and since when the condition holds (NULL: it does not).';

-- Sends a raised or resolved alert on channel notiflow_alerts; returns the payload.
CREATE FUNCTION notiflow.alert_notify(event text, alert notiflow.alerts) RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    payload jsonb := jsonb_build_object('event', event, 'id', alert.id, 'kind', alert.kind, 'subject', alert.subject,
                                        'severity', alert.severity, 'details', alert.details,
                                        'raised_at', alert.raised_at, 'resolved_at', alert.resolved_at);
BEGIN
    -- a NOTIFY payload must stay under 8000 bytes; the row keeps the details
    PERFORM pg_notify('notiflow_alerts', CASE WHEN octet_length(payload::text) < 7900 THEN payload
                                              ELSE payload - 'details' END::text);
    RETURN payload;
END;
$$;
COMMENT ON FUNCTION notiflow.alert_notify(text, notiflow.alerts) IS
    'NOTIFY notiflow_alerts with {"event": raised|resolved, "id", "kind", "subject", "severity", "details", "raised_at", "resolved_at"}.';

-- Evaluates the alert conditions; raises, keeps or resolves alerts and returns what it did.
CREATE FUNCTION notiflow.check_alerts()
RETURNS TABLE (action text, alert_id bigint, kind text, subject text, severity text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    circuit_after interval := notiflow.setting_checked('notiflow.alert_circuit_open_after', '5 minutes', 'interval')::interval;
    dl_threshold  bigint := round(notiflow.setting_checked('notiflow.alert_dead_letters', '10', 'numeric')::numeric);
    dl_window_setting text := notiflow.setting('notiflow.alert_dead_letters_window', '15 minutes');
    dl_window     interval := notiflow.setting_checked('notiflow.alert_dead_letters_window', '15 minutes', 'interval')::interval;
    worker_after  interval := notiflow.setting_checked('notiflow.alert_worker_down_after', '1 minute', 'interval')::interval;
    lag_threshold numeric := notiflow.setting_checked('notiflow.alert_kafka_lag', '10000', 'numeric')::numeric;
    workflow      text := notiflow.setting('notiflow.alert_workflow', '');
    preloaded     boolean := notiflow.workers_preloaded();
    expected      integer := 0;
    lags          jsonb := '[]';
    c             record;
    a             notiflow.alerts;
    since         timestamptz;
    payload       jsonb;
BEGIN
    -- one evaluation at a time: the samples and the open alerts are read, then written
    PERFORM pg_advisory_xact_lock(hashtextextended('notiflow.check_alerts', 0));
    IF preloaded THEN
        expected := current_setting('notiflow.dispatch_workers')::integer;
    END IF;
    IF to_regclass('notiflow.kafka_lag') IS NOT NULL THEN
        EXECUTE $q$
            SELECT coalesce(jsonb_agg(jsonb_build_object('subject', s.subject, 'lag', s.lag)), '[]')
              FROM (SELECT coalesce(r ->> 'subscription', r ->> 'topic', 'kafka') AS subject,
                           sum((r ->> 'lag')::numeric) AS lag
                      FROM notiflow.kafka_lag k, to_jsonb(k) r
                     WHERE r ->> 'lag' IS NOT NULL
                     GROUP BY 1) s$q$ INTO lags;
    END IF;

    FOR c IN
        WITH evaluated AS (
            -- a circuit that stays open or half open (a failed probe opens it again with a new opened_at)
            -- of enabled providers: only they are probed (a disabled or deleted one's circuit stays as it was)
            SELECT 'circuit_open' AS kind, p.provider AS subject, 'critical' AS severity,
                   p.state <> 'closed' AND coalesce(pr.enabled, false) AS holds, p.opened_at AS holds_since,
                   circuit_after AS hold_for,
                   NULL::numeric AS value,
                   jsonb_build_object('provider', p.provider, 'state', p.state, 'opened_at', p.opened_at,
                                      'consecutive_failures', p.consecutive_failures,
                                      'last_error', left(p.last_error, 500)) AS details
              FROM notiflow.provider_circuits p LEFT JOIN notiflow.providers pr ON pr.name = p.provider
            UNION ALL
            SELECT 'dead_letters', s.source, 'warning', s.n > dl_threshold, NULL, interval '0', s.n,
                   jsonb_build_object('source', s.source, 'count', s.n, 'window', dl_window_setting, 'threshold', dl_threshold)
              FROM (SELECT src.source, count(d.id) AS n
                      FROM unnest(ARRAY['delivery', 'kafka', 'execution']) AS src(source)
                      LEFT JOIN notiflow.dead_letters d ON d.source = src.source AND d.created_at > now() - dl_window
                     GROUP BY src.source) s
            UNION ALL
            SELECT 'worker_down', current_database(), 'critical', expected > 0 AND w.n = 0, NULL, worker_after, w.n,
                   jsonb_build_object('database', current_database(), 'dispatchers', w.n, 'dispatch_workers', expected,
                                      'workers_database', current_setting('notiflow.database_name', true))
              FROM (SELECT count(*) AS n FROM notiflow.worker_status x
                     WHERE x.backend_type = 'notiflow dispatcher' AND x.database = current_database()) w
             WHERE preloaded
            UNION ALL
            -- raised by lag above the threshold that grew since the last check; it lasts while the lag
            -- stays above the threshold (a backlog worked off slowly, or one that moves up and down
            -- from one check to the next, keeps one alert instead of raising a new one each time)
            SELECT 'kafka_lag', k.subject, 'warning',
                   k.lag > lag_threshold AND (k.lag > s.value OR s.condition_since IS NOT NULL),
                   NULL, interval '0', k.lag,
                   jsonb_build_object('subject', k.subject, 'lag', k.lag, 'previous', s.value, 'threshold', lag_threshold)
              FROM jsonb_to_recordset(lags) AS k(subject text, lag numeric)
              LEFT JOIN notiflow.alert_samples s ON s.kind = 'kafka_lag' AND s.subject = k.subject
        )
        SELECT e.*, s.condition_since AS held_since
          FROM evaluated e
          LEFT JOIN notiflow.alert_samples s ON s.kind = e.kind AND s.subject = e.subject
         ORDER BY e.kind, e.subject
    LOOP
        since := CASE WHEN c.holds THEN least(c.held_since, c.holds_since, now()) END;
        INSERT INTO notiflow.alert_samples AS s (kind, subject, value, condition_since, sampled_at)
        VALUES (c.kind, c.subject, c.value, since, now())
        ON CONFLICT (kind, subject) DO UPDATE
           SET value = excluded.value, condition_since = excluded.condition_since, sampled_at = excluded.sampled_at;
        CONTINUE WHEN since IS NULL OR now() - since < c.hold_for;

        UPDATE notiflow.alerts x SET last_seen_at = now(), details = c.details
         WHERE x.kind = c.kind AND x.subject = c.subject AND x.resolved_at IS NULL
        RETURNING * INTO a;
        IF FOUND THEN
            RETURN QUERY SELECT 'ongoing'::text, a.id, a.kind, a.subject, a.severity;
            CONTINUE;
        END IF;
        INSERT INTO notiflow.alerts (kind, subject, severity, details)
        VALUES (c.kind, c.subject, c.severity, c.details)
        RETURNING * INTO a;
        payload := notiflow.alert_notify('raised', a);
        IF workflow <> '' THEN
            -- an alert is recorded and announced even when its workflow cannot start
            BEGIN
                PERFORM notiflow.trigger(workflow, payload, NULL, 'notiflow-alert-' || a.id);
            EXCEPTION WHEN OTHERS THEN
                RAISE WARNING 'alert workflow "%" was not triggered for alert %: %', workflow, a.id, SQLERRM;
            END;
        END IF;
        RETURN QUERY SELECT 'raised'::text, a.id, a.kind, a.subject, a.severity;
    END LOOP;

    -- open alerts this check did not see again have cleared
    FOR a IN UPDATE notiflow.alerts x SET resolved_at = now()
              WHERE x.resolved_at IS NULL AND x.last_seen_at < now()
             RETURNING x.*
    LOOP
        PERFORM notiflow.alert_notify('resolved', a);
        RETURN QUERY SELECT 'resolved'::text, a.id, a.kind, a.subject, a.severity;
    END LOOP;
    DELETE FROM notiflow.alert_samples s WHERE s.sampled_at < now();
END;
$$;
COMMENT ON FUNCTION notiflow.check_alerts() IS
    'Checks circuits open too long, dead letters piling up, dispatchers down and Kafka lag growing; raises an alert '
    '(row, NOTIFY notiflow_alerts, notiflow.alert_workflow) once per condition, and resolves it when the condition clears.';

-- Scheduling -------------------------------------------------------------------

-- The maintenance jobs of this database.
CREATE FUNCTION notiflow.maintenance_jobs() RETURNS TABLE (jobname text, schedule text, command text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- pg_cron's job names are of type name (63 bytes): a longer one would be cut, and then never
    -- found by its full name (nor told apart from another database's); it names the database by
    -- the md5 of its name instead
    SELECT CASE WHEN octet_length(format('notiflow.%s@%s', j.task, current_database())) <= 63
                THEN format('notiflow.%s@%s', j.task, current_database())
                ELSE format('notiflow.%s@%s', j.task, md5(current_database())) END,
           j.schedule, j.command
      FROM (VALUES
            (1, 'aggregate_daily', '15 0 * * *',
             'SELECT notiflow.aggregate_pending()'),
            (2, 'apply_retention', '0 3 * * *', 'CALL notiflow.apply_retention()'),
            (3, 'check_alerts', '* * * * *', 'SELECT count(*) FROM notiflow.check_alerts()')) AS j(ord, task, schedule, command)
     ORDER BY j.ord
$$;
COMMENT ON FUNCTION notiflow.maintenance_jobs() IS
    'The pg_cron jobs notiflow.schedule_maintenance() registers for this database: name, schedule (UTC), command.';

-- Runs operation (schedule, unschedule, status) on the given pg_cron jobs of this database, in pg_cron's database:
-- here, in the caller's transaction, when pg_cron is here; else through a short-lived background worker connected
-- there as the current role, in a transaction of its own (worker/cron_remote.c).  NULL when pg_cron is not there.
CREATE FUNCTION notiflow.cron_call(operation text, jobnames text[], schedules text[], commands text[]) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'cron_call' LANGUAGE C VOLATILE STRICT
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION notiflow.cron_call(text, text[], text[], text[]) IS
    'Schedules ({jobname: jobid}), unschedules ({"removed": n}) or reads (status: [{jobname, jobid, ...}]) pg_cron jobs '
    'of this database as the current role, in pg_cron''s database (through a background worker when that is another '
    'database, in a transaction of its own); NULL when pg_cron is not there.';

CREATE FUNCTION notiflow.cron_database() RETURNS text
    AS 'MODULE_PATHNAME', 'cron_database' LANGUAGE C STABLE;
COMMENT ON FUNCTION notiflow.cron_database() IS
    'pg_cron''s database: this one when the pg_cron extension is here, else cron.database_name; NULL without pg_cron.';

-- Says why the jobs cannot be scheduled, with what to do instead; false when pg_cron is here or in its own database.
CREATE FUNCTION notiflow.cron_unavailable() RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cron_db text := notiflow.cron_database();
    statements text;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
        RETURN false;
    END IF;
    IF cron_db IS NULL THEN
        SELECT string_agg(format('%s  %s', j.schedule, j.command), E'\n') INTO statements FROM notiflow.maintenance_jobs() j;
        RAISE NOTICE 'pg_cron is not installed: the notiflow maintenance jobs are not scheduled'
            USING HINT = E'Run them from another scheduler (schedules in UTC):\n' || statements;
    ELSIF cron_db <> current_database() THEN
        RETURN false;           -- reached through a background worker (notiflow.cron_call)
    ELSE
        PERFORM notiflow.cron_not_created_notice(cron_db);
    END IF;
    RETURN true;
END;
$$;
COMMENT ON FUNCTION notiflow.cron_unavailable() IS
    'Whether pg_cron cannot be reached from this database; when it cannot, a NOTICE says why and what to run instead.';

CREATE FUNCTION notiflow.cron_not_created_notice(cron_db text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE NOTICE 'pg_cron is loaded but its extension is not created in database "%"', cron_db
        USING HINT = format('Run CREATE EXTENSION pg_cron in database "%s", then call this function again.', cron_db);
END;
$$;
COMMENT ON FUNCTION notiflow.cron_not_created_notice(text) IS
    'The NOTICE of the maintenance functions when pg_cron''s database has no pg_cron extension.';

-- notiflow.cron_call() for the maintenance jobs; NULL, with a NOTICE, when pg_cron cannot be reached.
CREATE FUNCTION notiflow.cron_maintenance_call(operation text) RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    result jsonb;
BEGIN
    IF notiflow.cron_unavailable() THEN
        RETURN NULL;
    END IF;
    SELECT notiflow.cron_call(operation, array_agg(j.jobname ORDER BY j.jobname), array_agg(j.schedule ORDER BY j.jobname),
                              array_agg(j.command ORDER BY j.jobname))
      INTO result
      FROM notiflow.maintenance_jobs() j;
    IF result IS NULL THEN
        PERFORM notiflow.cron_not_created_notice(notiflow.cron_database());
    END IF;
    RETURN result;
END;
$$;
COMMENT ON FUNCTION notiflow.cron_maintenance_call(text) IS
    'notiflow.cron_call(operation) for the maintenance jobs of this database; NULL, with a NOTICE, when pg_cron cannot be reached.';

-- Registers the maintenance jobs in pg_cron (once: an unchanged job is left alone).
CREATE FUNCTION notiflow.schedule_maintenance()
RETURNS TABLE (jobname text, schedule text, command text, jobid bigint)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH r AS MATERIALIZED (SELECT notiflow.cron_maintenance_call('schedule') AS ids)
    SELECT j.jobname, j.schedule, j.command, (r.ids ->> j.jobname)::bigint
      FROM r, notiflow.maintenance_jobs() WITH ORDINALITY j(jobname, schedule, command, ord)
     ORDER BY j.ord
$$;
COMMENT ON FUNCTION notiflow.schedule_maintenance() IS
    'Registers in pg_cron, for this database: aggregate_pending (00:15 UTC: the two previous days, and any day missed since the last one aggregated), apply_retention (03:00 UTC) '
    'and check_alerts (every minute); idempotent.  When pg_cron lives in another database, a background worker does it '
    'there as the current role, in a transaction of its own.  Without pg_cron, a NOTICE says what to run instead.';

-- Removes the maintenance jobs of this database from pg_cron; returns how many.
CREATE FUNCTION notiflow.unschedule_maintenance() RETURNS integer
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce((notiflow.cron_maintenance_call('unschedule') ->> 'removed')::integer, 0)
$$;
COMMENT ON FUNCTION notiflow.unschedule_maintenance() IS
    'Removes this database''s notiflow maintenance jobs (the current role''s) from pg_cron, in pg_cron''s database; '
    'run it before DROP EXTENSION.  Returns how many.';

-- The maintenance jobs as pg_cron holds them, with their last run.
CREATE FUNCTION notiflow.maintenance_status()
RETURNS TABLE (jobname text, jobid bigint, username text, active boolean, up_to_date boolean,
               schedule text, command text, database text,
               last_status text, last_start timestamptz, last_end timestamptz, last_message text)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH s AS MATERIALIZED (SELECT jsonb_array_elements(notiflow.cron_maintenance_call('status')) AS c)
    SELECT m.jobname, (s.c ->> 'jobid')::bigint, s.c ->> 'username', (s.c ->> 'active')::boolean,
           s.c ->> 'schedule' = m.schedule AND s.c ->> 'command' = m.command AND s.c ->> 'database' = current_database(),
           s.c ->> 'schedule', s.c ->> 'command', s.c ->> 'database', s.c ->> 'last_status',
           (s.c ->> 'last_start')::timestamptz, (s.c ->> 'last_end')::timestamptz, s.c ->> 'last_message'
      FROM notiflow.maintenance_jobs() WITH ORDINALITY m(jobname, schedule, command, ord)
      LEFT JOIN s ON s.c ->> 'jobname' = m.jobname
     ORDER BY m.ord, s.c ->> 'username'
$$;
COMMENT ON FUNCTION notiflow.maintenance_status() IS
    'Each maintenance job of this database as pg_cron holds it (read in pg_cron''s database, through a background worker '
    'when that is another one; jobs of other roles only for a superuser): id, role, active, whether it matches '
    'maintenance_jobs(), and its last run.  A job pg_cron does not have gives a row of nulls.';

-- REST API ---------------------------------------------------------------------

-- With the REST API schema (70_api.sql): read-only views, health (anonymous) and metrics (text/plain).
DO $api$
BEGIN
    IF to_regnamespace('notiflow_api') IS NULL THEN
        RETURN;
    END IF;
    CREATE VIEW notiflow_api.daily_stats WITH (security_invoker) AS SELECT * FROM notiflow.daily_stats;
    CREATE VIEW notiflow_api.alerts WITH (security_invoker) AS SELECT * FROM notiflow.alerts;
    CREATE VIEW notiflow_api.queue_health WITH (security_invoker) AS SELECT * FROM notiflow.queue_health;
    CREATE VIEW notiflow_api.provider_health WITH (security_invoker) AS SELECT * FROM notiflow.provider_health;
    COMMENT ON VIEW notiflow_api.daily_stats IS 'Metrics per UTC day, workflow, channel and provider.';
    COMMENT ON VIEW notiflow_api.alerts IS 'Alerts, open (resolved_at null) and resolved.';
    COMMENT ON VIEW notiflow_api.queue_health IS 'Deliveries queued or sending per channel and status, and the oldest due age.';
    COMMENT ON VIEW notiflow_api.provider_health IS 'Success rate, latency, circuit state and last error of every provider.';

    -- PostgREST answers with the media type a function's return domain is named after
    IF to_regtype('notiflow_api."text/plain"') IS NULL THEN
        CREATE DOMAIN notiflow_api."text/plain" AS text;
    END IF;
    -- The queue's counts only for a caller who has the privileges of notiflow_reader:
    -- the request's role (PostgREST's SET ROLE; a SECURITY DEFINER function keeps that
    -- setting), or the session's own role when none was set.  By oid: a role dropped
    -- since, or no notiflow_reader, is NULL, and gets no counts (a name would raise).
    CREATE FUNCTION notiflow_api.health() RETURNS json
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $f$
        SELECT notiflow.health(queue_counts => coalesce(
                   pg_has_role(to_regrole(quote_ident(CASE WHEN current_setting('role') = 'none' THEN session_user::text
                                                           ELSE current_setting('role') END)),
                               to_regrole('notiflow_reader'), 'USAGE'),
                   false))::json
    $f$;
    COMMENT ON FUNCTION notiflow_api.health() IS
        'Health: {"status": "ok" or "degraded", "database", "workers", and for members of notiflow_reader "queue"}; '
        'callable without credentials.';
    CREATE FUNCTION notiflow_api.metrics() RETURNS notiflow_api."text/plain"
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $f$ SELECT notiflow.metrics()::notiflow_api."text/plain" $f$;
    COMMENT ON FUNCTION notiflow_api.metrics() IS 'Metrics in the Prometheus text format (text/plain).';
    REVOKE ALL ON FUNCTION notiflow_api.health(), notiflow_api.metrics() FROM PUBLIC;

    -- the roles of 70_api.sql form the chain anon < reader < writer < admin: each grant goes to the first that may
    IF to_regrole('notiflow_anon') IS NOT NULL THEN
        GRANT EXECUTE ON FUNCTION notiflow_api.health() TO notiflow_anon;
    END IF;
    IF to_regrole('notiflow_reader') IS NOT NULL THEN
        GRANT EXECUTE ON FUNCTION notiflow_api.metrics() TO notiflow_reader;
        GRANT SELECT ON notiflow_api.daily_stats, notiflow_api.alerts, notiflow_api.queue_health,
                        notiflow_api.provider_health TO notiflow_reader;
        -- the views run with the caller's rights
        GRANT SELECT ON notiflow.daily_stats, notiflow.alerts, notiflow.queue_health, notiflow.provider_health
                     TO notiflow_reader;
    END IF;
END;
$api$;
