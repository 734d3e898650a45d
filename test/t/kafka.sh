#!/usr/bin/env bash
# test/t/kafka.sh — Kafka triggers end to end: the real consumer workers in a
# cluster started with shared_preload_libraries = 'notiflow', against
# librdkafka's mock cluster (test/kafka/kafka_mock), messages produced with
# kcat.  Exactly N executions for N messages, poison messages as dead letters
# beside good neighbours, kill -9 of a consumer and a PostgreSQL restart in
# the middle of a stream (no loss, no duplicate), two subscriptions sharing a
# consumer group, the lag view and the backoff of a failing transaction,
# event mode, a broker going down and coming back, and consumers starting
# and stopping without a restart.
set -uo pipefail
cd "$(dirname "$0")/../.."
source test/lib/tap.sh
source test/lib/cluster.sh

command -v kcat >/dev/null || { echo "1..0 # SKIP kcat is not installed"; exit 0; }
WORK=$(mktemp -d)
MOCK_PID=
PRODUCER_PID=
cleanup() {
    for p in $PRODUCER_PID $MOCK_PID; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    [ -n "${NOTIFLOW_TEST_LOGS:-}" ] && [ -n "${CLUSTER_DIR:-}" ] && cp "$CLUSTER_DIR/server.log" "$NOTIFLOW_TEST_LOGS/kafka-server.log"
    cluster_stop
    rm -rf "$WORK"
}
trap cleanup EXIT

# --- the Kafka cluster ------------------------------------------------------------
make -s -C test/kafka >/dev/null || { echo "Bail out! cannot build test/kafka/kafka_mock"; exit 1; }
test/kafka/kafka_mock --topic orders:4 --topic poison:1 --topic gone:1 --topic crash:4 --topic restart:4 \
    --topic shared:4 --topic lagging:2 --topic payments:2 --topic burst:1 --topic oom:1 --topic broker:2 --topic reset:1 --topic latest:2 --topic byrecipient:1 \
    </dev/null >"$WORK/mock.out" 2>"$WORK/mock.err" &
MOCK_PID=$!
has_line() { grep -qsx "$2" "$1"; }
wait_for 20 grep -qs '^bootstrap ' "$WORK/mock.out" || { echo "Bail out! the mock cluster did not start"; cat "$WORK/mock.err"; exit 1; }
BOOT=$(awk '/^bootstrap /{print $2}' "$WORK/mock.out")

# produce TOPIC FROM TO [KCAT OPTIONS...]: messages {"n": FROM} .. {"n": TO}, one per line
produce() {
    local topic=$1 from=$2 to=$3
    shift 3
    seq "$from" "$to" | awk '{printf "{\"n\": %d}\n", $1}' | kcat -P -b "$BOOT" -t "$topic" "$@" 2>>"$WORK/kcat.err"
}
# produce_raw TOPIC [KCAT OPTIONS...]: stdin's lines as messages, in order, to partition 0
produce_raw() {
    local topic=$1
    shift
    kcat -P -b "$BOOT" -t "$topic" -p 0 "$@" 2>>"$WORK/kcat.err"
}

# --- the cluster ------------------------------------------------------------------
DB=notiflow_kafka
cluster_start "shared_preload_libraries = 'notiflow'" "notiflow.database_name = '$DB'" \
    "notiflow.dispatch_workers = 0" "max_worker_processes = 24" >/dev/null ||
    { echo "Bail out! cluster did not start"; exit 1; }
psql -X -q -d postgres -c "CREATE DATABASE $DB" >/dev/null
sql() { psql -X -q -At -v ON_ERROR_STOP=1 -d $DB -c "$1"; }
sql_is() { [ "$(sql "$1" 2>/dev/null)" = "$2" ]; }
sql "CREATE EXTENSION notiflow" >/dev/null
for wf in kafka_orders kafka_gone kafka_crash kafka_restart kafka_a kafka_b kafka_lagging kafka_broker kafka_reset kafka_latest; do
    sql "SELECT notiflow.put_workflow('$wf', '{\"nodes\": [{\"id\": \"t\", \"type\": \"trigger\", \"required\": [\"n\"]},
         {\"id\": \"big\", \"type\": \"condition\", \"if\": \"\$.payload.n > 100\"}], \"edges\": [{\"from\": \"t\", \"to\": \"big\"}]}')" >/dev/null
done

RDKAFKA='"rdkafka": {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"}'
# subscribe NAME TOPIC WORKFLOW [MORE OPTIONS]
subscribe() {
    sql "SELECT notiflow.subscribe_kafka('$1', '$BOOT', '{$2}', '$3', '{$RDKAFKA${4:+, $4}}')" >/dev/null
}
consumer_pid() {
    psql -X -qAt -d $DB -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'notiflow kafka consumer' AND application_name = '$1'" 2>/dev/null
}
consumer_running() { [ -n "$(consumer_pid "$1")" ]; }
consumer_gone() { [ -z "$(consumer_pid "$1")" ]; }
# assigned_is NAME N: the consumer runs and holds N partitions
assigned_is() { sql_is "SELECT assigned FROM notiflow.kafka_consumer_state WHERE subscription = '$1' AND status = 'running'" "$2"; }
executions() { sql "SELECT count(*) FROM notiflow.executions WHERE workflow_key = '$1'" 2>/dev/null; }
executions_are() { [ "$(executions "$1")" = "$2" ]; }
executions_at_least() { local n; n=$(executions "$1"); [ -n "$n" ] && [ "$n" -ge "$2" ]; }
# distinct_n WORKFLOW...: how many different payloads n the workflows' executions carry
distinct_n() {
    local list
    list=$(printf "'%s'," "$@")
    sql "SELECT count(DISTINCT payload ->> 'n') FROM notiflow.executions WHERE workflow_key IN (${list%,})"
}

# --- 1. N messages → exactly N executions; the consumer starts without a restart --------------------------
subscribe orders orders kafka_orders
wait_for 30 consumer_running orders
ok $? "subscribe_kafka starts a \"notiflow kafka consumer\" without a restart"
wait_for 60 assigned_is orders 4
ok $? "the consumer joins its group and is assigned the topic's 4 partitions"
produce orders 1 2000
wait_for 60 executions_are kafka_orders 2000
ok $? "2000 messages produce 2000 executions"
is "$(distinct_n kafka_orders)" 2000 "one execution per message"
is "$(sql "SELECT count(DISTINCT idempotency_key) FILTER (WHERE idempotency_key ~ '^orders/[0-3]/[0-9]+$') FROM notiflow.executions WHERE workflow_key = 'kafka_orders'")" \
   2000 "each execution's idempotency key is topic/partition/offset"
is "$(sql "SELECT sum(next_offset) FROM notiflow.kafka_offsets WHERE group_id = 'notiflow-orders'")" 2000 \
   "the stored offsets cover the 2000 messages"
lag_settled() {
    sql_is "SELECT count(*) || ' ' || sum(committed_offset) || ' ' || sum(high_watermark) || ' ' || sum(lag)
              FROM notiflow.kafka_lag WHERE subscription = 'orders' AND assigned" "4 2000 2000 0"
}
wait_for 20 lag_settled
ok $? "kafka_lag: 4 partitions, committed 2000 = high watermark 2000, lag 0"
counted() { sql_is "SELECT messages || ' ' || executions || ' ' || dead_letters FROM notiflow.kafka_consumer_state WHERE subscription = 'orders'" "2000 2000 0"; }
wait_for 10 counted
ok $? "the consumer state counts 2000 messages and executions"
pid=$(consumer_pid orders)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
before=$(ticks "$pid")
sleep 3
used=$(($(ticks "$pid") - before))
ok $([ "$used" -lt 50 ]; echo $?) "an idle consumer waits instead of polling ($used CPU ticks in 3 s)"

# --- 1b. a batch whose workflow takes the recipient from the payload runs as one batch ------------------
# The subscribers a batch names are loaded with one query; those the trigger node's recipient path
# names were not, so every such batch raised and ran again message by message (batches_split).
sql "SELECT notiflow.put_subscriber('kc1', '{\"email\": \"kc1@example.com\"}');
     SELECT notiflow.put_subscriber('kc2', '{\"email\": \"kc2@example.com\"}');
     SELECT notiflow.put_workflow('kafka_recipient', '{\"nodes\": [{\"id\": \"t\", \"type\": \"trigger\",
       \"recipient\": \"\$.payload.customer\"}], \"edges\": []}')" >/dev/null
seq 1 200 | awk '{printf "{\"n\": %d, \"customer\": \"kc%d\"}\n", $1, $1 % 2 + 1}' | produce_raw byrecipient
subscribe byrecipient byrecipient kafka_recipient
wait_for 60 executions_are kafka_recipient 200
ok $? "200 messages whose recipient the trigger node takes from the payload produce 200 executions"
is "$(sql "SELECT string_agg(subscriber_id || ':' || n, ',' ORDER BY subscriber_id) FROM (SELECT subscriber_id, count(*) AS n
             FROM notiflow.executions WHERE workflow_key = 'kafka_recipient' GROUP BY 1) x")" "kc1:100,kc2:100" \
   "each execution has the subscriber its payload names"
split_is() { sql_is "SELECT messages || ' ' || batches_split FROM notiflow.kafka_consumer_state WHERE subscription = 'byrecipient'" "$1"; }
wait_for 10 split_is "200 0"
ok $? "no batch was split into single messages ($(sql "SELECT batches_split FROM notiflow.kafka_consumer_state WHERE subscription = 'byrecipient'"))"
sql "SELECT notiflow.unsubscribe_kafka('byrecipient')" >/dev/null
wait_for 30 consumer_gone byrecipient
printf '{"n": 201, "customer": "kc1"}\n{"n": 202, "customer": "nobody"}\n{"n": 203, "customer": "kc2"}\n' | produce_raw byrecipient
subscribe byrecipient byrecipient kafka_recipient  # read from the stored offsets: the 3 come in one batch
wait_for 60 executions_are kafka_recipient 202
wait_for 10 split_is "3 1"
ok $? "a batch with an unknown subscriber is split: its neighbours run, it alone fails"
is "$(sql "SELECT count(*) FROM notiflow.dead_letters WHERE source = 'kafka' AND reference = 'byrecipient/0/201' AND error LIKE '%unknown subscriber%'")" 1 \
   "the message naming an unknown subscriber is a dead letter"
sql "SELECT notiflow.unsubscribe_kafka('byrecipient')" >/dev/null

# --- 2. poison messages → dead letters; their neighbours succeed ----------------------------------
sql "SELECT notiflow.put_workflow('kafka_poison', '{\"nodes\": [{\"id\": \"t\", \"type\": \"trigger\", \"required\": [\"n\"]},
     {\"id\": \"big\", \"type\": \"condition\", \"if\": \"\$.payload.n > 100\"}], \"edges\": [{\"from\": \"t\", \"to\": \"big\"}]}')" >/dev/null
subscribe poison poison kafka_poison \
    '"payload": "$.data", "idempotency_key": "$.id", "filter": "!($.type == \"skip\")", "max_message_bytes": 300'
wait_for 60 assigned_is poison 1
ok $? "the poison subscription is assigned its partition"
printf '%s\n' '{"id": "g1", "data": {"n": 1}}' | produce_raw poison
printf '%s\n' 'k1|this is not json' | produce_raw poison -K '|' -H trace=abc -H trace=def
printf '%s\n' '{"id": "g2", "data": {"n": 2}}' | produce_raw poison
printf '\xff\xfe{"id": "g3", "data": {"n": 3}}\n' | produce_raw poison -H $'\xffname=v'
printf '%s\n' '{"data": {"n": 4}}' | produce_raw poison
printf '{"id": "g5", "data": {"n": 5}, "pad": "%0400d"}\n' 0 | produce_raw poison
printf '%s\n' '{"id": "g6", "data": {"x": 6}}' | produce_raw poison
printf '%s\n' '{"id": "g7", "data": [7]}' | produce_raw poison
printf '%s\n' '{"id": "g8", "type": "skip", "data": {"n": 8}}' | produce_raw poison
printf '%s\n' '{"id": "g9", "data": {"n": 9}}' | produce_raw poison
poison_done() { sql_is "SELECT next_offset FROM notiflow.kafka_offsets WHERE group_id = 'notiflow-poison'" 10; }
wait_for 30 poison_done
ok $? "all 10 messages are consumed: poison does not block the partition"
is "$(sql "SELECT string_agg(idempotency_key, ',' ORDER BY idempotency_key) FROM notiflow.executions WHERE workflow_key = 'kafka_poison'")" \
   "g1,g2,g9" "the good neighbours are executed (the filtered one is not)"
is "$(sql "SELECT string_agg(split_part(reference, '/', 3) || '=' || split_part(error, ':', 1), ' ' ORDER BY id)
             FROM notiflow.dead_letters WHERE source = 'kafka' AND reference LIKE 'poison/%'")" \
   "1=not JSON 3=not JSON 4=options.idempotency_key 5=too large 6=trigger 7=trigger" \
   "each bad message is a dead letter saying which step failed"
dl() { sql "SELECT $1 FROM notiflow.dead_letters WHERE reference = 'poison/0/$2'"; }
is "$(dl "convert_from(payload, 'UTF8')" 1)" "this is not json" "the dead letter keeps the raw message"
is "$(dl "details ->> 'topic' || ' ' || (details ->> 'partition') || ' ' || (details ->> 'offset') || ' ' || (details ->> 'key') || ' ' || (details ->> 'subscription')" 1)" \
   "poison 0 1 k1 poison" "its details name the topic, partition, offset, key and subscription"
is "$(dl "details -> 'headers'" 1)" '{"trace": ["abc", "def"]}' "and the headers (a repeated one as an array)"
is "$(dl "left(encode(payload, 'hex'), 4)" 3)" fffe "bytes that are not UTF-8 are kept as they came"
is "$(dl "details -> 'headers'" 3)" '{"\\xff6e616d65": "v"}' "a header name that is not UTF-8 is written in hex, as values are"
ok $(dl error 4 | grep -q 'selected nothing'; echo $?) "a failed extraction says so: $(dl error 4)"
ok $(dl error 5 | grep -q 'max_message_bytes'; echo $?) "an oversized message names the limit: $(dl error 5)"
ok $(dl error 6 | grep -q 'required'; echo $?) "a trigger error is the engine's: $(dl error 6)"
wait_for 10 sql_is "SELECT messages || ' ' || executions || ' ' || filtered || ' ' || dead_letters FROM notiflow.kafka_consumer_state WHERE subscription = 'poison'" "10 3 1 6"
ok $? "the consumer counts 10 messages: 3 executions, 1 filtered, 6 dead letters"

# an unknown workflow: every message is a dead letter, none is lost
subscribe gone gone kafka_gone
wait_for 60 assigned_is gone 1
sql "DELETE FROM notiflow.workflows WHERE key = 'kafka_gone'" >/dev/null
produce gone 1 3
gone_done() { sql_is "SELECT count(*) FROM notiflow.dead_letters WHERE reference LIKE 'gone/%' AND error LIKE 'trigger: unknown workflow%'" 3; }
wait_for 30 gone_done
ok $? "messages for a workflow that no longer exists become dead letters"
sql "SELECT notiflow.unsubscribe_kafka('poison'); SELECT notiflow.unsubscribe_kafka('gone')" >/dev/null

# stream TOPIC BATCHES: produces BATCHES × 500 messages in the background, 0.3 s apart
stream() {
    (for b in $(seq 0 $(($2 - 1))); do produce "$1" $((b * 500 + 1)) $((b * 500 + 500)); sleep 0.3; done) &
    PRODUCER_PID=$!
}
# exactly WORKFLOW N: N executions, one per message (no idempotency key hides a duplicate)
exactly() {
    is "$(executions "$1") $(distinct_n "$1")" "$2 $2" "$3"
}

# --- 3. kill -9 of the consumer in the middle of a stream ---------------------------------------------
subscribe crash crash kafka_crash '"idempotency_key": null'
wait_for 60 assigned_is crash 4
ok $? "the crash subscription is assigned 4 partitions"
stream crash 10
wait_for 60 executions_at_least kafka_crash 1000
pid=$(consumer_pid crash)
before=$(executions kafka_crash)
kill -9 "$pid"
ok $? "kill -9 of the consumer after $before of 5000 executions"
wait "$PRODUCER_PID"
PRODUCER_PID=
restarted() { local p; p=$(consumer_pid crash); [ -n "$p" ] && [ "$p" != "$pid" ]; }
wait_for 60 restarted
ok $? "the server recovers and the consumer starts again"
wait_for 120 executions_at_least kafka_crash 5000
sleep 2
exactly kafka_crash 5000 "after kill -9: exactly 5000 executions for 5000 messages, none lost, none twice"
sql "SELECT notiflow.unsubscribe_kafka('crash')" >/dev/null

# --- 4. a PostgreSQL restart in the middle of a stream --------------------------------------------------
subscribe restart restart kafka_restart '"idempotency_key": null'
wait_for 60 assigned_is restart 4
ok $? "the restart subscription is assigned 4 partitions"
stream restart 10
wait_for 60 executions_at_least kafka_restart 1000
before=$(executions kafka_restart)
cluster_as_owner "$PG_BIN/pg_ctl" -D "$CLUSTER_DIR/data" -l "$CLUSTER_DIR/server.log" -m fast -w restart >/dev/null
ok $? "PostgreSQL restarts (fast) after $before of 5000 executions"
wait "$PRODUCER_PID"
PRODUCER_PID=
wait_for 120 executions_at_least kafka_restart 5000
sleep 2
exactly kafka_restart 5000 "after the restart: exactly 5000 executions for 5000 messages"
sql "SELECT notiflow.unsubscribe_kafka('restart')" >/dev/null

# --- 5. two subscriptions in one consumer group share the partitions ---------------------------------------
subscribe shared_a shared kafka_a '"group_id": "shared-group"'
wait_for 60 assigned_is shared_a 4
subscribe shared_b shared kafka_b '"group_id": "shared-group"'
both_hold_two() { assigned_is shared_a 2 && assigned_is shared_b 2; }
wait_for 90 both_hold_two
ok $? "two subscriptions with one group_id split the topic's 4 partitions 2 and 2"
# keyless messages stick to one partition for a while: spread them by hand
for p in 0 1 2 3; do produce shared $((p * 500 + 1)) $((p * 500 + 500)) -p $p; done
shared_total() { [ $(($(executions kafka_a) + $(executions kafka_b))) -ge "$1" ]; }
wait_for 60 shared_total 2000
sleep 1
a=$(executions kafka_a)
b=$(executions kafka_b)
is "$((a + b)) $(distinct_n kafka_a kafka_b)" "2000 2000" "2000 messages: $a executions by one, $b by the other, none twice"
ok $([ "$a" -gt 0 ] && [ "$b" -gt 0 ]; echo $?) "both consumers took part"
is "$(sql "SELECT sum(next_offset) || ' ' || count(DISTINCT subscription) FROM notiflow.kafka_offsets WHERE group_id = 'shared-group'")" \
   "2000 2" "the group's offsets cover 2000 messages, stored by both"
gave_up_no_lag() {
    sql_is "SELECT count(*) FILTER (WHERE assigned) || ' ' || count(*) FILTER (WHERE NOT assigned AND lag IS NULL)
              FROM notiflow.kafka_lag WHERE subscription = 'shared_a'" "2 2"
}
wait_for 20 gave_up_no_lag
ok $? "kafka_lag: the partitions shared_a gave up to shared_b show no lag (their watermarks no longer move; shared_b counts them)"
sql "SELECT notiflow.unsubscribe_kafka('shared_b')" >/dev/null
wait_for 90 assigned_is shared_a 4
ok $? "when one unsubscribes, the other takes over all 4 partitions"
for p in 0 1 2 3; do produce shared $((2000 + p * 250 + 1)) $((2000 + p * 250 + 250)) -p $p; done
wait_for 60 shared_total 3000
sleep 1
is "$(($(executions kafka_a) + $(executions kafka_b))) $(distinct_n kafka_a kafka_b)" "3000 3000" \
   "it goes on from the group's offsets: 3000 executions for 3000 messages"
sql "SELECT notiflow.unsubscribe_kafka('shared_a')" >/dev/null

# --- 6. the lag view, and a transaction that fails as a whole ---------------------------------------------
subscribe lagging lagging kafka_lagging
wait_for 60 assigned_is lagging 2
produce lagging 1 50 -p 0
produce lagging 51 100 -p 1
wait_for 30 executions_are kafka_lagging 100
lag_is() {
    sql_is "SELECT sum(committed_offset) || ' ' || sum(high_watermark) || ' ' || sum(lag) FROM notiflow.kafka_lag WHERE subscription = 'lagging'" "$1"
}
wait_for 20 lag_is "100 100 0"
ok $? "kafka_lag: committed 100, high watermark 100, lag 0"
sql "CREATE FUNCTION public.block_offsets() RETURNS trigger LANGUAGE plpgsql AS \$\$
     BEGIN RAISE EXCEPTION 'offsets blocked for the test'; END \$\$;
     CREATE TRIGGER block_offsets BEFORE INSERT OR UPDATE ON notiflow.kafka_offsets
        FOR EACH ROW WHEN (NEW.group_id = 'notiflow-lagging') EXECUTE FUNCTION public.block_offsets()" >/dev/null
produce lagging 101 125 -p 0
produce lagging 126 150 -p 1
backing_off() {
    sql_is "SELECT status || ' ' || paused || ' ' || (error LIKE '%offsets blocked%') FROM notiflow.kafka_consumer_state WHERE subscription = 'lagging'" "backoff 2 true"
}
wait_for 30 backing_off
ok $? "a transaction that fails as a whole: state backoff, partitions paused, the error shown"
wait_for 20 lag_is "100 150 50"
ok $? "kafka_lag: committed 100, high watermark 150, lag 50"
is "$(executions kafka_lagging)" 100 "the failed batch's executions were rolled back with it"
sql "DROP TRIGGER block_offsets ON notiflow.kafka_offsets" >/dev/null
wait_for 60 executions_are kafka_lagging 150
ok $? "once the database accepts it again, the batch commits"
wait_for 20 lag_is "150 150 0"
ok $? "kafka_lag: committed 150, lag 0"
recovered() {
    sql_is "SELECT status || ' ' || paused || ' ' || coalesce(error, '-') || ' ' || (last_error LIKE '%offsets blocked%') FROM notiflow.kafka_consumer_state WHERE subscription = 'lagging'" "running 0 - true"
}
wait_for 20 recovered
ok $? "the state is running again, the last error kept"
exactly kafka_lagging 150 "150 executions for 150 messages"
sql "SELECT notiflow.unsubscribe_kafka('lagging')" >/dev/null

# --- 7. event mode: events for wait nodes -----------------------------------------------------------
sql "SELECT notiflow.subscribe_kafka('payments', '$BOOT', '{payments}', NULL, '{$RDKAFKA, \"mode\": \"event\",
     \"event_name\": \"\$.kind\", \"correlation_key\": \"\$.order_id\", \"payload\": \"\$.data\"}')" >/dev/null
wait_for 60 assigned_is payments 2
printf '%s\n' '{"kind": "paid", "order_id": "o-1", "data": {"amount": 10}}' '{"kind": "shipped", "order_id": "o-1", "data": {}}' \
    '{"kind": "paid", "data": {}}' | produce_raw payments
events_in() { sql_is "SELECT count(*) FROM notiflow.event_inbox WHERE correlation_key = 'o-1'" 2; }
wait_for 30 events_in
ok $? "event mode hands each message to notiflow.emit_event (kept in the inbox: nothing waits)"
is "$(sql "SELECT string_agg(name || '=' || data::text, ' ' ORDER BY id) FROM notiflow.event_inbox WHERE correlation_key = 'o-1'")" \
   'paid={"amount": 10} shipped={}' "with the extracted name, correlation key and data"
wait_for 20 sql_is "SELECT count(*) FROM notiflow.dead_letters WHERE reference LIKE 'payments/%' AND error LIKE 'options.correlation_key%'" 1
ok $? "an event without a correlation key is a dead letter"
# an event from Kafka and one from SQL complete the same wait node
sql "SELECT notiflow.put_workflow('kafka_wait', '{\"nodes\": [{\"id\": \"t\", \"type\": \"trigger\"},
       {\"id\": \"w\", \"type\": \"wait\", \"events\": [\"paid\", \"confirmed\"], \"key\": \"{{payload.order_id}}\"}],
       \"edges\": [{\"from\": \"t\", \"to\": \"w\"}]}')" >/dev/null
kw=$(sql "SELECT notiflow.trigger('kafka_wait', '{\"order_id\": \"o-1\"}')")
is "$(sql "SELECT received::text FROM notiflow.execution_waits WHERE execution_id = $kw")" '{"paid": {"amount": 10}}' \
   "a wait node takes the event that came from Kafka"
is "$(sql "SELECT notiflow.emit_event('confirmed', 'o-1', '{\"by\": \"sql\"}')")" 1 "and an event from SQL completes it"
is "$(sql "SELECT status || ' ' || (output -> 'events')::text FROM notiflow.execution_steps WHERE execution_id = $kw AND node_id = 'w'")" \
   'completed {"paid": {"amount": 10}, "confirmed": {"by": "sql"}}' "its output holds both events by name"
sql "SELECT notiflow.unsubscribe_kafka('payments')" >/dev/null

# --- 7b. a burst of events: one subtransaction per batch, not one or more per message ------------------
# 50 executions wait for "go" on keys b-1..b-50; 300 events wait in the topic before the consumer starts:
# 50 complete those waits (and resume their executions); all 300 are kept in the inbox (250 of them early,
# for keys x-1..x-250).  Each transaction id a
# (sub)transaction takes is counted: one per subtransaction that writes, and a backend keeps only 64 per
# transaction (past that every snapshot in the cluster reads pg_subtrans).  Before, each event took
# two (three when it resumed an execution): 650 here.
sql "SELECT notiflow.put_workflow('kafka_burst', '{\"nodes\": [{\"id\": \"t\", \"type\": \"trigger\"},
       {\"id\": \"w\", \"type\": \"wait\", \"events\": [\"go\"], \"key\": \"{{payload.k}}\"}],
       \"edges\": [{\"from\": \"t\", \"to\": \"w\"}]}')" >/dev/null
sql "SELECT count(notiflow.trigger('kafka_burst', jsonb_build_object('k', 'b-' || g))) FROM generate_series(1, 50) g" >/dev/null
{ seq 1 50 | awk '{printf "{\"kind\": \"go\", \"k\": \"b-%d\"}\n", $1}'
  seq 1 250 | awk '{printf "{\"kind\": \"early\", \"k\": \"x-%d\"}\n", $1}'; } | produce_raw burst
xid_before=$(sql "SELECT txid_current()")
sql "SELECT notiflow.subscribe_kafka('burst', '$BOOT', '{burst}', NULL, '{$RDKAFKA, \"mode\": \"event\",
     \"event_name\": \"\$.kind\", \"correlation_key\": \"\$.k\"}')" >/dev/null
burst_done() { sql_is "SELECT (SELECT count(*) FROM notiflow.event_inbox WHERE correlation_key LIKE 'x-%')
                            || ' ' || (SELECT count(*) FROM notiflow.executions WHERE workflow_key = 'kafka_burst' AND status = 'completed')" "250 50"; }
wait_for 60 burst_done
ok $? "300 events from Kafka: 50 complete their waits and resume their executions, the 250 early ones wait in the inbox"
xids=$(( $(sql "SELECT txid_current()") - xid_before - 1 ))
ok $([ "$xids" -lt 100 ]; echo $?) "they took $xids transaction ids (fewer than 100; one per message would be 300)"
wait_for 20 sql_is "SELECT events || ' ' || dead_letters FROM notiflow.kafka_consumer_state WHERE subscription = 'burst'" "300 0"
ok $? "the consumer counts 300 events, no dead letter"
# an execution waiting for an event is busy (another session holds its row): the batch is emitted again
# event by event, and that one waits for the row, without deadlock and without a dead letter
busy=$(sql "SELECT notiflow.trigger('kafka_burst', '{\"k\": \"b-busy\"}')")
psql -X -q -d $DB -c "BEGIN; SELECT 1 FROM notiflow.executions WHERE id = $busy FOR UPDATE; SELECT pg_sleep(60); COMMIT" \
    >/dev/null 2>&1 &
LOCKER_PID=$!
locker_holds() { sql_is "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'BEGIN; SELECT 1 FROM notiflow.executions%' AND state = 'active'" 1; }
wait_for 20 locker_holds
printf '%s\n' '{"kind": "early", "k": "y-1"}' '{"kind": "go", "k": "b-busy"}' '{"kind": "early", "k": "y-2"}' | produce_raw burst
consumer_waits() {
    sql_is "SELECT wait_event_type FROM pg_stat_activity WHERE backend_type = 'notiflow kafka consumer' AND application_name = 'burst'" Lock
}
wait_for 30 consumer_waits
ok $? "the consumer waits for the busy execution's row (nothing else held)"
sql "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'BEGIN; SELECT 1 FROM notiflow.executions%'" >/dev/null
wait "$LOCKER_PID" 2>/dev/null
wait_for 30 sql_is "SELECT status FROM notiflow.executions WHERE id = $busy" completed
ok $? "once the row is free the event completes its wait"
wait_for 20 sql_is "SELECT (SELECT count(*) FROM notiflow.event_inbox WHERE correlation_key IN ('y-1', 'y-2')) || ' ' || events || ' ' || dead_letters
                     FROM notiflow.kafka_consumer_state WHERE subscription = 'burst'" "2 303 0"
ok $? "its neighbours are emitted too, no dead letter"
sql "SELECT notiflow.unsubscribe_kafka('burst')" >/dev/null

# --- 7c. a message whose error may pass but comes back every time --------------------------------------
# A test trigger makes the execution of message n = 2 fail with out of memory (53200), an error that
# may pass: its batch rolls back and is read again after a backoff, three times; then the messages are
# read one per transaction, and that one alone becomes a dead letter instead of holding its partition.
sql "SELECT notiflow.put_workflow('kafka_oom', '{\"nodes\": [{\"id\": \"t\", \"type\": \"trigger\"}], \"edges\": []}');
     CREATE FUNCTION public.oom_for_two() RETURNS trigger LANGUAGE plpgsql AS \$\$
     BEGIN RAISE EXCEPTION 'out of memory (test)' USING ERRCODE = '53200'; END \$\$;
     CREATE TRIGGER oom_for_two BEFORE INSERT ON notiflow.executions FOR EACH ROW
       WHEN (NEW.workflow_key = 'kafka_oom' AND NEW.payload ->> 'n' = '2') EXECUTE FUNCTION public.oom_for_two();" >/dev/null
subscribe oom oom kafka_oom
wait_for 60 assigned_is oom 1
produce oom 1 3
oom_done() {
    sql_is "SELECT (SELECT string_agg(payload ->> 'n', ',' ORDER BY payload ->> 'n') FROM notiflow.executions WHERE workflow_key = 'kafka_oom')
                   || ' ' || (SELECT count(*) FROM notiflow.dead_letters WHERE reference = 'oom/0/1' AND error LIKE 'trigger: out of memory (test)%')" "1,3 1"
}
wait_for 60 oom_done
ok $? "after three failed batches the messages are read one at a time: n = 1 and 3 start, n = 2 is a dead letter"
ok $(grep -q 'kafka consumer "oom": 3 batches failed in a row; its next [0-9]* messages are read one at a time' "$CLUSTER_DIR/server.log"; echo $?) \
   "the server log says so"
produce oom 4 5
wait_for 30 executions_are kafka_oom 4
ok $? "then batches again: later messages start"
sql "SELECT notiflow.unsubscribe_kafka('oom'); DROP TRIGGER oom_for_two ON notiflow.executions; DROP FUNCTION public.oom_for_two()" >/dev/null

# --- 8. the broker goes down and comes back --------------------------------------------------------------
subscribe broker broker kafka_broker
wait_for 60 assigned_is broker 2
produce broker 1 100
wait_for 30 executions_are kafka_broker 100
# both partitions show a lag (one with no message yet, since keyless messages may all have gone to
# the other, from its low watermark: the subscription starts at the earliest message)
lags_shown() { sql_is "SELECT count(lag) FROM notiflow.kafka_lag WHERE subscription = 'broker'" 2; }
wait_for 20 lags_shown
kill -USR1 "$MOCK_PID"
wait_for 10 has_line "$WORK/mock.out" down
broker_down() {
    sql_is "SELECT status || ' ' || (error LIKE 'all brokers are down%') FROM notiflow.kafka_consumer_state WHERE subscription = 'broker'" "broker_down true"
}
wait_for 30 broker_down
ok $? "with the broker down the consumer reports broker_down and why"
ok $(consumer_running broker; echo $?) "and keeps running (librdkafka retries with backoff)"
lags_shown
ok $? "kafka_lag keeps the partitions' lag while the brokers are unreachable (assigned or not)"
sleep 8
kill -USR2 "$MOCK_PID"
wait_for 10 has_line "$WORK/mock.out" up
wait_for 90 assigned_is broker 2
ok $? "when the broker is back the consumer is running again with its partitions"
produce broker 101 300
wait_for 60 executions_are kafka_broker 300
ok $? "and consumes what is produced after"
exactly kafka_broker 300 "300 executions for 300 messages across the outage"

# --- 8b. a stored offset past the partition's end ------------------------------------------------------
# The stored offset (1000, set by hand) lies past the end of the partition, as after a log
# truncation.  librdkafka resets it to the subscription's start (earliest); the consumer reads
# from there instead of skipping every message below 1000 (it did, and so lost them).  The
# messages it had processed come again with their idempotency keys and start nothing new.
subscribe reset reset kafka_reset
wait_for 60 assigned_is reset 1
produce reset 1 5
wait_for 30 executions_are kafka_reset 5
ok $? "5 messages, 5 executions"
sql "SELECT notiflow.unsubscribe_kafka('reset')" >/dev/null
wait_for 30 consumer_gone reset
sql "UPDATE notiflow.kafka_offsets SET next_offset = 1000 WHERE group_id = 'notiflow-reset'" >/dev/null
produce reset 6 8
subscribe reset reset kafka_reset
wait_for 30 executions_are kafka_reset 8
ok $? "with its stored offset past the end, the partition is read from its start: the 3 new messages start executions"
stored_is() { sql_is "SELECT next_offset FROM notiflow.kafka_offsets WHERE group_id = 'notiflow-reset'" "$1"; }
wait_for 20 stored_is 8
ok $? "and the stored offset follows the partition again (8)"
produce reset 9 10
wait_for 30 executions_are kafka_reset 10
ok $? "messages produced afterwards are read"
exactly kafka_reset 10 "10 executions for 10 messages"
sql "SELECT notiflow.unsubscribe_kafka('reset')" >/dev/null

# --- 8c. start "latest" is pinned when a partition is first assigned ---------------------------------
# "latest" is where a partition without a stored offset starts.  It is stored when the partition is
# assigned, so that what comes while nobody reads (here: between unsubscribe and subscribe again)
# is read afterwards; before, "latest" was taken again at each assignment until a message came,
# and those messages were skipped.
produce latest 1 4
subscribe latest latest kafka_latest '"start": "latest"'
wait_for 60 assigned_is latest 2
ok $? "a subscription with start latest is assigned its 2 partitions"
latest_stored() { sql_is "SELECT count(*) || ' ' || sum(next_offset) FROM notiflow.kafka_offsets WHERE group_id = 'notiflow-latest'" "$1"; }
wait_for 20 latest_stored "2 4"
ok $? "each partition's offset is stored at its end (4 messages were there before)"
produce latest 100 100
wait_for 30 executions_are kafka_latest 1
ok $? "a message produced now is read at once (the first batch stores after the pinned offset)"
sql "SELECT notiflow.unsubscribe_kafka('latest')" >/dev/null
wait_for 30 consumer_gone latest
produce latest 5 7
subscribe latest latest kafka_latest '"start": "latest"'
wait_for 60 assigned_is latest 2
produce latest 8 8
wait_for 30 executions_are kafka_latest 5
ok $? "subscribed again, it reads the 3 messages produced while nobody read, and the next one"
is "$(sql "SELECT string_agg(payload ->> 'n', ',' ORDER BY (payload ->> 'n')::int) FROM notiflow.executions WHERE workflow_key = 'kafka_latest'")" \
   "5,6,7,8,100" "none of those before the first assignment"
is "$(grep -c 'kafka consumer "latest" backs off' "$CLUSTER_DIR/server.log")" 0 "and no batch failed meanwhile"
# An offset out of range is reset to the partition's first message even with start "latest"
# (librdkafka's "latest" jumped to the end and skipped the backlog: all of it, when the stored
# offset had fallen below the log's start through retention).  Here it lies past the end.
sql "SELECT notiflow.unsubscribe_kafka('latest')" >/dev/null
wait_for 30 consumer_gone latest
sql "UPDATE notiflow.kafka_offsets SET next_offset = 1000 WHERE group_id = 'notiflow-latest'" >/dev/null
produce latest 9 10
subscribe latest latest kafka_latest '"start": "latest"'
wait_for 30 executions_are kafka_latest 11
ok $? "an offset out of range with start latest: the partitions are read from their first message"
is "$(sql "SELECT string_agg(payload ->> 'n', ',' ORDER BY (payload ->> 'n')::int) FROM notiflow.executions WHERE workflow_key = 'kafka_latest'")" \
   "1,2,3,4,5,6,7,8,9,10,100" "the messages processed before start nothing new; the others are read"
sql "SELECT notiflow.unsubscribe_kafka('latest')" >/dev/null

# --- 9. consumers stop without a restart ---------------------------------------------------------------
sql "SELECT notiflow.unsubscribe_kafka('broker')" >/dev/null
wait_for 30 consumer_gone broker
ok $? "unsubscribe_kafka stops the consumer"
is "$(sql "SELECT count(*) FROM notiflow.kafka_consumer_state WHERE subscription = 'broker'")" 0 "and removes its state"
timeout 30 psql -X -q -d $DB -c "DROP EXTENSION notiflow CASCADE" >/dev/null 2>&1
ok $? "DROP EXTENSION completes while a consumer runs"
no_consumers() { sql_is "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'notiflow kafka consumer'" 0; }
wait_for 30 no_consumers
ok $? "and the consumers stop"
is "$(psql -X -qAt -d postgres -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'notiflow launcher'")" 1 \
   "the launcher keeps running"

done_testing
