#!/usr/bin/env bash
# test/t/cron_remote.sh — the maintenance jobs when pg_cron lives in another
# database (cron.database_name = 'postgres') than notiflow: from notiflow's
# database, schedule_maintenance() registers the jobs in pg_cron's database
# for notiflow's (through a short-lived background worker connected there as
# the calling role), leaves unchanged jobs alone and puts changed ones back;
# maintenance_status() reads them there; pg_cron runs a job in notiflow's
# database; errors (no CONNECT, no privilege on pg_cron, no LOGIN, no worker
# slot) are plain errors with their SQLSTATE; an interrupted call leaves no
# worker behind; unschedule_maintenance() removes the jobs, in a transaction
# of its own.
set -uo pipefail
cd "$(dirname "$0")/../.."
source test/lib/tap.sh
source test/lib/cluster.sh

cleanup() {
    [ -n "${NOTIFLOW_TEST_LOGS:-}" ] && [ -n "${CLUSTER_DIR:-}" ] && cp "$CLUSTER_DIR/server.log" "$NOTIFLOW_TEST_LOGS/cron-remote-server.log"
    cluster_stop
}
trap cleanup EXIT

DB=notiflow_remote
cluster_start "shared_preload_libraries = 'pg_cron,notiflow'" "cron.database_name = 'postgres'" \
    "cron.host = '127.0.0.1'" "notiflow.database_name = '$DB'" "notiflow.dispatch_workers = 0" >/dev/null ||
    { echo "Bail out! cluster did not start"; exit 1; }
psql -X -q -d postgres -c "CREATE DATABASE $DB" >/dev/null
# sql [DB] QUERY: one query, unaligned; cron_sql: the same in pg_cron's database
sql() { psql -X -q -At -v ON_ERROR_STOP=1 -d "${SQL_DB:-$DB}" ${SQL_USER:+-U "$SQL_USER"} -c "$1"; }
cron_sql() { SQL_DB=postgres sql "$1"; }
sql_is() { [ "$(sql "$1" 2>/dev/null)" = "$2" ]; }
sql "CREATE EXTENSION notiflow" >/dev/null || { echo "Bail out! extension not created"; exit 1; }
export PGOPTIONS="-c client_min_messages=notice"
jobs_of() { cron_sql "SELECT string_agg(format('%s|%s|%s|%s', jobname, schedule, database, username), ' ' ORDER BY jobname)
                        FROM cron.job WHERE database = '$DB' ${1:+AND username = '$1'}"; }
WANT="notiflow.aggregate_daily@$DB|15 0 * * *|$DB|postgres notiflow.apply_retention@$DB|0 3 * * *|$DB|postgres notiflow.check_alerts@$DB|* * * * *|$DB|postgres"
ids() { sql "SELECT string_agg(jobname || '=' || jobid, ',' ORDER BY jobname) FROM notiflow.schedule_maintenance()"; }

# --- 1. pg_cron loaded, its extension not created yet ------------------------------------------
out=$(psql -X -q -At -d $DB -c "SELECT count(*) FROM notiflow.schedule_maintenance() WHERE jobid IS NULL" 2>&1)
ok $(grep -q 'NOTICE:  pg_cron is loaded but its extension is not created in database "postgres"' <<<"$out"; echo $?) \
   "without the pg_cron extension in its database: a NOTICE naming that database"
ok $(grep -q '^3$' <<<"$out"; echo $?) "and the three jobs listed unscheduled"

# --- 2. scheduled from notiflow's database, in pg_cron's ---------------------------------------
cron_sql "CREATE EXTENSION pg_cron" >/dev/null || { echo "Bail out! pg_cron not created"; exit 1; }
first=$(ids)
is "$(jobs_of)" "$WANT" "schedule_maintenance() registered the three jobs in pg_cron's database, for $DB"
xmins=$(cron_sql "SELECT string_agg(xmin::text, ',' ORDER BY jobid) FROM cron.job")
second=$(ids)
ok $([ -n "$first" ] && [ "$first" = "$second" ]; echo $?) "a second call returns the same jobs ($first)"
is "$(cron_sql "SELECT string_agg(xmin::text, ',' ORDER BY jobid) FROM cron.job")" "$xmins" \
   "and leaves them alone (not rewritten)"
cron_sql "SELECT cron.alter_job((SELECT jobid FROM cron.job WHERE jobname = 'notiflow.check_alerts@$DB'), schedule => '*/5 * * * *')" >/dev/null
is "$(ids)" "$first" "a job changed by hand is put back under the same id"
is "$(jobs_of)" "$WANT" "with its schedule"
is "$(sql "SELECT string_agg(format('%s|%s|%s|%s', jobid, username, active, up_to_date), ' ' ORDER BY jobname)
             FROM notiflow.maintenance_status()")" \
   "$(cron_sql "SELECT string_agg(jobid || '|postgres|t|t', ' ' ORDER BY jobname) FROM cron.job")" \
   "maintenance_status() reads them from pg_cron's database"

# --- 3. roles and privileges ------------------------------------------------------------------
cron_sql "CREATE ROLE regress_cron_alice LOGIN; CREATE ROLE regress_cron_bob NOLOGIN;
          GRANT regress_cron_bob TO regress_cron_alice; REVOKE CONNECT ON DATABASE postgres FROM PUBLIC" >/dev/null
sql "GRANT USAGE ON SCHEMA notiflow TO regress_cron_alice, regress_cron_bob" >/dev/null
as_alice() { SQL_USER=regress_cron_alice "$@"; }
# sqlv QUERY: what the query printed on stderr as regress_cron_alice, with SQLSTATEs
sqlv() { psql -X -q -At -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -d $DB -U regress_cron_alice -c "$1" 2>&1 >/dev/null; }
out=$(sqlv "SELECT * FROM notiflow.schedule_maintenance()")
ok $(grep -q '^ERROR:  42501: permission denied for database postgres' <<<"$out" &&
     grep -q '^HINT:  GRANT CONNECT ON DATABASE postgres TO regress_cron_alice.' <<<"$out"; echo $?) \
   "a role without CONNECT on pg_cron's database: 42501, and the GRANT to run"
cron_sql "GRANT CONNECT ON DATABASE postgres TO regress_cron_alice" >/dev/null
out=$(sqlv "SELECT * FROM notiflow.schedule_maintenance()")
ok $(grep -q "^ERROR:  42501: could not schedule the notiflow maintenance jobs in pg_cron's database \"postgres\": permission denied for schema cron" <<<"$out"; echo $?) \
   "without USAGE on schema cron: pg_cron's error, from the worker, with its SQLSTATE"
ok $(grep -q '^HINT:  In database "postgres" the role needs USAGE on schema cron' <<<"$out"; echo $?) "and what to grant"
cron_sql "GRANT USAGE ON SCHEMA cron TO regress_cron_alice" >/dev/null
out=$(sqlv "SELECT * FROM notiflow.schedule_maintenance()")
ok $(grep -q "^ERROR:  42501: .*: permission denied for function schedule_in_database" <<<"$out"; echo $?) \
   "without EXECUTE on cron.schedule_in_database(): permission denied"
out=$(psql -X -q -At -v VERBOSITY=verbose -d $DB -U regress_cron_alice -c "SET ROLE regress_cron_bob" \
      -c "SELECT * FROM notiflow.schedule_maintenance()" 2>&1 >/dev/null)
ok $(grep -q '^ERROR:  42501: role "regress_cron_bob" may not log in to pg_cron'"'"'s database "postgres"' <<<"$out"; echo $?) \
   "a role without LOGIN (SET ROLE): a plain error"
cron_sql "GRANT EXECUTE ON FUNCTION cron.schedule_in_database TO regress_cron_alice" >/dev/null
as_alice sql "SELECT count(jobid) FROM notiflow.schedule_maintenance()" >/dev/null
is "$(jobs_of regress_cron_alice)" "${WANT//|postgres/|regress_cron_alice}" \
   "with the grants, a role schedules its own jobs (they run as that role)"
is "$(as_alice sql "SELECT string_agg(DISTINCT username, ',') || ' ' || count(*) FROM notiflow.maintenance_status()")" \
   "regress_cron_alice 3" "maintenance_status() shows a role its own jobs"
is "$(sql "SELECT count(*) FROM notiflow.maintenance_status()")" 6 "and a superuser every role's"
is "$(as_alice sql "SELECT notiflow.unschedule_maintenance()")" 3 "unschedule_maintenance() removes the role's own jobs"
is "$(jobs_of)" "$WANT" "and no other role's"

# --- 4. an interrupted call leaves no worker behind ----------------------------------------------
cron_workers() { sql "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'notiflow cron'"; }
psql -X -q -d postgres -c "BEGIN" -c "LOCK TABLE cron.job IN ACCESS EXCLUSIVE MODE" \
     -c "SELECT pg_sleep(60)" >/dev/null 2>&1 &
locker=$!
wait_for 10 sql_is "SELECT count(*) > 0 FROM pg_locks l JOIN pg_database d ON d.oid = l.database
                     WHERE d.datname = 'postgres' AND l.mode = 'AccessExclusiveLock' AND l.granted" t
out=$(PGOPTIONS="$PGOPTIONS -c statement_timeout=2s" sql "SELECT * FROM notiflow.schedule_maintenance()" 2>&1)
ok $(grep -q 'canceling statement due to statement timeout' <<<"$out"; echo $?) \
   "a call whose worker waits (cron.job locked) stops at statement_timeout"
wait_for 10 sql_is "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'notiflow cron'" 0
ok $? "and its worker is gone while the lock is still held"
sql "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE datname = 'postgres' AND query = 'SELECT pg_sleep(60)'" >/dev/null
wait "$locker" 2>/dev/null
is "$(ids)" "$first" "the jobs are as they were"

# --- 5. no background worker slot free ---------------------------------------------------------
# dispatchers (in $DB) take every slot max_worker_processes leaves
sql "ALTER SYSTEM SET notiflow.dispatch_workers = 16" >/dev/null && sql "SELECT pg_reload_conf()" >/dev/null
slot_error() { out=$(psql -X -q -At -v VERBOSITY=verbose -d $DB -c "SELECT * FROM notiflow.schedule_maintenance()" 2>&1 >/dev/null)
               grep -q '^ERROR:  53400: could not schedule the notiflow maintenance jobs: no background worker slot is free' <<<"$out"; }
wait_for 60 slot_error
ok $? "no background worker slot free: 53400, a plain error"
ok $(grep -q '^HINT:  .*raise max_worker_processes' <<<"$out"; echo $?) "naming max_worker_processes"
sql "ALTER SYSTEM RESET notiflow.dispatch_workers" >/dev/null && sql "SELECT pg_reload_conf()" >/dev/null
wait_for 60 sql_is "SELECT string_agg(jobname || '=' || jobid, ',' ORDER BY jobname) FROM notiflow.schedule_maintenance()" "$first"
ok $? "once slots are free again, it works"

# --- 6. pg_cron runs a maintenance job in notiflow's database ----------------------------------------
alerts_job=$(cron_sql "SELECT jobid FROM cron.job WHERE jobname = 'notiflow.check_alerts@$DB' AND username = 'postgres'")
ran() { [ "$(cron_sql "SELECT count(*) FROM cron.job_run_details WHERE jobid = $alerts_job AND database = '$DB' AND status = 'succeeded'")" -gt 0 ]; }
wait_for 90 ran
ok $? "pg_cron ran check_alerts in $DB (every minute)"
is "$(sql "SELECT last_status FROM notiflow.maintenance_status() WHERE jobname = 'notiflow.check_alerts@$DB'")" succeeded \
   "maintenance_status() shows its last run"

# --- 7. unscheduling: in pg_cron's database, in a transaction of its own -------------------------------
is "$(psql -X -q -At -d $DB -c "BEGIN" -c "SELECT notiflow.unschedule_maintenance()" -c "ROLLBACK" 2>&1)" 3 \
   "unschedule_maintenance() removes the three jobs"
is "$(cron_sql "SELECT count(*) FROM cron.job WHERE database = '$DB'")" 0 \
   "at once, in pg_cron's database: the caller's ROLLBACK does not bring them back"
is "$(sql "SELECT notiflow.unschedule_maintenance()")" 0 "a second call removes nothing"
is "$(sql "SELECT count(*) FILTER (WHERE jobid IS NULL) FROM notiflow.maintenance_status()")" 3 \
   "maintenance_status() lists the jobs as missing"
is "$(cron_workers)" 0 "no notiflow cron worker is left"
ok $(grep -q 'terminated by signal' "$CLUSTER_DIR/server.log"; [ $? -ne 0 ]; echo $?) \
   "no process crashed"

done_testing
