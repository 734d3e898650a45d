#!/usr/bin/env bash
# test/t/push.sh — the push adapters (FCM, APNs, Web Push) end to end: a
# cluster started with shared_preload_libraries = 'notiflow' whose dispatcher
# sends a push node's deliveries to every device of a subscriber, against
# test/doubles/push_double.mjs over HTTPS (HTTP/2). The double verifies what
# it receives: the FCM service account's RS256 assertion and the access token
# it issued, the APNs ES256 provider token, the VAPID JWT, and it decrypts the
# Web Push body. Checks the rendered content on each device, token reuse,
# unregistered devices marked invalid and skipped afterwards, and retries.
# Every key and the certificate are made here with openssl and thrown away.
set -uo pipefail
cd "$(dirname "$0")/../.."
source test/lib/tap.sh
source test/lib/cluster.sh

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    [ -n "${NOTIFLOW_TEST_LOGS:-}" ] && [ -n "${CLUSTER_DIR:-}" ] && cp "$CLUSTER_DIR/server.log" "$NOTIFLOW_TEST_LOGS/push-server.log"
    cluster_stop
    rm -rf "$WORK"
}
trap cleanup EXIT
# the server runs as postgres and reads the CA file from here
chmod 755 "$WORK"

# --- keys, certificate, the double's config -----------------------------------------
b64u() { basenc --base64url -w0 | tr -d '='; }
# p256 NAME: makes $WORK/NAME.pem (PKCS#8) and prints "PRIVATE PUBLIC", the raw key and point in base64url.
p256() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/$1.pem" 2>/dev/null
    openssl ec -in "$WORK/$1.pem" -outform DER -out "$WORK/$1.der" 2>/dev/null
    echo "$(head -c 39 "$WORK/$1.der" | tail -c 32 | b64u) $(tail -c 65 "$WORK/$1.der" | b64u)"
}
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$WORK/tls.key" -out "$WORK/ca.pem" 2>/dev/null &&
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/fcm.pem" 2>/dev/null &&
    openssl pkey -in "$WORK/fcm.pem" -pubout -out "$WORK/fcm.pub" 2>/dev/null ||
    { echo "Bail out! openssl cannot make the keys"; exit 1; }
chmod 644 "$WORK/ca.pem"
read -r _ _ <<<"$(p256 apns)"
openssl pkey -in "$WORK/apns.pem" -pubout -out "$WORK/apns.pub" 2>/dev/null
read -r VAPID_PRIV VAPID_PUB <<<"$(p256 vapid)"
read -r LIVE_PRIV LIVE_PUB <<<"$(p256 sub_live)"
read -r GONE_PRIV GONE_PUB <<<"$(p256 sub_gone)"
LIVE_AUTH=$(openssl rand 16 | b64u)
GONE_AUTH=$(openssl rand 16 | b64u)

PROJECT=notiflow-push-test
CLIENT_EMAIL=notiflow@notiflow-push-test.iam.gserviceaccount.com
TEAM_ID=TEAM4PUSH1
KEY_ID=KEY4PUSH01
TOPIC=com.example.shop
FCM_A=dA1:APA91b$(openssl rand -hex 40)
FCM_B=dB2:APA91b$(openssl rand -hex 40)
FCM_UNREG=dU3:APA91b$(openssl rand -hex 40)
APNS_DEV=$(openssl rand -hex 32)
jq -n --rawfile fcm "$WORK/fcm.pub" --rawfile apns "$WORK/apns.pub" --arg project "$PROJECT" \
    --arg email "$CLIENT_EMAIL" --arg team "$TEAM_ID" --arg kid "$KEY_ID" --arg topic "$TOPIC" \
    --arg unreg "$FCM_UNREG" --arg vapid "$VAPID_PUB" --arg lp "$LIVE_PRIV" --arg la "$LIVE_AUTH" \
    --arg gp "$GONE_PRIV" --arg ga "$GONE_AUTH" '{
    fcm: {project_id: $project, client_email: $email, private_key_id: "key-1", public_key: $fcm, unregistered: [$unreg]},
    apns: {team_id: $team, key_id: $kid, topic: $topic, public_key: $apns},
    webpush: {subscriptions: {live: {private_key: $lp, auth: $la, vapid_public_key: $vapid},
                              gone: {private_key: $gp, auth: $ga, gone: 410}}}
}' >"$WORK/double.json"

# --- the double ---------------------------------------------------------------------
node test/doubles/push_double.mjs --port 0 --cert "$WORK/ca.pem" --key "$WORK/tls.key" --config "$WORK/double.json" \
    >"$WORK/double.out" 2>"$WORK/double.err" &
PIDS+=($!)
listening() { grep -qs 'listening on' "$1"; }
wait_for 20 listening "$WORK/double.out" || { echo "Bail out! the push double did not start"; cat "$WORK/double.err"; exit 1; }
PORT=$(grep -o '[0-9]*$' "$WORK/double.out")
DOUBLE=https://127.0.0.1:$PORT
double() { curl -s --cacert "$WORK/ca.pem" -X "$1" "$DOUBLE/_double/$2" ${3:+-d "$3"}; }
# records PROVIDER [jq filter]: the double's records of that provider, filtered.
records() { double GET "requests?provider=$1" | jq -c "${2:-.}" 2>/dev/null; }
# tokens_fetched: how many access tokens the double issued.
tokens_fetched() { records fcm_token '[.[] | select(.verdict == "accepted")] | length'; }

# --- the cluster, providers, subscriber, workflow ----------------------------------------
DB=notiflow_push
cluster_start "shared_preload_libraries = 'notiflow'" "notiflow.database_name = '$DB'" \
    "notiflow.allow_private_urls = on" >/dev/null || { echo "Bail out! cluster did not start"; exit 1; }
psql -X -q -d postgres -c "CREATE DATABASE $DB" >/dev/null
sql() { psql -X -q -At -v ON_ERROR_STOP=1 -d $DB -c "$1"; }
sql_is() { [ "$(sql "$1" 2>/dev/null)" = "$2" ]; }
sql "CREATE EXTENSION notiflow" >/dev/null
wait_for 30 sql_is "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'notiflow dispatcher' AND datname = '$DB'" 1
ok $? "a dispatcher runs in notiflow.database_name"

SERVICE_ACCOUNT=$(jq -n --rawfile key "$WORK/fcm.pem" --arg project "$PROJECT" --arg email "$CLIENT_EMAIL" \
    --arg uri "$DOUBLE/token" '{type: "service_account", project_id: $project, private_key_id: "key-1",
    private_key: $key, client_email: $email, client_id: "100000000000000000001", token_uri: $uri}')
RETRY='{"backoff_min_ms": 100, "backoff_max_ms": 300}'
FCM_CONFIG=$(jq -nc --argjson sa "$SERVICE_ACCOUNT" --arg base "$DOUBLE" --arg ca "$WORK/ca.pem" --argjson r "$RETRY" \
    '{service_account: $sa, base_url: $base, ca_file: $ca} + $r')
APNS_CONFIG=$(jq -nc --rawfile key "$WORK/apns.pem" --arg team "$TEAM_ID" --arg kid "$KEY_ID" --arg topic "$TOPIC" \
    --arg base "$DOUBLE" --arg ca "$WORK/ca.pem" --argjson r "$RETRY" \
    '{team_id: $team, key_id: $kid, private_key: $key, topic: $topic, environment: "sandbox", base_url: $base, ca_file: $ca} + $r')
WEBPUSH_CONFIG=$(jq -nc --arg pub "$VAPID_PUB" --arg priv "$VAPID_PRIV" --arg ca "$WORK/ca.pem" --argjson r "$RETRY" \
    '{vapid_public_key: $pub, vapid_private_key: $priv, subject: "mailto:ops@example.com", ca_file: $ca} + $r')
LIVE_SUB=$(jq -nc --arg e "$DOUBLE/push/live" --arg p "$LIVE_PUB" --arg a "$LIVE_AUTH" '{endpoint: $e, keys: {p256dh: $p, auth: $a}}')
GONE_SUB=$(jq -nc --arg e "$DOUBLE/push/gone" --arg p "$GONE_PUB" --arg a "$GONE_AUTH" '{endpoint: $e, keys: {p256dh: $p, auth: $a}}')
ANN=$(jq -nc --arg a "$FCM_A" --arg b "$FCM_B" --arg u "$FCM_UNREG" --arg d "$APNS_DEV" \
    --argjson live "$LIVE_SUB" --argjson gone "$GONE_SUB" \
    '{name: "Ann", push: {fcm: [$a, $b, $u], apns: [$d], webpush: [$live, $gone]}}')
q() { printf '%s' "${1//\'/\'\'}"; }
sql "
SELECT notiflow.put_provider('fcm', 'push', 'fcm', '$(q "$FCM_CONFIG")');
SELECT notiflow.put_provider('apns', 'push', 'apns', '$(q "$APNS_CONFIG")');
SELECT notiflow.put_provider('webpush', 'push', 'webpush', '$(q "$WEBPUSH_CONFIG")');
SELECT notiflow.put_subscriber('ann', '$(q "$ANN")');
SELECT notiflow.put_workflow('shipped', '{\"nodes\": [{\"id\": \"t\", \"type\": \"trigger\"},
       {\"id\": \"p\", \"type\": \"push\", \"title\": \"Order {{payload.order_id}} shipped\", \"body\": \"Hello {{recipient.name}}\",
        \"data\": {\"order\": \"{{payload.order_id}}\"}}], \"edges\": [{\"from\": \"t\", \"to\": \"p\"}]}');
" >/dev/null || { echo "Bail out! setup failed"; exit 1; }

# trigger ORDER: prints the execution id (0 when the trigger failed).
trigger() { sql "SELECT notiflow.trigger('shipped', '{\"order_id\": \"$1\"}', '\"ann\"')" || echo 0; }
# settled EXEC: every delivery of the execution has ended.
settled() { sql_is "SELECT count(*) > 0 AND bool_and(status IN ('sent', 'delivered', 'failed')) FROM notiflow.deliveries WHERE execution_id = $1" t; }
# deliveries EXEC: "provider status" per delivery, in a stable order.
deliveries() { sql "SELECT string_agg(provider || ' ' || status, ',' ORDER BY provider, status) FROM notiflow.deliveries WHERE execution_id = $1"; }
# status_of EXEC PATTERN: status of the execution's delivery whose recipient contains PATTERN.
status_of() { sql "SELECT status FROM notiflow.deliveries WHERE execution_id = $1 AND strpos(recipient, '$2') > 0"; }
# received PROVIDER ORDER FILTER: how many records the double accepted for ORDER that match FILTER.
received() { records "$1" "[.[] | select(.verdict == \"accepted\" and ((.body // \"\") + (.plaintext // \"\") | contains(\"$2\"))) | select($3)] | length"; }
invalid_addresses() { sql "SELECT array_length(invalid_addresses, 1) FROM notiflow.subscribers WHERE id = 'ann'"; }

# --- 1. every device gets the push ---------------------------------------------------------
exec=$(trigger A-1001)
wait_for 60 settled "$exec"
ok $? "the push deliveries of the first trigger settle"
is "$(deliveries "$exec")" "apns sent,fcm failed,fcm sent,fcm sent,webpush failed,webpush sent" \
   "one delivery per device: the live ones sent, the unregistered FCM token and the gone subscription failed"

is "$(received fcm A-1001 ".http_version == \"2.0\" and (.body | fromjson | .message.token | IN(\"$FCM_A\", \"$FCM_B\"))")" 2 \
   "fcm: both live registration tokens got the message over HTTP/2, with the double's bearer token"
fcm_rec=$(records fcm "[.[] | select(.verdict == \"accepted\")][0].body | fromjson | .message")
is "$(jq -c '[.notification.title, .notification.body, .data.order]' <<<"$fcm_rec" 2>/dev/null)" '["Order A-1001 shipped","Hello Ann","A-1001"]' \
   "fcm: the notification and the data are rendered"
is "$(tokens_fetched)" 1 "fcm: one access token was fetched for the three concurrent sends"
is "$(sql "SELECT string_agg(attempts::text, ',') FROM notiflow.deliveries WHERE execution_id = $exec AND provider = 'fcm'")" 1,1,1 \
   "fcm: fetching the token counts no attempt"
is "$(records fcm_token "[.[] | select(.verdict == \"accepted\") | .jwt.claims | .iss == \"$CLIENT_EMAIL\" and .aud == \"$DOUBLE/token\" and (.scope | contains(\"firebase.messaging\"))] | all")" true \
   "fcm: the token came for the service account's RS256 assertion (iss, aud = token_uri, scope; signature verified)"
is "$(records fcm_token '[.[] | select(.verdict != "accepted")] | length')" 0 "fcm: no assertion was refused"

apns_rec=$(records apns "[.[] | select(.verdict == \"accepted\" and .path == \"/3/device/$APNS_DEV\")] | last")
is "$(jq -r .http_version <<<"$apns_rec" 2>/dev/null)" 2.0 "apns: the notification went over HTTP/2"
is "$(jq -c '[.jwt.header.kid, .jwt.claims.iss, .headers["apns-topic"], .headers["apns-push-type"]]' <<<"$apns_rec" 2>/dev/null)" \
   "[\"$KEY_ID\",\"$TEAM_ID\",\"$TOPIC\",\"alert\"]" "apns: the ES256 provider token (verified) names the key and the team; topic and push type are set"
is "$(jq -c '.body | fromjson | [.aps.alert.title, .aps.alert.body]' <<<"$apns_rec" 2>/dev/null)" '["Order A-1001 shipped","Hello Ann"]' \
   "apns: the alert is rendered"
ok $(jq -r .body <<<"$apns_rec" 2>/dev/null | grep -q '"A-1001"'; echo $?) "apns: the payload carries the data"

wp_rec=$(records webpush '[.[] | select(.verdict == "accepted" and .subscription == "live")] | last')
content=$(sql "SELECT content FROM notiflow.deliveries WHERE execution_id = $exec LIMIT 1")
is "$(jq -Sc ".plaintext | fromjson" <<<"$wp_rec" 2>/dev/null)" "$(jq -Sc . <<<"$content" 2>/dev/null)" \
   "webpush: the plaintext the double decrypted is the rendered content $(jq -c . <<<"$content" 2>/dev/null)"
is "$(jq -c "[.jwt.claims.aud, .jwt.claims.sub, (.jwt.k | rtrimstr(\"=\")), .headers[\"content-encoding\"], (.headers.ttl | test(\"^[0-9]+\$\"))]" <<<"$wp_rec" 2>/dev/null)" \
   "[\"$DOUBLE\",\"mailto:ops@example.com\",\"$VAPID_PUB\",\"aes128gcm\",true]" \
   "webpush: the VAPID JWT (verified with k) is for the push service's origin, with the subject; aes128gcm and TTL"
is "$(sql "SELECT count(*) FROM notiflow.deliveries WHERE execution_id = $exec AND status = 'sent' AND provider_message_id IS NULL")" 0 \
   "every sent delivery records the provider's message id"
fcm_names=$(records fcm '[.[] | select(.verdict == "accepted") | .message_id] | sort')
is "$(sql "SELECT json_agg(provider_message_id ORDER BY provider_message_id) FROM notiflow.deliveries WHERE execution_id = $exec AND provider = 'fcm' AND status = 'sent'" | jq -c .)" \
   "$(jq -c . <<<"$fcm_names" 2>/dev/null)" "fcm: the message ids are the names FCM answered"

is "$(status_of "$exec" "$FCM_UNREG")" failed "fcm: the UNREGISTERED token's delivery failed"
is "$(sql "SELECT '$FCM_UNREG' = ANY (invalid_addresses) FROM notiflow.subscribers WHERE id = 'ann'")" t \
   "fcm: and the token is added to the subscriber's invalid addresses"
is "$(status_of "$exec" "/push/gone")" failed "webpush: the delivery to the 410 subscription failed"
is "$(sql "SELECT count(*) FROM notiflow.subscribers, unnest(invalid_addresses) a WHERE id = 'ann' AND strpos(a, '/push/gone') > 0")" 1 \
   "webpush: and the subscription is added to the subscriber's invalid addresses"
is "$(invalid_addresses)" 2 "nothing else is marked invalid"
is "$(sql "SELECT status FROM notiflow.executions WHERE id = $exec")" completed "the execution completes (some devices got it)"

# --- 2. a second trigger skips the invalid devices and reuses the credentials -----------------------
tokens_before=$(tokens_fetched)
exec=$(trigger A-1002)
wait_for 60 settled "$exec"
ok $? "the second trigger's deliveries settle"
is "$(deliveries "$exec")" "apns sent,fcm sent,fcm sent,webpush sent" "the second trigger sends only to the valid devices"
is "$(records fcm "[.[] | select(.body | contains(\"$FCM_UNREG\"))] | length")" 1 "the unregistered token was not tried again"
is "$(records webpush '[.[] | select(.subscription == "gone")] | length')" 1 "the gone subscription was not tried again"
is "$(tokens_fetched)" "$tokens_before" "fcm: the access token is reused by later sends (no new token request)"
apns_tokens=$(records apns '[.[] | .headers.authorization] | unique | length')
is "$apns_tokens" 1 "apns: the provider token is reused, not minted per request (Apple refuses frequent updates)"
is "$(received webpush A-1002 '.subscription == "live"')" 1 "webpush: the live subscription got the second push"

# --- 3. retries ----------------------------------------------------------------------------
# attempt_classes EXEC PROVIDER: the error classes of the provider's attempts (token fetches left out).
attempt_classes() {
    sql "SELECT string_agg(a.error_class, ',' ORDER BY a.id) FROM notiflow.delivery_attempts a
           JOIN notiflow.deliveries d ON d.id = a.delivery_id
          WHERE d.execution_id = $1 AND d.provider = '$2' AND a.error_class <> 'again'"
}
double POST script '{"provider": "fcm", "responses": [{"status": 503}]}' >/dev/null
double POST script '{"provider": "apns", "responses": [{"status": 429}]}' >/dev/null
double POST script '{"provider": "webpush", "responses": [{"status": 429, "retry_after": 2}]}' >/dev/null
exec=$(trigger A-1003)
wait_for 60 settled "$exec"
is "$(deliveries "$exec")" "apns sent,fcm sent,fcm sent,webpush sent" "after scripted 503/429 answers every delivery is sent"
is "$(attempt_classes "$exec" fcm | tr ',' '\n' | sort | paste -sd,)" "retry,sent,sent" "fcm: the 503 was retried"
is "$(attempt_classes "$exec" apns)" "retry,sent" "apns: the 429 TooManyRequests was retried"
is "$(attempt_classes "$exec" webpush)" "retry,sent" "webpush: the 429 was retried"
gap=$(records webpush '[.[] | select(.subscription == "live")] | .[-2:] | .[1].received_ms - .[0].received_ms')
ok $([ "${gap:-0}" -ge 1900 ]; echo $?) "webpush: Retry-After: 2 is respected over a 100 ms backoff (gap ${gap} ms)"

# --- 4. an access token that stops working is fetched again --------------------------------------
tokens_before=$(tokens_fetched)
double POST revoke_tokens >/dev/null
exec=$(trigger A-1004)
wait_for 60 settled "$exec"
is "$(deliveries "$exec")" "apns sent,fcm sent,fcm sent,webpush sent" "after FCM refuses the access token (401) the deliveries are still sent"
is "$(($(tokens_fetched) - tokens_before))" 1 "fcm: one new access token was fetched for both sends"
is "$(received fcm A-1004 '.status == 200')" 2 "fcm: both tokens got the message with the new access token"
# The refused token had been taken before (it was revoked): not the provider's failure, so no
# attempt is counted (a counted 401 brought a delivery closer to its dead letter, and the circuit
# to opening, each time an access token ran out).
is "$(attempt_classes "$exec" fcm)" "sent,sent" "fcm: the refusal of a token taken before is not a counted attempt"
is "$(sql "SELECT string_agg(attempts::text, ',') FROM notiflow.deliveries WHERE execution_id = $exec AND provider = 'fcm'")" \
   "1,1" "fcm: each delivery counts one attempt"

# --- 4b. APNs: a provider token refused as expired -----------------------------------------------
# The first refusal is of a token Apple took before: a new token, sent again at once, no attempt
# counted.  The second is of that new token, which Apple never took: a counted attempt (a key that
# never works must run into max_attempts and fall back, not loop).
double POST script '{"provider": "apns", "responses": [{"status": 403, "error": "ExpiredProviderToken"},
                                                      {"status": 403, "error": "ExpiredProviderToken"}]}' >/dev/null
exec=$(trigger A-1014)
wait_for 60 settled "$exec"
is "$(status_of "$exec" "$APNS_DEV")" sent "apns: sent after two ExpiredProviderToken answers"
is "$(attempt_classes "$exec" apns)" "retry,sent" "apns: only the refusal of a token never taken is a counted attempt"
is "$(sql "SELECT count(*) FROM notiflow.delivery_attempts a JOIN notiflow.deliveries d ON d.id = a.delivery_id
             WHERE d.execution_id = $exec AND d.provider = 'apns' AND a.error_class = 'again'
               AND a.error = 'HTTP 403 ExpiredProviderToken'")" 1 "apns: the first refusal is logged as sent again"
is "$(sql "SELECT attempts FROM notiflow.deliveries WHERE execution_id = $exec AND provider = 'apns'")" 2 \
   "apns: the delivery counts two attempts"
is "$(records apns '[.[] | select(.body | test("A-1014")) | .headers.authorization] | [length, (unique | length), .[1] == .[2]]')" \
   "[3,3,false]" "apns: each refusal retired the token it carried: three requests, three tokens"

# --- 5. a key replaced in the provider's config is used at once ----------------------------------
# The cached provider token was keyed by provider, team and key id only: a new .p8 under the same
# key id went unused for up to 50 minutes (here the double knows only the first key, so the new
# one's token is refused, which shows it is the one sent).
read -r _ _ <<<"$(p256 apns_other)"
sql "UPDATE notiflow.providers SET config = config || jsonb_build_object('private_key', '$(q "$(cat "$WORK/apns_other.pem")")')
      WHERE name = 'apns'" >/dev/null
exec=$(trigger A-1005)
wait_for 60 settled "$exec"
is "$(status_of "$exec" "$APNS_DEV")" failed "apns: after the key is replaced, a token signed with the new key is sent"
is "$(sql "SELECT a.error FROM notiflow.delivery_attempts a JOIN notiflow.deliveries d ON d.id = a.delivery_id
             WHERE d.execution_id = $exec AND d.provider = 'apns'")" "HTTP 403 InvalidProviderToken" \
   "apns: (the double, which knows only the first key, refuses it)"
# a key that is no key (put_provider refuses one; a direct UPDATE does not): the attempt's error
# names the config field, as put_provider's does
sql "UPDATE notiflow.providers SET config = config || '{\"private_key\": \"not a key\"}' WHERE name = 'apns'" >/dev/null
exec=$(trigger A-1015)
apns_attempted() { [ "$(sql "SELECT count(*) FROM notiflow.delivery_attempts a JOIN notiflow.deliveries d ON d.id = a.delivery_id
                              WHERE d.execution_id = $1 AND d.provider = 'apns'")" -gt 0 ]; }
wait_for 60 apns_attempted "$exec"
err=$(sql "SELECT a.error FROM notiflow.delivery_attempts a JOIN notiflow.deliveries d ON d.id = a.delivery_id
            WHERE d.execution_id = $exec AND d.provider = 'apns' ORDER BY a.id LIMIT 1")
ok "$([[ "$err" == "invalid ES256 signing key: config.private_key: "* ]]; echo $?)" \
   "apns: a bad signing key's error names config.private_key"
[[ "$err" == "invalid ES256 signing key: config.private_key: "* ]] || echo "#   got: '$err'"
sql "UPDATE notiflow.providers SET config = '$(q "$APNS_CONFIG")' WHERE name = 'apns'" >/dev/null
exec=$(trigger A-1006)
wait_for 60 settled "$exec"
is "$(status_of "$exec" "$APNS_DEV")" sent "apns: with the first key back, its token is sent again"

# --- 6. a disabled provider's queued push falls back to another provider of its kind ----------------
# Its kind was not passed on: push and chat fall back only within a kind, so such a delivery found
# no provider and became a dead letter.
sql "SELECT notiflow.put_provider('fcm-backup', 'push', 'fcm', '$(q "$FCM_CONFIG")', 200)" >/dev/null
exec=$(sql "BEGIN;
            SELECT notiflow.trigger('shipped', '{\"order_id\": \"A-1007\"}', '\"ann\"');
            UPDATE notiflow.providers SET enabled = false WHERE name = 'fcm';
            COMMIT;" | head -1)
wait_for 60 settled "$exec"
is "$(sql "SELECT string_agg(DISTINCT provider || ' ' || status, ',') FROM notiflow.deliveries
             WHERE execution_id = $exec AND strpos(recipient, '$FCM_A') > 0")" "fcm-backup sent" \
   "a push queued for a provider disabled meanwhile is sent by another provider of its kind"
is "$(sql "SELECT count(*) FROM notiflow.dead_letters WHERE details ->> 'execution_id' = '$exec'")" 0 "no dead letter"
sql "UPDATE notiflow.providers SET enabled = true WHERE name = 'fcm'; UPDATE notiflow.providers SET enabled = false WHERE name = 'fcm-backup'" >/dev/null

# --- 7. a token request takes none of the provider's rate --------------------------------------
# A provider limited to one request every 25 s, with no access token yet: the delivery's first
# request is the token request, to Google's token endpoint, not FCM's.  The send that follows goes
# at once; it waited 25 s for the token the token request had taken.
sql "SELECT notiflow.put_provider('fcm-slow', 'push', 'fcm', '$(q "$(jq -c '. + {rate_per_second: 0.04}' <<<"$FCM_CONFIG")")', 300);
     UPDATE notiflow.providers SET enabled = false WHERE name = 'fcm';
     SELECT notiflow.put_subscriber('bob', '$(q "$(jq -nc --arg a "$FCM_A" '{push: {fcm: [$a]}}')")')" >/dev/null
tokens_before=$(tokens_fetched)
exec=$(sql "SELECT notiflow.trigger('shipped', '{\"order_id\": \"A-1008\"}', '\"bob\"')")
wait_for 10 settled "$exec"
ok $? "fcm: with one request every 25 s, the push after the token request is sent within 10 s"
is "$(deliveries "$exec")" "fcm-slow sent" "fcm: sent by the rate-limited provider"
is "$(($(tokens_fetched) - tokens_before))" 1 "fcm: after a token request of its own"
sql "UPDATE notiflow.providers SET enabled = true WHERE name = 'fcm'; UPDATE notiflow.providers SET enabled = false WHERE name = 'fcm-slow'" >/dev/null

crashes=$(grep -c 'terminated by signal' "$CLUSTER_DIR/server.log")
is "$crashes" 0 "no server process crashed$(grep -m1 -A1 'terminated by signal' "$CLUSTER_DIR/server.log" | sed 's/^.*UTC \[[0-9]*\] /: /' | tr '\n' ' ')"

done_testing
