#!/usr/bin/env bash
# bench/dispatch.sh — how fast the delivery dispatchers move deliveries from
# `queued` to recorded-as-`sent`, next to what the same HTTP double can take,
# on one durable throw-away cluster in one run:
#
#   HTTP ceiling  wrk -t2 -c64 with test/doubles/wrk_sendgrid.lua against the
#                 provider double (--no-record): requests/s.
#   libcurl       bench/curl_client.c: for each configuration's dispatchers and
#                 http_concurrency (W/C), W processes that each keep C of the
#                 same requests in flight through libcurl the way
#                 worker/http.c does, and do nothing else: the most a
#                 dispatcher built on libcurl could move, with no database
#                 work at all.  requests/s and CPU per request.
#   dispatch      BENCH_DELIVERIES deliveries, created by notiflow.trigger_many
#                 while the dispatchers are paused (next_attempt_at an hour
#                 ahead, set in the loading transaction), released at once
#                 (next_attempt_at = now() and notiflow.wake_dispatchers() in
#                 one transaction); the clock starts at that commit and stops
#                 when none of them is queued or sending.  They go through the
#                 real dispatcher(s) and the SendGrid adapter to the same
#                 double.  deliveries/s, for each configuration (dispatch
#                 workers, http_concurrency, dispatch_batch_size).
#   database floor
#                 the database work the issue's contract asks of every
#                 delivery, and nothing else: pgbench clients (as many as the
#                 peer configuration's dispatchers, its batch size each) claim
#                 deliveries with a lease (status sending, FOR UPDATE SKIP
#                 LOCKED) in one transaction, and record them in a second: an
#                 attempt row, status sent, the execution completed.  No HTTP,
#                 no request built, no engine.  deliveries/s and the machine's
#                 CPU per delivery.  With libcurl alone's machine CPU per
#                 request (the client and the double), it bounds what a
#                 dispatcher on libcurl could move on this machine, and with
#                 wrk's, what one with a client as cheap as wrk could (see
#                 the summary).
#   peer          Graphile Worker (bench/graphile.mjs) doing the same job on
#                 the same cluster: one job per delivery that POSTs the same
#                 SendGrid JSON to the same double and records the result in
#                 a table, with the concurrency budget of one notiflow
#                 configuration (BENCH_PEER_CONFIG W/C/B: W worker processes,
#                 C concurrent jobs each, local queue of B jobs).  Jobs are
#                 added in one transaction; the clock starts at its commit and
#                 stops when no job is left.  jobs/s.
#   RSS           VmRSS / RssAnon / VmHWM of every 'notiflow dispatcher'
#                 process before and after each run; with BENCH_SOAK > 0 a
#                 soak in batches (1,000,000 deliveries in a full run),
#                 sampled after every batch.
#
# Each measurement is repeated BENCH_REPEATS times (wrk, libcurl and the dispatch
# runs alternate which goes first), with a CHECKPOINT before each; the median and
# min–max are reported.  Every run is checked: every delivery sent, exactly one
# `sent` attempt in delivery_attempts per delivery, no failed delivery, every
# execution completed, and the double counted the requests as accepted.
# The final table goes to stdout and to bench/results/dispatch-latest.md
# (bench/results/quick/ with QUICK=1), its rows to dispatch.rows.tsv there.
# Exits 0 whether or not the targets are met; non-zero only when something failed.
#
# Settings (environment):
#   QUICK=1                       smoke mode for CI: 2 configurations, 1,500 deliveries, wrk -d 2, soak of 4,000
#   BENCH_DELIVERIES=20000        deliveries per dispatch run (1500 with QUICK=1)
#   BENCH_CONFIGS="1/256/200 2/256/200 2/128/128 2/512/500"
#                                 configurations: workers/http_concurrency/batch_size
#                                 (QUICK=1: the first two)
#   BENCH_DURATION=10             wrk -d (seconds) (2 with QUICK=1)
#   BENCH_REPEATS=3               runs per measurement
#   BENCH_WRK_THREADS=2, BENCH_WRK_CONNECTIONS=64
#   BENCH_DOUBLE_THREADS=nproc    the double's --threads
#   BENCH_SOAK=1000000            soak deliveries (4000 with QUICK=1; 0 = no soak)
#   BENCH_SOAK_BATCH=100000       deliveries per soak batch (one RSS sample each; 2000 with QUICK=1)
#   BENCH_SOAK_CONFIG=2/256/200   configuration of the soak
#   BENCH_PEER_CONFIG=2/256/200   the notiflow configuration whose budget Graphile Worker gets
#   BENCH_PEER=1                  0: no Graphile Worker peer (quick comparisons of two builds)
#   BENCH_GRAPHILE_POOL=16        maxPoolSize of each Graphile Worker process
#   BENCH_GRAPHILE_COMPLETE_MS=0  completeJobBatchDelay (-1: complete jobs one by one)
#   BENCH_WARMUP=1000             unmeasured deliveries after each configuration change (100 with QUICK=1)
#   BENCH_TIMEOUT=300             deadline (seconds) for one batch to be sent
#   BENCH_STALL=30                error when no delivery of a batch was sent for this long
#   BENCH_SUBSCRIBERS=1000        subscribers created
#   BENCH_SHARED_BUFFERS=256MB, BENCH_MAX_WAL_SIZE=2GB
#   BENCH_TARGET_RATE=10000       target: dispatch deliveries/s
#   BENCH_TARGET=60               target: dispatch >= this % of the HTTP ceiling
#   BENCH_PEER_TARGET=3           target: dispatch >= this × Graphile Worker
#   BENCH_RSS_SLACK_MB=8          target: RssAnon grows by at most this over the soak
#   BENCH_NOTE=                   free text printed in the header (which build was measured, say)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
    DEFAULT_DURATION=2 DEFAULT_DELIVERIES=1500 DEFAULT_SOAK=4000 DEFAULT_SOAK_BATCH=2000 DEFAULT_WARMUP=100
    DEFAULT_CONFIGS="1/256/200 2/256/200"
else
    DEFAULT_DURATION=10 DEFAULT_DELIVERIES=20000 DEFAULT_SOAK=1000000 DEFAULT_SOAK_BATCH=100000 DEFAULT_WARMUP=1000
    DEFAULT_CONFIGS="1/256/200 2/256/200 2/128/128 2/512/500"
fi
DELIVERIES=${BENCH_DELIVERIES:-$DEFAULT_DELIVERIES}
CONFIGS=${BENCH_CONFIGS:-$DEFAULT_CONFIGS}
DURATION=${BENCH_DURATION:-$DEFAULT_DURATION}
REPEATS=${BENCH_REPEATS:-3}
WRK_THREADS=${BENCH_WRK_THREADS:-2}
WRK_CONNECTIONS=${BENCH_WRK_CONNECTIONS:-64}
DOUBLE_THREADS=${BENCH_DOUBLE_THREADS:-$(nproc)}
SOAK=${BENCH_SOAK:-$DEFAULT_SOAK}
SOAK_BATCH=${BENCH_SOAK_BATCH:-$DEFAULT_SOAK_BATCH}
SOAK_CONFIG=${BENCH_SOAK_CONFIG:-2/256/200}
PEER_CONFIG=${BENCH_PEER_CONFIG:-2/256/200}
PEER_ON=${BENCH_PEER:-1}
GRAPHILE_POOL=${BENCH_GRAPHILE_POOL:-16}
GRAPHILE_COMPLETE_MS=${BENCH_GRAPHILE_COMPLETE_MS:-0}
PEER_TARGET=${BENCH_PEER_TARGET:-3}
WARMUP=${BENCH_WARMUP:-$DEFAULT_WARMUP}
TIMEOUT=${BENCH_TIMEOUT:-300}
STALL=${BENCH_STALL:-30}
SUBSCRIBERS=${BENCH_SUBSCRIBERS:-1000}
SHARED_BUFFERS=${BENCH_SHARED_BUFFERS:-256MB}
MAX_WAL_SIZE=${BENCH_MAX_WAL_SIZE:-2GB}
TARGET_RATE=${BENCH_TARGET_RATE:-10000}
TARGET=${BENCH_TARGET:-60}
RSS_SLACK_MB=${BENCH_RSS_SLACK_MB:-8}
NOTE=${BENCH_NOTE:-}
CHUNK=1000          # recipients per trigger_many call while loading
DB=notiflow_bench
CREDS=test/doubles/credentials.json
BENCH_NAME=dispatch
# shellcheck source=bench/lib.sh
source bench/lib.sh
RESULTS=$RESULTS_DIR/dispatch-latest.md
bench_begin

for tool in psql pg_config pgbench wrk jq curl make node npm; do
    command -v "$tool" >/dev/null || { echo "bench: $tool not found (run test/install-deps.sh)" >&2; exit 1; }
done
for c in $CONFIGS $SOAK_CONFIG $PEER_CONFIG; do
    [[ "$c" =~ ^[0-9]+/[0-9]+/[0-9]+$ ]] || { echo "bench: bad configuration '$c' (workers/concurrency/batch)" >&2; exit 1; }
done
[[ " $CONFIGS " == *" $PEER_CONFIG "* ]] ||
    { echo "bench: BENCH_PEER_CONFIG $PEER_CONFIG must be one of BENCH_CONFIGS ($CONFIGS)" >&2; exit 1; }
# Graphile Worker, pinned in bench/package.json + package-lock.json, into bench/node_modules
if ! [ -f bench/node_modules/graphile-worker/package.json ]; then
    (cd bench && npm ci --no-audit --no-fund --loglevel=error) >&2 ||
        { echo "bench: cannot install graphile-worker (npm ci in bench/)" >&2; exit 1; }
fi

# shellcheck source=test/lib/cluster.sh
source test/lib/cluster.sh

DOUBLE_PID=
GRAPHILE_PIDS=
BENCH_HELPER_VARS="GRAPHILE_PIDS DOUBLE_PID"
bench_workdir

# -- the provider double -----------------------------------------------------------
make -s -C test/doubles >"$WORK/make.log" 2>&1 || { cat "$WORK/make.log" >&2; echo "bench: cannot build the provider double" >&2; exit 1; }
${CC:-cc} -O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -o "$WORK/curl_client" bench/curl_client.c -lcurl \
    >"$WORK/make.log" 2>&1 || { cat "$WORK/make.log" >&2; echo "bench: cannot build bench/curl_client.c" >&2; exit 1; }
test/doubles/provider_double --config "$CREDS" --port 0 --no-record --threads "$DOUBLE_THREADS" \
    >"$WORK/double.out" 2>"$WORK/double.err" &
DOUBLE_PID=$!
bench_wait_for 20 grep -qs 'listening on' "$WORK/double.out" ||
    { cat "$WORK/double.err" >&2; echo "bench: the provider double did not start" >&2; exit 1; }
DOUBLE=http://127.0.0.1:$(grep -o '[0-9]*$' "$WORK/double.out")
SENDGRID_API_KEY=$(jq -r .sendgrid.api_key "$CREDS")
export SENDGRID_API_KEY
# double_count FIELD: the double's sendgrid counter (requests, accepted, rejected, ...)
double_count() { curl -sf "$DOUBLE/_double/stats" | jq -r ".providers.sendgrid.$1 // 0"; }

# -- the cluster ---------------------------------------------------------------------
cluster_start "fsync = on" "synchronous_commit = on" "full_page_writes = on" \
    "wal_level = replica" "shared_buffers = $SHARED_BUFFERS" "max_wal_size = $MAX_WAL_SIZE" \
    "shared_preload_libraries = 'notiflow'" "notiflow.database_name = '$DB'" \
    "notiflow.allow_private_urls = on" >/dev/null || {
    echo "bench: could not start the cluster" >&2; exit 1; }

pgsql() { psql -X -q -v ON_ERROR_STOP=1 -At -d postgres "$@"; }
dispatchers() { pgsql -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'notiflow dispatcher'"; }
dispatchers_are() { [ "$(dispatchers 2>/dev/null)" = "$1" ]; }
dispatcher_pids() { pgsql -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'notiflow dispatcher' ORDER BY pid"; }

bench_create_database
bench_wait_for 60 dispatchers_are 1 || { echo "bench: no dispatcher started in $DB" >&2; exit 1; }

# -- environment -----------------------------------------------------------------------
SETTINGS=$(sql -F ' | ' -c "SELECT current_setting('fsync'), current_setting('synchronous_commit'),
    current_setting('full_page_writes'), current_setting('shared_buffers'),
    current_setting('wal_level'), current_setting('max_wal_size')")
NOTIFLOW_SETTINGS=$(sql -F ' | ' -c "SELECT current_setting('shared_preload_libraries'),
    current_setting('notiflow.database_name'), current_setting('notiflow.allow_private_urls'),
    current_setting('notiflow.lease_time')")
PGVERSION=$(sql -c "SELECT version()")
CPU=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo 2>/dev/null || true)
MODE=full; [ "$QUICK" = 1 ] && MODE="QUICK (smoke, not for comparison)"

say "# notiflow benchmark: dispatch throughput"
say ""
say "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
say "- mode: $MODE"
say "- PostgreSQL: $PGVERSION"
say "- notiflow: $(sql -c "SELECT extversion FROM pg_extension WHERE extname = 'notiflow'")${NOTE:+ — $NOTE}"
say "- nproc: $(nproc)${CPU:+ ($CPU)}; load average at start: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo n/a)"
say "- HTTP ceiling: wrk -t$WRK_THREADS -c$WRK_CONNECTIONS -d${DURATION}s -s test/doubles/wrk_sendgrid.lua;" \
    "provider double --no-record --threads $DOUBLE_THREADS, on the same machine"
say "- libcurl: bench/curl_client.c, W processes × C transfers in flight for each configuration's W/C," \
    "-d${DURATION}s, the same requests to the same double (no database)"
say "- dispatch: $DELIVERIES deliveries per run (SendGrid adapter → the same double), loaded paused by" \
    "trigger_many($CHUNK), released in one transaction; $WARMUP unmeasured after each configuration change"
say "- $REPEATS runs per measurement, wrk, libcurl and dispatch alternating which goes first; soak: $SOAK deliveries" \
    "in batches of $SOAK_BATCH (configuration $SOAK_CONFIG)"
say ""
say "| fsync | synchronous_commit | full_page_writes | shared_buffers | wal_level | max_wal_size |"
say "|---|---|---|---|---|---|"
say "| $SETTINGS |"
say ""
say "| shared_preload_libraries | notiflow.database_name | notiflow.allow_private_urls | notiflow.lease_time |"
say "|---|---|---|---|"
say "| $NOTIFLOW_SETTINGS |"
say ""
bench_settings "$DB" fsync synchronous_commit full_page_writes wal_level shared_buffers max_wal_size \
    shared_preload_libraries notiflow.lease_time max_connections
say "- peer: Graphile Worker $(jq -r .version bench/node_modules/graphile-worker/package.json) on Node.js $(node --version)," \
    "budget of notiflow's $PEER_CONFIG (workers/concurrency/batch): as many worker processes, concurrentJobs" \
    "= concurrency each, localQueue.size = batch, maxPoolSize $GRAPHILE_POOL, completeJobBatchDelay $GRAPHILE_COMPLETE_MS;" \
    "same double, same JSON, one INSERT of the result per job"
say ""
say "Provider \`mail\` (sendgrid): base_url = the double, timeout_ms = 60000, no rate_per_second," \
    "max_attempts 5. Workflow: trigger → email (subject, text and html rendered per recipient)."
say ""

# -- setup -------------------------------------------------------------------------------
sql -v subscribers="$SUBSCRIBERS" -v api_key="$SENDGRID_API_KEY" -v double="$DOUBLE" \
    >"$WORK/setup.log" 2>&1 <<'SQL' || { cat "$WORK/setup.log" >&2; exit 1; }
SELECT notiflow.put_provider('mail', 'email', 'sendgrid',
       jsonb_build_object('api_key', :'api_key', 'from', 'shop@example.com', 'base_url', :'double',
                          'timeout_ms', 60000, 'max_attempts', 5), 0, true);
SELECT count(notiflow.put_subscriber('u' || i, jsonb_build_object(
           'name', 'User ' || i, 'email', 'u' || i || '@example.com')))
  FROM generate_series(1, :subscribers) i;
SELECT notiflow.put_workflow('bench_mail', '{"name": "Bench mail",
  "nodes": [{"id": "start", "type": "trigger", "required": ["order_id"]},
            {"id": "mail", "type": "email", "subject": "Order {{payload.order_id}} shipped",
             "text": "Hi {{recipient.name}}, your order {{payload.order_id}} is on its way.",
             "html": "<p>Hi {{recipient.name}}, your order <b>{{payload.order_id}}</b> is on its way.</p>"}],
  "edges": [{"from": "start", "to": "mail"}]}');

CREATE SCHEMA bench;
-- Waits, polling server-side with a deadline, until no delivery is queued or
-- sending (only the batch under test is in the queue); done_at is the server's
-- clock then, -1 at the deadline, -2 when no attempt was recorded for stall_s
-- seconds (a stalled dispatcher).  A procedure, so that each poll commits and
-- no snapshot is held during the run.  The polls read a few buffers of the
-- partial index and the shared statistics (attempts inserted): anything that
-- scans the batch would take CPU from the dispatchers.
CREATE PROCEDURE bench.wait_sent(timeout_s float8, stall_s float8, INOUT done_at float8 DEFAULT -1)
LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + timeout_s * interval '1 second';
    last_attempt bigint;
    attempt_before bigint := -1;
    progress_at timestamptz := clock_timestamp();
    checked_at timestamptz := clock_timestamp();
BEGIN
    LOOP
        IF NOT EXISTS (SELECT FROM notiflow.deliveries WHERE finished_at IS NULL) THEN
            done_at := extract(epoch FROM clock_timestamp());
            RETURN;
        END IF;
        EXIT WHEN clock_timestamp() > deadline;
        IF clock_timestamp() > checked_at + interval '1 second' THEN
            checked_at := clock_timestamp();
            last_attempt := (SELECT n_tup_ins FROM pg_stat_user_tables
                              WHERE relid = 'notiflow.delivery_attempts'::regclass);
            IF last_attempt <> attempt_before THEN
                attempt_before := last_attempt;
                progress_at := clock_timestamp();
            ELSIF clock_timestamp() > progress_at + stall_s * interval '1 second' THEN
                done_at := -2;
                RETURN;
            END IF;
        END IF;
        COMMIT;
        PERFORM pg_sleep(0.02);
        COMMIT;
    END LOOP;
END
$$;

-- the peer's results: one row per job the Graphile Worker task sent
CREATE TABLE bench.graphile_sent (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ref        bigint NOT NULL,
    status     int NOT NULL,
    message_id text,
    sent_at    timestamptz NOT NULL DEFAULT now()
);
-- Waits like bench.wait_sent until Graphile Worker's job table is empty
-- (a job is deleted only after its task returned, i.e. after its result row
-- committed): min(id) on the primary key, a few buffers.  Progress for the
-- stall check: max(id) of the results.
CREATE PROCEDURE bench.wait_graphile(timeout_s float8, stall_s float8, INOUT done_at float8 DEFAULT -1)
LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + timeout_s * interval '1 second';
    last_sent bigint;
    sent_before bigint := -1;
    progress_at timestamptz := clock_timestamp();
    checked_at timestamptz := clock_timestamp();
BEGIN
    LOOP
        IF (SELECT min(id) FROM graphile_worker._private_jobs) IS NULL THEN
            done_at := extract(epoch FROM clock_timestamp());
            RETURN;
        END IF;
        EXIT WHEN clock_timestamp() > deadline;
        IF clock_timestamp() > checked_at + interval '1 second' THEN
            checked_at := clock_timestamp();
            last_sent := coalesce((SELECT max(id) FROM bench.graphile_sent), 0);
            IF last_sent <> sent_before THEN
                sent_before := last_sent;
                progress_at := clock_timestamp();
            ELSIF clock_timestamp() > progress_at + stall_s * interval '1 second' THEN
                done_at := -2;
                RETURN;
            END IF;
        END IF;
        COMMIT;
        PERFORM pg_sleep(0.02);
        COMMIT;
    END LOOP;
END
$$;
SQL
GRAPHILE_URL="postgres://postgres@127.0.0.1:$PGPORT/$DB"
node bench/graphile.mjs --migrate --connection "$GRAPHILE_URL" >"$WORK/graphile-migrate.log" 2>&1 ||
    { cat "$WORK/graphile-migrate.log" >&2; echo "bench: Graphile Worker's migrations failed" >&2; exit 1; }

# -- helpers -------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# median / min / max of the arguments
stats() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {
    m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
    printf "%.0f %.0f %.0f\n", m, a[1], a[NR] }'; }

# set_config W/C/B: ALTER SYSTEM + reload, waits for W dispatchers.
CURRENT_CONFIG=
set_config() {
    local w c b
    IFS=/ read -r w c b <<<"$1"
    [ "$CURRENT_CONFIG" = "$1" ] && return 0
    pgsql -c "ALTER SYSTEM SET notiflow.dispatch_workers = $w" \
          -c "ALTER SYSTEM SET notiflow.http_concurrency = $c" \
          -c "ALTER SYSTEM SET notiflow.dispatch_batch_size = $b" \
          -c "SELECT pg_reload_conf()" >/dev/null || return 1
    bench_wait_for 60 dispatchers_are "$w" || { echo "bench: expected $w dispatchers, see $(dispatchers)" >&2; return 1; }
    bench_wait_for 30 settings_are "$w" "$c" "$b" || { echo "bench: the reload did not apply $1" >&2; return 1; }
    CURRENT_CONFIG=$1
    # unmeasured: wakes every dispatcher (so it has read the new settings) and warms it up
    [ "$WARMUP" -gt 0 ] && { dispatch_batch "$WARMUP" >/dev/null || return 1; }
    return 0
}
settings_are() {
    [ "$(pgsql -c "SELECT current_setting('notiflow.dispatch_workers') || '/' ||
        current_setting('notiflow.http_concurrency') || '/' || current_setting('notiflow.dispatch_batch_size')")" = "$1/$2/$3" ]
}

# rss_sample: one line "pid VmRSS RssAnon VmHWM" (kB) per dispatcher
rss_sample() {
    local pid
    for pid in $(dispatcher_pids); do
        awk -v pid="$pid" '/^VmRSS:/{r=$2} /^RssAnon:/{a=$2} /^VmHWM:/{h=$2}
            END {if (r != "") print pid, r, a, h}' "/proc/$pid/status" 2>/dev/null || true
    done
}
# rss_change BEFORE AFTER (files of rss_sample): "pid: VmRSS a→b MB (RssAnon +d MB, HWM h MB); ..."
rss_change() {
    awk 'NR == FNR { r[$1] = $2; a[$1] = $3; next }
         { s = s sep sprintf("%s: %.1f→%.1f MB (anon %+.1f, HWM %.1f)", $1, ($1 in r) ? r[$1] / 1024 : 0,
               $2 / 1024, ($1 in a) ? ($3 - a[$1]) / 1024 : $3 / 1024, $4 / 1024); sep = "; " }
         END { print s }' "$1" "$2"
}

# cpu_sample: one line "pid ticks" (utime + stime) per dispatcher
cpu_sample() {
    local pid
    for pid in $(dispatcher_pids); do
        awk -v pid="$pid" '{ sub(/^.*\) /, ""); print pid, $12 + $13 }' "/proc/$pid/stat" 2>/dev/null || true
    done
}
CLK_TCK=$(getconf CLK_TCK)
# cpu_us BEFORE AFTER N: dispatcher CPU (all dispatchers) per delivery, microseconds
cpu_us() {
    awk -v n="$3" -v hz="$CLK_TCK" 'NR == FNR { t[$1] = $2; next } ($1 in t) { d += $2 - t[$1] }
        END { printf "%.0f", d * 1000000 / hz / n }' "$1" "$2"
}

# load N: creates N executions + deliveries with the dispatchers paused; prints "lo hi".
load() {
    local n=$1 out lo hi count
    out=$(sql -v n="$n" -v chunk="$CHUNK" -v subscribers="$SUBSCRIBERS" <<'SQL'
BEGIN;
SELECT count(*)
  FROM generate_series(0, (:n - 1) / :chunk) g,
       LATERAL notiflow.trigger_many('bench_mail',
           (SELECT jsonb_agg('u' || (1 + (i - 1) % :subscribers) ORDER BY i)
              FROM generate_series(g * :chunk + 1, least((g + 1) * :chunk, :n)) i),
           jsonb_build_object('order_id', 'A' || lpad((g * :chunk)::text, 9, '0'), 'currency', 'USD'), NULL);
-- paused: nothing of this batch is due before its release
UPDATE notiflow.deliveries SET next_attempt_at = now() + interval '1 hour' WHERE finished_at IS NULL AND status = 'queued';
SELECT coalesce(min(id), 0) || ' ' || coalesce(max(id), -1) || ' ' || count(*)
  FROM notiflow.deliveries WHERE finished_at IS NULL AND status = 'queued';
COMMIT;
SQL
    ) || return 1
    read -r lo hi count <<<"$(tail -1 <<<"$out")"
    if [ "$count" != "$n" ] || [ $((hi - lo + 1)) != "$n" ]; then
        echo "bench: loading queued $count deliveries (ids $lo–$hi), expected $n" >&2
        return 1
    fi
    # the same starting point for every run: statistics current, dead rows of the load gone
    sql -c "VACUUM ANALYZE notiflow.deliveries" -c "VACUUM ANALYZE notiflow.executions" \
        -c "VACUUM ANALYZE notiflow.delivery_attempts" \
        -c "CHECKPOINT" >/dev/null || return 1
    echo "$lo $hi"
}

# release_and_wait LO HI: releases the batch in one transaction and waits (deadline)
# until none is queued or sending; prints the seconds from the release's commit.
release_and_wait() {
    local lo=$1 hi=$2 out start done_at
    out=$(sql -v lo="$lo" -v hi="$hi" -v timeout="$TIMEOUT" -v stall="$STALL" <<'SQL'
BEGIN;
UPDATE notiflow.deliveries SET next_attempt_at = now() WHERE id BETWEEN :lo AND :hi AND status = 'queued';
SELECT notiflow.wake_dispatchers();
COMMIT;
SELECT extract(epoch FROM clock_timestamp());
CALL bench.wait_sent(:timeout, :stall);
SQL
    ) || return 1
    start=$(tail -2 <<<"$out" | head -1)
    done_at=$(tail -1 <<<"$out")
    if [ -z "$done_at" ] || [ "$done_at" = -1 ] || [ "$done_at" = -2 ]; then
        if [ "$done_at" = -2 ]; then
            echo "bench: deliveries $lo–$hi: the dispatchers stalled (nothing sent for $STALL s):" >&2
        else
            echo "bench: deliveries $lo–$hi not all sent within $TIMEOUT s:" >&2
        fi
        sql -c "SELECT status, count(*) FROM notiflow.deliveries WHERE id BETWEEN $lo AND $hi GROUP BY 1" >&2
        return 1
    fi
    awk -v a="$start" -v b="$done_at" 'BEGIN { printf "%.3f", b - a }'
}

# verify LO HI ACCEPTED_BEFORE: every delivery sent once, recorded, execution completed.
verify() {
    local lo=$1 hi=$2 before=$3 n=$(($2 - $1 + 1)) sent failed attempts sent_attempts other executions completed accepted rejected
    read -r sent failed attempts sent_attempts other executions completed < <(sql -F ' ' -c "
        SELECT (SELECT count(*) FROM notiflow.deliveries WHERE id BETWEEN $lo AND $hi AND status = 'sent'),
               (SELECT count(*) FROM notiflow.deliveries WHERE id BETWEEN $lo AND $hi AND status = 'failed'),
               (SELECT count(*) FROM notiflow.delivery_attempts WHERE delivery_id BETWEEN $lo AND $hi),
               (SELECT count(DISTINCT delivery_id) FROM notiflow.delivery_attempts
                 WHERE delivery_id BETWEEN $lo AND $hi AND error_class = 'sent'),
               (SELECT count(*) FROM notiflow.delivery_attempts
                 WHERE delivery_id BETWEEN $lo AND $hi AND error_class <> 'sent'),
               (SELECT count(*) FROM notiflow.deliveries WHERE id BETWEEN $lo AND $hi),
               (SELECT count(*) FROM notiflow.executions e
                 WHERE e.status = 'completed'
                   AND e.id IN (SELECT execution_id FROM notiflow.deliveries WHERE id BETWEEN $lo AND $hi))")
    accepted=$(( $(double_count accepted) - before ))
    rejected=$(double_count rejected)
    if [ "$sent" != "$n" ] || [ "$failed" != 0 ] || [ "$sent_attempts" != "$n" ] || [ "$completed" != "$n" ] ||
       [ "$executions" != "$n" ] || [ "$accepted" -lt "$n" ] || [ "$rejected" != 0 ]; then
        echo "bench: deliveries $lo–$hi: $sent of $n sent, $failed failed, $attempts attempts" \
             "($sent_attempts deliveries with a sent attempt, $other other attempts), $completed executions" \
             "completed; the double accepted $accepted, rejected $rejected in all" >&2
        return 1
    fi
    [ "$attempts" != "$n" ] && echo "warning: $attempts attempts for $n deliveries ($other not sent: retries)" >&2
    echo "$attempts $accepted"
}

# dispatch_batch N: load, release, wait, verify; prints "seconds rate cpu_us_per_delivery";
# leaves the dispatchers' RSS before and after the run in $WORK/rss.before and $WORK/rss.after.
dispatch_batch() {
    local n=$1 lo hi before secs
    read -r lo hi < <(load "$n") || return 1
    [ -n "${hi:-}" ] || return 1
    before=$(double_count accepted)
    rss_sample >"$WORK/rss.before"
    cpu_sample >"$WORK/cpu.before"
    secs=$(release_and_wait "$lo" "$hi") || return 1
    cpu_sample >"$WORK/cpu.after"
    rss_sample >"$WORK/rss.after"
    verify "$lo" "$hi" "$before" >/dev/null || return 1
    echo "$secs $(awk -v n="$n" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')" \
         "$(cpu_us "$WORK/cpu.before" "$WORK/cpu.after" "$n")"
}

# machine_busy: the machine's busy CPU time so far, in clock ticks, all processes: user,
# nice, system, irq and softirq (not idle, iowait or steal)
machine_busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8; exit }' /proc/stat; }

# run_curl W C: W bare libcurl clients (bench/curl_client.c) with C transfers in flight
# each, at once for DURATION seconds; prints their summed requests/s, their CPU per
# request and the machine's CPU per request (the clients, the double, the kernel; µs)
run_curl() {
    local i pids=() out rejected_before busy0 busy
    rejected_before=$(double_count rejected)
    busy0=$(machine_busy)
    for i in $(seq 1 "$1"); do
        "$WORK/curl_client" "$DOUBLE/v3/mail/send" "$SENDGRID_API_KEY" "$2" "$DURATION" \
            >"$WORK/curl.$i.out" 2>"$WORK/curl.$i.err" &
        pids+=($!)
    done
    for i in $(seq 1 "$1"); do
        if ! wait "${pids[$i - 1]}"; then
            kill "${pids[@]}" 2>/dev/null || true
            cat "$WORK/curl.$i.err" >&2; echo "bench: curl_client failed" >&2; return 1
        fi
    done
    busy=$(( $(machine_busy) - busy0 ))
    [ "$(double_count rejected)" = "$rejected_before" ] ||
        { echo "bench: the double rejected curl_client's requests" >&2; return 1; }
    out=$(for i in $(seq 1 "$1"); do cat "$WORK/curl.$i.out"; done |
        awk -v busy="$busy" -v hz="$CLK_TCK" '{ n += $1; rate += $1 / $2; cpu += $1 * $3 }
            END { if (n > 0) printf "%.0f %.1f %.1f\n", rate, cpu / n, busy * 1000000 / hz / n }')
    [ -n "$out" ] || { echo "bench: curl_client printed nothing" >&2; return 1; }
    echo "$out"
}

# run_wrk: prints requests/s and the machine's CPU per request (wrk, the double, the kernel; µs)
run_wrk() {
    local log=$WORK/wrk.$RANDOM.log rejected_before rps busy0 busy n
    rejected_before=$(double_count rejected)
    busy0=$(machine_busy)
    if ! wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"${DURATION}s" -s test/doubles/wrk_sendgrid.lua "$DOUBLE" \
        >"$log" 2>&1; then
        echo "bench: wrk failed:" >&2; cat "$log" >&2; return 1
    fi
    busy=$(( $(machine_busy) - busy0 ))
    if grep -q 'Non-2xx\|Socket errors' "$log" || [ "$(double_count rejected)" != "$rejected_before" ]; then
        echo "bench: wrk saw errors:" >&2; cat "$log" >&2; return 1
    fi
    rps=$(awk '/^Requests\/sec:/{print $2}' "$log")
    n=$(awk '/ requests in /{print $1}' "$log")
    [ -n "$rps" ] && [ -n "$n" ] || { echo "bench: wrk printed no Requests/sec:" >&2; cat "$log" >&2; return 1; }
    awk -v rps="$rps" -v n="$n" -v busy="$busy" -v hz="$CLK_TCK" 'BEGIN { printf "%s %.1f\n", rps, busy * 1000000 / hz / n }'
}

# floor_batch N W B: the database floor (see the header): loads N deliveries paused, then W
# pgbench clients claim B at a time and record them as sent, by id, the dispatchers never
# seeing them (not due); checks every one is sent and its execution completed.  Prints
# "seconds rate machine_us_per_delivery" (pgbench's own CPU left out).
floor_batch() {
    local n=$1 w=$2 b=$3 lo hi busy0 busy1 t0 t1 per client sent completed
    read -r lo hi < <(load "$n") || return 1
    [ -n "${hi:-}" ] || return 1
    # one more round than needed: a claim that met rows another client held takes fewer.
    # :last, the client's highest id claimed so far (a pgbench variable lives as long as its
    # client), keeps each claim from walking again over the rows it claimed before (it walks
    # over at most those the other clients claimed since).  Prepared statements, as a
    # dispatcher's (:ids is then a parameter); each delivery's own message id, as a provider
    # gives (one id for all filled a single bucket of the hash index on provider_message_id)
    per=$(( (n + w * b - 1) / (w * b) + 1 ))
    cat >"$WORK/floor.sql" <<SQL
BEGIN;
WITH c AS (UPDATE notiflow.deliveries d
              SET status = 'sending', lease_expires_at = clock_timestamp() + interval '60 seconds', updated_at = now()
            WHERE d.ctid = ANY (ARRAY(SELECT ctid FROM notiflow.deliveries
                                       WHERE id > :last AND id <= $hi AND finished_at IS NULL AND status = 'queued'
                                       ORDER BY id LIMIT $b FOR UPDATE SKIP LOCKED))
        RETURNING d.id, d.execution_id)
SELECT coalesce(array_agg(id), '{}') AS ids, coalesce(array_agg(execution_id), '{}') AS eids,
       coalesce(max(id), :last) AS last
  FROM c
\gset
COMMIT;
BEGIN;
INSERT INTO notiflow.delivery_attempts (delivery_id, attempt, provider, status_code, latency_ms, error_class)
     SELECT id, 1, 'mail', 202, 1, 'sent' FROM unnest(:ids::int8[]) AS id;
UPDATE notiflow.deliveries
   SET status = 'sent', attempts = attempts + 1, provider_attempts = provider_attempts + 1,
       provider_message_id = 'floor-' || id, updated_at = now(), lease_expires_at = NULL, sent_at = now(),
       finished_at = now()
 WHERE id = ANY (:ids::int8[]) AND status = 'sending';
UPDATE notiflow.executions SET status = 'completed', updated_at = now(), finished_at = now()
 WHERE id = ANY (:eids::int8[]);
COMMIT;
SQL
    busy0=$(machine_busy)
    t0=$(date +%s.%N)
    # bash's time: pgbench's own user + system seconds, to leave out of the machine's
    client=$( { TIMEFORMAT='%U %S'; time pgbench -n -M prepared -c "$w" -j "$w" -t "$per" -D last=$((lo - 1)) -f "$WORK/floor.sql" "$DB" \
        >"$WORK/floor.log" 2>&1; } 2>&1 ) || { cat "$WORK/floor.log" >&2; echo "bench: pgbench (database floor) failed" >&2; return 1; }
    t1=$(date +%s.%N)
    busy1=$(machine_busy)
    read -r sent completed < <(sql -F ' ' -c "
        SELECT (SELECT count(*) FROM notiflow.deliveries WHERE id BETWEEN $lo AND $hi AND status = 'sent'),
               (SELECT count(*) FROM notiflow.executions e WHERE e.status = 'completed'
                   AND e.id IN (SELECT execution_id FROM notiflow.deliveries WHERE id BETWEEN $lo AND $hi))")
    if [ "$sent" != "$n" ] || [ "$completed" != "$n" ]; then
        echo "bench: database floor: $sent of $n deliveries sent, $completed executions completed" >&2
        cat "$WORK/floor.log" >&2
        return 1
    fi
    awk -v n="$n" -v t0="$t0" -v t1="$t1" -v busy="$((busy1 - busy0))" -v hz="$CLK_TCK" -v client="$client" '
        BEGIN { split(client, c, " "); s = t1 - t0
                printf "%.3f %.0f %.1f\n", s, n / s, (busy / hz - c[1] - c[2]) * 1000000 / n }'
}

# -- the peer: Graphile Worker ----------------------------------------------------------------
GREF=0      # job refs handed out so far (unique across runs)
# pids_cpu PIDS...: one line "pid ticks" (utime + stime) per process
pids_cpu() {
    local pid
    for pid in "$@"; do
        awk -v pid="$pid" '{ sub(/^.*\) /, ""); print pid, $12 + $13 }' "/proc/$pid/stat" 2>/dev/null || true
    done
}
graphile_ready() {
    local i
    for i in $(seq 1 "$1"); do grep -qx ready "$WORK/graphile.$i.out" || return 1; done
}
# graphile_start W C B: W worker processes, C concurrent jobs each, local queue B
graphile_start() {
    local i
    GRAPHILE_PIDS=
    for i in $(seq 1 "$1"); do
        node bench/graphile.mjs --connection "$GRAPHILE_URL" --double "$DOUBLE" --api-key "$SENDGRID_API_KEY" \
            --concurrency "$2" --queue-size "$3" --pool "$GRAPHILE_POOL" --complete-batch-ms "$GRAPHILE_COMPLETE_MS" \
            >"$WORK/graphile.$i.out" 2>"$WORK/graphile.$i.err" &
        GRAPHILE_PIDS+=" $!"
    done
    bench_wait_for 60 graphile_ready "$1" ||
        { cat "$WORK"/graphile.*.err >&2; echo "bench: Graphile Worker did not start" >&2; return 1; }
}
graphile_stop() {
    local p
    for p in $GRAPHILE_PIDS; do kill "$p" 2>/dev/null || true; done
    for p in $GRAPHILE_PIDS; do wait "$p" 2>/dev/null || true; done
    GRAPHILE_PIDS=
}
# graphile_batch N LO: N jobs (refs LO …) added in one transaction while the workers run; prints
# "seconds rate cpu_us_per_job" (CPU of the node processes).
graphile_batch() {
    local n=$1 w c b lo=$2 hi=$(($2 + $1 - 1)) before out start done_at secs sent distinct ok_status
    IFS=/ read -r w c b <<<"$PEER_CONFIG"
    # the same starting point as a dispatch run: dead rows of the previous run gone, a checkpoint
    sql -c "VACUUM ANALYZE graphile_worker._private_jobs" -c "VACUUM ANALYZE bench.graphile_sent" \
        -c "CHECKPOINT" >/dev/null || return 1
    graphile_start "$w" "$c" "$b" || return 1
    before=$(double_count accepted)
    # shellcheck disable=SC2086
    pids_cpu $GRAPHILE_PIDS >"$WORK/gcpu.before"
    out=$(sql -v lo="$lo" -v hi="$hi" -v timeout="$TIMEOUT" -v stall="$STALL" -v subscribers="$SUBSCRIBERS" <<'SQL'
BEGIN;
SELECT graphile_worker.add_jobs(array_agg(ROW('send', json_build_object(
           'ref', i, 'to', 'u' || (1 + i % :subscribers) || '@example.com', 'from', 'shop@example.com',
           'subject', 'Order A' || lpad(i::text, 9, '0') || ' shipped',
           'text', 'Hi User ' || (1 + i % :subscribers) || ', your order A' || lpad(i::text, 9, '0') || ' is on its way.',
           'html', '<p>Hi User ' || (1 + i % :subscribers) || ', your order <b>A' || lpad(i::text, 9, '0')
                   || '</b> is on its way.</p>'),
           NULL, NULL, NULL, NULL, NULL, NULL)::graphile_worker.job_spec ORDER BY i))
  FROM generate_series(:lo, :hi) i;
COMMIT;
SELECT extract(epoch FROM clock_timestamp());
CALL bench.wait_graphile(:timeout, :stall);
SQL
    ) || { graphile_stop; return 1; }
    # shellcheck disable=SC2086
    pids_cpu $GRAPHILE_PIDS >"$WORK/gcpu.after"
    graphile_stop
    start=$(tail -2 <<<"$out" | head -1)
    done_at=$(tail -1 <<<"$out")
    if [ -z "$done_at" ] || [ "$done_at" = -1 ] || [ "$done_at" = -2 ]; then
        echo "bench: Graphile Worker did not finish jobs $lo–$hi (stalled or past $TIMEOUT s):" >&2
        sql -c "SELECT count(*) AS jobs_left, max(attempts), max(last_error) FROM graphile_worker._private_jobs" >&2
        cat "$WORK"/graphile.*.err >&2
        return 1
    fi
    read -r sent distinct ok_status < <(sql -F ' ' -c "SELECT count(*), count(DISTINCT ref), count(*) FILTER (WHERE status = 202)
        FROM bench.graphile_sent WHERE ref BETWEEN $lo AND $hi")
    if [ "$distinct" != "$n" ] || [ "$ok_status" != "$sent" ] || [ $(( $(double_count accepted) - before )) -lt "$n" ]; then
        echo "bench: Graphile Worker jobs $lo–$hi: $distinct of $n recorded ($sent rows, $ok_status with 202)" >&2
        return 1
    fi
    [ "$sent" != "$n" ] && echo "warning: Graphile Worker recorded $sent results for $n jobs (retries)" >&2
    secs=$(awk -v a="$start" -v b="$done_at" 'BEGIN { printf "%.3f", b - a }')
    echo "$secs $(awk -v n="$n" -v s="$secs" 'BEGIN { printf "%.0f", n / s }') $(cpu_us "$WORK/gcpu.before" "$WORK/gcpu.after" "$n")"
}

# -- measurement -----------------------------------------------------------------------------
# warm-up (not measured): the double, and the dispatcher on the default configuration
wrk -t1 -c4 -d1s -s test/doubles/wrk_sendgrid.lua "$DOUBLE" >"$WORK/wrk-warmup.log" 2>&1 ||
    { cat "$WORK/wrk-warmup.log" >&2; echo "bench: wrk warm-up failed" >&2; exit 1; }

declare -A RATES CPUS CURL_RATES CURL_CPUS CURL_MACHINE
WRK=() WRK_MACHINE=() PAIR_RATIOS=() PEER=() PEER_CPU=() PEER_RATIOS=() FLOOR=() FLOOR_CPU=()
say "## runs"
say ""
say "| run | measurement | result | elapsed | dispatcher CPU per delivery | dispatcher RSS before→after (pid: VmRSS, RssAnon change, VmHWM) |"
say "|---|---|---|---|---|---|"
do_wrk() {
    local rps mach
    read -r rps mach < <(run_wrk) || exit 1
    [ -n "$mach" ] || exit 1
    WRK+=("$rps") WRK_MACHINE+=("$mach")
    say "$(printf '| %s | HTTP ceiling (wrk -c%s) | %.0f req/s | %ss | machine %s µs | |' "$1" "$WRK_CONNECTIONS" "$rps" "$DURATION" "$mach")"
}
# do_curl R: the bare libcurl clients for each distinct W/C of the configurations
do_curl() {
    local cfg w c b key res rate cpu mach
    declare -A seen=()
    for cfg in $CONFIGS; do
        IFS=/ read -r w c b <<<"$cfg"
        key=$w/$c
        if [ -z "${seen[$key]:-}" ]; then
            res=$(run_curl "$w" "$c") || exit 1
            seen[$key]=$res
            read -r rate cpu mach <<<"$res"
            say "| $1 | libcurl alone ($w × $c in flight, no database) | $rate req/s | ${DURATION}s | $cpu µs (client); machine $mach µs | |"
        fi
        read -r rate cpu mach <<<"${seen[$key]}"
        CURL_RATES[$cfg]="${CURL_RATES[$cfg]:-} $rate"
        CURL_CPUS[$cfg]="${CURL_CPUS[$cfg]:-} $cpu"
        CURL_MACHINE[$cfg]="${CURL_MACHINE[$cfg]:-} $mach"
    done
}
# do_floor R: the database floor with the peer configuration's dispatchers and batch
do_floor() {
    local w c b res secs rate mach
    IFS=/ read -r w c b <<<"$PEER_CONFIG"
    res=$(floor_batch "$DELIVERIES" "$w" "$b") || exit 1
    read -r secs rate mach <<<"$res"
    FLOOR+=("$rate") FLOOR_CPU+=("$mach")
    say "| $1 | database floor ($w pgbench clients × $b: claim with a lease, then attempt, sent, execution completed; no HTTP) | $rate deliveries/s | ${secs}s | machine $mach µs | |"
}
do_configs() {
    local r=$1 cfg w c b res secs rate cpu
    for cfg in $CONFIGS; do
        IFS=/ read -r w c b <<<"$cfg"
        set_config "$cfg" || exit 1
        res=$(dispatch_batch "$DELIVERIES") || exit 1
        read -r secs rate cpu <<<"$res"
        RATES[$cfg]="${RATES[$cfg]:-} $rate"
        CPUS[$cfg]="${CPUS[$cfg]:-} $cpu"
        say "| $r | dispatch (workers=$w, concurrency=$c, batch=$b) | $rate deliveries/s | ${secs}s | ${cpu} µs |" \
            "$(rss_change "$WORK/rss.before" "$WORK/rss.after") |"
    done
}
do_graphile() {
    local res secs rate cpu
    [ "$PEER_ON" = 1 ] || return 0
    res=$(graphile_batch "$DELIVERIES" $((GREF + 1))) || exit 1
    GREF=$((GREF + DELIVERIES))
    read -r secs rate cpu <<<"$res"
    PEER+=("$rate") PEER_CPU+=("$cpu")
    say "| $1 | peer: Graphile Worker ($PEER_CONFIG budget) | $rate jobs/s | ${secs}s | ${cpu} µs (node) | |"
}
# per_run_ratios R: dispatch / wrk, libcurl alone / wrk and dispatch / libcurl alone of
# the same repeat, per configuration
per_run_ratios() {
    local cfg rates curl out=
    for cfg in $CONFIGS; do
        # shellcheck disable=SC2206
        rates=(${RATES[$cfg]}) curl=(${CURL_RATES[$cfg]})
        out+="${out:+, }$cfg $(ratio "${rates[$1 - 1]}" "${WRK[$1 - 1]}")"
        out+=" (libcurl alone $(ratio "${curl[$1 - 1]}" "${WRK[$1 - 1]}"), dispatch / libcurl $(ratio "${rates[$1 - 1]}" "${curl[$1 - 1]}"))"
    done
    PAIR_RATIOS+=("run $1: $out")
}
for r in $(seq 1 "$REPEATS"); do
    if [ $((r % 2)) = 1 ]; then
        do_wrk "$r"; do_curl "$r"; do_floor "$r"; do_configs "$r"; do_graphile "$r"
    else
        do_graphile "$r"; do_configs "$r"; do_floor "$r"; do_curl "$r"; do_wrk "$r"
    fi
    per_run_ratios "$r"
    if [ "$PEER_ON" = 1 ]; then
        # shellcheck disable=SC2206
        peer_rates=(${RATES[$PEER_CONFIG]})
        PEER_RATIOS+=("$(ratio "${peer_rates[$r - 1]}" "${PEER[$r - 1]}")")
    fi
done
say ""
# HOT updates keep the indexes out of an update: a share of the runs' updates that were not
# HOT (besides the releases, which move every delivery in the due index) costs index entries
say "$(sql -c "SELECT 'Updates in the runs (loads and releases included), HOT share: ' ||
                      string_agg(relname || ' ' || n_tup_hot_upd || ' of ' || n_tup_upd || ' (' ||
                                 round(100.0 * n_tup_hot_upd / greatest(n_tup_upd, 1)) || '%)', ', ' ORDER BY relname)
                 FROM pg_stat_user_tables WHERE schemaname = 'notiflow' AND relname IN ('deliveries', 'executions')")."
say ""

# -- soak: RSS over many deliveries ---------------------------------------------------------
RSS_VERDICT="n/a (no soak: BENCH_SOAK=0)"
if [ "$SOAK" -gt 0 ]; then
    set_config "$SOAK_CONFIG" || exit 1
    say "## soak: $SOAK deliveries in batches of $SOAK_BATCH (workers/concurrency/batch = $SOAK_CONFIG)"
    say ""
    say "| batch | deliveries so far | deliveries/s | dispatcher CPU per delivery | dispatcher pid: VmRSS MB / RssAnon MB / VmHWM MB |"
    say "|---|---|---|---|---|"
    rss_sample >"$WORK/soak.0"
    : >"$RESULTS_DIR/dispatch.rss.tsv"
    say "| 0 | 0 | | | $(awk '{ printf "%s%s: %.1f / %.1f / %.1f", sep, $1, $2/1024, $3/1024, $4/1024; sep="; " }' "$WORK/soak.0") |"
    done_n=0 b=0
    while [ "$done_n" -lt "$SOAK" ]; do
        n=$SOAK_BATCH
        [ $((done_n + n)) -gt "$SOAK" ] && n=$((SOAK - done_n))
        b=$((b + 1))
        res=$(dispatch_batch "$n") || exit 1
        done_n=$((done_n + n))
        cp "$WORK/rss.after" "$WORK/soak.$b"
        awk -v b="$b" -v n="$done_n" -v OFS='\t' '{ print b, n, $1, $2, $3, $4 }' "$WORK/soak.$b" >>"$RESULTS_DIR/dispatch.rss.tsv"
        say "| $b | $done_n | $(cut -d' ' -f2 <<<"$res") | $(cut -d' ' -f3 <<<"$res") µs |" \
            "$(awk '{ printf "%s%s: %.1f / %.1f / %.1f", sep, $1, $2/1024, $3/1024, $4/1024; sep="; " }' "$WORK/soak.$b") |"
    done
    say ""
    # flat: RssAnon after the last batch within RSS_SLACK_MB of after the first (the first batch warms caches)
    RSS_VERDICT=$(awk -v slack="$RSS_SLACK_MB" -v total="$SOAK" -v first="$SOAK_BATCH" '
        NR == FNR { a[$1] = $3; next }
        ($1 in a) { d = ($3 - a[$1]) / 1024; if (!seen || d > worst) worst = d; seen = 1 }
        END { if (!seen) { print "n/a (the dispatcher restarted during the soak)"; exit }
              printf "RssAnon %+.1f MB from after the first batch to after %d deliveries (per 100k: %+.1f MB), slack %s MB — %s",
                     worst, total, worst * 100000 / (total - first > 0 ? total - first : 1), slack,
                     (worst <= slack) ? "PASS" : "MISS" }' "$WORK/soak.1" "$WORK/soak.$b")
    # peak VmHWM at the end and after the first batch (MB, the largest of the dispatchers), RssAnon first → last
    read -r HWM_END HWM_FIRST ANON_FIRST ANON_END < <(awk '
        NR == FNR { if ($4 > h1) h1 = $4; a1[$1] = $3; next }
        { if ($4 > h2) h2 = $4; if ($1 in a1 && $3 > a2) { a2 = $3; af = a1[$1] } }
        END { printf "%.0f %.0f %.1f %.1f\n", h2 / 1024, h1 / 1024, af / 1024, a2 / 1024 }' "$WORK/soak.1" "$WORK/soak.$b")
fi

# -- summary ------------------------------------------------------------------------------------
read -r w_med w_min w_max < <(stats "${WRK[@]}")
say "## summary (median of $REPEATS, [min–max])"
say ""
say "| measurement | notiflow | reference | ratio |"
say "|---|---|---|---|"
best_rate=0 best_cfg=
for cfg in $CONFIGS; do
    IFS=/ read -r w c b <<<"$cfg"
    # shellcheck disable=SC2086
    read -r d_med d_min d_max < <(stats ${RATES[$cfg]})
    # shellcheck disable=SC2086
    read -r c_med c_min c_max < <(stats ${CURL_RATES[$cfg]})
    say "| dispatch (workers=$w, concurrency=$c, batch=$b): deliveries/s vs HTTP ceiling (wrk -c$WRK_CONNECTIONS) req/s |" \
        "$d_med [$d_min–$d_max] | $w_med [$w_min–$w_max] | $(ratio "$d_med" "$w_med") |"
    say "| dispatch (workers=$w, concurrency=$c, batch=$b): deliveries/s vs libcurl alone ($w × $c in flight) req/s |" \
        "$d_med [$d_min–$d_max] | $c_med [$c_min–$c_max] | $(ratio "$d_med" "$c_med") |"
    say "| libcurl alone ($w × $c in flight, no database) req/s vs HTTP ceiling (wrk -c$WRK_CONNECTIONS) req/s |" \
        "$c_med [$c_min–$c_max] | $w_med [$w_min–$w_max] | $(ratio "$c_med" "$w_med") |"
    if [ "$d_med" -gt "$best_rate" ]; then best_rate=$d_med best_cfg=$cfg; fi
done
say ""
say "dispatcher CPU per delivery (all dispatchers' user + system time during a run / deliveries; median [min–max]):"
say ""
for cfg in $CONFIGS; do
    # shellcheck disable=SC2086
    read -r u_med u_min u_max < <(stats ${CPUS[$cfg]})
    say "- $cfg: $u_med µs [$u_min–$u_max] (one fully busy core would move $(awk -v u="$u_med" 'BEGIN { printf "%.0f", (u > 0) ? 1000000 / u : 0 }') deliveries/s)"
done
say ""
say "per-run ratios (dispatch / wrk of the same run, with libcurl alone / wrk and dispatch / libcurl alone; less sensitive to drifting machine load):"
for p in "${PAIR_RATIOS[@]}"; do say "- $p"; done
say ""
pct=$(awk -v a="$best_rate" -v b="$w_med" 'BEGIN { printf "%.1f", (b > 0) ? 100 * a / b : 0 }')
v_rate=$(awk -v a="$best_rate" -v t="$TARGET_RATE" 'BEGIN { print (a >= t) ? "PASS" : "MISS" }')
v_pct=$(awk -v a="$best_rate" -v b="$w_med" -v t="$TARGET" 'BEGIN { print (b > 0 && a >= b * t / 100) ? "PASS" : "MISS" }')
say "targets (best configuration, $best_cfg = workers/concurrency/batch):"
say ""
say "- dispatch >= $TARGET_RATE deliveries/s: $best_rate — $v_rate"
say "- dispatch >= $TARGET% of the HTTP ceiling: $pct% — $v_pct"
# shellcheck disable=SC2086
read -r bc_med bc_min bc_max < <(stats ${CURL_RATES[$best_cfg]})
say "  (libcurl alone with the same budget, no database: $(awk -v a="$bc_med" -v b="$w_med" 'BEGIN { printf "%.1f", (b > 0) ? 100 * a / b : 0 }')% of the HTTP ceiling;" \
    "dispatch is $(awk -v a="$best_rate" -v b="$bc_med" 'BEGIN { printf "%.1f", (b > 0) ? 100 * a / b : 0 }')% of it)"
# the bound: every delivery needs at least the HTTP part (libcurl alone's machine CPU per
# request, client and double, at its cheapest W × C) and the database floor's machine CPU
h_best='' h_cfg=''
# the smallest of each cost measured: noise only adds CPU, so the minima bound best
for cfg in $CONFIGS; do
    # shellcheck disable=SC2086
    read -r _ h_min _ < <(stats ${CURL_MACHINE[$cfg]})
    if [ -z "$h_best" ] || [ "$h_min" -lt "$h_best" ]; then h_best=$h_min h_cfg=$cfg; fi
done
read -r f_med f_min f_max < <(stats "${FLOOR[@]}")
read -r _ fc_min _ < <(stats "${FLOOR_CPU[@]}")
NPROC=$(nproc)
# most H D: deliveries/s when each takes H µs of machine CPU for HTTP and D for the database
most() { awk -v n="$NPROC" -v h="$1" -v d="$2" 'BEGIN { printf "%.0f", (h + d > 0) ? n * 1000000 / (h + d) : 0 }'; }
bound=$(most "$h_best" "$fc_min")
h_wc=${h_cfg%/*}    # W/C of the cheapest libcurl run
say "  the most a dispatcher on libcurl could move on this machine: $bound deliveries/s, $(ratio "$bound" "$w_med") of the HTTP ceiling" \
    "($NPROC cores × 1,000,000 µs / ($h_best µs of machine CPU per request for libcurl alone and the double," \
    "${h_wc/\// × } in flight, + $fc_min µs per delivery for the database floor, $f_med deliveries/s [$f_min–$f_max]));" \
    "dispatch is $(ratio "$best_rate" "$bound") of that bound"
# with an HTTP client as cheap as wrk itself, the same bound as a share of wrk is
# 1 / (1 + floor / wrk's machine CPU per request): what the database work alone leaves
read -r wm_med _ _ < <(stats "${WRK_MACHINE[@]}")
say "  with an HTTP client as cheap as wrk ($wm_med µs of machine CPU per request, client and double):" \
    "$(most "$wm_med" "$fc_min") deliveries/s," \
    "$(awk -v h="$wm_med" -v d="$fc_min" 'BEGIN { printf "%.2f", (h + d > 0) ? h / (h + d) : 0 }') of the HTTP ceiling at most"
say "- dispatcher RSS flat: $RSS_VERDICT"
if [ "$PEER_ON" = 1 ]; then
    read -r g_med g_min g_max < <(stats "${PEER[@]}")
    # shellcheck disable=SC2086
    read -r p_med p_min p_max < <(stats ${RATES[$PEER_CONFIG]})
    v_peer=$(awk -v a="$p_med" -v b="$g_med" -v t="$PEER_TARGET" 'BEGIN { print (b > 0 && a >= b * t) ? "PASS" : "MISS" }')
    say "- dispatch >= ${PEER_TARGET}× Graphile Worker (same budget, $PEER_CONFIG): $p_med vs $g_med jobs/s = $(ratio "$p_med" "$g_med")× — $v_peer"
    read -r gu_med gu_min gu_max < <(stats "${PEER_CPU[@]}")
    say ""
    say "Graphile Worker: $g_med jobs/s [$g_min–$g_max], node CPU per job $gu_med µs [$gu_min–$gu_max]; per-run ratios notiflow $PEER_CONFIG / Graphile: ${PEER_RATIOS[*]}"
else
    say "- dispatch >= ${PEER_TARGET}× Graphile Worker: n/a (no peer: BENCH_PEER=0)"
fi
say ""
say "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo n/a)"

# -- rows of the summary table (bench/run.sh) ----------------------------------------------------
met() { [ "$1" = PASS ] && echo met || echo missed; }
for cfg in $CONFIGS; do
    IFS=/ read -r w c b <<<"$cfg"
    # shellcheck disable=SC2086
    read -r d_med d_min d_max < <(stats ${RATES[$cfg]})
    v1=$(awk -v a="$d_med" -v t="$TARGET_RATE" 'BEGIN { print (a >= t) ? "PASS" : "MISS" }')
    v2=$(awk -v a="$d_med" -v b="$w_med" -v t="$TARGET" 'BEGIN { print (b > 0 && a >= b * t / 100) ? "PASS" : "MISS" }')
    verdict="missed"; [ "$v1" = PASS ] && [ "$v2" = PASS ] && verdict=met
    bench_row "dispatch-$cfg" "dispatch $cfg (dispatchers/http_concurrency/batch): deliveries/s queued → recorded sent, vs wrk -c$WRK_CONNECTIONS on the same double, req/s" \
        "$(bench_fmt "$d_med" "$d_min" "$d_max")" "$(bench_fmt "$w_med" "$w_min" "$w_max")" "$(ratio "$d_med" "$w_med")" \
        ">= $TARGET_RATE/s and >= $(awk -v t="$TARGET" 'BEGIN { printf "%.2f", t / 100 }')× wrk" "$verdict" "$d_med" "$w_med" "dispatch $cfg vs wrk"
done
IFS=/ read -r w c b <<<"$PEER_CONFIG"
# shellcheck disable=SC2086
read -r c_med c_min c_max < <(stats ${CURL_RATES[$PEER_CONFIG]})
# shellcheck disable=SC2086
read -r d_med d_min d_max < <(stats ${RATES[$PEER_CONFIG]})
bench_row libcurl "dispatch $PEER_CONFIG deliveries/s vs libcurl alone ($w × $c in flight, no database: bench/curl_client.c) req/s on the same double; libcurl alone / wrk = $(ratio "$c_med" "$w_med")" \
    "$(bench_fmt "$d_med" "$d_min" "$d_max")" "$(bench_fmt "$c_med" "$c_min" "$c_max")" "$(ratio "$d_med" "$c_med")" \
    "— (reference)" "—" "$d_med" "$c_med" "dispatch $PEER_CONFIG vs libcurl alone"
bench_row bound "the most a dispatcher on libcurl could move here (the smallest costs measured): $NPROC cores / (libcurl alone's machine CPU per request, client and double, $h_best µs + the database floor's per delivery, $fc_min µs), deliveries/s, vs wrk -c$WRK_CONNECTIONS req/s; dispatch $best_cfg is $(ratio "$best_rate" "$bound") of the bound" \
    "$bound" "$(bench_fmt "$w_med" "$w_min" "$w_max")" "$(ratio "$bound" "$w_med")" \
    "— (reference)" "—" "$bound" "$w_med" "bound vs wrk"
if [ "$PEER_ON" = 1 ]; then
    bench_row peer "peer: dispatch $PEER_CONFIG deliveries/s vs Graphile Worker jobs/s, same job, double, cluster and concurrency budget" \
        "$(bench_fmt "$p_med" "$p_min" "$p_max")" "$(bench_fmt "$g_med" "$g_min" "$g_max")" "$(ratio "$p_med" "$g_med")" \
        ">= ${PEER_TARGET}× Graphile" "$(met "$v_peer")" "$p_med" "$g_med" "dispatch $PEER_CONFIG vs Graphile Worker"
fi
if [ "$SOAK" -gt 0 ]; then
    case $RSS_VERDICT in *PASS) rv=met ;; *MISS) rv=missed ;; *) rv="n/a" ;; esac
    bench_row rss "dispatcher peak RSS (VmHWM, MB) after $SOAK deliveries ($SOAK_CONFIG) vs after the first $SOAK_BATCH; RssAnon $ANON_FIRST → $ANON_END MB" \
        "$HWM_END MB" "$HWM_FIRST MB" "$(ratio "$HWM_END" "$HWM_FIRST")" "flat: RssAnon +<= $RSS_SLACK_MB MB" "$rv"
fi

mkdir -p "$RESULTS_DIR"
cp "$REPORT" "$ROOT/$RESULTS"
echo "(written to $RESULTS)"
