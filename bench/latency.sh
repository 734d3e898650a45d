#!/usr/bin/env bash
# bench/latency.sh — end-to-end latency at a fixed offered load: from the
# commit of the transaction that called notiflow.trigger() to the moment the
# provider double receives the webhook request, on one durable cluster.
#
#   load     pgbench --rate BENCH_RATE (1,000/s) for BENCH_DURATION seconds,
#            one autocommit statement per transaction:
#              INSERT INTO bench.lat (run, execution_id)
#              VALUES (:run, notiflow.trigger('bench_hook', payload, '"u<n>"'))
#            The workflow bench_hook is trigger → webhook; the webhook provider
#            points at the provider double, which signs are checked as usual.
#   commit   track_commit_timestamp = on: pg_xact_commit_timestamp(xmin) of the
#            bench.lat row, which is never updated, is the commit time of the
#            triggering transaction (taken when the commit record is written,
#            before its WAL flush, so the flush counts as latency).
#   receive  provider_double --receive-log: one line per request with the
#            wall-clock time (µs) its headers arrived and the delivery id from
#            the X-Notiflow-Delivery header.  Same machine, same clock.
#   latency  receive − commit per delivery (first receipt), joined through
#            notiflow.deliveries; p50 / p95 / p99 / max per run.
#
# An unmeasured warm-up run and an ANALYZE precede the BENCH_REPEATS runs (a
# dispatcher that plans its claim on empty tables keeps a sequential scan and
# falls behind as the table grows, until autovacuum analyzes it: see
# docs/performance.md; the runs measure the steady state).  After each run
# the script waits (deadline) until every delivery is sent, and checks that
# every execution's delivery was received and accepted.  It reports pgbench's
# achieved rate: when it is below 95% of the offered rate the machine could
# not offer the load and the run says so.
# Writes bench/results/latency-latest.md (bench/results/quick/ with QUICK=1)
# and latency.rows.tsv there.  Exits non-zero only when something failed.
#
# Settings (environment):
#   QUICK=1                  smoke mode: 4 s runs, 2 s warm-up
#   BENCH_RATE=1000          offered load, triggers (= deliveries) per second
#   BENCH_DURATION=30        seconds per run (4 with QUICK=1)
#   BENCH_REPEATS=3          runs
#   BENCH_LAT_CLIENTS=8      pgbench -c (-j 2)
#   BENCH_LAT_CONFIG=1/256/200  dispatch_workers/http_concurrency/dispatch_batch_size
#   BENCH_SUBSCRIBERS=1000, BENCH_SHARED_BUFFERS=256MB, BENCH_MAX_WAL_SIZE=2GB
#   BENCH_TIMEOUT=120        deadline (seconds) for a run's deliveries to be sent after pgbench ends
#   BENCH_LAT_TARGET_MS=50   target: p99 <= this
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then DEFAULT_DURATION=4; else DEFAULT_DURATION=30; fi
RATE=${BENCH_RATE:-1000}
DURATION=${BENCH_DURATION:-$DEFAULT_DURATION}
REPEATS=${BENCH_REPEATS:-3}
CLIENTS=${BENCH_LAT_CLIENTS:-8}
CONFIG=${BENCH_LAT_CONFIG:-1/256/200}
SUBSCRIBERS=${BENCH_SUBSCRIBERS:-1000}
SHARED_BUFFERS=${BENCH_SHARED_BUFFERS:-256MB}
MAX_WAL_SIZE=${BENCH_MAX_WAL_SIZE:-2GB}
TIMEOUT=${BENCH_TIMEOUT:-120}
TARGET_MS=${BENCH_LAT_TARGET_MS:-50}
DB=notiflow_bench
CREDS=test/doubles/credentials.json
BENCH_NAME=latency
# shellcheck source=bench/lib.sh
source bench/lib.sh
RESULTS=$RESULTS_DIR/latency-latest.md
bench_begin

for tool in psql pgbench pg_config jq make; do
    command -v "$tool" >/dev/null || { echo "bench: $tool not found (run test/install-deps.sh)" >&2; exit 1; }
done
[[ "$CONFIG" =~ ^[0-9]+/[0-9]+/[0-9]+$ ]] || { echo "bench: bad BENCH_LAT_CONFIG '$CONFIG'" >&2; exit 1; }
IFS=/ read -r WORKERS CONCURRENCY BATCH <<<"$CONFIG"

# shellcheck source=test/lib/cluster.sh
source test/lib/cluster.sh

DOUBLE_PID=
BENCH_HELPER_VARS="DOUBLE_PID"
bench_workdir
chmod 755 "$WORK"

# -- the provider double, with its receive log ------------------------------------------
make -s -C test/doubles >"$WORK/make.log" 2>&1 || { cat "$WORK/make.log" >&2; echo "bench: cannot build the provider double" >&2; exit 1; }
RECV=$WORK/receive.log
test/doubles/provider_double --config "$CREDS" --port 0 --no-record --receive-log "$RECV" \
    >"$WORK/double.out" 2>"$WORK/double.err" &
DOUBLE_PID=$!
bench_wait_for 20 grep -qs 'listening on' "$WORK/double.out" ||
    { cat "$WORK/double.err" >&2; echo "bench: the provider double did not start" >&2; exit 1; }
DOUBLE=http://127.0.0.1:$(grep -o '[0-9]*$' "$WORK/double.out")

# -- the cluster -------------------------------------------------------------------------
cluster_start "fsync = on" "synchronous_commit = on" "full_page_writes = on" \
    "wal_level = replica" "shared_buffers = $SHARED_BUFFERS" "max_wal_size = $MAX_WAL_SIZE" \
    "track_commit_timestamp = on" \
    "shared_preload_libraries = 'notiflow'" "notiflow.database_name = '$DB'" \
    "notiflow.allow_private_urls = on" "notiflow.dispatch_workers = $WORKERS" \
    "notiflow.http_concurrency = $CONCURRENCY" "notiflow.dispatch_batch_size = $BATCH" >/dev/null || {
    echo "bench: could not start the cluster" >&2; exit 1; }

bench_create_database
sql -v subscribers="$SUBSCRIBERS" -v double="$DOUBLE" -v secret="$(jq -r .webhook.secret "$CREDS")" \
    >"$WORK/setup.log" 2>&1 <<'SQL' || { cat "$WORK/setup.log" >&2; exit 1; }
SELECT notiflow.put_provider('hook', 'webhook', 'webhook',
       jsonb_build_object('url', :'double' || '/hooks/bench', 'secret', :'secret', 'timeout_ms', 60000), 0, true);
SELECT count(notiflow.put_subscriber('u' || i, jsonb_build_object('name', 'User ' || i, 'email', 'u' || i || '@example.com')))
  FROM generate_series(1, :subscribers) i;
SELECT notiflow.put_workflow('bench_hook', '{"name": "Bench hook",
  "nodes": [{"id": "start", "type": "trigger", "required": ["order_id"]}, {"id": "hook", "type": "webhook"}],
  "edges": [{"from": "start", "to": "hook"}]}');
CREATE SCHEMA bench;
-- one row per triggering transaction, never updated: its xmin is that transaction
CREATE TABLE bench.lat (run int NOT NULL, execution_id bigint NOT NULL);
CREATE INDEX ON bench.lat (run);
-- the double's receive log of one run
CREATE TABLE bench.recv (received_us bigint, provider text, verdict text, status int, delivery text);
-- waits (polling, deadline) until no delivery is queued or sending; true when done
CREATE FUNCTION bench.all_sent() RETURNS boolean LANGUAGE sql AS $$
    SELECT NOT EXISTS (SELECT FROM notiflow.deliveries WHERE finished_at IS NULL) $$;
VACUUM ANALYZE;
SQL
bench_wait_for 60 sh -c "[ \"\$(psql -X -qAt -d postgres -c \"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'notiflow dispatcher'\")\" = $WORKERS ]" ||
    { echo "bench: expected $WORKERS dispatchers" >&2; exit 1; }

SETTINGS=$(sql -F ' | ' -c "SELECT current_setting('fsync'), current_setting('synchronous_commit'),
    current_setting('full_page_writes'), current_setting('shared_buffers'),
    current_setting('wal_level'), current_setting('track_commit_timestamp')")
bench_settings "$DB" fsync synchronous_commit full_page_writes wal_level shared_buffers max_wal_size \
    track_commit_timestamp notiflow.dispatch_workers notiflow.http_concurrency notiflow.dispatch_batch_size
CPU=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo 2>/dev/null || true)
MODE=full; [ "$QUICK" = 1 ] && MODE="QUICK (smoke, not for comparison)"
say "# notiflow benchmark: latency at a fixed offered load"
say ""
say "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
say "- mode: $MODE"
say "- PostgreSQL: $(sql -c "SELECT version()")"
say "- nproc: $(nproc)${CPU:+ ($CPU)}; load average at start: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo n/a)"
say "- load: pgbench --rate $RATE -c $CLIENTS -j 2 -T $DURATION -M prepared, one trigger() per transaction" \
    "(workflow trigger → webhook); $REPEATS runs after an unmeasured warm-up"
say "- dispatchers/http_concurrency/batch: $CONFIG; provider double on loopback with --receive-log"
say "- latency: double's receive time − pg_xact_commit_timestamp() of the triggering transaction, per delivery"
say ""
say "| fsync | synchronous_commit | full_page_writes | shared_buffers | wal_level | track_commit_timestamp |"
say "|---|---|---|---|---|---|"
say "| $SETTINGS |"
say ""

cat >"$WORK/lat.sql" <<EOF
\set sub random(1, $SUBSCRIBERS)
\set order random(1, 999999999)
INSERT INTO bench.lat (run, execution_id)
VALUES (:run, notiflow.trigger('bench_hook', jsonb_build_object('order_id', 'A' || lpad((:order)::int8::text, 9, '0'),
        'total', 42, 'currency', 'USD'), to_jsonb('u' || (:sub)::int4), NULL));
EOF

# lat_run R SECONDS: one run; prints "p50 p95 p99 max n tps" (ms)
lat_run() {
    local r=$1 secs=$2 log=$WORK/pgbench.$1.log tps n received
    : >"$RECV"
    if ! pgbench -n -f "$WORK/lat.sql" -D run="$r" -R "$RATE" -c "$CLIENTS" -j 2 -T "$secs" -M prepared "$DB" \
        >"$log" 2>&1; then
        echo "bench: pgbench failed:" >&2; cat "$log" >&2; return 1
    fi
    if grep -q '^number of failed transactions: [1-9]' "$log"; then
        echo "bench: pgbench had failed transactions:" >&2; cat "$log" >&2; return 1
    fi
    tps=$(awk '/^tps = /{print $3}' "$log")
    bench_wait_for "$TIMEOUT" sh -c "[ \"\$(psql -X -qAt -d $DB -c 'SELECT bench.all_sent()')\" = t ]" ||
        { echo "bench: the deliveries of run $r were not all sent $TIMEOUT s after the load" >&2; return 1; }
    sql -c "TRUNCATE bench.recv" -c "\\copy bench.recv FROM '$RECV'" >/dev/null || return 1
    read -r n received < <(sql -F ' ' -c "
        SELECT count(*), count(r.delivery)
          FROM bench.lat l JOIN notiflow.deliveries d ON d.execution_id = l.execution_id
          LEFT JOIN (SELECT DISTINCT delivery FROM bench.recv WHERE verdict = 'accepted') r ON r.delivery = d.id::text
         WHERE l.run = $r")
    if [ "$n" = 0 ] || [ "$n" != "$received" ]; then
        echo "bench: run $r: $received of $n deliveries were received and accepted by the double" >&2
        sql -c "SELECT verdict, status, count(*) FROM bench.recv GROUP BY 1, 2" >&2
        return 1
    fi
    sql -F ' ' -c "
        SELECT round(percentile_cont(0.50) WITHIN GROUP (ORDER BY ms)::numeric, 1),
               round(percentile_cont(0.95) WITHIN GROUP (ORDER BY ms)::numeric, 1),
               round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1),
               round(max(ms)::numeric, 1), count(*), round($tps::numeric, 0)
          FROM (SELECT (r.received_us - extract(epoch FROM pg_xact_commit_timestamp(l.xmin)) * 1e6) / 1000.0 AS ms
                  FROM bench.lat l JOIN notiflow.deliveries d ON d.execution_id = l.execution_id
                  JOIN (SELECT delivery, min(received_us) AS received_us FROM bench.recv
                         WHERE verdict = 'accepted' GROUP BY 1) r ON r.delivery = d.id::text
                 WHERE l.run = $r) x"
}

res=$(lat_run 0 $([ "$QUICK" = 1 ] && echo 2 || echo 5)) || exit 1
sql -c "ANALYZE" >/dev/null
say "warm-up (unmeasured, then ANALYZE): p50 / p95 / p99 / max $(cut -d' ' -f1-4 <<<"$res" | sed 's| | / |g') ms"
say ""
P50=() P95=() P99=() MAXS=() TPS=()
say "## runs"
say ""
say "| run | deliveries | achieved rate (pgbench tps) | p50 ms | p95 ms | p99 ms | max ms |"
say "|---|---|---|---|---|---|---|"
for r in $(seq 1 "$REPEATS"); do
    sql -c "CHECKPOINT" >/dev/null
    res=$(lat_run "$r" "$DURATION") || exit 1
    read -r p50 p95 p99 mx n tps <<<"$res"
    P50+=("$p50") P95+=("$p95") P99+=("$p99") MAXS+=("$mx") TPS+=("$tps")
    note=
    awk -v a="$tps" -v r="$RATE" 'BEGIN { exit !(a < 0.95 * r) }' && note=" (below the offered $RATE/s: the machine could not offer the load)"
    say "| $r | $n | $tps$note | $p50 | $p95 | $p99 | $mx |"
done
say ""

# medians with one decimal
med1() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.1f %.1f %.1f\n", m, a[1], a[NR] }'; }
read -r m50 _ _ < <(med1 "${P50[@]}")
read -r m95 _ _ < <(med1 "${P95[@]}")
read -r m99 lo99 hi99 < <(med1 "${P99[@]}")
read -r t_med _ _ < <(bench_stats "${TPS[@]}")
verdict=$(awk -v a="$m99" -v t="$TARGET_MS" 'BEGIN { print (a <= t) ? "PASS" : "MISS" }')
say "## summary (median of $REPEATS)"
say ""
say "| measurement | p50 | p95 | p99 [min–max] |"
say "|---|---|---|---|"
say "| commit → double receives, ms, at $RATE/s offered (achieved $t_med/s) | $m50 | $m95 | $m99 [$lo99–$hi99] |"
say ""
say "target: p99 <= $TARGET_MS ms at $RATE/s: $m99 ms — $verdict"
say ""
say "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo n/a)"

bench_row latency "latency commit → double receives at $RATE deliveries/s offered (pgbench -R, trigger → webhook, $CONFIG), p50 / p95 / p99 ms" \
    "$m50 / $m95 / $m99 [$lo99–$hi99] ms" "target p99 $TARGET_MS ms" "$(awk -v a="$m99" -v t="$TARGET_MS" 'BEGIN { printf "%.2f", a / t }')" \
    "p99 <= $TARGET_MS ms" "$([ "$verdict" = PASS ] && echo met || echo missed)"

cp "$REPORT" "$ROOT/$RESULTS"
echo "(written to $RESULTS)"
