#!/usr/bin/env bash
# test/t/cron.sh — the maintenance jobs under pg_cron, in a cluster started
# with shared_preload_libraries = 'pg_cron,notiflow': schedule_maintenance()
# registers its three jobs once however often it runs; jobs pg_cron starts run
# aggregate_daily() and CALL apply_retention() (a procedure that commits
# between batches); check_alerts() notifies notiflow_alerts, sees the
# dispatchers and raises worker_down in a database no dispatcher serves;
# worker_status and metrics show the dispatchers' counters; from another
# database the jobs go to pg_cron's (test/t/cron_remote.sh tests that in
# depth); the REST functions keep their grants.  Then, in a cluster without
# pg_cron: the NOTICE, every job run by hand, and Kafka lag alerts and metrics.
set -uo pipefail
cd "$(dirname "$0")/../.."
source test/lib/tap.sh
source test/lib/cluster.sh

cleanup() {
    [ -n "${NOTIFLOW_TEST_LOGS:-}" ] && [ -n "${CLUSTER_DIR:-}" ] && cp "$CLUSTER_DIR/server.log" "$NOTIFLOW_TEST_LOGS/cron-server.log"
    cluster_stop
}
trap cleanup EXIT

DB=notiflow_cron
OTHER=notiflow_other
cluster_start "shared_preload_libraries = 'pg_cron,notiflow'" "cron.database_name = '$DB'" \
    "cron.host = '127.0.0.1'" "notiflow.database_name = '$DB'" >/dev/null ||
    { echo "Bail out! cluster did not start"; exit 1; }
psql -X -q -d postgres -c "CREATE DATABASE $DB" -c "CREATE DATABASE $OTHER" >/dev/null
sql() { psql -X -q -At -v ON_ERROR_STOP=1 -d "${SQL_DB:-$DB}" -c "$1"; }
sql_is() { [ "$(sql "$1" 2>/dev/null)" = "$2" ]; }
sql "CREATE EXTENSION pg_cron" >/dev/null && sql "CREATE EXTENSION notiflow" >/dev/null ||
    { echo "Bail out! extensions not created"; exit 1; }

# --- 1. schedule_maintenance() registers the jobs once ---------------------------------------
first=$(sql "SELECT string_agg(jobname || '=' || jobid, ',' ORDER BY jobname) FROM notiflow.schedule_maintenance()")
second=$(sql "SELECT string_agg(jobname || '=' || jobid, ',' ORDER BY jobname) FROM notiflow.schedule_maintenance()")
ok $([ -n "$first" ] && [ "$first" = "$second" ]; echo $?) "schedule_maintenance() twice returns the same jobs ($first)"
is "$(sql "SELECT string_agg(format('%s|%s|%s', jobname, schedule, database), ' ' ORDER BY jobname) FROM cron.job")" \
   "notiflow.aggregate_daily@$DB|15 0 * * *|$DB notiflow.apply_retention@$DB|0 3 * * *|$DB notiflow.check_alerts@$DB|* * * * *|$DB" \
   "pg_cron holds the three jobs once, in this database"
sql "SELECT cron.alter_job((SELECT jobid FROM cron.job WHERE jobname = 'notiflow.check_alerts@$DB'), schedule => '*/5 * * * *')" >/dev/null
third=$(sql "SELECT string_agg(jobname || '=' || jobid, ',' ORDER BY jobname) FROM notiflow.schedule_maintenance()")
is "$third" "$first" "a job changed by hand is put back under the same id"
is "$(sql "SELECT schedule FROM cron.job WHERE jobname = 'notiflow.check_alerts@$DB'")" "* * * * *" "with its schedule"

# --- 2. jobs pg_cron runs ---------------------------------------------------------------
# pg_cron 1.5 takes '1 seconds'; older versions (Debian bookworm has 1.4) only minutes
sql "INSERT INTO notiflow.executions (workflow_key, workflow_version, status, payload, created_at, finished_at)
     SELECT 'cron_old', 1, 'completed', '{}', now() - interval '7 months', now() - interval '7 months'
       FROM generate_series(1, 5);
     INSERT INTO notiflow.executions (workflow_key, workflow_version, status, payload) VALUES ('cron_today', 1, 'running', '{}')" >/dev/null
schedule='1 seconds'
sql "SELECT cron.schedule('notiflow-test-probe', '$schedule', 'SELECT 1')" >/dev/null 2>&1 || schedule='* * * * *'
sql "SELECT cron.unschedule('notiflow-test-probe')" >/dev/null 2>&1
aggregate_job=$(sql "SELECT cron.schedule('notiflow-test-aggregate', '$schedule', 'SELECT notiflow.aggregate_daily((now() AT TIME ZONE ''UTC'')::date)')")
retention_job=$(sql "SELECT cron.schedule('notiflow-test-retention', '$schedule', 'CALL notiflow.apply_retention(batch_size => 2)')")
echo "# pg_cron schedule used: '$schedule'"
job_succeeded() { sql_is "SELECT bool_or(status = 'succeeded') FROM cron.job_run_details WHERE jobid = $1" t; }
wait_for 90 job_succeeded "$aggregate_job"
ok $? "pg_cron ran aggregate_daily(today)"
is "$(sql "SELECT executions FROM notiflow.daily_stats
            WHERE day = (now() AT TIME ZONE 'UTC')::date AND workflow_key = 'cron_today'")" 1 \
   "today's statistics are there"
wait_for 90 job_succeeded "$retention_job"
ok $? "pg_cron CALLed apply_retention(), which commits between batches"
is "$(sql "SELECT count(*) FROM notiflow.executions WHERE workflow_key = 'cron_old'") $(sql "SELECT count(*) FROM notiflow_archive.executions WHERE workflow_key = 'cron_old'")" \
   "0 5" "the old executions moved to the archive"
alerts_job=$(sql "SELECT jobid FROM cron.job WHERE jobname = 'notiflow.check_alerts@$DB'")
wait_for 90 job_succeeded "$alerts_job"
ok $? "pg_cron ran the maintenance job check_alerts"
# from here on the tests call check_alerts() themselves
sql "SELECT cron.unschedule('notiflow-test-aggregate'), cron.unschedule('notiflow-test-retention');
     SELECT cron.alter_job(jobid, active => false) FROM cron.job WHERE jobname LIKE 'notiflow.%'" >/dev/null
failed_runs=$(sql "SELECT count(*) FROM cron.job_run_details WHERE jobid IN ($aggregate_job, $retention_job, $alerts_job) AND status = 'failed'")
is "$failed_runs" 0 "no run failed"
[ "$failed_runs" = 0 ] || sql "SELECT jobid, return_message FROM cron.job_run_details WHERE status = 'failed' LIMIT 3" | sed 's/^/# /'

# jobs someone deactivated are scheduled again, active, by schedule_maintenance() (pg_cron 1.4 keeps
# a job's active flag when it replaces the job: they are removed first, and get new ids)
# (in a transaction rolled back: pg_cron never sees them active, and check_alerts does not run now)
is "$(psql -X -q -At -v ON_ERROR_STOP=1 -d $DB <<'SQL' | tail -1
BEGIN;
SELECT count(*) FROM notiflow.schedule_maintenance();
SELECT count(*) FILTER (WHERE active) || '/' || count(*) FROM cron.job WHERE jobname LIKE 'notiflow.%@' || current_database();
ROLLBACK;
SQL
)" "3/3" "schedule_maintenance() schedules deactivated jobs again, active"

# --- 3. workers: status, counters, metrics, no alert ------------------------------------------
wait_for 30 sql_is "SELECT count(*) FROM notiflow.worker_status WHERE backend_type = 'notiflow dispatcher' AND slot IS NOT NULL" 1
ok $? "worker_status shows the dispatcher with its shared-memory slot"
is "$(sql "SELECT count(*) FROM notiflow.worker_status WHERE backend_type = 'notiflow launcher'")" 1 "and the launcher"
is "$(sql "SELECT claimed >= 0 AND sent >= 0 AND retried >= 0 AND failed >= 0 AND in_flight >= 0 AND started_at <= now()
             FROM notiflow.worker_status WHERE slot IS NOT NULL")" t "the dispatcher's counters are read"
metrics=$(sql "SELECT notiflow.metrics()")
ok $(grep -q '^notiflow_workers{type="dispatcher"} 1$' <<<"$metrics"; echo $?) "metrics count the dispatcher"
ok $(grep -qE '^notiflow_dispatcher_deliveries_total\{slot="[0-9]+",event="claimed"\} [0-9]+$' <<<"$metrics"; echo $?) \
   "metrics carry its counters"
is "$(sql "SELECT notiflow.health() #>> '{workers}'")" '{"expected": 1, "preloaded": true, "dispatchers": 1}' \
   "health() sees the expected dispatcher"
is "$(sql "SELECT count(*) FROM notiflow.check_alerts() WHERE kind = 'worker_down'")" 0 "no worker_down where the dispatcher runs"

# in a database no dispatcher serves: worker_down once it lasted notiflow.alert_worker_down_after (1 minute)
SQL_DB=$OTHER sql "CREATE EXTENSION notiflow" >/dev/null
is "$(SQL_DB=$OTHER sql "SELECT count(*) FROM notiflow.check_alerts()")" 0 "no alert at the first check without a dispatcher"
SQL_DB=$OTHER sql "UPDATE notiflow.alert_samples SET condition_since = condition_since - interval '2 minutes' WHERE kind = 'worker_down'" >/dev/null
is "$(SQL_DB=$OTHER sql "SELECT string_agg(action || ' ' || kind || ' ' || subject || ' ' || severity, ',') FROM notiflow.check_alerts()")" \
   "raised worker_down $OTHER critical" "worker_down is raised a minute later"
is "$(SQL_DB=$OTHER sql "SELECT notiflow.health() ->> 'status'")" degraded "health() says degraded there"
# pg_cron lives in $DB: from $OTHER the jobs are scheduled there by a background worker (test/t/cron_remote.sh)
is "$(SQL_DB=$OTHER sql "SELECT count(jobid) FROM notiflow.schedule_maintenance()")" 3 \
   "schedule_maintenance() in another database registers its jobs"
is "$(sql "SELECT string_agg(DISTINCT database, ',') || ' ' || count(*) FROM cron.job WHERE jobname LIKE '%@$OTHER'")" "$OTHER 3" \
   "in pg_cron's database, for that database"
is "$(SQL_DB=$OTHER sql "SELECT notiflow.unschedule_maintenance()")" 3 "and unschedule_maintenance() there removes them"
# a database whose name makes job names longer than pg_cron's 63 bytes: pg_cron would cut them, and
# notiflow would never find them again by their full names
LONG=notiflow_database_with_a_rather_long_name_0123456789
psql -X -q -d postgres -c "CREATE DATABASE $LONG" >/dev/null
SQL_DB=$LONG sql "CREATE EXTENSION notiflow" >/dev/null
is "$(SQL_DB=$LONG sql "SELECT count(jobid) FROM notiflow.schedule_maintenance()")" 3 \
   "a database with a 52-character name registers its jobs"
is "$(SQL_DB=$LONG sql "SELECT count(*) FILTER (WHERE up_to_date) || ' ' || max(octet_length(jobname)) FROM notiflow.maintenance_status()")" \
   "3 57" "maintenance_status() finds all three, up to date (names of at most 63 bytes)"
is "$(SQL_DB=$LONG sql "SELECT notiflow.unschedule_maintenance()")" 3 "and unschedule_maintenance() removes them"

# --- 4. alerts are announced on notiflow_alerts ----------------------------------------------
listen() { psql -X -q -At -d $DB -c "LISTEN notiflow_alerts" -c "$1" -c "SELECT count(*) FROM notiflow.check_alerts()" 2>&1; }
# (a circuit counts for an enabled provider only: a disabled or deleted one is never probed)
sql "SELECT notiflow.put_provider('cron-p', 'webhook', 'webhook', '{\"url\": \"https://hooks.example.com/p\", \"secret\": \"s\"}', 5000)" >/dev/null
out=$(listen "INSERT INTO notiflow.provider_circuits (provider, state, consecutive_failures, opened_at, last_error)
              VALUES ('cron-p', 'open', 5, now() - interval '10 minutes', 'HTTP 503')")
notified() { grep 'Asynchronous notification "notiflow_alerts" with payload' <<<"$out" | grep "\"event\": \"$1\"" |
             grep '"kind": "circuit_open"' | grep -q '"subject": "cron-p"'; }
ok $(notified raised; echo $?) "a raised alert is notified with its JSON"
out=$(listen "SELECT 1")
ok $(grep -q 'Asynchronous notification' <<<"$out"; [ $? -ne 0 ]; echo $?) "an ongoing alert is not notified again"
out=$(listen "UPDATE notiflow.provider_circuits SET state = 'closed', opened_at = NULL WHERE provider = 'cron-p'")
ok $(notified resolved; echo $?) "its resolution is notified"

# --- 5. the REST functions' grants ------------------------------------------------------------
if [ "$(sql "SELECT to_regnamespace('notiflow_api') IS NOT NULL")" = t ]; then
    as_role() { psql -X -q -At -d $DB -c "SET ROLE $1" -c "$2" 2>&1; }
    is "$(as_role notiflow_anon "SELECT notiflow_api.health() ->> 'status'")" ok "notiflow_anon may call health()"
    # the queue's counts read every queued delivery: not for a caller without credentials
    is "$(as_role notiflow_anon "SELECT (notiflow_api.health()::jsonb) ? 'queue'")" f "anonymous health() has no queue counts"
    is "$(as_role notiflow_reader "SELECT notiflow_api.health()::jsonb #> '{queue}' ?& ARRAY['queued', 'due']")" t \
       "notiflow_reader's health() has them"
    is "$(sql "SELECT notiflow_api.health()::jsonb ? 'queue'")" t "and so has a superuser's, with no role set"
    out=$(as_role notiflow_anon "SELECT notiflow_api.metrics()")
    ok $(grep -q 'permission denied for function metrics' <<<"$out"; echo $?) "but not metrics()"
    out=$(as_role notiflow_reader "SELECT notiflow_api.metrics()")
    ok $(grep -q '^# TYPE notiflow_triggers_total counter$' <<<"$out"; echo $?) "notiflow_reader reads the metrics"
    is "$(sql "SELECT format_type(prorettype, NULL) FROM pg_proc WHERE oid = 'notiflow_api.metrics'::regproc")" \
       'notiflow_api."text/plain"' "metrics() returns the text/plain media type"
    is "$(as_role notiflow_reader "SELECT count(*) >= 0 FROM notiflow_api.daily_stats, notiflow_api.alerts, notiflow_api.queue_health, notiflow_api.provider_health")" \
       t "notiflow_reader reads the monitoring views"
else
    echo "ok $((TAP_COUNT += 1)) # SKIP no notiflow_api schema"
fi

# --- 6. unschedule, then a cluster without pg_cron ---------------------------------------------
is "$(sql "SELECT notiflow.unschedule_maintenance()")" 3 "unschedule_maintenance() removes the three jobs"
is "$(sql "SELECT count(*) FROM cron.job")" 0 "pg_cron has none left"
cleanup
cluster_start >/dev/null || { echo "Bail out! second cluster did not start"; exit 1; }
psql -X -q -d postgres -c "CREATE DATABASE $DB" >/dev/null
sql "CREATE EXTENSION notiflow" >/dev/null
out=$(psql -X -q -At -d $DB -c "SELECT count(*) FROM notiflow.schedule_maintenance() WHERE jobid IS NULL" 2>&1)
ok $(grep -q "NOTICE:  pg_cron is not installed: the notiflow maintenance jobs are not scheduled" <<<"$out"; echo $?) \
   "without pg_cron: a NOTICE"
ok $(grep -q '^3$' <<<"$out"; echo $?) "and the three jobs are listed unscheduled"
is "$(sql "SELECT notiflow.aggregate_daily(current_date)")" 0 "aggregate_daily() runs by hand"
ok $(psql -X -q -d $DB -c "CALL notiflow.apply_retention()" 2>&1 | grep -q 'archived 0 executions'; echo $?) "apply_retention() runs by hand"
is "$(sql "SELECT count(*) FROM notiflow.check_alerts()")" 0 "check_alerts() runs by hand (no worker_down when not preloaded)"
is "$(sql "SELECT notiflow.workers_preloaded()")|$(sql "SELECT count(*) FROM notiflow.worker_status")" "f|0" \
   "not preloaded: no shared memory, no workers"

# --- 7. Kafka lag, from notiflow.kafka_lag (its tables written here: no consumer runs) ----------
sql "INSERT INTO notiflow.kafka_subscriptions (name, brokers, topics, workflow_key, mode, group_id)
     VALUES ('orders', '127.0.0.1:9', '{orders}', 'w', 'trigger', 'notiflow-orders');
     INSERT INTO notiflow.kafka_partition_state (subscription, topic, partition, assigned, high_watermark)
     VALUES ('orders', 'orders', 0, true, 25000), ('orders', 'orders', 1, true, 100);
     INSERT INTO notiflow.kafka_offsets (subscription, group_id, topic, partition, next_offset)
     VALUES ('orders', 'notiflow-orders', 'orders', 0, 5000), ('orders', 'notiflow-orders', 'orders', 1, 100)" >/dev/null
# lag_check LAG: sets partition 0's lag and prints what check_alerts() did about Kafka
lag_check() { sql "UPDATE notiflow.kafka_partition_state SET high_watermark = 5000 + $1 WHERE partition = 0" >/dev/null
              sql "SELECT coalesce(string_agg(action || ' ' || subject, ','), 'none') FROM notiflow.check_alerts() WHERE kind = 'kafka_lag'"; }
is "$(lag_check 20000)" none "lag above the threshold (10000) but not growing yet: no alert"
is "$(lag_check 30000)" "raised orders" "lag growing above the threshold: kafka_lag raised for the subscription"
is "$(lag_check 30000)" "ongoing orders" "lag that stays: the alert stays"
ok $(sql "SELECT notiflow.metrics()" | grep -q '^notiflow_kafka_consumer_lag{subscription="orders",topic="orders",partition="0"} 30000$'; echo $?) \
   "metrics show the lag per partition"
is "$(lag_check 29000)" "ongoing orders" "lag shrinking but still above the threshold: the alert stays (no flapping)"
is "$(lag_check 31000)" "ongoing orders" "and growing again: still the same alert"
is "$(lag_check 5000)" "resolved orders" "lag below the threshold: resolved"

done_testing
