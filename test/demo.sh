#!/usr/bin/env bash
# test/demo.sh — `make demo`: installs what is missing, builds and installs
# notiflow, starts the provider test doubles (an SMTP server and an HTTP
# double of the SMS API) and a local PostgreSQL cluster with the extension
# and its delivery workers, loads the example workflow
# (docs/examples/order_shipped.json), triggers it for a few recipients, waits
# until the workers delivered, and prints the execution timeline, the
# deliveries and what the doubles received.  The cluster and the doubles keep
# running for you to explore; `make demo-stop` stops them.
set -euo pipefail
cd "$(dirname "$0")/.."

test/install-deps.sh
make -s >/dev/null
if [ "$(id -u)" = 0 ]; then make -s install >/dev/null; else sudo make -s install >/dev/null; fi

make -s -C test/doubles >/dev/null

# shellcheck source=test/lib/cluster.sh
source test/lib/cluster.sh
make -s demo-stop >/dev/null 2>&1 || true
mkdir -p .demo
CREDS=test/doubles/credentials.json
cred() { jq -r "$1" "$CREDS"; }
test/doubles/provider_double --config "$CREDS" --port 0 >.demo/http.out 2>.demo/http.err &
echo $! >.demo/http.pid
PY=python3
for candidate in /usr/bin/python3 python3; do
    if "$candidate" -c 'import aiosmtpd' 2>/dev/null; then PY=$candidate; break; fi
done
rm -f .demo/mail.jsonl
"$PY" test/doubles/smtp_double.py --config "$CREDS" --port 0 --out .demo/mail.jsonl >.demo/smtp.out 2>.demo/smtp.err &
echo $! >.demo/smtp.pid
for _ in $(seq 1 200); do
    grep -q listening .demo/http.out && grep -q listening .demo/smtp.out && break
    sleep 0.05
done
HTTP_PORT=$(grep -o '[0-9]*$' .demo/http.out)
SMTP_PORT=$(grep -o '[0-9]*$' .demo/smtp.out)

cluster_start "shared_preload_libraries = 'notiflow'" "notiflow.database_name = 'notiflow_demo'" \
    "notiflow.allow_private_urls = on"
echo "export PGHOST=$PGHOST PGPORT=$PGPORT PGUSER=$PGUSER CLUSTER_DIR=$CLUSTER_DIR" >.demo/env

psql() { command psql -X -q -v ON_ERROR_STOP=1 -d notiflow_demo "$@"; }
command psql -X -q -d postgres -c "CREATE DATABASE notiflow_demo" >/dev/null
psql -c "CREATE EXTENSION notiflow"

echo "== providers, subscribers and the example workflow"
psql -o /dev/null <<SQL
SELECT notiflow.put_provider('smtp', 'email', 'smtp', jsonb_build_object(
       'url', 'smtp://127.0.0.1:$SMTP_PORT', 'username', '$(cred .smtp.username)',
       'password', '$(cred .smtp.password)', 'from', 'Demo Shop <shop@example.com>'));
SELECT notiflow.put_provider('twilio', 'sms', 'twilio', jsonb_build_object(
       'account_sid', '$(cred .twilio.account_sid)', 'auth_token', '$(cred .twilio.auth_token)',
       'from', '+15550000000', 'base_url', 'http://127.0.0.1:$HTTP_PORT'));
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

echo "== waiting for the delivery workers"
for _ in $(seq 1 300); do
    pending=$(psql -At -c "SELECT count(*) FROM notiflow.deliveries WHERE status IN ('queued', 'sending')")
    [ "$pending" = 0 ] && break
    sleep 0.1
done
psql -c "SELECT pid, backend_type, datname FROM pg_stat_activity WHERE backend_type LIKE 'notiflow%'"

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
psql -c "SELECT delivery_id, provider, status_code, round(latency_ms::numeric, 1) AS ms, error_class
           FROM notiflow.delivery_attempts ORDER BY id"

echo "== what the SMTP server received"
jq -r '"to: \(.rcpt_tos | join(", "))  from: \(.from)  subject: \(.subject)\n  \(.text | gsub("\n"; " "))"' .demo/mail.jsonl
echo "== what the SMS API double received"
curl -s "http://127.0.0.1:$HTTP_PORT/_double/requests?provider=twilio" |
    jq -r '.[] | "\(.method) \(.path)  To=\(.form.To)  Body=\(.form.Body)  → \(.status) \(.message_id)"'

echo "== the REST API (PostgREST on 127.0.0.1:3000)"
POSTGREST=$(api/install-postgrest.sh)
API_KEY=$(psql -At -c "SELECT notiflow.create_api_key('demo-' || md5(random()::text), 'writer')")
NOTIFLOW_API_DB_URI="postgresql://notiflow_authenticator@127.0.0.1:$PGPORT/notiflow_demo" \
NOTIFLOW_API_JWT_SECRET=$(openssl rand -hex 32) \
    "$POSTGREST" api/postgrest.conf >.demo/postgrest.log 2>&1 &
echo $! >.demo/postgrest.pid
for _ in $(seq 1 200); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:3000/rpc/health)" = 200 ] && break
    sleep 0.05
done
echo "$API_KEY" >.demo/api-key
curl -s -H "X-API-Key: $API_KEY" -H 'Content-Type: application/json' \
    -d '{"workflow_key": "order_shipped", "payload": {"order_id": "A-2001", "total": 500}, "recipient": {"subscriber_id": "alan"}}' \
    http://127.0.0.1:3000/rpc/trigger
echo
curl -s -H "X-API-Key: $API_KEY" 'http://127.0.0.1:3000/executions?select=id,workflow_key,status&order=id' | jq -c .

cat <<EOT

The demo cluster, the provider doubles and the REST API are running. Explore with:
    source .demo/env && psql -d notiflow_demo
    curl -H "X-API-Key: \$(cat .demo/api-key)" http://127.0.0.1:3000/executions
Stop them with: make demo-stop
EOT
