#!/usr/bin/env bash
# test/demo.sh — `make demo`: installs what is missing, builds and installs
# notiflow, starts a local PostgreSQL cluster with it, loads the example
# workflow (docs/examples/order_shipped.json), triggers it for a few
# recipients and prints the execution timeline and the rendered deliveries.
# The cluster keeps running for you to explore; `make demo-stop` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

test/install-deps.sh
make -s >/dev/null
if [ "$(id -u)" = 0 ]; then make -s install >/dev/null; else sudo make -s install >/dev/null; fi

# shellcheck source=test/lib/cluster.sh
source test/lib/cluster.sh
if [ -f .demo/env ]; then
    # shellcheck disable=SC1091
    source .demo/env
    cluster_stop
fi
cluster_start "shared_preload_libraries = 'notiflow'"
mkdir -p .demo
echo "export PGHOST=$PGHOST PGPORT=$PGPORT PGUSER=$PGUSER CLUSTER_DIR=$CLUSTER_DIR" >.demo/env

psql() { command psql -X -q -v ON_ERROR_STOP=1 -d notiflow_demo "$@"; }
command psql -X -q -d postgres -c "CREATE DATABASE notiflow_demo" >/dev/null
psql -c "CREATE EXTENSION notiflow"

echo "== providers, subscribers and the example workflow"
psql -o /dev/null <<'SQL'
SELECT notiflow.put_provider('sendgrid', 'email', 'sendgrid',
       '{"api_key": "SG.demo-key", "from": "shop@example.com"}');
SELECT notiflow.put_provider('twilio', 'sms', 'twilio',
       '{"account_sid": "AC0000demo", "auth_token": "demo-token", "from": "+15550000000"}');
SELECT notiflow.put_subscriber('ada', '{"name": "Ada Lovelace", "email": "ada@example.com", "phone": "+15551230001"}');
SELECT notiflow.put_subscriber('alan', '{"name": "Alan Turing", "email": "alan@example.com", "phone": "+15551230002"}');
SELECT notiflow.put_subscriber('grace', '{"name": "Grace Hopper", "email": "grace@example.com", "phone": "+15551230003",
                                         "preferences": {"channels": {"sms": false}}}');
SQL
echo "SELECT notiflow.put_workflow('order_shipped', :'def') AS version" |
    psql -v def="$(cat docs/examples/order_shipped.json)"

echo "== triggering: each call runs in its own transaction, like a business change would"
psql <<'SQL'
SELECT notiflow.trigger('order_shipped', '{"order_id": "A-1001", "total": 249.90}', '{"subscriber_id": "ada"}') AS ada;
SELECT notiflow.trigger('order_shipped', '{"order_id": "A-1002", "total": 19.99}', '{"subscriber_id": "alan"}') AS alan;
SELECT notiflow.trigger('order_shipped', '{"order_id": "A-1003", "total": 42}', '{"subscriber_id": "grace"}') AS grace;
-- a rolled-back business change leaves no notification behind
BEGIN;
SELECT notiflow.trigger('order_shipped', '{"order_id": "A-1004", "total": 500}', '{"subscriber_id": "ada"}') AS rolled_back;
ROLLBACK;
SQL

echo "== execution timeline"
psql -c "SELECT t.execution_id AS exec, e.subscriber_id AS who, t.kind, t.node_id, t.type, t.status,
                coalesce(t.outcome, '') AS outcome,
                coalesce(CASE t.kind WHEN 'delivery' THEN 'to ' || (t.detail ->> 'recipient')
                                     ELSE t.detail::text END, t.error, '') AS detail
           FROM notiflow.execution_timeline t JOIN notiflow.executions e ON e.id = t.execution_id
          ORDER BY t.execution_id, t.kind DESC, t.seq"
echo "== rendered deliveries"
psql -c "SELECT id, execution_id AS exec, channel, provider, recipient, status,
                jsonb_pretty(content) AS content
           FROM notiflow.deliveries ORDER BY id"
psql -c "SELECT id, workflow_key, status, subscriber_id FROM notiflow.executions ORDER BY id"

cat <<EOT

The demo cluster is running. Explore it with:
    source .demo/env && psql -d notiflow_demo
Deliveries stay queued until the delivery workers send them. Stop it with: make demo-stop
EOT
