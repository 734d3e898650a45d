#!/usr/bin/env bash
# test/t/wait.sh — wait nodes under concurrency: an event that arrives while
# the execution reaching the wait is still uncommitted, the last two events
# arriving together, and a timeout racing the last event each give exactly one
# outcome; events, delivery outcomes and resumes that lock the same
# executions and keys do not deadlock, or when they do, fail no execution.
set -uo pipefail
cd "$(dirname "$0")/../.."
source test/lib/tap.sh
source test/lib/cluster.sh

cluster_start_sms_db notiflow_wait
q "SELECT notiflow.put_workflow('ship', '{\"nodes\": [{\"id\": \"t\", \"type\": \"trigger\"},
     {\"id\": \"w\", \"type\": \"wait\", \"events\": [\"paid\", \"scanned\"], \"key\": \"{{payload.order_id}}\", \"timeout\": \"1 hour\"},
     {\"id\": \"done\", \"type\": \"sms\", \"text\": \"done\"}, {\"id\": \"late\", \"type\": \"sms\", \"text\": \"late\"}],
     \"edges\": [{\"from\": \"t\", \"to\": \"w\"}, {\"from\": \"w\", \"to\": \"done\", \"on\": \"completed\"},
                 {\"from\": \"w\", \"to\": \"late\", \"on\": \"timeout\"}]}');" >/dev/null

coproc HOLD { psql -X -q -At -d $DB; }
# hold SQL: runs SQL in the held session and reads N result lines.
hold() { echo "$1" >&"${HOLD[1]}"; local i; for ((i = 0; i < ${2:-0}; i++)); do read -r _ <&"${HOLD[0]}"; done; }
blocked() { [ "$(q "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%$1%' AND pid <> pg_backend_pid()")" = 1 ]; }
out=$(mktemp)
# race HELD_SQL CONCURRENT_SQL PATTERN MESSAGE THEN_SQL: runs HELD_SQL (one result line) in the
# held session and CONCURRENT_SQL in another (its output in $out); checks that the latter waits
# for a lock (its query matching PATTERN), then sends THEN_SQL to the held session and waits for
# the other to finish.
race() {
    hold "$1" 1
    psql -X -q -At -d $DB -c "$2" >"$out" 2>&1 &
    local pid=$!
    wait_for 20 blocked "$3"
    ok $? "$4"
    hold "$5"
    wait "$pid"
}

# 1. an event while the trigger that reaches the wait is uncommitted
race "BEGIN; SELECT notiflow.trigger('ship', '{\"order_id\": \"o1\"}', '\"ann\"');" \
     "SELECT notiflow.emit_event('paid', 'o1')" "emit_event(%paid%o1" \
     "an event for a key whose wait is being created waits for that transaction" "COMMIT;"
is "$(q "SELECT received ? 'paid' FROM notiflow.execution_waits WHERE correlation_key = 'o1'")" t \
   "then it reaches the wait"
# and is kept once, for the executions that reach a wait on the key later (within notiflow.event_ttl)
is "$(q "SELECT count(*) FROM notiflow.event_inbox WHERE correlation_key = 'o1'")" 1 "and is kept once in the inbox"

# 2. the last two events together
q "SELECT notiflow.trigger('ship', '{\"order_id\": \"o2\"}', '\"ann\"')" >/dev/null
race "BEGIN; SELECT notiflow.emit_event('paid', 'o2');" "SELECT notiflow.emit_event('scanned', 'o2')" \
     "emit_event(%scanned%o2" "two events for one key are applied one after the other" "COMMIT;"
is "$(cat "$out")" 1 "the second completes the wait"
is "$(q "SELECT count(*) FROM notiflow.deliveries d JOIN notiflow.executions e ON e.id = d.execution_id WHERE e.payload ->> 'order_id' = 'o2' AND d.node_id = 'done'")" 1 \
   "the wait completes exactly once"

# 3. a timeout racing the last event
q "SELECT notiflow.trigger('ship', '{\"order_id\": \"o3\"}', '\"ann\"')" >/dev/null
q "SELECT notiflow.emit_event('paid', 'o3')" >/dev/null
q "UPDATE notiflow.execution_waits SET deadline = now() - interval '1 second' WHERE correlation_key = 'o3';
   UPDATE notiflow.executions SET wake_at = now() - interval '1 second' WHERE payload ->> 'order_id' = 'o3'" >/dev/null
race "BEGIN; SELECT notiflow.resume_due_executions(10);" "SELECT notiflow.emit_event('scanned', 'o3')" \
     "emit_event(%scanned%o3" "the last event waits while the timeout is being applied" "COMMIT;"
is "$(cat "$out")" 0 "the event then completes nothing"
is "$(q "SELECT string_agg(d.node_id, ',') FROM notiflow.deliveries d JOIN notiflow.executions e ON e.id = d.execution_id WHERE e.payload ->> 'order_id' = 'o3'")" late \
   "exactly one outcome: the timeout"

# 4. a delivery's outcome while an event for the same execution is being applied: emit_event locks
# the execution's row, then its wait's; finish_delivery takes them in the same order, so it waits
# instead of deadlocking (taken the other way round, it was the deadlock's victim).
q "SELECT notiflow.put_workflow('receipt', '{\"nodes\": [{\"id\": \"t\", \"type\": \"trigger\"},
     {\"id\": \"s\", \"type\": \"sms\", \"text\": \"receipt\"},
     {\"id\": \"w\", \"type\": \"wait\", \"events\": [\"s.sent\", \"paid\"], \"key\": \"{{payload.order_id}}\"}],
     \"edges\": [{\"from\": \"t\", \"to\": \"s\"}, {\"from\": \"t\", \"to\": \"w\"}]}')" >/dev/null
e4=$(q "SELECT notiflow.trigger('receipt', '{\"order_id\": \"o4\"}', '\"ann\"')")
d4=$(q "SELECT id FROM notiflow.deliveries WHERE execution_id = $e4")
race "BEGIN; SELECT id FROM notiflow.executions WHERE id = $e4 FOR UPDATE;" \
     "SELECT notiflow.finish_delivery($d4, 'sent')" "finish_delivery($d4" \
     "a delivery outcome waits for the execution an event holds" \
     "UPDATE notiflow.execution_waits SET received = received || '{\"paid\": {}}' WHERE execution_id = $e4; COMMIT;"
is "$(cat "$out")" t "then it is recorded"
is "$(q "SELECT received ?& array['s.sent', 'paid'] FROM notiflow.execution_waits WHERE execution_id = $e4")" t \
   "both transactions committed (no deadlock victim): the wait holds both events"

# 5. an event whose key's lock is held while its waiting execution's row is busy: emit_event takes
# the key, then the rows; a transaction holding one of those rows and reaching a wait on the same
# key takes them the other way round.  emit_event does not wait for a row while it holds the key,
# so the two do not deadlock (before, emit_event was the victim).
q "SELECT notiflow.put_workflow('then_wait', '{\"nodes\": [{\"id\": \"t\", \"type\": \"trigger\"},
     {\"id\": \"s\", \"type\": \"sms\", \"text\": \"first\"},
     {\"id\": \"w\", \"type\": \"wait\", \"events\": [\"paid\"], \"key\": \"{{payload.order_id}}\"}],
     \"edges\": [{\"from\": \"t\", \"to\": \"s\"}, {\"from\": \"s\", \"to\": \"w\", \"on\": \"sent\"}]}')" >/dev/null
e5=$(q "SELECT notiflow.trigger('ship', '{\"order_id\": \"o5\"}', '\"ann\"')")
f5=$(q "SELECT notiflow.trigger('then_wait', '{\"order_id\": \"o5\"}', '\"ann\"')")
d5=$(q "SELECT id FROM notiflow.deliveries WHERE execution_id = $f5")
race "BEGIN; SELECT id FROM notiflow.executions WHERE id = $e5 FOR UPDATE;" \
     "SELECT notiflow.emit_event('paid', 'o5')" "emit_event(%paid%o5" \
     "an event waits for a busy execution waiting on its key" \
     "DO \$\$ BEGIN PERFORM notiflow.finish_delivery($d5, 'sent'); END \$\$; COMMIT;"
is "$(cat "$out")" 1 "then it is applied: it completes the wait reached meanwhile"
is "$(q "SELECT string_agg(execution_id::text || ':' || status || ':' || (received ? 'paid')::text, ',' ORDER BY execution_id)
           FROM notiflow.execution_waits WHERE correlation_key = 'o5'")" "$e5:waiting:true,$f5:completed:true" \
   "the transaction holding the row committed too (no deadlock victim): both executions have the event"

# 6. a resume that loses a deadlock fails no execution: finish_delivery reaches a wait on a key
# another transaction holds (which then asks for the execution's row, and detects deadlocks later).
# The victim is finish_delivery; its caller gets the error and can try again, and the execution
# is untouched (before, the resume's error failed the execution and finish_delivery succeeded).
f6=$(q "SELECT notiflow.trigger('then_wait', '{\"order_id\": \"o6\"}', '\"ann\"')")
d6=$(q "SELECT id FROM notiflow.deliveries WHERE execution_id = $f6")
race "SET deadlock_timeout = '60s'; BEGIN; SELECT notiflow.trigger('ship', '{\"order_id\": \"o6\"}', '\"ann\"');" \
     "SET deadlock_timeout = '5s'; SELECT notiflow.finish_delivery($d6, 'sent')" "finish_delivery($d6" \
     "a resume reaching a wait waits for the transaction holding the key" \
     "DO \$\$ BEGIN PERFORM FROM notiflow.executions WHERE id = $f6 FOR UPDATE; END \$\$; COMMIT; RESET deadlock_timeout;"
grep -q "deadlock detected" "$out"
ok $? "the resume is the deadlock's victim: finish_delivery raises it"
is "$(q "SELECT status || ':' || (SELECT status FROM notiflow.deliveries WHERE id = $d6) FROM notiflow.executions WHERE id = $f6")" \
   "waiting:queued" "the execution has not failed, and the outcome is not recorded"
is "$(q "SELECT notiflow.finish_delivery($d6, 'sent')")" t "the caller's second try records it"
is "$(q "SELECT status FROM notiflow.execution_waits WHERE execution_id = $f6")" waiting "and the execution reaches its wait"

# 7. the timer does not wait for a key another session holds: a due execution that reaches a wait
# on it is left for a later round, the others due with it go on (a dispatcher blocked there sent
# nothing until that session ended).
q "SELECT notiflow.put_workflow('later_wait', '{\"nodes\": [{\"id\": \"t\", \"type\": \"trigger\"},
     {\"id\": \"d\", \"type\": \"delay\", \"for\": \"1 second\"},
     {\"id\": \"w\", \"type\": \"wait\", \"events\": [\"paid\"], \"key\": \"{{payload.order_id}}\"}],
     \"edges\": [{\"from\": \"t\", \"to\": \"d\"}, {\"from\": \"d\", \"to\": \"w\"}]}')" >/dev/null
e7=$(q "SELECT notiflow.trigger('later_wait', '{\"order_id\": \"o7\"}', '\"ann\"')")
e8=$(q "SELECT notiflow.trigger('later_wait', '{\"order_id\": \"o8\"}', '\"ann\"')")
both_due() { [ "$(q "SELECT count(*) FROM notiflow.executions WHERE id IN ($e7, $e8) AND wake_at <= now()")" = 2 ]; }
wait_for 10 both_due
hold "BEGIN; SELECT notiflow.emit_event('paid', 'o7');" 1
timeout 20 psql -X -q -At -d $DB -c "SELECT notiflow.resume_due_executions(10)" >"$out" 2>&1
ok $? "resume_due_executions returns while another session holds a due execution's key"
is "$(q "SELECT string_agg(coalesce((SELECT status FROM notiflow.execution_waits w WHERE w.execution_id = e.id), 'none'), ',' ORDER BY e.id)
           FROM notiflow.executions e WHERE e.id IN ($e7, $e8)")" "none,waiting" \
   "the execution whose key is held is left as it was, the other reaches its wait"
# a round that could take only the held one passes it over in the next rounds for a while: the one
# due after it is not kept waiting as long as the key is held (each round took the held one first)
e9=$(q "SELECT notiflow.trigger('later_wait', '{\"order_id\": \"o9\"}', '\"ann\"')")
e9_due() { [ "$(q "SELECT wake_at <= now() FROM notiflow.executions WHERE id = $e9")" = t ]; }
wait_for 10 e9_due
is "$(q "SELECT notiflow.resume_due_executions(1); SELECT notiflow.resume_due_executions(1)" | tr '\n' ' ')" "0 1 " \
   "a round of one leaves the execution whose key is held; the next round of that session resumes the one due after it"
is "$(q "SELECT status FROM notiflow.execution_waits WHERE execution_id = $e9")" waiting "that one reached its wait"
hold "COMMIT;"
is "$(q "SELECT notiflow.resume_due_executions(10)")" 1 "once that session ended, the next round resumes it"
is "$(q "SELECT status FROM notiflow.execution_waits WHERE execution_id = $e7")" completed \
   "and it takes the event that session left in the inbox"

# 8. cancel_execution locks the queued deliveries before the execution, as finish_delivery does:
# a cancel while an outcome is being recorded waits for it instead of deadlocking with it.
e9=$(q "SELECT notiflow.trigger('receipt', '{\"order_id\": \"o9\"}', '\"ann\"')")
d9=$(q "SELECT id FROM notiflow.deliveries WHERE execution_id = $e9")
race "BEGIN; SELECT id FROM notiflow.deliveries WHERE id = $d9 FOR UPDATE;" \
     "SELECT notiflow.cancel_execution($e9)" "cancel_execution($e9" \
     "a cancel waits for the delivery whose outcome is being recorded" \
     "DO \$\$ BEGIN PERFORM FROM notiflow.executions WHERE id = $e9 FOR UPDATE; END \$\$; COMMIT;"
is "$(cat "$out")" t "then it cancels the execution (no deadlock)"
is "$(q "SELECT status || ':' || (SELECT status FROM notiflow.deliveries WHERE id = $d9) FROM notiflow.executions WHERE id = $e9")" \
   "cancelled:cancelled" "the execution and its queued delivery are cancelled"

echo "\\q" >&"${HOLD[1]}"
rm -f "$out"
done_testing
