#!/usr/bin/env bash
# test/demo.sh — `make demo`: installs what is missing, builds and installs
# notiflow, starts the provider test doubles (an SMTP server and an HTTP
# double of the SMS API) and a local PostgreSQL cluster with the extension
# and its delivery workers, loads the example workflow
# (docs/examples/order_shipped.json), triggers it for a few recipients, waits
# until the workers delivered, and prints the execution timeline, the
# deliveries and what the doubles received; then sends a web push encrypted
# for a subscriber's browser, which the push double decrypts, and starts the
# REST API and the web console (web/serve.mjs on 127.0.0.1:8080).  Everything
# keeps running for you to explore; `make demo-stop` stops it.
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

echo "== web push: encrypted for Ada's browser (RFC 8291, VAPID), decrypted by the push double"
PW=$(pwd)/.demo/push
rm -rf "$PW" && mkdir -p "$PW" && chmod 755 "$PW"
b64u() { basenc --base64url -w0 | tr -d '='; }
p256() {    # prints "PRIVATE PUBLIC" of a new P-256 key, raw, base64url
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -outform DER -out "$PW/$1.der" 2>/dev/null
    openssl ec -inform DER -in "$PW/$1.der" -outform DER -out "$PW/$1.ec" 2>/dev/null
    echo "$(head -c 39 "$PW/$1.ec" | tail -c 32 | b64u) $(tail -c 65 "$PW/$1.ec" | b64u)"
}
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$PW/tls.key" -out "$PW/ca.pem" 2>/dev/null
chmod 644 "$PW/ca.pem"
read -r VAPID_PRIV VAPID_PUB <<<"$(p256 vapid)"
read -r SUB_PRIV SUB_PUB <<<"$(p256 browser)"
SUB_AUTH=$(openssl rand 16 | b64u)
jq -n --arg p "$SUB_PRIV" --arg a "$SUB_AUTH" --arg v "$VAPID_PUB" \
    '{webpush: {subscriptions: {ada: {private_key: $p, auth: $a, vapid_public_key: $v}}}}' >"$PW/double.json"
node test/doubles/push_double.mjs --port 0 --cert "$PW/ca.pem" --key "$PW/tls.key" --config "$PW/double.json" \
    >"$PW/double.out" 2>"$PW/double.err" &
echo $! >.demo/push.pid
for _ in $(seq 1 200); do grep -q listening "$PW/double.out" && break; sleep 0.05; done
PUSH_URL=https://127.0.0.1:$(grep -o '[0-9]*$' "$PW/double.out")
psql -o /dev/null <<SQL
SELECT notiflow.put_provider('webpush', 'push', 'webpush', jsonb_build_object(
       'vapid_public_key', '$VAPID_PUB', 'vapid_private_key', '$VAPID_PRIV',
       'subject', 'mailto:ops@example.com', 'ca_file', '$PW/ca.pem'));
SELECT notiflow.put_subscriber('ada', jsonb_build_object('push', jsonb_build_object('webpush', jsonb_build_array(
       jsonb_build_object('endpoint', '$PUSH_URL/push/ada', 'keys', jsonb_build_object('p256dh', '$SUB_PUB', 'auth', '$SUB_AUTH'))))));
SELECT notiflow.put_workflow('order_push', '{"nodes": [{"id": "t", "type": "trigger"},
       {"id": "p", "type": "push", "title": "Order {{payload.order_id}}", "body": "It is out for delivery",
        "data": {"order": "{{payload.order_id}}"}}], "edges": [{"from": "t", "to": "p"}]}');
SELECT notiflow.trigger('order_push', '{"order_id": "A-1001"}', '"ada"');
SQL
for _ in $(seq 1 200); do
    [ "$(psql -At -c "SELECT count(*) FROM notiflow.deliveries WHERE channel = 'push' AND status IN ('queued', 'sending')")" = 0 ] && break
    sleep 0.05
done
psql -c "SELECT id, provider, status, provider_message_id FROM notiflow.deliveries WHERE channel = 'push'"
curl -s --cacert "$PW/ca.pem" "$PUSH_URL/_double/requests?provider=webpush" |
    jq -r '.[] | "\(.verdict): \(.headers["content-encoding"] // .headers["Content-Encoding"]) body decrypted by the double: \(.plaintext)"'

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

echo "== the web console (web/, served on 127.0.0.1:8080)"
CONSOLE_KEY=$(psql -At -c "SELECT notiflow.create_api_key('console-' || md5(random()::text), 'admin')")
echo "$CONSOLE_KEY" >.demo/console-key
node web/serve.mjs --port 8080 >.demo/web.log 2>&1 &
echo $! >.demo/web.pid
for _ in $(seq 1 100); do grep -q listening .demo/web.log && break; sleep 0.05; done
grep -q listening .demo/web.log || { echo "the web console did not start:"; cat .demo/web.log; }

cat <<EOT

The demo cluster, the provider doubles, the REST API and the web console are running. Explore with:
    source .demo/env && psql -d notiflow_demo
    curl -H "X-API-Key: \$(cat .demo/api-key)" http://127.0.0.1:3000/executions
The web console: open http://127.0.0.1:8080 and, under Connection, enter
    API address  http://127.0.0.1:3000
    API key      $CONSOLE_KEY   (an admin key; also in .demo/console-key)
Stop them with: make demo-stop
EOT
