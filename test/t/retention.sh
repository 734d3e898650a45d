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

# two old executions whose deliveries were sent
ids=$(q "SELECT string_agg(notiflow.trigger('note', '{}', '\"ann\"')::text, ' ') FROM generate_series(1, 2)")
read -r e1 e2 <<<"$ids"
d1=$(q "SELECT id FROM notiflow.deliveries WHERE execution_id = $e1")
q "SELECT notiflow.finish_delivery(id, 'sent') FROM notiflow.deliveries WHERE execution_id IN ($e1, $e2);
   UPDATE notiflow.executions SET created_at = now() - interval '7 months' WHERE id IN ($e1, $e2)" >/dev/null
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

echo "\\q" >&"${HOLD[1]}"
done_testing
