#!/usr/bin/env bash
# bench/kafka.sh — Kafka ingest: how fast a Kafka subscription turns messages
# into committed workflow executions, next to how fast the same messages can
# be read raw from the same broker, in one run on one durable cluster:
#
#   ingest   a subscription maps topic kbench_<run> (BENCH_KAFKA_PARTITIONS
#            partitions) to the example workflow order_shipped (payload
#            $.order, recipient $.customer_id, default idempotency key
#            topic/partition/offset, default batch_size 500 / batch_time_ms 50).
#            Once its consumer is assigned every partition, test/kafka/kafka_bench
#            produces N order messages to the topic, spread evenly over the
#            partitions (the mock keeps a bounded log per partition, about 5 MB,
#            and drops older messages: keep N × 92 bytes / partitions below
#            that); the clock starts before the
#            producer starts and stops when a server-side poll sees the
#            subscription's stored offsets (notiflow.kafka_offsets, written in
#            the same transaction as the executions) cover all N.  events/s.
#   raw      kafka_bench consume: the same N messages read again from the
#            beginning of every partition, no group rebalance, every payload
#            touched; from the first message to the last.  messages/s.
#
# Before the runs, an unmeasured warm-up run (BENCH_KAFKA_WARMUP messages on
# topic kbench_0) and an ANALYZE: a consumer that starts on empty tables plans
# its statements for empty tables (see docs/performance.md).
#
# The broker is librdkafka's mock cluster (test/kafka/kafka_mock) on loopback;
# dispatchers are off (notiflow.dispatch_workers = 0), so what is measured is
# the ingest: executions, steps and queued deliveries committed.  Each run is
# checked: N more executions, none failed, no dead letter.  Each measurement
# runs BENCH_REPEATS times; median and min–max are reported.
# Writes bench/results/kafka-latest.md (bench/results/quick/ with QUICK=1) and
# kafka.rows.tsv there.  Exits non-zero only when something failed.
#
# Settings (environment):
#   QUICK=1                     smoke mode: 10,000 messages a run, warm-up 2,000
#   BENCH_KAFKA_MESSAGES=100000 messages per run (at most 50,000 per partition: the mock
#                               broker drops older messages beyond about that)
#   BENCH_KAFKA_PARTITIONS=4    partitions of each topic
#   BENCH_KAFKA_CONSUMERS="1 2" the configurations measured, each a row: how many consumers
#                               share the topic (subscriptions kbench_<run>, kbench_<run>_2, …
#                               with one group_id, the way to use more than one core for one
#                               topic); their CPU is summed.  The target is for 2 cores, so
#                               the one-consumer row is a reference without a verdict.
#   BENCH_KAFKA_WARMUP=5000     messages of the unmeasured warm-up run (2000 with QUICK=1)
#   BENCH_REPEATS=3             runs
#   BENCH_SUBSCRIBERS=1000      subscribers (customer_id u1 … uN)
#   BENCH_TIMEOUT=300           deadline (seconds) for one run's ingest
#   BENCH_STALL=30              error when the offsets did not move for this long
#   BENCH_SHARED_BUFFERS=256MB, BENCH_MAX_WAL_SIZE=2GB
#   BENCH_KAFKA_TARGET=20000    target: events/s
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then DEFAULT_MESSAGES=10000 DEFAULT_WARMUP=2000; else DEFAULT_MESSAGES=100000 DEFAULT_WARMUP=5000; fi
MESSAGES=${BENCH_KAFKA_MESSAGES:-$DEFAULT_MESSAGES}
PARTITIONS=${BENCH_KAFKA_PARTITIONS:-4}
CONSUMER_COUNTS=${BENCH_KAFKA_CONSUMERS:-1 2}
CONSUMERS=${CONSUMER_COUNTS%% *}   # the warm-up's
WARMUP=${BENCH_KAFKA_WARMUP:-$DEFAULT_WARMUP}
REPEATS=${BENCH_REPEATS:-3}
SUBSCRIBERS=${BENCH_SUBSCRIBERS:-1000}
TIMEOUT=${BENCH_TIMEOUT:-300}
STALL=${BENCH_STALL:-30}
SHARED_BUFFERS=${BENCH_SHARED_BUFFERS:-256MB}
MAX_WAL_SIZE=${BENCH_MAX_WAL_SIZE:-2GB}
TARGET=${BENCH_KAFKA_TARGET:-20000}
DB=notiflow_bench
BENCH_NAME=kafka
# shellcheck source=bench/lib.sh
source bench/lib.sh
RESULTS=$RESULTS_DIR/kafka-latest.md
bench_begin

for tool in psql pg_config make cc; do
    command -v "$tool" >/dev/null || { echo "bench: $tool not found (run test/install-deps.sh)" >&2; exit 1; }
done
# librdkafka's mock broker keeps a bounded log per partition: with 75,000
# messages a partition it had dropped the first 25,000 before the consumer
# read them (the consumer then resets to the earliest offset it can fetch).
if [ $((MESSAGES / PARTITIONS)) -gt 50000 ]; then
    echo "bench: $MESSAGES messages over $PARTITIONS partitions is more than the mock broker keeps" \
         "(50,000 a partition); raise BENCH_KAFKA_PARTITIONS" >&2
    exit 1
fi

# shellcheck source=test/lib/cluster.sh
source test/lib/cluster.sh

MOCK_PID=
BENCH_HELPER_VARS="MOCK_PID"
bench_workdir

# -- the broker ----------------------------------------------------------------------
make -s -C test/kafka >"$WORK/make.log" 2>&1 || { cat "$WORK/make.log" >&2; echo "bench: cannot build test/kafka" >&2; exit 1; }
topics=()
for r in $(seq 0 "$REPEATS"); do topics+=(--topic "kbench_$r:$PARTITIONS"); done
test/kafka/kafka_mock "${topics[@]}" </dev/null >"$WORK/mock.out" 2>"$WORK/mock.err" &
MOCK_PID=$!
bench_wait_for 20 grep -q '^bootstrap ' "$WORK/mock.out" ||
    { cat "$WORK/mock.err" >&2; echo "bench: the Kafka mock cluster did not start" >&2; exit 1; }
BOOT=$(awk '/^bootstrap /{print $2}' "$WORK/mock.out")

# -- the cluster -----------------------------------------------------------------------
cluster_start "fsync = on" "synchronous_commit = on" "full_page_writes = on" \
    "wal_level = replica" "shared_buffers = $SHARED_BUFFERS" "max_wal_size = $MAX_WAL_SIZE" \
    "shared_preload_libraries = 'notiflow'" "notiflow.database_name = '$DB'" \
    "notiflow.dispatch_workers = 0" "max_worker_processes = 16" >/dev/null || {
    echo "bench: could not start the cluster" >&2; exit 1; }

bench_create_database

if [ -f docs/examples/order_shipped.json ]; then
    WORKFLOW=$(cat docs/examples/order_shipped.json)
else
    WORKFLOW='{"name":"Order shipped","nodes":[{"id":"start","type":"trigger","required":["order_id"]},{"id":"big","type":"condition","if":"$.payload.total > 100"},{"id":"mail","type":"email","subject":"Order {{payload.order_id}} shipped","text":"Hi {{recipient.name}}","html":"<p>Hi {{recipient.name}}</p>"},{"id":"sms","type":"sms","text":"Order {{payload.order_id}} is on its way"}],"edges":[{"from":"start","to":"big"},{"from":"big","to":"mail","on":"true"},{"from":"big","to":"sms","on":"false"}]}'
fi
sql -v workflow="$WORKFLOW" -v subscribers="$SUBSCRIBERS" >"$WORK/setup.log" 2>&1 <<'SQL' || { cat "$WORK/setup.log" >&2; exit 1; }
SELECT notiflow.put_provider('mail', 'email', 'sendgrid', '{"api_key":"k","from":"shop@example.com"}', 0, true);
SELECT notiflow.put_provider('text', 'sms', 'twilio',
                             '{"account_sid":"AC1","auth_token":"t","from":"+15550001111"}', 0, true);
SELECT count(notiflow.put_subscriber('u' || i, jsonb_build_object(
           'name', 'User ' || i, 'email', 'u' || i || '@example.com',
           'phone', '+1555' || lpad(i::text, 7, '0'))))
  FROM generate_series(1, :subscribers) i;
SELECT notiflow.put_workflow('order_shipped', :'workflow');
CREATE SCHEMA bench;
-- Waits, polling server-side (20 ms, committing between polls so no snapshot
-- is held), until the stored offsets of group_name add up to target; done_at
-- is the server's clock then, -1 at the deadline, -2 when they did not move
-- for stall_s seconds.  kafka_offsets has one row per partition.
CREATE PROCEDURE bench.wait_offsets(group_name text, target bigint, timeout_s float8, stall_s float8,
                                    INOUT done_at float8 DEFAULT -1)
LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + timeout_s * interval '1 second';
    total bigint;
    total_before bigint := -1;
    progress_at timestamptz := clock_timestamp();
BEGIN
    LOOP
        total := coalesce((SELECT sum(next_offset) FROM notiflow.kafka_offsets WHERE group_id = group_name), 0);
        IF total >= target THEN
            done_at := extract(epoch FROM clock_timestamp());
            RETURN;
        END IF;
        EXIT WHEN clock_timestamp() > deadline;
        IF total <> total_before THEN
            total_before := total;
            progress_at := clock_timestamp();
        ELSIF clock_timestamp() > progress_at + stall_s * interval '1 second' THEN
            done_at := -2;
            RETURN;
        END IF;
        COMMIT;
        PERFORM pg_sleep(0.02);
        COMMIT;
    END LOOP;
END
$$;
VACUUM ANALYZE;
SQL

SETTINGS=$(sql -F ' | ' -c "SELECT current_setting('fsync'), current_setting('synchronous_commit'),
    current_setting('full_page_writes'), current_setting('shared_buffers'),
    current_setting('wal_level'), current_setting('max_wal_size')")
bench_settings "$DB" fsync synchronous_commit full_page_writes wal_level shared_buffers max_wal_size \
    shared_preload_libraries notiflow.dispatch_workers
CPU=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo 2>/dev/null || true)
MODE=full; [ "$QUICK" = 1 ] && MODE="QUICK (smoke, not for comparison)"
say "# notiflow benchmark: Kafka ingest"
say ""
say "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
say "- mode: $MODE"
say "- PostgreSQL: $(sql -c "SELECT version()")"
say "- nproc: $(nproc)${CPU:+ ($CPU)}; load average at start: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo n/a)"
say "- broker: librdkafka $(sed -n 's/^Version: //p' /usr/lib/x86_64-linux-gnu/pkgconfig/rdkafka.pc 2>/dev/null || echo '') mock cluster (test/kafka/kafka_mock), 1 broker, $PARTITIONS partitions per topic, loopback"
say "- $MESSAGES messages per run, $REPEATS runs, a fresh topic and subscription each; workflow order_shipped" \
    "(trigger → condition → email or sms, dispatchers off), $SUBSCRIBERS subscribers"
say ""
say "| fsync | synchronous_commit | full_page_writes | shared_buffers | wal_level | max_wal_size |"
say "|---|---|---|---|---|---|"
say "| $SETTINGS |"
say ""

# -- measurement -------------------------------------------------------------------------
RDKAFKA='"rdkafka": {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"}'
# the consumers of topic $1 (subscriptions $1, $1_2, … in group notiflow-$1) hold all its partitions
assigned() {
    [ "$(sql -c "SELECT coalesce(sum(assigned), 0) FROM notiflow.kafka_consumer_state
                  WHERE (subscription = '$1' OR subscription LIKE '$1\_%') AND status = 'running'" 2>/dev/null)" = "$PARTITIONS" ] &&
    [ "$(sql -c "SELECT count(*) FROM notiflow.kafka_consumer_state
                  WHERE (subscription = '$1' OR subscription LIKE '$1\_%') AND assigned > 0" 2>/dev/null)" = "$CONSUMERS" ]
}
consumer_pids() {
    psql -X -qAt -d "$DB" -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'notiflow kafka consumer'
                               AND (application_name = '$1' OR application_name LIKE '$1\_%')"
}
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo $t; }
subscription_names() { local c; echo "$1"; for c in $(seq 2 "$CONSUMERS"); do echo "${1}_$c"; done; }
CLK_TCK=$(getconf CLK_TCK)

# ingest_run R N: one run on topic kbench_R with N messages; prints
# "rate seconds cpu_us_per_event raw_rate raw_seconds produce_seconds"
ingest_run() {
    local r=$1 n=$2 topic=kbench_$1 pid name exec_before dl_before exec_after failed dl_after t0 cpu0 cpu1 done_at secs raw_secs
    for name in $(subscription_names "$topic"); do
        sql -c "SELECT notiflow.subscribe_kafka('$name', '$BOOT', '{$topic}', 'order_shipped',
                '{$RDKAFKA, \"group_id\": \"notiflow-$topic\", \"payload\": \"\$.order\", \"recipient\": \"\$.customer_id\"}')" >/dev/null || return 1
    done
    bench_wait_for 90 assigned "$topic" ||
        { echo "bench: the consumer of $topic was not assigned its $PARTITIONS partitions" >&2; return 1; }
    pid=$(consumer_pids "$topic" | tr '\n' ' ')
    read -r exec_before dl_before < <(sql -F ' ' -c "SELECT (SELECT count(*) FROM notiflow.executions),
        (SELECT count(*) FROM notiflow.dead_letters)")
    sql -c "CHECKPOINT" >/dev/null
    t0=$(date +%s.%N)
    cpu0=$(ticks $pid)
    test/kafka/kafka_bench produce "$BOOT" "$topic" "$n" "$SUBSCRIBERS" "$PARTITIONS" >"$WORK/produce.$r" 2>&1 ||
        { cat "$WORK/produce.$r" >&2; echo "bench: producing to $topic failed" >&2; return 1; }
    done_at=$(sql -v g="notiflow-$topic" -v n="$n" -v timeout="$TIMEOUT" -v stall="$STALL" \
        <<<"CALL bench.wait_offsets(:'g', :n, :timeout, :stall);" | tail -1) || return 1
    cpu1=$(ticks $pid)
    if [ "$done_at" = -1 ] || [ "$done_at" = -2 ]; then
        echo "bench: $topic: the executions of $n messages were not committed (timeout $TIMEOUT s / stall $STALL s)" >&2
        sql -c "SELECT * FROM notiflow.kafka_consumer_state" >&2
        return 1
    fi
    read -r exec_after failed dl_after < <(sql -F ' ' -c "SELECT (SELECT count(*) FROM notiflow.executions),
        (SELECT count(*) FROM notiflow.executions WHERE status = 'failed'), (SELECT count(*) FROM notiflow.dead_letters)")
    if [ $((exec_after - exec_before)) != "$n" ] || [ "$failed" != 0 ] || [ "$dl_after" != "$dl_before" ]; then
        echo "bench: $topic: $((exec_after - exec_before)) executions for $n messages, $failed failed," \
             "$((dl_after - dl_before)) dead letters; per partition (stored offset, executions, status):" >&2
        sql -c "SELECT o.partition, o.next_offset, count(e.id), string_agg(DISTINCT e.status, ',')
                  FROM notiflow.kafka_offsets o
                  LEFT JOIN notiflow.executions e ON e.idempotency_key LIKE o.topic || '/' || o.partition || '/%'
                 WHERE o.topic = '$topic' GROUP BY 1, 2 ORDER BY 1" >&2
        sql -c "SELECT * FROM notiflow.kafka_consumer_state WHERE subscription = '$topic'" >&2
        return 1
    fi
    test/kafka/kafka_bench consume "$BOOT" "$topic" "$n" >"$WORK/consume.$r" 2>&1 ||
        { cat "$WORK/consume.$r" >&2; echo "bench: the raw consume of $topic failed" >&2; return 1; }
    for name in $(subscription_names "$topic"); do
        sql -c "SELECT notiflow.unsubscribe_kafka('$name')" >/dev/null || return 1
    done
    secs=$(awk -v a="$t0" -v b="$done_at" 'BEGIN { printf "%.3f", b - a }')
    raw_secs=$(awk '/^consumed/{print $4}' "$WORK/consume.$r")
    awk -v n="$n" -v s="$secs" -v d="$((cpu1 - cpu0))" -v hz="$CLK_TCK" -v rs="$raw_secs" \
        -v ps="$(awk '/^produced/{print $4}' "$WORK/produce.$r")" \
        'BEGIN { printf "%.0f %s %.0f %.0f %s %s\n", n / s, s, d * 1000000 / hz / n, (rs > 0) ? (n - 1) / rs : 0, rs, ps }'
}

res=$(ingest_run 0 "$WARMUP") || exit 1
sql -c "ANALYZE" >/dev/null
say "warm-up (unmeasured): $WARMUP messages, $(cut -d' ' -f1 <<<"$res") events/s, consumer CPU $(cut -d' ' -f3 <<<"$res") µs per event"
say ""

for CONSUMERS in $CONSUMER_COUNTS; do
    INGEST=() RAW=() CPUS=() RATIOS=()
    say "## runs with $CONSUMERS consumer(s)"
    say ""
    say "| run | ingest events/s | elapsed (from the producer's start) | producer | consumer CPU per event | raw consume messages/s | raw elapsed | ratio |"
    say "|---|---|---|---|---|---|---|---|"
    for r in $(seq 1 "$REPEATS"); do
        res=$(ingest_run "${CONSUMERS}x$r" "$MESSAGES") || exit 1
        read -r rate secs cpu raw raw_secs prod_secs <<<"$res"
        INGEST+=("$rate") RAW+=("$raw") CPUS+=("$cpu") RATIOS+=("$(bench_ratio "$rate" "$raw")")
        say "| $r | $rate | ${secs}s | ${prod_secs}s | $cpu µs | $raw | ${raw_secs}s | ${RATIOS[-1]} |"
    done
    say ""
    read -r n_exec n_queued < <(sql -F ' ' -c "SELECT (SELECT count(*) FROM notiflow.executions),
        (SELECT count(*) FROM notiflow.deliveries WHERE status = 'queued')")
    say "check: $n_exec executions (none failed), $n_queued deliveries queued, no dead letter"
    say ""

    read -r i_med i_min i_max < <(bench_stats "${INGEST[@]}")
    read -r r_med r_min r_max < <(bench_stats "${RAW[@]}")
    read -r c_med c_min c_max < <(bench_stats "${CPUS[@]}")
    verdict=$(awk -v a="$i_med" -v t="$TARGET" 'BEGIN { print (a >= t) ? "PASS" : "MISS" }')
    # the target is for both cores: one consumer is one process, so its row is a reference
    target=">= $TARGET/s" met=$([ "$verdict" = PASS ] && echo met || echo missed)
    [ "$CONSUMERS" -lt 2 ] && target="— (one consumer uses one core)" met="—"
    say "## summary with $CONSUMERS consumer(s) (median of $REPEATS, [min–max])"
    say ""
    say "| measurement | notiflow | reference | ratio |"
    say "|---|---|---|---|"
    say "| Kafka ingest ($CONSUMERS consumer(s)): events/s into committed executions vs raw consume of the same messages, messages/s |" \
        "$(bench_fmt "$i_med" "$i_min" "$i_max") | $(bench_fmt "$r_med" "$r_min" "$r_max") | $(bench_ratio "$i_med" "$r_med") |"
    say ""
    say "consumer CPU per event: $c_med µs [$c_min–$c_max] (one fully busy core would ingest" \
        "$(awk -v u="$c_med" 'BEGIN { printf "%.0f", (u > 0) ? 1000000 / u : 0 }') events/s); per-run ratios: ${RATIOS[*]}"
    say ""
    say "target (2 cores): Kafka ingest >= $TARGET events/s: $i_med with $CONSUMERS consumer(s) — $verdict"
    say ""
    say "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo n/a)"

    bench_row kafka "Kafka ingest: events/s into committed executions (order_shipped, $PARTITIONS partitions, $CONSUMERS consumer(s) in one group) vs raw consume of the same messages from the same mock broker" \
        "$(bench_fmt "$i_med" "$i_min" "$i_max")" "$(bench_fmt "$r_med" "$r_min" "$r_max")" "$(bench_ratio "$i_med" "$r_med")" \
        "$target" "$met" "$i_med" "$r_med" "Kafka ingest ($CONSUMERS) vs raw consume"
done

cp "$REPORT" "$ROOT/$RESULTS"
echo "(written to $RESULTS)"
