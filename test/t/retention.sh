#!/usr/bin/env bash
# test/t/retention.sh — retention (notiflow.archive_batch) against concurrent
# work on the rows it moves: a delivery another transaction holds (a
# provider's status event, a dead letter's replay) keeps its execution out of
# the batch instead of making retention wait for it, so the two cannot
# deadlock; the execution goes with the next batch.
set -uo pipefail
cd "$(dirname "$0")/../.."
source test/lib/tap.sh
source test/lib/cluster.sh

cluster_start_sms_db notiflow_retention
q "SELECT notiflow.put_workflow('note', '{\"nodes\": [{\"id\": \"t\", \"type\": \"trigger\"}, {\"id\": \"s\", \"type\": \"sms\", \"text\": \"hi\"}],
     \"edges\": [{\"from\": \"t\", \"to\": \"s\"}]}');" >/dev/null

# two old executions whose deliveries were sent (then: both finished seven months ago)
ids=$(q "SELECT string_agg(notiflow.trigger('note', '{}', '\"ann\"')::text, ' ') FROM generate_series(1, 2)")
read -r e1 e2 <<<"$ids"
d1=$(q "SELECT id FROM notiflow.deliveries WHERE execution_id = $e1")
q "SELECT notiflow.finish_delivery(id, 'sent') FROM notiflow.deliveries WHERE execution_id IN ($e1, $e2);
   UPDATE notiflow.executions SET created_at = now() - interval '7 months', finished_at = now() - interval '7 months' WHERE id IN ($e1, $e2);
   UPDATE notiflow.deliveries SET created_at = now() - interval '7 months', finished_at = now() - interval '7 months' WHERE execution_id IN ($e1, $e2)" >/dev/null
is "$(q "SELECT string_agg(status, ',' ORDER BY id) FROM notiflow.executions WHERE id IN ($e1, $e2)")" "completed,completed" \
   "two executions, finished seven months ago"

coproc HOLD { psql -X -q -At -d $DB; }
# hold SQL: runs SQL in the held session; $line is its last result line (read for at most 30 s)
hold() { line=; echo "$1" >&"${HOLD[1]}"; [ -z "${2:-}" ] || read -r -t 30 line <&"${HOLD[0]}"; }

# a provider's event holds the first one's delivery (it locks the delivery, then the execution)
hold "BEGIN; SELECT 'held' FROM notiflow.deliveries WHERE id = $d1 FOR UPDATE;" 1
is "$line" held "another transaction holds the first one's delivery"
out=$(timeout 20 psql -X -q -At -d $DB -c "SELECT executions FROM notiflow.archive_batch(now() - interval '6 months')" 2>&1)
is "$out" 1 "retention does not wait for the held delivery: it moves the other execution only"
is "$(q "SELECT string_agg(id::text, ',' ORDER BY id) FROM notiflow.executions WHERE id IN ($e1, $e2)")" "$e1" \
   "the execution of the held delivery stays"
hold "SELECT 'locked' FROM notiflow.executions WHERE id = $e1 FOR UPDATE;" 1
is "$line" locked "the event's transaction then takes the execution at once (no deadlock)"
hold "COMMIT;"
is "$(q "SELECT executions FROM notiflow.archive_batch(now() - interval '6 months')")" 1 "the next batch moves it"
is "$(q "SELECT count(*) FROM notiflow_archive.deliveries WHERE execution_id IN ($e1, $e2)") $(q "SELECT count(*) FROM notiflow.deliveries WHERE execution_id IN ($e1, $e2)")" \
   "2 0" "with its delivery"

# a replay holds a dead letter (it locks the dead letter, then its delivery): the batch leaves the
# delivery and its execution for later; before, it moved them and left the dead letter behind,
# live, and the replay failed
e3=$(q "SELECT notiflow.trigger('note', '{}', '\"ann\"')")
d3=$(q "SELECT id FROM notiflow.deliveries WHERE execution_id = $e3")
dl3=$(q "SELECT notiflow.finish_delivery($d3, 'failed');
         UPDATE notiflow.executions SET created_at = now() - interval '7 months', finished_at = now() - interval '7 months' WHERE id = $e3;
         UPDATE notiflow.deliveries SET created_at = now() - interval '7 months', finished_at = now() - interval '7 months' WHERE id = $d3;
         INSERT INTO notiflow.dead_letters (source, reference, details, error)
         VALUES ('delivery', '$d3', jsonb_build_object('delivery_id', $d3, 'execution_id', $e3), 'gave up') RETURNING id" | tail -1)
hold "BEGIN; SELECT 'held' FROM notiflow.dead_letters WHERE id = $dl3 FOR UPDATE;" 1
is "$line" held "a replay holds the dead letter of an old execution's failed delivery"
out=$(timeout 20 psql -X -q -At -d $DB -c "SELECT executions || ' ' || dead_letters FROM notiflow.archive_batch(now() - interval '6 months')" 2>&1)
is "$out" "0 0" "retention leaves the execution, its delivery and the dead letter"
hold "SELECT 'locked' FROM notiflow.deliveries WHERE id = $d3 FOR UPDATE;" 1
is "$line" locked "the replay then takes the delivery at once"
hold "COMMIT;"
is "$(q "SELECT executions || ' ' || dead_letters FROM notiflow.archive_batch(now() - interval '6 months')")" "1 1" \
   "the next batch moves the execution and the dead letter together"
is "$(q "SELECT count(*) FROM notiflow.dead_letters WHERE id = $dl3") $(q "SELECT count(*) FROM notiflow_archive.dead_letters WHERE id = $dl3")" \
   "0 1" "no dead letter is left behind"

echo "\\q" >&"${HOLD[1]}"
done_testing
