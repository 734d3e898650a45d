#!/usr/bin/env bash
# bench/trigger.sh — throughput of notiflow.trigger() and notiflow.trigger_many()
# next to plain-PostgreSQL references, on the same durable throw-away cluster
# in the same run:
#
#   single   pgbench: one notiflow.trigger() per transaction (example workflow
#            "order_shipped", random subscriber, random total so both branches
#            of the condition run)  vs  one single-row INSERT per transaction
#            into a plain table (bigint identity PK, jsonb payload of the same
#            size, timestamptz default now()).  Same clients, threads, duration.
#   fan-out  pgbench: one notiflow.trigger_many() of BENCH_FANOUT recipients per
#            transaction (executions/s)  vs  one COPY of the same number of rows
#            into a comparable table per transaction (rows/s).
#
# Each measurement is repeated BENCH_REPEATS times, alternating which side runs
# first, with a CHECKPOINT before each; the median and min–max are reported.
# The final table goes to stdout and to bench/results/trigger-latest.md
# (bench/results/quick/ with QUICK=1), its rows to trigger.rows.tsv there for
# the summary of bench/run.sh.
# Exits 0 whether or not the target is met; non-zero only when something failed.
#
# Settings (environment):
#   QUICK=1                 smoke mode for CI: -T 2 (unless BENCH_DURATION is set)
#   BENCH_CLIENTS=8         pgbench -c for the single pair
#   BENCH_THREADS=2         pgbench -j
#   BENCH_DURATION=20       pgbench -T (seconds) for every measurement
#   BENCH_REPEATS=3         runs per measurement
#   BENCH_BULK_CLIENTS=2    pgbench -c for the fan-out pair
#   BENCH_FANOUT=1000       recipients per trigger_many call = rows per COPY
#   BENCH_SUBSCRIBERS=1000  subscribers created
#   BENCH_SHARED_BUFFERS=256MB, BENCH_MAX_WAL_SIZE=2GB
#   BENCH_TARGET=60         target: trigger tx/s >= this % of INSERT tx/s
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then DEFAULT_DURATION=2; else DEFAULT_DURATION=20; fi
CLIENTS=${BENCH_CLIENTS:-8}
THREADS=${BENCH_THREADS:-2}
DURATION=${BENCH_DURATION:-$DEFAULT_DURATION}
REPEATS=${BENCH_REPEATS:-3}
BULK_CLIENTS=${BENCH_BULK_CLIENTS:-2}
FANOUT=${BENCH_FANOUT:-1000}
SUBSCRIBERS=${BENCH_SUBSCRIBERS:-1000}
SHARED_BUFFERS=${BENCH_SHARED_BUFFERS:-256MB}
MAX_WAL_SIZE=${BENCH_MAX_WAL_SIZE:-2GB}
TARGET=${BENCH_TARGET:-60}
DB=notiflow_bench
BENCH_NAME=trigger
# shellcheck source=bench/lib.sh
source bench/lib.sh
RESULTS=$RESULTS_DIR/trigger-latest.md
bench_begin

for tool in pgbench psql pg_config; do
    command -v "$tool" >/dev/null || { echo "bench: $tool not found (run test/install-deps.sh)" >&2; exit 1; }
done
if [ "$BULK_CLIENTS" -lt "$THREADS" ]; then BULK_THREADS=$BULK_CLIENTS; else BULK_THREADS=$THREADS; fi

# shellcheck source=test/lib/cluster.sh
source test/lib/cluster.sh

WORK=$(mktemp -d "${TMPDIR:-/tmp}/notiflow-bench.XXXXXX")
cleanup() {
    cluster_stop
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cluster_start "fsync = on" "synchronous_commit = on" "full_page_writes = on" \
    "wal_level = replica" "shared_buffers = $SHARED_BUFFERS" "max_wal_size = $MAX_WAL_SIZE" || {
    echo "bench: could not start the cluster" >&2; exit 1; }

REPORT=$WORK/report.md

# -- environment -----------------------------------------------------------------
bench_create_database
SETTINGS=$(sql -F ' | ' -c "SELECT current_setting('fsync'), current_setting('synchronous_commit'),
    current_setting('full_page_writes'), current_setting('shared_buffers'),
    current_setting('wal_level'), current_setting('max_wal_size')")
PGVERSION=$(sql -c "SELECT version()")
CPU=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo 2>/dev/null || true)
MODE=full; [ "$QUICK" = 1 ] && MODE="QUICK (smoke, not for comparison)"

say "# notiflow benchmark: trigger throughput"
say ""
say "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
say "- mode: $MODE"
say "- PostgreSQL: $PGVERSION"
say "- notiflow: $(sql -c "SELECT extversion FROM pg_extension WHERE extname = 'notiflow'")"
say "- nproc: $(nproc)${CPU:+ ($CPU)}; load average at start: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo n/a)"
say "- pgbench: single pair -c $CLIENTS -j $THREADS -T $DURATION -M prepared;" \
    "fan-out pair -c $BULK_CLIENTS -j $BULK_THREADS -T $DURATION; $REPEATS runs each, alternating order"
say "- data: $SUBSCRIBERS subscribers, fan-out $FANOUT recipients per call"
say ""
say "| fsync | synchronous_commit | full_page_writes | shared_buffers | wal_level | max_wal_size |"
say "|---|---|---|---|---|---|"
say "| $SETTINGS |"
say ""
bench_settings "$DB" fsync synchronous_commit full_page_writes wal_level shared_buffers max_wal_size

# -- setup -------------------------------------------------------------------------
if [ -f docs/examples/order_shipped.json ]; then
    WORKFLOW=$(cat docs/examples/order_shipped.json)
else
    WORKFLOW='{"name":"Order shipped","nodes":[{"id":"start","type":"trigger","required":["order_id"]},{"id":"big","type":"condition","if":"$.payload.total > 100"},{"id":"mail","type":"email","subject":"Order {{payload.order_id}} shipped","text":"Hi {{recipient.name}}","html":"<p>Hi {{recipient.name}}</p>"},{"id":"sms","type":"sms","text":"Order {{payload.order_id}} is on its way"}],"edges":[{"from":"start","to":"big"},{"from":"big","to":"mail","on":"true"},{"from":"big","to":"sms","on":"false"}]}'
fi

# The payload both sides write: same keys, same sizes (order_id is fixed-width).
PAYLOAD="jsonb_build_object('order_id', 'A' || lpad((:order)::int8::text, 9, '0'), 'total', (:total)::int4, 'currency', 'USD')"
sql -v workflow="$WORKFLOW" -v subscribers="$SUBSCRIBERS" -v fanout="$FANOUT" \
    -v fanout_file="$CLUSTER_DIR/fanout.tsv" >"$WORK/setup.log" 2>&1 <<'SQL' || { cat "$WORK/setup.log" >&2; exit 1; }
SELECT notiflow.put_provider('mail', 'email', 'sendgrid', '{"api_key":"k","from":"shop@example.com"}', 0, true);
SELECT notiflow.put_provider('text', 'sms', 'twilio',
                             '{"account_sid":"AC1","auth_token":"t","from":"+15550001111"}', 0, true);
SELECT count(notiflow.put_subscriber('u' || i, jsonb_build_object(
           'name', 'User ' || i, 'email', 'u' || i || '@example.com',
           'phone', '+1555' || lpad(i::text, 7, '0'))))
  FROM generate_series(1, :subscribers) i;
SELECT notiflow.put_workflow('order_shipped', :'workflow');

CREATE SCHEMA bench;
-- reference for trigger(): one row per transaction
CREATE TABLE bench.insert_ref (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payload    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- reference for trigger_many(): the same table plus the recipient
CREATE TABLE bench.copy_ref (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recipient  text NOT NULL,
    payload    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- the recipients of one fan-out call (subscriber ids)
CREATE TABLE bench.fanout AS
SELECT jsonb_agg('u' || (1 + (i - 1) % :subscribers) ORDER BY i) AS recipients
  FROM generate_series(1, :fanout) i;
-- the rows of one COPY: the same recipients and a payload of the same shape
COPY (SELECT 'u' || (1 + (i - 1) % :subscribers),
             jsonb_build_object('order_id', 'A' || lpad((100000000 + i)::text, 9, '0'),
                                'total', 1 + i % 200, 'currency', 'USD')
        FROM generate_series(1, :fanout) i) TO :'fanout_file';
VACUUM ANALYZE;
SQL

cat >"$WORK/trigger.sql" <<EOF
\set sub random(1, $SUBSCRIBERS)
\set total random(1, 200)
\set order random(1, 999999999)
SELECT notiflow.trigger('order_shipped', $PAYLOAD, to_jsonb('u' || (:sub)::int4), NULL);
EOF
cat >"$WORK/insert.sql" <<EOF
\set sub random(1, $SUBSCRIBERS)
\set total random(1, 200)
\set order random(1, 999999999)
INSERT INTO bench.insert_ref (payload) VALUES ($PAYLOAD);
EOF
cat >"$WORK/trigger_many.sql" <<EOF
\set total random(1, 200)
\set order random(1, 999999999)
SELECT count(*) FROM notiflow.trigger_many('order_shipped', (SELECT recipients FROM bench.fanout), $PAYLOAD, NULL);
EOF
cat >"$WORK/copy.sql" <<EOF
COPY bench.copy_ref (recipient, payload) FROM '$CLUSTER_DIR/fanout.tsv';
EOF

# -- measurement ---------------------------------------------------------------------
# run_pgbench NAME SCRIPT CLIENTS THREADS PROTOCOL -> prints tx/s
run_pgbench() {
    local name=$1 script=$2 clients=$3 threads=$4 protocol=$5 log failed tps
    log=$WORK/$name.$RANDOM.log
    sql -c "CHECKPOINT" >/dev/null || return 1
    if ! pgbench -n -f "$script" -c "$clients" -j "$threads" -T "$DURATION" -M "$protocol" "$DB" \
        >"$log" 2>&1; then
        echo "bench: pgbench $name failed:" >&2
        cat "$log" >&2
        return 1
    fi
    failed=$(awk '/^number of failed transactions/{print $5}' "$log")
    if [ -n "$failed" ] && [ "$failed" != 0 ]; then
        echo "bench: pgbench $name: $failed failed transactions:" >&2
        cat "$log" >&2
        return 1
    fi
    tps=$(awk '/^tps = /{print $3}' "$log")
    if [ -z "$tps" ]; then
        echo "bench: pgbench $name printed no tps:" >&2
        cat "$log" >&2
        return 1
    fi
    echo "$tps"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# median / min / max of the arguments
stats() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {
    m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
    printf "%.0f %.0f %.0f\n", m, a[1], a[NR] }'; }

# Warm-up (not measured): a few transactions of each script, so that run 1 does
# not pay for cold shared buffers and OS cache alone.
for w in trigger insert trigger_many copy; do
    pgbench -n -f "$WORK/$w.sql" -c 2 -j 1 -t 5 "$DB" >"$WORK/warmup-$w.log" 2>&1 \
        || { echo "bench: warm-up $w failed:" >&2; cat "$WORK/warmup-$w.log" >&2; exit 1; }
done

TRIGGER=() INSERT=() MANY=() COPY=() SINGLE_RATIO=() BULK_RATIO=()
say "## runs (tx/s from pgbench; fan-out columns are rows/s = tx/s × $FANOUT)"
say ""
say "| run | trigger tx/s | INSERT tx/s | ratio | trigger_many executions/s | COPY rows/s | ratio | order |"
say "|---|---|---|---|---|---|---|---|"
for r in $(seq 1 "$REPEATS"); do
    if [ $((r % 2)) = 1 ]; then
        t=$(run_pgbench trigger "$WORK/trigger.sql" "$CLIENTS" "$THREADS" prepared)
        i=$(run_pgbench insert "$WORK/insert.sql" "$CLIENTS" "$THREADS" prepared)
        m=$(run_pgbench trigger_many "$WORK/trigger_many.sql" "$BULK_CLIENTS" "$BULK_THREADS" simple)
        c=$(run_pgbench copy "$WORK/copy.sql" "$BULK_CLIENTS" "$BULK_THREADS" simple)
        order="notiflow first"
    else
        i=$(run_pgbench insert "$WORK/insert.sql" "$CLIENTS" "$THREADS" prepared)
        t=$(run_pgbench trigger "$WORK/trigger.sql" "$CLIENTS" "$THREADS" prepared)
        c=$(run_pgbench copy "$WORK/copy.sql" "$BULK_CLIENTS" "$BULK_THREADS" simple)
        m=$(run_pgbench trigger_many "$WORK/trigger_many.sql" "$BULK_CLIENTS" "$BULK_THREADS" simple)
        order="reference first"
    fi
    m=$(awk -v x="$m" -v n="$FANOUT" 'BEGIN {print x * n}')
    c=$(awk -v x="$c" -v n="$FANOUT" 'BEGIN {print x * n}')
    TRIGGER+=("$t") INSERT+=("$i") MANY+=("$m") COPY+=("$c")
    SINGLE_RATIO+=("$(ratio "$t" "$i")") BULK_RATIO+=("$(ratio "$m" "$c")")
    say "$(printf '| %s | %.0f | %.0f | %s | %.0f | %.0f | %s | %s |' "$r" "$t" "$i" "${SINGLE_RATIO[-1]}" \
        "$m" "$c" "${BULK_RATIO[-1]}" "$order")"
done
say ""

# -- sanity: the engine did the work it was asked for ----------------------------
read -r n_exec n_failed n_mail n_sms n_queued < <(sql -F ' ' -c "
    SELECT (SELECT count(*) FROM notiflow.executions),
           (SELECT count(*) FROM notiflow.executions WHERE status = 'failed'),
           (SELECT count(*) FROM notiflow.deliveries WHERE channel = 'email'),
           (SELECT count(*) FROM notiflow.deliveries WHERE channel = 'sms'),
           (SELECT count(*) FROM notiflow.deliveries WHERE status = 'queued')")
say "check: $n_exec executions ($n_failed failed), deliveries queued: $n_queued" \
    "(email branch $n_mail, sms branch $n_sms)"
if [ "$n_exec" = 0 ] || [ "$n_failed" != 0 ] || [ "$n_queued" = 0 ]; then
    echo "bench: unexpected engine results (executions failed, or no delivery was queued)" >&2
    exit 1
fi
if [ "$n_queued" != "$n_exec" ] || [ "$n_mail" = 0 ] || [ "$n_sms" = 0 ]; then
    say "warning: expected one queued delivery per execution, on both branches (has the example" \
        "workflow changed?)"
fi
say ""

# -- summary -------------------------------------------------------------------------
read -r t_med t_min t_max < <(stats "${TRIGGER[@]}")
read -r i_med i_min i_max < <(stats "${INSERT[@]}")
read -r m_med m_min m_max < <(stats "${MANY[@]}")
read -r c_med c_min c_max < <(stats "${COPY[@]}")

say "## summary (median of $REPEATS, [min–max])"
say ""
say "| measurement | notiflow | reference | ratio |"
say "|---|---|---|---|"
say "| single: trigger() vs 1-row INSERT, tx/s (-c $CLIENTS -T $DURATION) |" \
    "$t_med [$t_min–$t_max] | $i_med [$i_min–$i_max] | $(ratio "$t_med" "$i_med") |"
say "| fan-out: trigger_many($FANOUT) executions/s vs COPY $FANOUT rows, rows/s (-c $BULK_CLIENTS -T $DURATION) |" \
    "$m_med [$m_min–$m_max] | $c_med [$c_min–$c_max] | $(ratio "$m_med" "$c_med") |"
say ""
pct=$(awk -v a="$t_med" -v b="$i_med" 'BEGIN { printf "%.1f", (b > 0) ? 100 * a / b : 0 }')
verdict=$(awk -v a="$t_med" -v b="$i_med" -v t="$TARGET" 'BEGIN { print (b > 0 && a >= b * t / 100) ? "PASS" : "MISS" }')
say "per-run ratios (each pair ran back to back; less sensitive to drifting machine load):" \
    "single ${SINGLE_RATIO[*]}, fan-out ${BULK_RATIO[*]}"
say ""
say "target: trigger >= $TARGET% of INSERT: $pct% — $verdict"

met() { [ "$1" = PASS ] && echo met || echo missed; }
bench_row trigger "trigger(): executions/s, one call per transaction (pgbench -c $CLIENTS) vs single-row INSERT tx/s" \
    "$(bench_fmt "$t_med" "$t_min" "$t_max")" "$(bench_fmt "$i_med" "$i_min" "$i_max")" \
    "$(ratio "$t_med" "$i_med")" ">= $(awk -v t="$TARGET" 'BEGIN { printf "%.2f", t / 100 }')× INSERT" "$(met "$verdict")" "$t_med" "$i_med" "trigger() vs INSERT"
bench_row fanout "trigger_many($FANOUT): executions/s (pgbench -c $BULK_CLIENTS) vs COPY of $FANOUT rows, rows/s" \
    "$(bench_fmt "$m_med" "$m_min" "$m_max")" "$(bench_fmt "$c_med" "$c_min" "$c_max")" \
    "$(ratio "$m_med" "$c_med")" "—" "—" "$m_med" "$c_med" "trigger_many vs COPY"

cp "$REPORT" "$ROOT/$RESULTS"
echo "(written to $RESULTS)"
