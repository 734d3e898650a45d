#!/usr/bin/env bash
# test/t/api.sh — the REST API end to end: the real PostgREST (installed in
# api/node_modules by api/install-postgrest.sh, configured by
# api/postgrest.conf) in front of a throw-away cluster with the delivery
# workers and the provider double, exercised over HTTP with curl and jq: API
# keys and JWTs, every resource and function, embedding, pagination, the
# OpenAPI description, and every error status (401, 403, 404, 405, 409, 413,
# 422) in PostgREST's {code, message, details, hint} shape.
set -uo pipefail
cd "$(dirname "$0")/../.."
source test/lib/tap.sh
source test/lib/cluster.sh

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    [ -n "${NOTIFLOW_TEST_LOGS:-}" ] && cp "$WORK/postgrest.log" "$NOTIFLOW_TEST_LOGS/api-postgrest.log" 2>/dev/null
    cluster_stop
    rm -rf "$WORK"
}
trap cleanup EXIT

# skip REASON: a test that cannot run here.
skip() {
    TAP_COUNT=$((TAP_COUNT + 1))
    echo "ok $TAP_COUNT # skip $1"
}

# --- PostgREST, the provider double, the cluster ---------------------------------------
POSTGREST=$(api/install-postgrest.sh) || { echo "Bail out! cannot install PostgREST (api/install-postgrest.sh)"; exit 1; }
make -s -C test/doubles >/dev/null || { echo "Bail out! cannot build the provider double"; exit 1; }
CREDS=test/doubles/credentials.json
test/doubles/provider_double --config "$CREDS" --port 0 >"$WORK/double.out" 2>"$WORK/double.err" &
PIDS+=($!)
listening() { grep -qs 'listening on' "$WORK/double.out"; }
wait_for 20 listening || { echo "Bail out! the provider double did not start"; cat "$WORK/double.err"; exit 1; }
DOUBLE=http://127.0.0.1:$(grep -o '[0-9]*$' "$WORK/double.out")
double() { curl -s -X "$1" "$DOUBLE/_double/$2" ${3:+-d "$3"}; }

DB=notiflow_api
cluster_start "shared_preload_libraries = 'notiflow'" "notiflow.database_name = '$DB'" >/dev/null ||
    { echo "Bail out! cluster did not start"; exit 1; }
psql -X -q -d postgres -c "CREATE DATABASE $DB" >/dev/null
sql() { psql -X -q -At -v ON_ERROR_STOP=1 -d $DB -c "$1"; }
sql_is() { [ "$(sql "$1" 2>/dev/null)" = "$2" ]; }
sql "CREATE EXTENSION notiflow" >/dev/null || { echo "Bail out! CREATE EXTENSION failed"; exit 1; }
READER=$(sql "SELECT notiflow.create_api_key('console', 'reader')")
WRITER=$(sql "SELECT notiflow.create_api_key('shop', 'writer')")
ADMIN=$(sql "SELECT notiflow.create_api_key('ops', 'admin')")
sql "SELECT notiflow.put_provider('hooks', 'webhook', 'webhook',
            jsonb_build_object('url', '$DOUBLE/hooks/api', 'secret', '$(jq -r .webhook.secret "$CREDS")',
                               'max_attempts', 1))" >/dev/null

JWT_SECRET=notiflow-api-test-secret-of-at-least-32-characters
API_PORT=$(cluster_free_port)
API=http://127.0.0.1:$API_PORT
NOTIFLOW_API_DB_URI="postgresql://notiflow_authenticator@127.0.0.1:$PGPORT/$DB" \
NOTIFLOW_API_JWT_SECRET=$JWT_SECRET PGRST_SERVER_PORT=$API_PORT \
    "$POSTGREST" api/postgrest.conf >"$WORK/postgrest.log" 2>&1 &
PIDS+=($!)
api_up() { [ "$(curl -s -o /dev/null -w '%{http_code}' "$API/")" = 200 ]; }
wait_for 30 api_up || { echo "Bail out! PostgREST did not start"; cat "$WORK/postgrest.log"; exit 1; }
ok 0 "PostgREST $("$POSTGREST" --version | cut -d' ' -f2) serves the API on 127.0.0.1"

# http [curl options...] PATH: one request; STATUS is its status, the body and headers stay in $WORK.
http() {
    local path=${*: -1}
    STATUS=$(curl -s -o "$WORK/body" -D "$WORK/headers" -w '%{http_code}' "${@:1:$#-1}" "$API$path")
}
# rpc KEY FUNCTION JSON: POSTs the arguments to /rpc/FUNCTION with an API key.
rpc() { http -H "X-API-Key: $1" -H 'Content-Type: application/json' -d "$3" "/rpc/$2"; }
# get KEY PATH: GETs a resource with an API key.
get() { http -H "X-API-Key: $1" "$2"; }
body() { jq -r "$@" "$WORK/body"; }
header() { tr -d '\r' <"$WORK/headers" | sed -n "s/^$1: //Ip"; }
# is_error STATUS CODE DESCRIPTION: the last answer had this status and a PostgREST error body with this code.
is_error() {
    is "$STATUS $(jq -r '[.code, (has("message") and has("details") and has("hint"))] | map(tostring) | join(" ")' "$WORK/body" 2>/dev/null)" \
       "$1 $2 true" "$3"
}
# jwt ROLE: an HS256 token with that role claim, valid for ten minutes.
jwt() {
    python3 - "$1" "$JWT_SECRET" <<'PY'
import base64, hashlib, hmac, json, sys, time
enc = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
head = enc(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
claims = enc(json.dumps({"role": sys.argv[1], "exp": int(time.time()) + 600}).encode())
sig = enc(hmac.new(sys.argv[2].encode(), f"{head}.{claims}".encode(), hashlib.sha256).digest())
print(f"{head}.{claims}.{sig}")
PY
}

# --- authentication: 401 ------------------------------------------------------------------
http /workflows
is_error 401 28000 "no API key: 401 with PostgREST's error shape"
is "$(header WWW-Authenticate)" Bearer "the 401 carries WWW-Authenticate"
http -H "X-API-Key: nf_0000" /workflows
is_error 401 28P01 "an unknown API key: 401"
http -H 'Authorization: Bearer not.a.token' /workflows
is "$STATUS $(body .code)" "401 PGRST301" "a malformed JWT: 401"
sql "SELECT notiflow.create_api_key('temp', 'reader')" >"$WORK/temp.key"
get "$(cat "$WORK/temp.key")" /workflows
is "$STATUS" 200 "a new reader key works"
sql "SELECT notiflow.revoke_api_key('temp')" >/dev/null
get "$(cat "$WORK/temp.key")" /workflows
is_error 401 28P01 "a revoked key: 401 at once"

# --- the OpenAPI description --------------------------------------------------------------
http /
is "$(body '.info.title')" "notiflow REST API" "GET / is the OpenAPI description, titled from the schema comment"
is "$(body '.paths | has("/workflows")')" false "anonymously it lists no resource (it follows privileges)"
get "$READER" /
is "$(body '[.paths | has("/workflows", "/executions", "/deliveries", "/delivery_attempts", "/subscribers", "/providers", "/dead_letters", "/rpc/validate_workflow", "/rpc/get_workflow")] | all')" true \
   "with a reader key it lists the resources and the reading functions"
is "$(body '.paths | has("/rpc/trigger")')" false "but not the functions a reader may not call"
get "$ADMIN" /
is "$(body '[.paths | has("/rpc/trigger", "/rpc/trigger_many", "/rpc/put_workflow", "/rpc/activate_workflow", "/rpc/deactivate_workflow", "/rpc/put_subscriber", "/rpc/put_provider", "/rpc/send_test", "/rpc/replay_dead_letter", "/rpc/create_api_key", "/rpc/revoke_api_key", "/api_keys")] | all')" true \
   "with an admin key it lists every function"
is "$(body '.paths["/rpc/trigger"].post.summary')" "Starts an execution of a workflow; returns its id" \
   "functions are described by their COMMENT"
ok "$(body '.paths["/executions"].get.summary | test("Executions")' | grep -qx true; echo $?)" "views are described by their COMMENT"

# --- workflows -----------------------------------------------------------------------------
HOOK='{"nodes": [{"id": "t", "type": "trigger", "required": ["order_id"]}, {"id": "h", "type": "webhook"}],
       "edges": [{"from": "t", "to": "h"}]}'
rpc "$WRITER" put_workflow "{\"key\": \"hook\", \"definition\": $HOOK}"
is "$STATUS $(cat "$WORK/body")" "200 1" "put_workflow stores version 1"
rpc "$WRITER" put_workflow "{\"key\": \"hook\", \"definition\": $(jq -c '.name = "Hook"' <<<"$HOOK")}"
is "$(cat "$WORK/body")" 2 "a changed definition is version 2"
rpc "$WRITER" put_workflow "{\"key\": \"later\", \"definition\": {\"nodes\": [{\"id\": \"t\", \"type\": \"trigger\"},
    {\"id\": \"d\", \"type\": \"delay\", \"for\": \"1 hour\"}, {\"id\": \"h\", \"type\": \"webhook\"}],
    \"edges\": [{\"from\": \"t\", \"to\": \"d\"}, {\"from\": \"d\", \"to\": \"h\"}]}}"
is "$STATUS" 200 "a workflow with a delay is stored"

BAD='{"nodes": [{"id": "t", "type": "trigger"}, {"id": "x", "type": "fax"}, {"id": "c", "type": "condition", "if": "$$$"}],
      "edges": [{"from": "t", "to": "x"}, {"from": "t", "to": "c"}, {"from": "t", "to": "nowhere"}]}'
rpc "$WRITER" put_workflow "{\"key\": \"bad\", \"definition\": $BAD}"
is_error 422 22023 "an invalid definition: 422"
is "$(body '.details' | cut -d: -f1 | sort | tr '\n' ' ')" "edges[2].to nodes[1].type nodes[2].if " \
   "details lists every problem, one path: message per line"
rpc "$READER" validate_workflow "{\"definition\": $BAD}"
is "$STATUS $(body 'map(.path) | sort | join(" ")')" "200 edges[2].to nodes[1].type nodes[2].if" \
   "validate_workflow returns the same problems as rows"
rpc "$READER" validate_workflow "{\"definition\": $HOOK}"
is "$(cat "$WORK/body")" "[]" "and none for a valid definition"
rpc "$READER" put_workflow "{\"key\": \"hook\", \"definition\": $HOOK}"
is_error 403 42501 "a reader may not put a workflow: 403"

get "$READER" '/workflows?select=key,current_version,versions(version)&key=eq.hook'
is "$(body -c '.')" '[{"key":"hook","current_version":2,"versions":[{"version":1},{"version":2}]}]' \
   "GET /workflows embeds the versions"
http -H "X-API-Key: $READER" -H 'Accept: application/vnd.pgrst.object+json' '/rpc/get_workflow?key=hook&select=key,name'
is "$STATUS $(body -c .)" '200 {"key":"hook","name":"Hook"}' "get_workflow returns one workflow"
get "$READER" '/rpc/get_workflow?key=nope'
is_error 404 42704 "get_workflow of an unknown workflow: 404"

rpc "$WRITER" deactivate_workflow '{"key": "hook"}'
is "$STATUS" 204 "deactivate_workflow: 204"
rpc "$WRITER" trigger '{"workflow_key": "hook", "payload": {"order_id": 1}}'
is_error 409 55000 "triggering an inactive workflow: 409"
rpc "$WRITER" activate_workflow '{"key": "hook"}'
is "$STATUS" 204 "activate_workflow: 204"
rpc "$WRITER" activate_workflow '{"key": "nope"}'
is_error 404 42704 "activating an unknown workflow: 404"

# --- triggering ----------------------------------------------------------------------------
rpc "$WRITER" trigger '{"workflow_key": "hook", "payload": {"order_id": 1}, "recipient": {"name": "Ada"}, "idempotency_key": "order-1"}'
FIRST=$(cat "$WORK/body")
is "$STATUS" 200 "trigger starts an execution (id $FIRST)"
rpc "$WRITER" trigger '{"workflow_key": "hook", "payload": {"order_id": 1}, "recipient": {"name": "Ada"}, "idempotency_key": "order-1"}'
is "$(cat "$WORK/body")" "$FIRST" "the same idempotency key returns the same execution"
rpc "$READER" trigger '{"workflow_key": "hook", "payload": {"order_id": 2}}'
is_error 403 42501 "a reader may not trigger: 403"
is "$(body .details)" "function trigger needs the role notiflow_writer" "details say which role may"
rpc "$WRITER" trigger '{"workflow_key": "nope", "payload": {}}'
is_error 404 42704 "triggering an unknown workflow: 404"
rpc "$WRITER" trigger '{"workflow_key": "hook", "payload": {"other": 1}}'
is_error 422 22023 "a payload without a required field: 422"
is "$(body .details)" 'payload.order_id: required by workflow "hook"' "details name the field"
rpc "$WRITER" trigger '{"workflow_key": "hook", "payload": [1, 2]}'
is_error 422 22023 "a payload that is not an object: 422"
python3 -c 'import json; print(json.dumps({"workflow_key": "hook", "payload": {"order_id": 3, "pad": "x" * 300000}}))' >"$WORK/big.json"
rpc "$WRITER" trigger "@$WORK/big.json"
is_error 413 54000 "a payload over notiflow.max_payload_size: 413"
rpc "$WRITER" trigger_many '{"workflow_key": "hook", "recipients": [{"name": "A"}, {"name": "B"}, {"name": "C"}], "payload": {"order_id": 4}}'
is "$STATUS $(body 'map(.execution_id) | length')" "200 3" "trigger_many starts one execution per recipient"
rpc "$WRITER" trigger_many "{\"workflow_key\": \"hook\", \"recipients\": $(jq -c -n '[range(1001) | {name: "R\(.)"}]'), \"payload\": {\"order_id\": 5}}"
is_error 413 54000 "trigger_many of more than 1000 recipients: 413 (the answer holds at most 1000 rows)"
is "$(sql "SELECT count(*) FROM notiflow.executions WHERE payload ->> 'order_id' = '5'")" 0 "and it started nothing"
http -H "Authorization: Bearer $(jwt notiflow_writer)" -H 'Content-Type: application/json' \
     -d '{"workflow_key": "hook", "payload": {"order_id": 5}}' /rpc/trigger
is "$STATUS" 200 "a JWT with role notiflow_writer triggers without an API key"
http -H "Authorization: Bearer $(jwt notiflow_reader)" -H 'Content-Type: application/json' \
     -d '{"workflow_key": "hook", "payload": {"order_id": 6}}' /rpc/trigger
is_error 403 42501 "a JWT with role notiflow_reader may not: 403"
http -H "Authorization: Bearer $(jwt notiflow_reader)" /workflows
is "$STATUS" 200 "but it reads"

# --- executions: filters, pagination, embedding --------------------------------------------
wait_for 30 sql_is "SELECT count(*) FROM notiflow.executions WHERE workflow_key = 'hook' AND status <> 'completed'" 0
ok $? "the workers deliver every execution's webhook (through the double)"
TOTAL=$(sql "SELECT count(*) FROM notiflow.executions WHERE workflow_key = 'hook'")
get "$READER" "/executions?select=id,status,steps(node_id,status),deliveries(status,attempts(error_class,status_code))&id=eq.$FIRST"
is "$(body -c '.[0] | [.status, [.steps[].node_id], .deliveries[0].status, .deliveries[0].attempts[0].error_class, .deliveries[0].attempts[0].status_code]')" \
   '["completed",["t","h"],"sent","sent",200]' "an execution embeds its steps, and its deliveries with their attempts"
get "$READER" "/executions?select=id,timeline(kind,node_id),workflow(key,current_version)&id=eq.$FIRST"
is "$(body -c '.[0] | [([.timeline[].kind] | sort), .workflow.key]')" '[["delivery","step","step"],"hook"]' \
   "and its timeline and workflow"
get "$READER" "/deliveries?select=*,execution(id,workflow_key),attempts(*)&execution_id=eq.$FIRST"
is "$(body -c '.[0] | [.execution, .attempt_count, (.attempts | length)]')" "[{\"id\":$FIRST,\"workflow_key\":\"hook\"},1,1]" \
   "a delivery embeds its execution and its attempts (attempt_count counts them)"
get "$READER" "/executions?workflow_key=eq.hook&status=eq.completed&select=id"
is "$(body length)" "$TOTAL" "executions filter by workflow and status"
get "$READER" "/executions?workflow_key=eq.hook&created_at=gt.$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)"
is "$(body length)" 0 "and by time"
get "$READER" '/executions?workflow_key=eq.hook&select=id&order=id&limit=2&offset=1'
is "$(body -c 'map(.id)')" "$(sql "SELECT json_agg(id) FROM (SELECT id FROM notiflow.executions WHERE workflow_key = 'hook' ORDER BY id LIMIT 2 OFFSET 1) s" | jq -c .)" \
   "limit and offset paginate"
http -H "X-API-Key: $READER" -H 'Range: 0-1' -H 'Prefer: count=exact' '/executions?workflow_key=eq.hook&select=id&order=id'
is "$STATUS $(header Content-Range)" "206 0-1/$TOTAL" "a Range header paginates and counts (206, Content-Range)"

rpc "$WRITER" trigger '{"workflow_key": "later", "payload": {}}'
LATER=$(cat "$WORK/body")
rpc "$WRITER" cancel_execution "{\"execution_id\": $LATER}"
is "$STATUS $(cat "$WORK/body")" "200 true" "cancel_execution cancels a waiting execution"
get "$READER" "/executions?id=eq.$LATER&select=status"
is "$(body '.[0].status')" cancelled "it is cancelled"

# --- read-only views, functions that change data -------------------------------------------
http -H "X-API-Key: $ADMIN" -H 'Content-Type: application/json' -d '{"key": "x"}' /workflows
is_error 405 25006 "POST to a view: 405"
is "$(header Allow)" "GET, HEAD" "with Allow: GET, HEAD"
http -X DELETE -H "X-API-Key: $ADMIN" "/executions?id=eq.$FIRST"
is "$STATUS" 405 "DELETE on a view: 405"
get "$WRITER" '/rpc/trigger?workflow_key=hook'
is_error 405 25006 "GET of a function that changes data: 405"

# --- subscribers ---------------------------------------------------------------------------
rpc "$WRITER" put_subscriber '{"id": "ada", "attributes": {"name": "Ada", "email": "ada@example.com", "phone": "+15551230001"}}'
is "$STATUS" 204 "put_subscriber: 204"
rpc "$WRITER" put_subscriber '{"id": "ada", "attributes": {"preferences": {"channels": {"sms": false}}}}'
get "$READER" '/subscribers?id=eq.ada&select=name,email,preferences'
is "$(body -c '.[0]')" '{"name":"Ada","email":"ada@example.com","preferences":{"channels":{"sms":false}}}' \
   "GET /subscribers shows the attributes and the preferences put"
rpc "$WRITER" put_subscriber '{"id": "ada", "attributes": {"phone": "555-1234"}}'
is_error 422 22023 "an invalid attribute: 422"
is "$(body .details)" 'attributes.phone: "555-1234" is not an E.164 number like +15551234567' "details name the attribute"

# --- providers -------------------------------------------------------------------------------
rpc "$WRITER" put_provider '{"name": "sg", "channel": "email", "kind": "sendgrid", "config": {"api_key": "SG.x", "from": "a@example.com"}}'
is_error 403 42501 "a writer may not configure providers: 403"
rpc "$ADMIN" put_provider '{"name": "sg", "channel": "email", "kind": "sendgrid", "config": {"api_key": "SG.secret", "from": "a@example.com"}}'
is "$STATUS" 204 "an admin puts a provider"
get "$READER" '/providers?name=eq.sg&select=config,circuit_state'
is "$(body -c '.[0]')" '{"config":{"from":"a@example.com","api_key":"********"},"circuit_state":"closed"}' \
   "GET /providers redacts secrets"
rpc "$ADMIN" put_provider "{\"name\": \"sg\", \"channel\": \"email\", \"kind\": \"sendgrid\", \"config\": $(body -c '.[0].config'), \"priority\": 5}"
is "$(sql "SELECT config ->> 'api_key' || ' ' || priority FROM notiflow.providers WHERE name = 'sg'")" "SG.secret 5" \
   "putting the redacted config back keeps the secret"
rpc "$ADMIN" put_provider '{"name": "sg", "channel": "email", "kind": "sendgrid",
                            "config": {"api_key": "********", "from": "a@example.com", "base_url": "https://collector.example.net"}}'
is_error 422 22023 "a kept secret with a new destination: 422 (it would go to the new server)"
is "$(body .details)" "config.base_url: changed while api_key is sent as ********" "details name the destination"
is "$(sql "SELECT config ? 'base_url' FROM notiflow.providers WHERE name = 'sg'")" f "the provider is unchanged"
# a webhook URL is a secret and the destination at once: put back as ********, it stays
rpc "$ADMIN" put_provider '{"name": "dc", "channel": "chat", "kind": "discord", "config": {"webhook_url": "https://discord.com/api/webhooks/1/tok"}}'
get "$READER" '/providers?name=eq.dc&select=config'
is "$(body -c '.[0].config')" '{"webhook_url":"********"}' "GET /providers redacts a chat webhook URL"
rpc "$ADMIN" put_provider "{\"name\": \"dc\", \"channel\": \"chat\", \"kind\": \"discord\", \"config\": $(body -c '.[0].config'), \"priority\": 7}"
is "$STATUS" 204 "putting a redacted webhook URL back is accepted"
is "$(sql "SELECT config ->> 'webhook_url' || ' ' || priority FROM notiflow.providers WHERE name = 'dc'")" \
   "https://discord.com/api/webhooks/1/tok 7" "and keeps the stored URL"
# turning STARTTLS off would send a kept SMTP password in clear text: a change of destination too
rpc "$ADMIN" put_provider '{"name": "relay", "channel": "email", "kind": "smtp",
                            "config": {"url": "smtp://mx.example.com:587", "from": "a@example.com", "username": "u", "password": "pw", "starttls": true}}'
rpc "$ADMIN" put_provider '{"name": "relay", "channel": "email", "kind": "smtp",
                            "config": {"url": "smtp://mx.example.com:587", "from": "a@example.com", "username": "u", "password": "********", "starttls": false}}'
is_error 422 22023 "a kept SMTP password with STARTTLS turned off: 422"
is "$(body .details)" "config.starttls: changed while password is sent as ********" "details name starttls"
rpc "$ADMIN" put_provider '{"name": "sg", "channel": "email", "kind": "sendgrid", "config": {"from": "a@example.com"}}'
is_error 422 22023 "an incomplete config: 422"
is "$(body .details)" "config.api_key: required" "details name the missing key"
get "$READER" '/provider_kinds?kind=eq.twilio&select=channel,secret_config'
is "$(body -c '.[0]')" '{"channel":"sms","secret_config":["auth_token"]}' "GET /provider_kinds lists the adapters"

rpc "$ADMIN" send_test '{"provider": "hooks"}'
TEST=$(cat "$WORK/body")
is "$STATUS" 200 "send_test queues a test message (delivery $TEST)"
test_sent() { get "$READER" "/deliveries?id=eq.$TEST&select=status"; [ "$(body '.[0].status')" = sent ]; }
wait_for 20 test_sent
ok $? "the test message is sent through the provider"
get "$READER" "/deliveries?id=eq.$TEST&select=execution_id,attempts(provider,error_class)"
is "$(body -c '.[0]')" '{"execution_id":0,"attempts":[{"provider":"hooks","error_class":"sent"}]}' \
   "its attempt is recorded; it belongs to no execution"
is "$(double GET 'requests?provider=webhook' | jq -r 'last.body | fromjson | .provider')" hooks "the double received it"
rpc "$ADMIN" send_test '{"provider": "nope"}'
is_error 404 42704 "send_test through an unknown provider: 404"
rpc "$ADMIN" send_test '{"provider": null}'
is_error 422 22023 "send_test without a provider: 422"
rpc "$ADMIN" send_test '{"provider": "sg"}'
is_error 422 22023 "send_test through an email provider without a recipient: 422"
rpc "$WRITER" send_test '{"provider": "hooks"}'
is_error 403 42501 "a writer may not send test messages: 403"

# --- dead letters ------------------------------------------------------------------------------
double POST script '{"provider": "webhook", "responses": [{"status": 401}]}' >/dev/null
rpc "$WRITER" trigger '{"workflow_key": "hook", "payload": {"order_id": 7}}'
DEAD_EXEC=$(cat "$WORK/body")
dead_lettered() { get "$READER" "/dead_letters?select=id,delivery_id,payload_base64&order=id.desc&limit=1"; [ "$(body '.[0].id // empty')" != "" ]; }
wait_for 20 dead_lettered
ok $? "a delivery refused for good is listed in /dead_letters"
DEAD=$(body '.[0].id')
is "$(body '.[0].delivery_id')" "$(sql "SELECT id FROM notiflow.deliveries WHERE execution_id = $DEAD_EXEC")" "with its delivery id"
is "$(body -r '.[0].payload_base64' | base64 -d | jq -r .payload.order_id)" 7 "and the request body it could not deliver"
rpc "$READER" replay_dead_letter "{\"id\": $DEAD}"
is_error 403 42501 "a reader may not replay: 403"
rpc "$WRITER" replay_dead_letter "{\"id\": $DEAD}"
REPLAYED=$(cat "$WORK/body")
is "$STATUS" 200 "replay_dead_letter queues it again (delivery $REPLAYED)"
replayed_sent() { get "$READER" "/deliveries?id=eq.$REPLAYED&select=status"; [ "$(body '.[0].status')" = sent ]; }
wait_for 20 replayed_sent
ok $? "and it is sent"
rpc "$WRITER" replay_dead_letter "{\"id\": $DEAD}"
is_error 409 55000 "replaying it again: 409 (it was sent: it would go out twice)"
rpc "$WRITER" replay_dead_letter '{"id": 999999}'
is_error 404 42704 "replaying an unknown dead letter: 404"

# --- API keys over the API: 409 ----------------------------------------------------------------
rpc "$ADMIN" create_api_key '{"name": "console", "role": "reader"}'
is_error 409 23505 "creating a key whose name is taken: 409"
rpc "$ADMIN" create_api_key '{"name": "deploy", "role": "writer"}'
NEW=$(body .)
rpc "$NEW" trigger '{"workflow_key": "hook", "payload": {"order_id": 8}}'
is "$STATUS" 200 "a key created over the API works with its role"
rpc "$ADMIN" create_api_key '{"name": "x", "role": "root"}'
is_error 422 22023 "a key with an unknown role: 422"
get "$ADMIN" '/api_keys?select=name,role&name=eq.deploy'
is "$(body -c .)" '[{"name":"deploy","role":"notiflow_writer"}]' "GET /api_keys lists keys (never their hash)"
get "$WRITER" /api_keys
is_error 403 42501 "only an admin may list keys: 403"
rpc "$WRITER" create_api_key '{"name": "x", "role": "admin"}'
is_error 403 42501 "a writer may not create keys: 403"
rpc "$WRITER" revoke_api_key '{"name": "ops"}'
is_error 403 42501 "nor revoke them: 403"
http -H 'Content-Type: application/json' -d '{"workflow_key": "hook", "payload": {"order_id": 1}}' /rpc/trigger
is_error 401 28000 "an anonymous trigger: 401"
for path in /providers /subscribers /executions /rpc/metrics; do
    http "$path"
    is "$STATUS" 401 "anonymous GET $path: 401"
done
rpc "$ADMIN" revoke_api_key '{"name": "deploy"}'
rpc "$NEW" trigger '{"workflow_key": "hook", "payload": {"order_id": 9}}'
is_error 401 28P01 "a key revoked over the API: 401"
rpc "$ADMIN" revoke_api_key '{"name": "deploy"}'
is_error 404 42704 "revoking it again: 404"

# --- bad input is never a 500 ------------------------------------------------------------------
fives=0
for args in "trigger|{\"workflow_key\": \"hook\", \"payload\": {\"order_id\": 1}, \"recipient\": 42}" \
            "trigger|{\"workflow_key\": \"hook\", \"payload\": {\"order_id\": 1}, \"recipient\": {\"email\": \"not an address\"}}" \
            "trigger|{\"workflow_key\": \"\", \"payload\": {}}" \
            "trigger|{\"workflow_key\": \"hook\", \"payload\": {\"order_id\": 1}, \"idempotency_key\": \"$(printf 'k%.0s' {1..300})\"}" \
            "trigger|{\"workflow_key\": \"hook\", \"payload\": {\"order_id\": 1}, \"surprise\": 1}" \
            "trigger|not json" \
            "trigger_many|{\"workflow_key\": \"hook\", \"recipients\": \"ada\"}" \
            "put_workflow|{\"key\": \"bad key!\", \"definition\": {}}" \
            "put_workflow|{\"key\": \"k\", \"definition\": \"text\"}" \
            "cancel_execution|{\"execution_id\": \"abc\"}" \
            "put_subscriber|{\"id\": \"\", \"attributes\": {}}" \
            "record_delivery_event|{\"provider\": \"hooks\", \"event\": {}}" \
            "render_template|{\"template\": \"{{#open\", \"context\": {}}"; do
    rpc "$ADMIN" "${args%%|*}" "${args#*|}"
    # a 4xx with PostgREST's error shape, nothing else (a 2xx would have accepted it; 000: no server)
    if [ "$STATUS" -lt 400 ] || [ "$STATUS" -ge 500 ] ||
       ! jq -e 'has("code") and has("message")' "$WORK/body" >/dev/null 2>&1; then
        fives=$((fives + 1))
        echo "# ${args%%|*} ${args#*|} -> $STATUS $(cat "$WORK/body")"
    fi
done
get "$READER" '/executions?id=eq.abc'
[ "$STATUS" -ge 500 ] && fives=$((fives + 1))
get "$READER" '/nothing_here'
[ "$STATUS" = 404 ] || fives=$((fives + 1))
is "$fives" 0 "malformed requests get 4xx with PostgREST's error shape, never 5xx"
# any program limit is 413, not only 54000: sections nested 200,000 deep exceed the stack (54001)
python3 -c 'import json; print(json.dumps({"template": "{{#a}}" * 200000 + "{{/a}}" * 200000, "context": {"a": True}}))' >"$WORK/deep.json"
http -H "X-API-Key: $READER" -H 'Content-Type: application/json' -d @"$WORK/deep.json" /rpc/render_template
is_error 413 54001 "a template nested past the stack: 413 (class 54)"

# --- health (anonymous, from src/sql/80_operations.sql when present) ----------------------------
http /rpc/health
is "$STATUS $(body '.status | test("^(ok|degraded)$")')" "200 true" "GET /rpc/health answers without a key"
# what Prometheus sends
http -H "X-API-Key: $READER" -H 'Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1' /rpc/metrics
is "$STATUS $(header Content-Type)" "200 text/plain; charset=utf-8" "GET /rpc/metrics answers a reader in text/plain"
ok "$(grep -q '^# TYPE notiflow_deliveries_total counter' "$WORK/body"; echo $?)" "in Prometheus' text format"

# --- notiflow.api_statement_timeout: every request's statements are cut at it --------------------------
sql "ALTER ROLE notiflow_authenticator IN DATABASE $DB SET notiflow.api_statement_timeout = '1ms'" >/dev/null
SLOW_PORT=$(cluster_free_port)
NOTIFLOW_API_DB_URI="postgresql://notiflow_authenticator@127.0.0.1:$PGPORT/$DB" \
NOTIFLOW_API_JWT_SECRET=$JWT_SECRET PGRST_SERVER_PORT=$SLOW_PORT \
    "$POSTGREST" api/postgrest.conf >"$WORK/postgrest-slow.log" 2>&1 &
SLOW_PID=$!
# (even its OpenAPI description may take more than 1 ms: any answer but 503, its schema cache not
# loaded yet, means it is up)
slow_up() { case "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$SLOW_PORT/")" in 000|503) return 1;; esac; }
wait_for 30 slow_up
ok $? "a second PostgREST whose connections have notiflow.api_statement_timeout = 1ms"
STATUS=$(curl -s -o "$WORK/body" -w '%{http_code}' -H "X-API-Key: $WRITER" -H 'Content-Type: application/json' \
    -d "{\"workflow_key\": \"hook\", \"recipients\": $(jq -c -n '[range(1000) | {name: "T\(.)"}]'), \"payload\": {\"order_id\": 6}}" \
    "http://127.0.0.1:$SLOW_PORT/rpc/trigger_many")
is "$STATUS $(body .code)" "500 57014" "a request that runs longer is cancelled: 500 with SQLSTATE 57014"
is "$(sql "SELECT count(*) FROM notiflow.executions WHERE payload = '{\"order_id\": 6}'")" 0 "and nothing of it stays"
kill "$SLOW_PID"; wait "$SLOW_PID" 2>/dev/null
sql "ALTER ROLE notiflow_authenticator IN DATABASE $DB RESET notiflow.api_statement_timeout" >/dev/null

# --- the extension goes and comes back; the roles stay -------------------------------------------
kill "${PIDS[-1]}" && wait "${PIDS[-1]}" 2>/dev/null
unset 'PIDS[-1]'
sql "DROP EXTENSION notiflow" >/dev/null
ok $? "DROP EXTENSION removes the API"
is "$(sql "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'notiflow\_%'")" 5 "the five roles survive it"
out=$(sql "CREATE EXTENSION notiflow" 2>&1)
is "$out" "" "CREATE EXTENSION again reuses them quietly"
psql -X -q -d postgres -c "CREATE DATABASE ${DB}_2" >/dev/null
out=$(psql -X -q -At -v ON_ERROR_STOP=1 -d ${DB}_2 -c "CREATE EXTENSION notiflow" 2>&1)
is "$?:$out" "0:" "and so does CREATE EXTENSION in a second database"

done_testing
