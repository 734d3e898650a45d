#!/usr/bin/env bash
# test/t/sessions.sh — behaviour that needs several sessions or a server
# started with the library preloaded:
#   - two concurrent triggers with one idempotency key create one execution;
#   - a trigger in an uncommitted transaction is invisible to others, and gone after rollback;
#   - a backend's cached workflow definitions and prepared plans survive
#     DROP EXTENSION / CREATE EXTENSION in another session (no stale definition);
#   - the library loads through shared_preload_libraries.
set -uo pipefail
cd "$(dirname "$0")/../.."
source test/lib/tap.sh
source test/lib/cluster.sh

cluster_start "shared_preload_libraries = 'notiflow'" >/dev/null || { echo "Bail out! cluster did not start"; exit 1; }
trap cluster_stop EXIT
DB=notiflow_sessions
psql -X -q -d postgres -c "CREATE DATABASE $DB" >/dev/null
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d $DB -c "$1"; }

q "CREATE EXTENSION notiflow" >/dev/null
setup_fixtures() {
    q "SELECT notiflow.put_provider('mail', 'email', 'sendgrid', '{\"api_key\": \"k\", \"from\": \"shop@example.com\"}');
       SELECT notiflow.put_subscriber('ann', '{\"email\": \"ann@example.com\"}');" >/dev/null
    q "SELECT notiflow.put_workflow('w', '{\"nodes\": [{\"id\": \"t\", \"type\": \"trigger\"},
         {\"id\": \"m\", \"type\": \"email\", \"subject\": \"$1\", \"text\": \"x\"}], \"edges\": [{\"from\": \"t\", \"to\": \"m\"}]}')" >/dev/null
}
setup_fixtures "one"

is "$(q "SHOW notiflow.max_payload_size")" "256kB" "the GUCs exist when the library is preloaded"

# --- concurrent idempotent triggers ------------------------------------------
coproc HOLD { psql -X -q -At -d $DB; }
# bash unsets HOLD_PID once it has reaped the coprocess, which may be before "wait" runs
hold_pid=$HOLD_PID
echo "SELECT pg_advisory_lock(4242); SELECT 'locked';" >&"${HOLD[1]}"
read -r line <&"${HOLD[0]}"; read -r line <&"${HOLD[0]}"
is "$line" "locked" "a session holds the gate lock"

out_a=$(mktemp); out_b=$(mktemp)
psql -X -q -At -d $DB -c "BEGIN;
    SELECT notiflow.trigger('w', '{}', '\"ann\"', 'same-key');
    SELECT pg_advisory_lock(4242);
    COMMIT;" >"$out_a" 2>&1 &
pid_a=$!
waiting_on_gate() { [ "$(q "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")" = 1 ]; }
wait_for 30 waiting_on_gate
ok $? "the first trigger is inside its open transaction"

psql -X -q -At -d $DB -c "SELECT notiflow.trigger('w', '{}', '\"ann\"', 'same-key')" >"$out_b" 2>&1 &
pid_b=$!
blocked_on_first() { [ "$(q "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%same-key%' AND query NOT LIKE '%pg_advisory_lock%'")" = 1 ]; }
wait_for 30 blocked_on_first
ok $? "the second trigger with the same key waits for the first transaction"

is "$(q "SELECT count(*) FROM notiflow.executions WHERE idempotency_key = 'same-key'")" "0" \
   "an uncommitted execution is invisible to other sessions"

echo "SELECT pg_advisory_unlock(4242);" >&"${HOLD[1]}"
read -r _ <&"${HOLD[0]}"
wait "$pid_a"; wait "$pid_b"
id_a=$(head -1 "$out_a"); id_b=$(cat "$out_b")
ok $([ -n "$id_a" ] && [ "$id_a" = "$id_b" ]; echo $?) "both triggers return the same execution id ($id_a, $id_b)"
is "$(q "SELECT count(*) FROM notiflow.executions WHERE idempotency_key = 'same-key'")" "1" "exactly one execution exists"
is "$(q "SELECT count(*) FROM notiflow.deliveries d JOIN notiflow.executions e ON e.id = d.execution_id WHERE e.idempotency_key = 'same-key'")" "1" \
   "and exactly one delivery"
rm -f "$out_a" "$out_b"

# --- rollback in another session ---------------------------------------------
before=$(q "SELECT count(*) FROM notiflow.executions")
q "BEGIN; SELECT notiflow.trigger('w', '{}', '\"ann\"'); ROLLBACK;" >/dev/null
is "$(q "SELECT count(*) FROM notiflow.executions")" "$before" "a rolled-back trigger leaves no execution"

# --- cached definitions across DROP / CREATE EXTENSION ---------------------------
subject_of_new_execution() {
    echo "SELECT notiflow.trigger('w', '{}', '\"ann\"');
          SELECT content ->> 'subject' FROM notiflow.deliveries ORDER BY id DESC LIMIT 1;" >&"${HOLD[1]}"
    read -r _ <&"${HOLD[0]}"
    read -r line <&"${HOLD[0]}"
    echo "$line"
}
is "$(subject_of_new_execution)" "one" "a long-lived session renders version 1"
q "DROP EXTENSION notiflow CASCADE" >/dev/null
q "CREATE EXTENSION notiflow" >/dev/null
setup_fixtures "two"
is "$(q "SELECT id || '/' || version FROM notiflow.workflow_versions")" "1/1" "the new workflow reuses version id 1"
is "$(subject_of_new_execution)" "two" "the same session sees the new definition, not its cached one"

# --- a version read under an old snapshot is not cached past it ---------------
# In a REPEATABLE READ transaction that began before put_workflow committed, triggers use the
# version its snapshot sees; after it, the new one.  (The version re-read under the old snapshot
# was cached for the session's life.)
echo "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 'snapshot taken';" >&"${HOLD[1]}"
read -r line <&"${HOLD[0]}"
is "$line" "snapshot taken" "a session takes a repeatable-read snapshot"
q "SELECT notiflow.put_workflow('w', '{\"nodes\": [{\"id\": \"t\", \"type\": \"trigger\"},
     {\"id\": \"m\", \"type\": \"email\", \"subject\": \"three\", \"text\": \"x\"}], \"edges\": [{\"from\": \"t\", \"to\": \"m\"}]}')" >/dev/null
first=$(subject_of_new_execution)
second=$(subject_of_new_execution)
is "$first $second" "two two" "another session commits version 3; the transaction's triggers still use version 2"
echo "COMMIT;" >&"${HOLD[1]}"
is "$(subject_of_new_execution)" "three" "after its commit, the session's next trigger uses version 3"

# --- two status callbacks bouncing two subscribers in opposite orders -------------------------
# Callback 1 bounces a message to ann then one to bob, callback 2 two others, bob's then ann's.  A test trigger on subscribers stops
# callback 1 right after it changed ann's row (until the gate lock is free), so that callback 2 runs
# in between: it must wait for callback 1, not take bob's row first (which was a deadlock).
q "SELECT notiflow.put_subscriber('bob', '{\"email\": \"bob@example.com\"}');
   CREATE FUNCTION public.gate_after_ann() RETURNS trigger LANGUAGE plpgsql AS \$\$
   BEGIN
       IF NEW.id = 'ann' AND current_setting('application_name') = 'callback1' THEN
           PERFORM pg_advisory_xact_lock(4343);
       END IF;
       RETURN NEW;
   END \$\$;
   CREATE TRIGGER gate_after_ann AFTER UPDATE ON notiflow.subscribers FOR EACH ROW EXECUTE FUNCTION public.gate_after_ann();" >/dev/null
for who in ann-1 bob-1 ann-2 bob-2; do
    e=$(q "SELECT notiflow.trigger('w', '{}', '\"${who%-*}\"')")
    d=$(q "SELECT id FROM notiflow.deliveries WHERE execution_id = $e")
    q "SELECT notiflow.finish_delivery($d, 'sending'); SELECT notiflow.finish_delivery($d, 'sent', 'm-$who')" >/dev/null
done
# bounce WHO-N: SendGrid's bounce of the message m-WHO-N (each callback has its own two messages)
bounce() { printf '{"email": "%s@example.com", "timestamp": 1714564800, "event": "bounce", "type": "bounce", "sg_message_id": "m-%s.filter1"}' "${1%-*}" "$1"; }
echo "SELECT pg_advisory_lock(4343); SELECT 'gate closed';" >&"${HOLD[1]}"
read -r line <&"${HOLD[0]}"; read -r line <&"${HOLD[0]}"
is "$line" "gate closed" "a session holds the gate of callback 1"
cb1=$(mktemp); cb2=$(mktemp)
PGAPPNAME=callback1 psql -X -q -At -d $DB -c "SELECT notiflow.record_delivery_event('mail', '[$(bounce ann-1), $(bounce bob-1)]')" >"$cb1" 2>&1 &
CB1=$!
gate_waited() { [ "$(q "SELECT count(*) FROM pg_stat_activity WHERE application_name = '$1' AND wait_event_type = 'Lock'")" = 1 ]; }
wait_for 20 gate_waited callback1
ok $? "callback 1 changed ann's row and waits at the gate"
PGAPPNAME=callback2 psql -X -q -At -d $DB -c "SELECT notiflow.record_delivery_event('mail', '[$(bounce bob-2), $(bounce ann-2)]')" >"$cb2" 2>&1 &
CB2=$!
wait_for 20 gate_waited callback2
ok $? "callback 2 waits for callback 1"
echo "SELECT pg_advisory_unlock(4343);" >&"${HOLD[1]}"
read -r line <&"${HOLD[0]}"
wait "$CB1"; wait "$CB2"
is "$(cat "$cb1") / $(cat "$cb2")" "2 / 2" "both callbacks record their two events, neither is a deadlock's victim"
is "$(q "SELECT string_agg(id || ':' || array_to_string(invalid_addresses, ','), ' ' ORDER BY id) FROM notiflow.subscribers WHERE id IN ('ann', 'bob')")" \
   "ann:ann@example.com bob:bob@example.com" "both addresses are marked invalid, once"
q "DROP TRIGGER gate_after_ann ON notiflow.subscribers; DROP FUNCTION public.gate_after_ann()" >/dev/null
rm -f "$cb1" "$cb2"

# --- a workflow changed by another session during a long transaction -------------------------
# The held session's cache knows version N of w (a trigger of its transaction used it); another
# session stores N+1 and commits: the held session's next trigger uses N+1 (deactivated, it refuses)
echo "BEGIN; SELECT notiflow.trigger('w', '{}', '\"ann\"') > 0;" >&"${HOLD[1]}"
read -r -t 30 line <&"${HOLD[0]}"
is "$line" t "a long transaction triggers w"
v_next=$(q "SELECT notiflow.put_workflow('w', '{\"nodes\": [{\"id\": \"t\", \"type\": \"trigger\"},
           {\"id\": \"m\", \"type\": \"email\", \"subject\": \"changed\", \"text\": \"x\"}], \"edges\": [{\"from\": \"t\", \"to\": \"m\"}]}')")
echo "SELECT notiflow.trigger('w', '{}', '\"ann\"') AS e \\gset
      SELECT workflow_version FROM notiflow.executions WHERE id = :e;" >&"${HOLD[1]}"
read -r -t 30 line <&"${HOLD[0]}"
is "$line" "$v_next" "its next trigger uses the version another session committed meanwhile"
q "SELECT notiflow.deactivate_workflow('w')" >/dev/null
echo "CREATE FUNCTION pg_temp.try_w() RETURNS text LANGUAGE plpgsql AS \$\$
      BEGIN PERFORM notiflow.trigger('w', '{}', '\"ann\"'); RETURN 'accepted';
      EXCEPTION WHEN object_not_in_prerequisite_state THEN RETURN 'refused'; END \$\$;
      SELECT pg_temp.try_w();" >&"${HOLD[1]}"
read -r -t 30 line <&"${HOLD[0]}"
is "$line" refused "and once another session deactivated w, it refuses"
echo "ROLLBACK;" >&"${HOLD[1]}"
q "SELECT notiflow.activate_workflow('w')" >/dev/null

echo "\\q" >&"${HOLD[1]}"
wait "$hold_pid" 2>/dev/null || true

# 16. A database not encoded in UTF8 is refused: provider APIs take UTF-8, and text goes out as stored
psql -X -q -d postgres -c "CREATE DATABASE notiflow_latin1 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0" >/dev/null
out=$(psql -X -q -d notiflow_latin1 -c "CREATE EXTENSION notiflow" 2>&1)
ok $(grep -q 'notiflow needs a database encoded in UTF8' <<<"$out" && grep -q 'encoded in LATIN1' <<<"$out"; echo $?) \
   "CREATE EXTENSION in a LATIN1 database is refused, naming the encoding"
done_testing
