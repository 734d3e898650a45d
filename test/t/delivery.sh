#!/usr/bin/env bash
# test/t/delivery.sh — the delivery workers end to end, in a cluster started
# with shared_preload_libraries = 'notiflow', against the provider doubles
# (test/doubles): every provider's real request, retries, Retry-After,
# fallback, dead letters and replay, the circuit breaker, rate limiting, a
# dispatcher killed (or stopped) with deliveries in flight, SIGHUP reload, DROP DATABASE.
set -uo pipefail
cd "$(dirname "$0")/../.."
source test/lib/tap.sh
source test/lib/cluster.sh

CREDS=test/doubles/credentials.json
cred() { jq -r "$1" "$CREDS"; }
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    [ -n "${NOTIFLOW_TEST_LOGS:-}" ] && [ -n "${CLUSTER_DIR:-}" ] && cp "$CLUSTER_DIR/server.log" "$NOTIFLOW_TEST_LOGS/delivery-server.log"
    cluster_stop
    rm -rf "$WORK"
}
trap cleanup EXIT

# --- the doubles ------------------------------------------------------------------
make -s -C test/doubles >/dev/null || { echo "Bail out! cannot build the provider double"; exit 1; }
test/doubles/provider_double --config "$CREDS" --port 0 >"$WORK/http.out" 2>"$WORK/http.err" &
PIDS+=($!)
PY=python3
for candidate in ${PYTHON:-} /usr/bin/python3 python3; do
    if "$candidate" -c 'import aiosmtpd' 2>/dev/null; then PY=$candidate; break; fi
done
"$PY" test/doubles/smtp_double.py --config "$CREDS" --port 0 --out "$WORK/mail.jsonl" \
    --reject-rcpt '^gone@' --deny-relay '^elsewhere@' --sender-unknown '^unsent@' --plain-refusal '^plain@' \
    >"$WORK/smtp.out" 2>"$WORK/smtp.err" &
PIDS+=($!)
listening() { grep -qs 'listening on' "$1"; }
wait_for 20 listening "$WORK/http.out" && wait_for 20 listening "$WORK/smtp.out" ||
    { echo "Bail out! the doubles did not start"; cat "$WORK"/*.err; exit 1; }
HTTP_PORT=$(grep -o '[0-9]*$' "$WORK/http.out")
SMTP_PORT=$(grep -o '[0-9]*$' "$WORK/smtp.out")
DOUBLE=http://127.0.0.1:$HTTP_PORT
double() { curl -s -X "$1" "$DOUBLE/_double/$2" ${3:+-d "$3"}; }

# --- the cluster ------------------------------------------------------------------
DB=notiflow_delivery
cluster_start "shared_preload_libraries = 'notiflow'" "notiflow.database_name = '$DB'" \
    "notiflow.allow_private_urls = on" "notiflow.lease_time = '3s'" \
    "notiflow.circuit_failures = 3" "notiflow.circuit_cooldown = '2s'" "max_prepared_transactions = 2" >/dev/null ||
    { echo "Bail out! cluster did not start"; exit 1; }
psql -X -q -d postgres -c "CREATE DATABASE $DB" >/dev/null
sql() { psql -X -q -At -v ON_ERROR_STOP=1 -d $DB -c "$1"; }
sql_is() { [ "$(sql "$1" 2>/dev/null)" = "$2" ]; }
sql "CREATE EXTENSION notiflow" >/dev/null
dispatchers() { psql -X -qAt -d postgres -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'notiflow dispatcher'"; }
dispatcher_pid() { psql -X -qAt -d postgres -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'notiflow dispatcher'"; }
wait_for 30 sql_is "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'notiflow dispatcher' AND datname = '$DB'" 1
ok $? "a dispatcher runs in notiflow.database_name"
is "$(psql -X -qAt -d postgres -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'notiflow launcher'")" 1 \
   "the launcher shows in pg_stat_activity"

# --- providers, subscriber, workflows ---------------------------------------------------
sql "
SELECT notiflow.put_provider('smtp', 'email', 'smtp', jsonb_build_object('url', 'smtp://127.0.0.1:$SMTP_PORT',
       'username', '$(cred .smtp.username)', 'password', '$(cred .smtp.password)', 'from', 'Shop <shop@example.com>'), 0);
SELECT notiflow.put_provider('sendgrid', 'email', 'sendgrid', jsonb_build_object('api_key', '$(cred .sendgrid.api_key)',
       'from', 'shop@example.com', 'base_url', '$DOUBLE', 'backoff_min_ms', 100, 'backoff_max_ms', 300), 1);
SELECT notiflow.put_provider('mailgun', 'email', 'mailgun', jsonb_build_object('api_key', '$(cred .mailgun.api_key)',
       'domain', '$(cred .mailgun.domain)', 'from', 'shop@example.com', 'base_url', '$DOUBLE'), 2);
SELECT notiflow.put_provider('ses', 'email', 'ses', jsonb_build_object('access_key_id', '$(cred .aws.access_key_id)',
       'secret_access_key', '$(cred .aws.secret_access_key)', 'region', '$(cred .aws.region)',
       'from', 'shop@example.com', 'base_url', '$DOUBLE'), 3);
SELECT notiflow.put_provider('twilio', 'sms', 'twilio', jsonb_build_object('account_sid', '$(cred .twilio.account_sid)',
       'auth_token', '$(cred .twilio.auth_token)', 'from', '+15550001111', 'base_url', '$DOUBLE',
       'max_attempts', 1), 0);
SELECT notiflow.put_provider('sns', 'sms', 'sns', jsonb_build_object('access_key_id', '$(cred .aws.access_key_id)',
       'secret_access_key', '$(cred .aws.secret_access_key)', 'region', '$(cred .aws.region)', 'base_url', '$DOUBLE'), 1);
SELECT notiflow.put_provider('vonage', 'sms', 'vonage', jsonb_build_object('api_key', '$(cred .vonage.api_key)',
       'api_secret', '$(cred .vonage.api_secret)', 'from', 'Shop', 'base_url', '$DOUBLE'), 2);
SELECT notiflow.put_provider('slack', 'chat', 'slack', jsonb_build_object('token', '$(cred .slack.bot_token)',
       'channel', '#orders', 'base_url', '$DOUBLE'), 0);
SELECT notiflow.put_provider('discord', 'chat', 'discord', jsonb_build_object('webhook_url',
       '$DOUBLE/api/webhooks/$(cred .discord.webhook_id)/$(cred .discord.webhook_token)'), 1);
SELECT notiflow.put_provider('teams', 'chat', 'teams', jsonb_build_object('webhook_url', '$DOUBLE$(cred .teams.connector_path)'), 2);
SELECT notiflow.put_subscriber('ann', '{\"name\": \"Ann\", \"email\": \"ann@example.com\", \"phone\": \"+15551234567\"}');
SELECT notiflow.put_workflow('mail', '{\"nodes\": [{\"id\": \"t\", \"type\": \"trigger\"},
       {\"id\": \"m\", \"type\": \"email\", \"subject\": \"Order {{payload.marker}}\", \"text\": \"Hello {{recipient.name}} {{payload.marker}}\",
        \"html\": \"<p>Hello {{payload.marker}}</p>\"}], \"edges\": [{\"from\": \"t\", \"to\": \"m\"}]}');
SELECT notiflow.put_workflow('text', '{\"nodes\": [{\"id\": \"t\", \"type\": \"trigger\"},
       {\"id\": \"s\", \"type\": \"sms\", \"text\": \"Code {{payload.marker}}\"}], \"edges\": [{\"from\": \"t\", \"to\": \"s\"}]}');
SELECT notiflow.put_workflow('chat', '{\"nodes\": [{\"id\": \"t\", \"type\": \"trigger\"},
       {\"id\": \"c\", \"type\": \"chat\", \"text\": \"Order {{payload.marker}}\"}], \"edges\": [{\"from\": \"t\", \"to\": \"c\"}]}');
" >/dev/null || { echo "Bail out! setup failed"; exit 1; }
# the webhook provider and workflow (set up again after DROP EXTENSION, section 11)
put_hook() {
    sql "SELECT notiflow.put_provider('hooks', 'webhook', 'webhook', jsonb_build_object('url', '$DOUBLE/hooks/orders',
           'secret', '$(cred .webhook.secret)'), 0);
         SELECT notiflow.put_workflow('hook', '{\"nodes\": [{\"id\": \"t\", \"type\": \"trigger\"}, {\"id\": \"h\", \"type\": \"webhook\"}],
           \"edges\": [{\"from\": \"t\", \"to\": \"h\"}]}')" >/dev/null
}
put_hook || { echo "Bail out! setup failed"; exit 1; }

# only: enables only provider $2 of channel $1.
only() { sql "UPDATE notiflow.providers SET enabled = (name = '$2') WHERE channel = '$1'" >/dev/null; }
# trigger WORKFLOW MARKER: prints the execution id.
trigger() { sql "SELECT notiflow.trigger('$1', '{\"marker\": \"$2\"}', '\"ann\"')"; }
delivery_of() { sql "SELECT id FROM notiflow.deliveries WHERE execution_id = $1"; }
status_is() { sql_is "SELECT string_agg(status, ',' ORDER BY id) FROM notiflow.deliveries WHERE execution_id = $1" "$2"; }
# last_record PROVIDER: the double's last record of that provider.
last_record() { double GET "requests?provider=$1" | jq -c 'last'; }
# parked N: at least N requests are held by the double (a scripted delay).
parked() { [ "$(double GET stats | jq .delayed_now)" -ge "$1" ]; }
# hooks_held N DELAY_MS MARKER: N webhook deliveries marked MARKER, each answer held DELAY_MS by the
# double (whose record is emptied first).
hooks_held() {
    double POST reset >/dev/null
    double POST script "{\"provider\": \"webhook\", \"responses\": [{\"delay_ms\": $2}], \"repeat\": true}" >/dev/null
    sql "SELECT count(*) FROM notiflow.trigger_many('hook', (SELECT jsonb_agg('ann'::text) FROM generate_series(1, $1)),
         '{\"marker\": \"$3\"}')" >/dev/null
}
# marked_sent MARKER N: N deliveries of executions marked MARKER are sent.
marked_sent() { sql_is "SELECT count(*) FILTER (WHERE d.status = 'sent') FROM notiflow.deliveries d JOIN notiflow.executions e ON e.id = d.execution_id WHERE e.payload ->> 'marker' = '$1'" "$2"; }

# --- 1. every provider's real request -------------------------------------------------------
check_http_provider() {
    local channel=$1 provider=$2 record=$3 workflow=$4 path_re=$5
    local marker="M${provider}$RANDOM" exec rec
    only "$channel" "$provider"
    exec=$(trigger "$workflow" "$marker")
    wait_for 20 status_is "$exec" sent
    ok $? "$provider: the delivery is sent"
    rec=$(last_record "$record")
    is "$(jq -r .verdict <<<"$rec")" accepted "$provider: the double accepted the request (auth and body shape checked)"
    ok $([[ "$(jq -r .path <<<"$rec")" =~ $path_re ]]; echo $?) "$provider: it went to the provider's path $(jq -r .path <<<"$rec")"
    ok $(jq -r '.body // ""' <<<"$rec" | grep -q "$marker"; echo $?) "$provider: the body carries the rendered content"
    is "$(sql "SELECT provider_message_id IS NOT NULL OR '$provider' IN ('hooks', 'teams') FROM notiflow.deliveries WHERE execution_id = $exec")" t \
       "$provider: the provider's message id is recorded"
}
check_http_provider email sendgrid sendgrid mail '^/v3/mail/send$'
check_http_provider email mailgun mailgun mail '^/v3/mg.example.test/messages$'
check_http_provider email ses ses mail '^/v2/email/outbound-emails$'
check_http_provider sms twilio twilio text '^/2010-04-01/Accounts/AC0+/Messages.json$'
check_http_provider sms sns sns text '^/$'
check_http_provider sms vonage vonage text '^/sms/json$'
check_http_provider chat slack slack chat '^/api/chat.postMessage$'
check_http_provider chat discord discord chat '^/api/webhooks/'
check_http_provider chat teams teams chat '^/webhookb2/'
check_http_provider webhook hooks webhook hook '^/hooks/orders$'
is "$(last_record twilio | jq -r '.form.To')" "+15551234567" "twilio: To is the subscriber's phone"
is "$(last_record sendgrid | jq -r '.body | fromjson | .personalizations[0].to[0].email')" "ann@example.com" \
   "sendgrid: the recipient is the subscriber's email"

only email smtp
exec=$(trigger mail Msmtp42)
wait_for 20 status_is "$exec" sent
ok $? "smtp: the delivery is sent"
mail=$(grep Msmtp42 "$WORK/mail.jsonl" | tail -1)
is "$(jq -r '.rcpt_tos[0]' <<<"$mail")" "ann@example.com" "smtp: the envelope recipient is the subscriber"
is "$(jq -r '.auth_user' <<<"$mail")" "$(cred .smtp.username)" "smtp: it authenticated"
is "$(jq -r '.subject' <<<"$mail")" "Order Msmtp42" "smtp: the subject is rendered"
ok $(jq -r '.html' <<<"$mail" | grep -q '<p>Hello Msmtp42</p>'; echo $?) "smtp: the message has the HTML part"
ok $(jq -r '.text' <<<"$mail" | grep -q 'Hello Ann Msmtp42'; echo $?) "smtp: and the text part"
ok $([[ "$(jq -r '.message_id' <<<"$mail")" =~ ^\<notiflow\.[0-9]+\.[0-9a-f]{16}@example\.com\>$ ]]; echo $?) \
   "smtp: the message has a Message-ID at the sender's domain ($(jq -r '.message_id' <<<"$mail"))"
# a display name with a comma and accents, and a subject longer than a header line: encoded words
# (RFC 2047), folded, which the receiver decodes back
sql "UPDATE notiflow.providers SET config = config || '{\"from\": \"Café Crème, Paris <shop@example.com>\"}' WHERE name = 'smtp'" >/dev/null
long="Ünïcödé $(printf 'x%.0s' $(seq 1 90)) ✓"
exec=$(trigger mail "$long")
wait_for 20 status_is "$exec" sent
ok $? "smtp: a message with a long non-ASCII subject and sender name is sent"
mail_long=$(grep -F "$long" "$WORK/mail.jsonl" | tail -1)
is "$(jq -r '.subject' <<<"$mail_long")" "Order $long" "smtp: its subject decodes back whole"
is "$(jq -r '.from' <<<"$mail_long")" '"Café Crème, Paris" <shop@example.com>' "smtp: its sender's name too (quoted: it has a comma)"
# a quoted name with quoted pairs is quoted once; a name given as encoded words is sent as it is
# (quoted, a receiver would not decode it)
n_from=0
for from in '"Shop \"Best\" Ltd" <shop@example.com>' '=?UTF-8?B?Q2Fmw6kgQmxldQ==?= <shop@example.com>'; do
    sql "UPDATE notiflow.providers SET config = config || jsonb_build_object('from', \$f\$$from\$f\$) WHERE name = 'smtp'" >/dev/null
    n_from=$((n_from + 1))
    exec=$(trigger mail "from$n_from")
    wait_for 20 status_is "$exec" sent || echo "# not sent: $from"
done
is "$(grep -E '"subject": "Order from[12]"' "$WORK/mail.jsonl" | jq -r '.from' | paste -sd '|')" \
   '"Shop \"Best\" Ltd" <shop@example.com>|Café Bleu <shop@example.com>' "smtp: a sender's name given quoted or encoded is kept"
sql "UPDATE notiflow.providers SET config = config || '{\"from\": \"Shop <shop@example.com>\"}' WHERE name = 'smtp'" >/dev/null
mail_date=$(jq -r '.headers.Date' <<<"$mail")
ok $([[ "$mail_date" =~ ^(Mon|Tue|Wed|Thu|Fri|Sat|Sun),\ [0-9]{2}\ [A-Z][a-z]{2}\ [0-9]{4}\ [0-9:]{8}\ \+0000$ ]] &&
     [ $(( $(date +%s) - $(date -d "$mail_date" +%s) )) -lt 300 ]; echo $?) "smtp: and a Date of now ($mail_date)"
# Refusals at RCPT TO: "550 5.1.1" (user unknown) is the address's fault, "550 5.7.1" (relay
# denied) the provider's, which servers also answer at RCPT TO: only the first marks the address
# invalid (both did)
# refused_pair A B: subscribers A and B (A@example.com, B@example.com) are each sent the mail workflow;
# waits for both deliveries to fail, and sets REFUSED_A and REFUSED_B to their executions.
refused_pair() {
    sql "SELECT notiflow.put_subscriber('$1', '{\"email\": \"$1@example.com\"}');
         SELECT notiflow.put_subscriber('$2', '{\"email\": \"$2@example.com\"}')" >/dev/null
    REFUSED_A=$(sql "SELECT notiflow.trigger('mail', '{\"marker\": \"rcpt\"}', '\"$1\"')")
    REFUSED_B=$(sql "SELECT notiflow.trigger('mail', '{\"marker\": \"rcpt\"}', '\"$2\"')")
    wait_for 20 status_is "$REFUSED_A" failed && wait_for 20 status_is "$REFUSED_B" failed
}
refused_pair gone elsewhere
ok $? "smtp: both refused deliveries fail (smtp is the only email provider here)"
gone=$REFUSED_A elsewhere=$REFUSED_B
is "$(sql "SELECT string_agg(a.error_class || ' ' || a.error, ' | ' ORDER BY d.execution_id) FROM notiflow.delivery_attempts a
             JOIN notiflow.deliveries d ON d.id = a.delivery_id WHERE d.execution_id IN ($gone, $elsewhere)")" \
   "invalid_recipient SMTP reply 550: 550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown | permanent SMTP reply 550: 550 5.7.1 <elsewhere@example.com>: Relay access denied" \
   "smtp: 5.1.1 is an invalid recipient, 5.7.1 a permanent failure, each with the server's reply"
is "$(sql "SELECT string_agg(id || ':' || array_length(invalid_addresses, 1)::text, ',' ORDER BY id) FROM notiflow.subscribers
             WHERE id IN ('gone', 'elsewhere')")" "gone:1" "smtp: only the unknown user's address is marked invalid"
# "550 5.1.0 <from>: Sender address rejected" (Postfix refuses an unknown sender at RCPT TO) is the
# provider's, and "550 relay not permitted" (no enhanced status code) may be either: neither marks
# the address invalid (both did)
refused_pair unsent plain
ok $? "smtp: a refused sender and a refusal without an enhanced code fail the deliveries"
unsent=$REFUSED_A plain=$REFUSED_B
is "$(sql "SELECT string_agg(a.error_class, ' | ' ORDER BY d.execution_id) FROM notiflow.delivery_attempts a
             JOIN notiflow.deliveries d ON d.id = a.delivery_id WHERE d.execution_id IN ($unsent, $plain)")" \
   "permanent | permanent" "smtp: both are permanent failures (falling back), not invalid recipients"
is "$(sql "SELECT count(*) FROM notiflow.subscribers WHERE id IN ('unsent', 'plain') AND cardinality(invalid_addresses) > 0")" 0 \
   "smtp: neither address is marked invalid"
# An address a node's "to" gave is not the subscriber's: its refusal as unknown fails the delivery
# but marks nothing on the subscriber (it was added to their invalid addresses)
sql "SELECT notiflow.put_subscriber('carl', '{\"email\": \"carl@example.com\"}');
     SELECT notiflow.put_workflow('mail_to', '{\"nodes\": [{\"id\": \"t\", \"type\": \"trigger\"},
       {\"id\": \"m\", \"type\": \"email\", \"to\": \"{{payload.cc}}\", \"subject\": \"Copy\", \"text\": \"Copy\"}],
       \"edges\": [{\"from\": \"t\", \"to\": \"m\"}]}')" >/dev/null
exec=$(sql "SELECT notiflow.trigger('mail_to', '{\"cc\": \"gone@example.com\"}', '\"carl\"')")
wait_for 20 status_is "$exec" failed
ok $? "smtp: a delivery to an address given by \"to\" and refused as unknown fails"
is "$(sql "SELECT error_class FROM notiflow.delivery_attempts WHERE delivery_id = $(delivery_of "$exec")")" invalid_recipient \
   "smtp: (an invalid recipient)"
is "$(sql "SELECT cardinality(invalid_addresses) FROM notiflow.subscribers WHERE id = 'carl'")" 0 \
   "smtp: the subscriber's invalid addresses stay empty"

# --- 2. retry then success; 3. Retry-After ------------------------------------------------
only email sendgrid
double POST script '{"provider": "sendgrid", "responses": [{"status": 503}]}' >/dev/null
exec=$(trigger mail retry1)
wait_for 20 status_is "$exec" sent
ok $? "a 503 is retried and then sent"
is "$(sql "SELECT string_agg(error_class, ',' ORDER BY id) FROM notiflow.delivery_attempts WHERE delivery_id = $(delivery_of "$exec")")" \
   "retry,sent" "both attempts are recorded with their class"
is "$(sql "SELECT attempts FROM notiflow.deliveries WHERE execution_id = $exec")" 2 "the delivery counts two attempts"
# the dispatcher builds the finished step's summary from the send itself: it must equal the table's
is "$(sql "SELECT s.output = jsonb_build_object('status', 'sent', 'deliveries',
               (SELECT jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                           'id', d.id, 'status', d.status, 'provider', d.provider, 'recipient', d.recipient,
                           'attempts', d.attempts, 'provider_message_id', d.provider_message_id,
                           'error', d.last_error)) ORDER BY d.id)
                  FROM notiflow.deliveries d WHERE d.execution_id = $exec))
             FROM notiflow.execution_steps s WHERE s.execution_id = $exec AND s.node_type = 'email'")" t \
   "the sent step's summary is what the deliveries say (error of the first attempt, two attempts)"

double POST script '{"provider": "sendgrid", "responses": [{"status": 429, "retry_after": 2}]}' >/dev/null
exec=$(trigger mail retry2)
wait_for 30 status_is "$exec" sent
ok $? "a 429 is retried and then sent"
gap=$(double GET "requests?provider=sendgrid" | jq '[.[-2:][] | .received_ms] | .[1] - .[0]')
ok $([ "$gap" -ge 1900 ]; echo $?) "Retry-After: 2 is respected over a 100 ms backoff (gap ${gap} ms)"
# Retry-After as an HTTP date (RFC 9110) four seconds ahead: a wait of at least two even when the
# request comes a second late (the date has whole seconds); it was taken for 1 s
double POST script "{\"provider\": \"sendgrid\", \"responses\": [{\"status\": 503,
    \"headers\": {\"Retry-After\": \"$(LC_ALL=C TZ=GMT date -d '+4 seconds' '+%a, %d %b %Y %H:%M:%S GMT')\"}}]}" >/dev/null
exec=$(trigger mail retry-date)
wait_for 30 status_is "$exec" sent
ok $? "a 503 with Retry-After as a date is retried and then sent"
gap=$(double GET "requests?provider=sendgrid" | jq '[.[-2:][] | .received_ms] | .[1] - .[0]')
ok $([ "$gap" -ge 1900 ]; echo $?) "Retry-After as a date four seconds ahead is respected (gap ${gap} ms)"
# An answer that is not UTF-8 (Latin-1 here) is logged with '?' for the bytes that are no character
double POST script '{"provider": "sendgrid", "responses": [{"status": 400, "content_type": "text/plain; charset=iso-8859-1",
    "body_base64": "cmVmdXPpOiBjYWbp"}]}' >/dev/null
exec=$(trigger mail latin1)
wait_for 30 status_is "$exec" failed
ok $? "a 400 in Latin-1 fails the delivery (sendgrid is the only email provider here)"
is "$(sql "SELECT a.response_excerpt || ' / ' || a.error FROM notiflow.delivery_attempts a JOIN notiflow.deliveries d ON d.id = a.delivery_id
             WHERE d.execution_id = $exec AND a.error_class = 'permanent'")" "refus?: caf? / HTTP 400: refus?: caf?" \
   "the attempt's excerpt and error keep the text, with '?' for the bytes that are not UTF-8"
# Slack's {"ok": false} without an error code is no success either
only chat slack
double POST script '{"provider": "slack", "responses": [{"body": {"ok": false}}]}' >/dev/null
exec=$(trigger chat slack-not-ok)
wait_for 30 status_is "$exec" failed
ok $? "slack: {\"ok\": false} with no error code fails the delivery (it was taken as sent)"
is "$(sql "SELECT last_error FROM notiflow.deliveries WHERE execution_id = $exec")" "slack error unknown_error (HTTP 200)" \
   "with Slack's answer as the error"
only chat teams

# --- 4. permanent error → fallback; 5. dead letter → replay ------------------------------------
sql "UPDATE notiflow.providers SET enabled = name IN ('sendgrid', 'mailgun') WHERE channel = 'email'" >/dev/null
double POST script '{"provider": "sendgrid", "responses": [{"status": 401}]}' >/dev/null
exec=$(trigger mail fallback1)
wait_for 20 status_is "$exec" sent
ok $? "a permanent error falls back to the next provider and is sent"
is "$(sql "SELECT provider || ' after ' || array_to_string(tried_providers, ',') FROM notiflow.deliveries WHERE execution_id = $exec")" \
   "mailgun after sendgrid" "the delivery went to mailgun after sendgrid"

double POST script '{"provider": "sendgrid", "responses": [{"status": 401}]}' >/dev/null
double POST script '{"provider": "mailgun", "responses": [{"status": 401}]}' >/dev/null
exec=$(trigger mail dead1)
wait_for 20 status_is "$exec" failed
ok $? "when every provider fails the delivery fails"
is "$(sql "SELECT status FROM notiflow.executions WHERE id = $exec")" failed "and its execution resumes (and fails: no fallback edge)"
dl=$(sql "SELECT id FROM notiflow.dead_letters WHERE reference = '$(delivery_of "$exec")'")
ok $([ -n "$dl" ]; echo $?) "a dead letter is filed"
is "$(sql "SELECT details -> 'providers' FROM notiflow.dead_letters WHERE id = ${dl:-0}")" '["sendgrid", "mailgun"]' \
   "the dead letter names the providers tried"
ok $(sql "SELECT convert_from(payload, 'UTF8') FROM notiflow.dead_letters WHERE id = ${dl:-0}" | grep -q dead1; echo $?) \
   "the dead letter keeps the request body"
# a late answer to an earlier attempt may have left a message id: the replay's own replaces it
sql "UPDATE notiflow.deliveries SET provider_message_id = 'late-answer' WHERE execution_id = $exec" >/dev/null
# fallbacks_metric PROVIDER: notiflow_delivery_fallbacks_total of the provider in metrics()
fallbacks_metric() {
    sql "SELECT coalesce(sum(split_part(line, ' ', 2)::numeric), 0) FROM regexp_split_to_table(notiflow.metrics(), E'\n') line
          WHERE line LIKE 'notiflow_delivery_fallbacks_total{provider=\"$1\"} %'"
}
fallbacks_before=$(fallbacks_metric sendgrid)
sql "SELECT notiflow.replay_dead_letter(${dl:-0})" >/dev/null
wait_for 20 status_is "$exec" sent
ok $? "replay_dead_letter sends it again"
# (the replay may fall back from sendgrid again, its circuit being open after the 401s)
replay_fallbacks=$(sql "SELECT cardinality(tried_providers) FROM notiflow.deliveries WHERE execution_id = $exec")
is "$(fallbacks_metric sendgrid)" "$((fallbacks_before + ${replay_fallbacks:-0}))" \
   "the fallbacks counter keeps the first round's fallback from sendgrid and adds the replay's (a counter never goes down)"
is "$(sql "SELECT left_providers = '{sendgrid}' || tried_providers FROM notiflow.deliveries WHERE execution_id = $exec")" \
   t "the replay tried the providers afresh; left_providers keeps the first round's fallback before the replay's"
is "$(sql "SELECT provider_message_id IS DISTINCT FROM 'late-answer' FROM notiflow.deliveries WHERE execution_id = $exec")" t \
   "the delivery carries the replay's message id"
is "$(sql "SELECT replayed_at IS NOT NULL FROM notiflow.dead_letters WHERE id = ${dl:-0}")" t "the dead letter is marked replayed"
is "$(sql "SELECT bool_and(n > 0) FROM (SELECT sum(sent) AS n FROM notiflow.worker_status UNION ALL
                                            SELECT sum(retried) FROM notiflow.worker_status UNION ALL
                                            SELECT sum(failed) FROM notiflow.worker_status) c")" t \
   "worker_status has counted sends, retries and deliveries given up (each once its transaction committed)"
again=$(sql "SELECT notiflow.replay_dead_letter(${dl:-0})" 2>&1)
ok $(grep -q "was replayed already" <<<"$again"; echo $?) \
   "replaying it a second time is refused (the delivery was sent: it would go out twice)"

# A recipient who opted out (Twilio 21610) is rejected: the delivery fails without falling back
# to another SMS provider (they would text them all the same) and without a dead letter (a replay
# would go through the channel's first provider), the number stays valid (START undoes the
# opt-out), and the provider's circuit counts it as an answer, not a failure.
sql "UPDATE notiflow.providers SET enabled = name IN ('twilio', 'sns') WHERE channel = 'sms'" >/dev/null
double POST script '{"provider": "twilio", "responses": [{"status": 400, "body": {"code": 21610,
                    "message": "Attempt to send to unsubscribed recipient", "status": 400}}]}' >/dev/null
exec=$(trigger text optout)
wait_for 20 status_is "$exec" failed
ok $? "a recipient who opted out: the delivery fails"
is "$(sql "SELECT d.provider || ' tried=' || cardinality(d.tried_providers) || ' ' || a.error_class
             FROM notiflow.deliveries d JOIN notiflow.delivery_attempts a ON a.delivery_id = d.id WHERE d.execution_id = $exec")" \
   "twilio tried=0 rejected" "rejected by twilio, not sent through sns"
is "$(sql "SELECT coalesce('+15551234567' = ANY (invalid_addresses), false) FROM notiflow.subscribers WHERE id = 'ann'") $(sql "SELECT coalesce((SELECT consecutive_failures FROM notiflow.provider_circuits WHERE provider = 'twilio'), 0)") $(sql "SELECT count(*) FROM notiflow.dead_letters WHERE reference = '$(delivery_of "$exec")'")" \
   "f 0 0" "the number stays valid, the circuit counts no failure, no dead letter"
sql "UPDATE notiflow.providers SET enabled = true WHERE channel = 'sms'" >/dev/null

# --- 6. circuit breaker -------------------------------------------------------------------
only sms twilio
double POST script '{"provider": "twilio", "responses": [{"status": 503}, {"status": 503}, {"status": 503}]}' >/dev/null
for i in 1 2 3; do
    e=$(trigger text "circuit$i")
    wait_for 20 status_is "$e" failed
done
is "$(sql "SELECT state FROM notiflow.provider_circuit_state WHERE provider = 'twilio'")" open \
   "three consecutive failures open the circuit"
e=$(trigger text circuit4)
wait_for 20 status_is "$e" failed
is "$(sql "SELECT error_class FROM notiflow.delivery_attempts WHERE delivery_id = $(delivery_of "$e")")" circuit_open \
   "while open, deliveries are not sent to the provider"
sleep_until_cooldown() { sql_is "SELECT opened_at < now() - interval '2 seconds' FROM notiflow.provider_circuits WHERE provider = 'twilio'" t; }
wait_for 10 sleep_until_cooldown
# A claim that finds the circuit's row locked (by another dispatcher taking the probe or recording a
# verdict, or an operator's open transaction) leaves the probe to the holder and goes on.  It waited
# for the lock: its dispatcher sent nothing meanwhile, and two claims probing two providers in
# opposite orders deadlocked.
coproc HOLD { psql -X -q -At -d $DB; }
hold_pid=$HOLD_PID
echo "BEGIN; SELECT 'circuit held' FROM notiflow.provider_circuits WHERE provider = 'twilio' FOR UPDATE;" >&"${HOLD[1]}"
read -r -t 20 line <&"${HOLD[0]}"
is "$line" "circuit held" "another session holds the open circuit's row"
e=$(trigger text circuit5)
h=$(trigger hook circuit-hold)
wait_for 10 status_is "$h" sent
ok $? "while the row is held, the dispatcher sends other providers' deliveries"
is "$(sql "SELECT status || ' ' || attempts || ' ' || (updated_at > created_at) FROM notiflow.deliveries WHERE execution_id = $e")" \
   "queued 0 true" "and the delivery that would probe was deferred, with no attempt counted"
echo "ROLLBACK; \\q" >&"${HOLD[1]}"
wait "$hold_pid" 2>/dev/null
wait_for 20 status_is "$e" sent
ok $? "after the cooldown a probe goes through"
is "$(sql "SELECT state FROM notiflow.provider_circuit_state WHERE provider = 'twilio'")" closed "and the circuit closes"

# --- 7. rate limit -----------------------------------------------------------------------
only sms vonage
sql "UPDATE notiflow.providers SET config = config || '{\"rate_per_second\": 5}' WHERE name = 'vonage'" >/dev/null
first=$(double GET "requests?provider=vonage" | jq length)
claims_before=$(sql "SELECT sum(claimed) FROM notiflow.worker_status")
sql "SELECT count(*) FROM notiflow.trigger_many('text', (SELECT jsonb_agg('ann'::text) FROM generate_series(1, 15)), '{\"marker\": \"rate\"}')" >/dev/null
vonage_done() { [ "$(double GET "requests?provider=vonage" | jq length)" -ge $((first + 15)) ]; }
wait_for 30 vonage_done
ok $? "all 15 rate-limited deliveries are sent"
spread=$(double GET "requests?provider=vonage" | jq "[.[$first:][] | .received_ms] | max - min")
ok $([ "$spread" -ge 1800 ]; echo $?) "rate_per_second 5 spreads 15 deliveries over ${spread} ms (>= 1800)"
# Deliveries beyond the rate are deferred to send times 1/rate apart, so each comes back about
# once; deferred all to the next token, the 10 left were claimed again at every token (about 70
# claims in all for 15 deliveries).
claims=$(( $(sql "SELECT sum(claimed) FROM notiflow.worker_status") - claims_before ))
ok $([ "$claims" -le 35 ]; echo $?) "the 15 deliveries were claimed $claims times (<= 35)"

# With two dispatchers the rate is still the provider's: one bucket in shared memory.  Each had
# rate/2 of its own, so one that claimed all of them sent at 2.5 a second.
psql -X -q -d postgres -c "ALTER SYSTEM SET notiflow.dispatch_workers = 2" -c "SELECT pg_reload_conf()" >/dev/null
wait_for 30 sql_is "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'notiflow dispatcher'" 2
ok $? "two dispatchers run"
first=$(double GET "requests?provider=vonage" | jq length)
sql "SELECT count(*) FROM notiflow.trigger_many('text', (SELECT jsonb_agg('ann'::text) FROM generate_series(1, 20)), '{\"marker\": \"rate2\"}')" >/dev/null
vonage_done() { [ "$(double GET "requests?provider=vonage" | jq length)" -ge $((first + 20)) ]; }
wait_for 30 vonage_done
ok $? "all 20 rate-limited deliveries are sent by two dispatchers"
times=$(double GET "requests?provider=vonage" | jq -c "[.[$first:][] | .received_ms] | sort")
spread=$(jq '.[-1] - .[0]' <<<"$times")
# a full bucket (5) at once, then 5 a second: 3 s for 20; at most 10 in any second
busiest=$(jq '[. as $t | $t[] as $a | [$t[] | select(. >= $a and . < $a + 1000)] | length] | max' <<<"$times")
ok $([ "$spread" -ge 2500 ] && [ "$spread" -le 5500 ]; echo $?) \
   "rate_per_second 5 across two dispatchers spreads 20 deliveries over ${spread} ms (2500..5500)"
ok $([ "$busiest" -le 10 ]; echo $?) "at most 10 in any second: $busiest"
psql -X -q -d postgres -c "ALTER SYSTEM RESET notiflow.dispatch_workers" -c "SELECT pg_reload_conf()" >/dev/null
wait_for 30 sql_is "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'notiflow dispatcher'" 1
ok $? "back to one dispatcher"

# A subscriber's chat address the provider says is gone (Discord's unknown webhook) is marked
# invalid, and the next chat node is skipped: it was sent to that address again and again
only chat discord
sql "SELECT notiflow.put_subscriber('dora', jsonb_build_object('chat', jsonb_build_object('discord', '$DOUBLE/api/webhooks/1/gone')))" >/dev/null
e=$(sql "SELECT notiflow.trigger('chat', '{\"marker\": \"gone1\"}', '\"dora\"')")
wait_for 20 status_is "$e" failed
ok $? "a discord delivery to an unknown webhook fails"
is "$(sql "SELECT array_to_string(invalid_addresses, ' ') FROM notiflow.subscribers WHERE id = 'dora'")" "$DOUBLE/api/webhooks/1/gone" \
   "and the subscriber's discord address is marked invalid"
requests_before=$(double GET "requests?provider=discord" | jq length)
e=$(sql "SELECT notiflow.trigger('chat', '{\"marker\": \"gone2\"}', '\"dora\"')")
wait_for 20 sql_is "SELECT status FROM notiflow.executions WHERE id = $e" completed
is "$(sql "SELECT s.status || ': ' || (s.output ->> 'reason') || ', ' || (SELECT count(*) FROM notiflow.deliveries d WHERE d.execution_id = $e)
             FROM notiflow.execution_steps s WHERE s.execution_id = $e AND s.node_id = 'c'")" \
   "skipped: recipient has no valid chat address, 0" "the next chat node is skipped, with no delivery"
is "$(double GET "requests?provider=discord" | jq length)" "$requests_before" "and nothing more reached discord"

# A delivery that takes a token and sends nothing (its request cannot be built) gives the token
# back.  At one request every 25 s, the next delivery then goes at once; it waited 25 s.
sql "UPDATE notiflow.providers SET config = config || '{\"rate_per_second\": 0.04}' WHERE name = 'discord'" >/dev/null
e=$(sql "SELECT notiflow.trigger('chat', '{\"marker\": \"refund1\"}', '{\"chat\": {\"discord\": \"not-a-url\"}}')")
wait_for 20 status_is "$e" failed
ok $? "a discord delivery to an address that is not a URL fails without a request"
e=$(trigger chat refund2)
wait_for 10 status_is "$e" sent
ok $? "the next discord delivery takes the token the failed one gave back: sent within 10 s (one token every 25 s)"
sql "UPDATE notiflow.providers SET config = config - 'rate_per_second' WHERE name = 'discord'" >/dev/null

# --- 7b. an execution that cannot resume fails alone ----------------------------------------------
# Two webhook deliveries in flight together; one execution is pointed at a workflow version that
# does not exist, so its resume raises.  The dispatcher records both sends, fails that execution
# with the reason and completes the other (the batch resume is retried one execution at a time).
double POST reset >/dev/null
double POST script '{"provider": "webhook", "responses": [{"delay_ms": 1500}], "repeat": true}' >/dev/null
pair=$(sql "SELECT string_agg(notiflow.trigger('hook', jsonb_build_object('marker', 'pair' || i), '\"ann\"')::text, ' ' ORDER BY i)
              FROM generate_series(1, 2) i")
read -r good bad <<<"$pair"
wait_for 20 parked 2
ok $? "two webhook deliveries are in flight together"
sql "UPDATE notiflow.executions SET workflow_version = 999 WHERE id = $bad" >/dev/null
wait_for 20 sql_is "SELECT string_agg(status, ',' ORDER BY id) FROM notiflow.executions WHERE id IN ($good, $bad)" "completed,failed"
ok $? "the execution that cannot resume fails, its neighbour completes"
is "$(sql "SELECT string_agg(d.status, ',' ORDER BY d.id) FROM notiflow.deliveries d WHERE d.execution_id IN ($good, $bad)")" "sent,sent" \
   "both sends are recorded"
is "$(sql "SELECT error FROM notiflow.executions WHERE id = $bad")" \
   "cannot resume: execution $bad uses workflow \"hook\" version 999, which no longer exists" "the failed execution says why"
double POST reset >/dev/null

# --- 7c. a delivery changed while in flight is still recorded ---------------------------------
# The dispatcher marks sent by the row version its claim left; a delivery updated meanwhile (by a
# user here, by a provider's event or a new lease in life) has another version and is recorded by id.
# (The double holds the request 5 s, time enough for the UPDATE on a loaded machine; the delivery's
# lease is its provider's timeout_ms, 10 s by default, and a margin, longer than the 3 s here.)
double POST script '{"provider": "webhook", "responses": [{"delay_ms": 5000}], "repeat": true}' >/dev/null
exec=$(trigger hook moved-on)
wait_for 20 parked 1
ok $? "a webhook delivery is in flight"
did=$(delivery_of "$exec")
version=$(sql "SELECT ctid FROM notiflow.deliveries WHERE id = $did")
sql "UPDATE notiflow.deliveries SET updated_at = updated_at WHERE id = $did AND status = 'sending'" >/dev/null
moved=$(sql "SELECT ctid FROM notiflow.deliveries WHERE id = $did AND status = 'sending'")
ok $([ -n "$moved" ] && [ "$moved" != "$version" ]; echo $?) "it is updated while in flight (row version $version -> $moved)"
wait_for 20 status_is "$exec" sent
ok $? "its send is recorded by id"
is "$(sql "SELECT attempts || ' ' || (SELECT count(*) FROM notiflow.delivery_attempts WHERE delivery_id = $did AND error_class = 'sent')
             || ' ' || (SELECT status FROM notiflow.executions WHERE id = $exec) FROM notiflow.deliveries WHERE id = $did")" \
   "1 1 completed" "with one attempt counted and logged, and its execution completed"
double POST reset >/dev/null

# --- 7d. a backlog: claims start at the claim front; what lies behind it is still taken ----------
# With 4 requests in flight at most and a slow provider, 40 webhook deliveries keep every claim
# full, so claims start after the last delivery claimed (the shared claim front) instead of
# stepping over the deliveries in flight.  A delivery then made due behind the front (an hour
# ago) is taken by a claim of the whole queue, which a dispatcher makes at least once a second:
# long before the backlog (40 x 400 ms / 4 = 4 s at the least) is gone.
psql -X -q -d postgres -c "ALTER SYSTEM SET notiflow.http_concurrency = 4" -c "SELECT pg_reload_conf()" >/dev/null
front0=$(sql "SELECT coalesce(sum(claimed_after_front), 0) FROM notiflow.worker_status")
double POST script '{"provider": "webhook", "responses": [{"delay_ms": 400}], "repeat": true}' >/dev/null
backlog=$(sql "SELECT min(execution_id) || ' ' || max(execution_id) FROM notiflow.trigger_many('hook',
                 (SELECT jsonb_agg('ann'::text) FROM generate_series(1, 40)), '{\"marker\": \"backlog\"}')")
read -r first_e last_e <<<"$backlog"
wait_for 20 parked 4
ok $? "a backlog of 40 deliveries, 4 in flight"
behind=$(sql "SELECT notiflow.trigger('hook', '{\"marker\": \"behind\"}', '\"ann\"');
              UPDATE notiflow.deliveries SET next_attempt_at = now() - interval '1 hour'
               WHERE execution_id = currval(pg_get_serial_sequence('notiflow.executions', 'id'))")
wait_for 20 status_is "$behind" sent
ok $? "a delivery due behind the claim front is sent"
left=$(sql "SELECT count(*) FROM notiflow.deliveries WHERE execution_id BETWEEN $first_e AND $last_e AND finished_at IS NULL")
ok $([ "$left" -ge 4 ]; echo $?) "before the backlog is gone ($left of 40 still to send)"
ok $([ "$(sql "SELECT sum(claimed_after_front) FROM notiflow.worker_status")" -gt "$front0" ]; echo $?) \
   "claims in the backlog started at the claim front"
wait_for 30 sql_is "SELECT count(*) FILTER (WHERE d.status = 'sent' AND d.attempts = 1) FROM notiflow.deliveries d
                     WHERE d.execution_id BETWEEN $first_e AND $last_e" 40
ok $? "the whole backlog is sent, each delivery once"
double POST reset >/dev/null
psql -X -q -d postgres -c "ALTER SYSTEM RESET notiflow.http_concurrency" -c "SELECT pg_reload_conf()" >/dev/null

# --- 7e. late results, lost probes, out-of-range config -----------------------------------------
pid_before=$(dispatcher_pid)
# A request that fails (503) after its delivery was finished meanwhile (a provider's "delivered"
# event overtook a slow answer): the attempt is logged, the delivery stays delivered.
double POST script '{"provider": "webhook", "responses": [{"delay_ms": 1500, "status": 503}]}' >/dev/null
exec=$(trigger hook late-failure)
wait_for 20 parked 1
ok $? "a webhook delivery is in flight, its answer will be a 503"
did=$(delivery_of "$exec")
is "$(sql "SELECT notiflow.finish_delivery($did, 'delivered')")" t "the provider's event finishes it first"
wait_for 20 sql_is "SELECT count(*) FROM notiflow.delivery_attempts WHERE delivery_id = $did AND error_class = 'retry'" 1
ok $? "the late 503 is logged as an attempt"
is "$(sql "SELECT status || ' ' || (finished_at IS NOT NULL) || ' ' || (SELECT status FROM notiflow.executions WHERE id = $exec)
             FROM notiflow.deliveries WHERE id = $did")" "delivered true completed" \
   "and does not move the delivery back to the queue"
is "$(dispatcher_pid)" "$pid_before" "the dispatcher recorded it without restarting"
double POST reset >/dev/null
# A half-open circuit whose probe never reported (taken two minutes ago, notiflow.lease_time is a
# minute): the next delivery probes again instead of waiting for a verdict that will not come.
sql "INSERT INTO notiflow.provider_circuits (provider, state, consecutive_failures, opened_at, updated_at)
     VALUES ('hooks', 'half_open', 5, now() - interval '3 minutes', now() - interval '2 minutes')
     ON CONFLICT (provider) DO UPDATE SET state = excluded.state, consecutive_failures = excluded.consecutive_failures,
        opened_at = excluded.opened_at, updated_at = excluded.updated_at" >/dev/null
exec=$(trigger hook lost-probe)
wait_for 20 status_is "$exec" sent
ok $? "a lost probe is taken again: the delivery is sent"
is "$(sql "SELECT state || ' ' || consecutive_failures FROM notiflow.provider_circuits WHERE provider = 'hooks'")" "closed 0" \
   "and its success closes the circuit"
# Integers out of range in a provider's config written directly (put_provider refuses them):
# the dispatcher bounds them instead of raising at every claim.
sql "UPDATE notiflow.providers SET config = config || '{\"max_attempts\": 10000000000, \"timeout_ms\": 1e400}'
      WHERE name = 'hooks'" >/dev/null
exec=$(trigger hook huge-config)
wait_for 20 status_is "$exec" sent
ok $? "a provider with max_attempts 1e10 and timeout_ms 1e400 still delivers"
is "$(dispatcher_pid)" "$pid_before" "without the dispatcher restarting"
put_hook
# A provider that may answer later than notiflow.lease_time (timeout_ms 8 s, the lease 3 s here):
# its deliveries are claimed for as long as a request may take, so a slow answer is not taken
# for a dead dispatcher's, claimed again and sent a second time.
sql "UPDATE notiflow.providers SET config = config || '{\"timeout_ms\": 8000}' WHERE name = 'hooks'" >/dev/null
double POST reset >/dev/null
double POST script '{"provider": "webhook", "responses": [{"delay_ms": 5000}]}' >/dev/null
exec=$(trigger hook slow-answer)
wait_for 20 parked 1
ok $? "a request is in flight at the provider"
is "$(sql "SELECT lease_expires_at > now() + interval '8 seconds' FROM notiflow.deliveries WHERE execution_id = $exec")" t \
   "its delivery's lease covers timeout_ms and a margin, not just notiflow.lease_time"
wait_for 20 status_is "$exec" sent
ok $? "the answer 5 s later, past notiflow.lease_time, is recorded: sent"
is "$(double GET "requests?provider=webhook" | jq '[.[] | select(.body | contains("\"marker\": \"slow-answer\""))] | length')" 1 \
   "the provider received the request once"
is "$(sql "SELECT count(*) FROM notiflow.delivery_attempts a JOIN notiflow.deliveries d ON d.id = a.delivery_id WHERE d.execution_id = $exec")" 1 \
   "one attempt"
put_hook

# --- 7f. resumes after a delay -----------------------------------------------------------------
# An execution whose delay comes due but whose workflow version is gone fails alone, with the
# reason: the dispatcher resumes due executions before each claim, and goes on delivering.
sql "SELECT notiflow.put_workflow('later', '{\"nodes\": [{\"id\": \"t\", \"type\": \"trigger\"},
       {\"id\": \"d\", \"type\": \"delay\", \"for\": \"1 second\"}, {\"id\": \"h\", \"type\": \"webhook\"}],
       \"edges\": [{\"from\": \"t\", \"to\": \"d\"}, {\"from\": \"d\", \"to\": \"h\"}]}')" >/dev/null
gone=$(trigger later version-gone)
sql "UPDATE notiflow.executions SET workflow_version = 999 WHERE id = $gone" >/dev/null
wait_for 20 sql_is "SELECT status FROM notiflow.executions WHERE id = $gone" failed
ok $? "a due delay of an execution whose workflow version is gone fails that execution"
is "$(sql "SELECT error FROM notiflow.executions WHERE id = $gone")" \
   "cannot resume: execution $gone uses workflow \"later\" version 999, which no longer exists" "with the reason"
exec=$(trigger hook after-gone)
wait_for 20 status_is "$exec" sent
ok $? "deliveries go on"
is "$(dispatcher_pid)" "$pid_before" "and the dispatcher did not restart"
# A failure no edge handles, in one branch, while another branch waits for a delay: when the delay
# ends, the execution fails (it does not complete).
sql "SELECT notiflow.put_workflow('split', '{\"nodes\": [{\"id\": \"t\", \"type\": \"trigger\"},
       {\"id\": \"h\", \"type\": \"webhook\"}, {\"id\": \"d\", \"type\": \"delay\", \"for\": \"2 seconds\"}],
       \"edges\": [{\"from\": \"t\", \"to\": \"h\"}, {\"from\": \"t\", \"to\": \"d\"}]}')" >/dev/null
double POST script '{"provider": "webhook", "responses": [{"status": 400}]}' >/dev/null
exec=$(trigger split unhandled)
wait_for 20 status_is "$exec" failed
ok $? "the webhook branch fails (400, no other provider)"
is "$(sql "SELECT status FROM notiflow.executions WHERE id = $exec")" waiting "while the delay branch waits"
wait_for 20 sql_is "SELECT status IN ('completed', 'failed') FROM notiflow.executions WHERE id = $exec" t
is "$(sql "SELECT status || ' ' || coalesce((error LIKE 'node \"h\": delivery failed%')::text, 'without error') FROM notiflow.executions WHERE id = $exec")" \
   "failed true" "when the delay ends, the execution fails with the webhook's error"
double POST reset >/dev/null

# --- 7g. a record transaction that loses a deadlock runs again ---------------------------------
# The execution waits for events (wait w1) while its webhook is in flight.  Another session holds
# the execution's row: recording the send, the dispatcher marks the delivery sent and waits for the
# row to resume the execution.  That session then asks for the delivery's row, which the dispatcher
# holds, and detects deadlocks later than the dispatcher does, so the dispatcher is the victim.  It
# rolls the record back and runs it again: the send is recorded once, the execution goes on into w2
# (before, the resume's error failed it), and the dispatcher does not restart.
psql -X -q -d postgres -c "ALTER SYSTEM SET deadlock_timeout = '5s'" -c "SELECT pg_reload_conf()" >/dev/null
sql "SELECT notiflow.put_workflow('hook_wait', '{\"nodes\": [{\"id\": \"t\", \"type\": \"trigger\"},
       {\"id\": \"h\", \"type\": \"webhook\"},
       {\"id\": \"w1\", \"type\": \"wait\", \"events\": [\"h.sent\", \"paid\"], \"key\": \"{{payload.marker}}\"},
       {\"id\": \"w2\", \"type\": \"wait\", \"events\": [\"shipped\"], \"key\": \"{{payload.marker}}\"}],
       \"edges\": [{\"from\": \"t\", \"to\": \"h\"}, {\"from\": \"t\", \"to\": \"w1\"},
                   {\"from\": \"h\", \"to\": \"w2\", \"on\": \"sent\"}]}')" >/dev/null
double POST script '{"provider": "webhook", "responses": [{"delay_ms": 2000}]}' >/dev/null
retries_before=$(sql "SELECT coalesce(sum(record_retries), 0) FROM notiflow.worker_status")
exec=$(trigger hook_wait deadlock-7g)
wait_for 20 parked 1
ok $? "a webhook delivery is in flight while its execution waits for events"
coproc HOLD { psql -X -q -At -d $DB; }
echo "SET deadlock_timeout = '60s'; BEGIN; DO \$\$ BEGIN PERFORM FROM notiflow.executions WHERE id = $exec FOR UPDATE; END \$\$;
      SELECT 'execution held';" >&"${HOLD[1]}"
read -r -t 20 line <&"${HOLD[0]}"
is "$line" "execution held" "another session holds the execution's row"
dispatcher_waits() { sql_is "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'notiflow dispatcher' AND wait_event_type = 'Lock'" 1; }
wait_for 20 dispatcher_waits
ok $? "recording the send, the dispatcher's resume waits for the execution's row"
echo "DO \$\$ BEGIN PERFORM FROM notiflow.deliveries WHERE execution_id = $exec FOR UPDATE; END \$\$; SELECT 'delivery held';" >&"${HOLD[1]}"
read -r -t 30 line <&"${HOLD[0]}"
is "$line" "delivery held" "the session asking for the delivery's row gets it: the dispatcher let go"
wait_for 20 dispatcher_waits
ok $? "the dispatcher records again, and waits for the row"
echo "COMMIT; RESET deadlock_timeout;" >&"${HOLD[1]}"
wait_for 20 sql_is "SELECT d.status || ' ' || d.attempts || ' ' || e.status FROM notiflow.deliveries d
                     JOIN notiflow.executions e ON e.id = d.execution_id WHERE e.id = $exec" "sent 1 waiting"
ok $? "the send is recorded once, the execution still waits"
is "$(sql "SELECT string_agg(node_id || ':' || status || ':' || (received ? 'h.sent')::text, ',' ORDER BY node_id)
             FROM notiflow.execution_waits WHERE execution_id = $exec")" "w1:waiting:true,w2:waiting:false" \
   "both waits hold what they should (the outcome event in w1; w2 reached)"
is "$(sql "SELECT count(*) FROM notiflow.delivery_attempts a JOIN notiflow.deliveries d ON d.id = a.delivery_id
             WHERE d.execution_id = $exec")" 1 "one attempt is logged"
ok $([ "$(sql "SELECT sum(record_retries) FROM notiflow.worker_status")" -gt "$retries_before" ]; echo $?) \
   "worker_status counts the record run again"
is "$(dispatcher_pid)" "$pid_before" "the dispatcher did not restart"
echo "\\q" >&"${HOLD[1]}"
psql -X -q -d postgres -c "ALTER SYSTEM RESET deadlock_timeout" -c "SELECT pg_reload_conf()" >/dev/null
double POST reset >/dev/null

# --- 7i. an outcome reaches a wait created while the delivery was being recorded -----------------
# Another transaction (here a status report of the SMS, finish_delivery) resumes the execution into
# a wait for "h.sent" while h's send is being recorded.  The record used to look for waiting waits
# before it locked the execution: it saw none (that wait was not committed), so h.sent never
# reached it and the wait hung.  It now looks after the lock, when that transaction has committed.
only sms twilio
sql "SELECT notiflow.put_workflow('race_wait', '{\"nodes\": [{\"id\": \"t\", \"type\": \"trigger\"},
       {\"id\": \"h\", \"type\": \"webhook\"}, {\"id\": \"s\", \"type\": \"sms\", \"text\": \"x\"},
       {\"id\": \"w\", \"type\": \"wait\", \"events\": [\"h.sent\"], \"key\": \"{{payload.marker}}\"}],
       \"edges\": [{\"from\": \"t\", \"to\": \"h\"}, {\"from\": \"t\", \"to\": \"s\"},
                   {\"from\": \"s\", \"to\": \"w\", \"on\": \"sent\"}]}')" >/dev/null
double POST reset >/dev/null
double POST script '{"provider": "webhook", "responses": [{"delay_ms": 2500}]}' >/dev/null
double POST script '{"provider": "twilio", "responses": [{"delay_ms": 8000}]}' >/dev/null
exec=$(trigger race_wait race-7i)
wait_for 20 parked 2
ok $? "the webhook and the SMS of an execution are in flight"
sms=$(sql "SELECT id FROM notiflow.deliveries WHERE execution_id = $exec AND node_id = 's'")
coproc HOLD { psql -X -q -At -d $DB; }
echo "BEGIN; SELECT notiflow.finish_delivery($sms, 'sent');" >&"${HOLD[1]}"
read -r -t 20 line <&"${HOLD[0]}"
is "$line" t "another session reports the SMS sent: the execution reaches the wait, uncommitted"
dispatcher_blocked() {
    sql_is "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'notiflow dispatcher' AND wait_event_type = 'Lock'" 1
}
wait_for 20 dispatcher_blocked
ok $? "the dispatcher, recording the webhook's send, waits for that execution"
echo "COMMIT;" >&"${HOLD[1]}"
echo "\\q" >&"${HOLD[1]}"
wait_for 20 sql_is "SELECT status FROM notiflow.execution_waits WHERE execution_id = $exec AND node_id = 'w'" completed
ok $? "then h.sent reaches the wait, which completes"
is "$(sql "SELECT status FROM notiflow.executions WHERE id = $exec")" completed "and the execution completes"
double POST reset >/dev/null

# --- 7l. a Twilio status callback that comes before the send is recorded --------------------------
# Twilio's callbacks are matched by MessageSid alone, which the dispatcher stores when it records the
# send.  Here the double answers 1.5 s late (within the lease of 3 s) with a sid the test knows; the
# callback comes meanwhile: it matches nothing yet, is kept, and the record applies it (before, it was
# lost: the SMS stayed "sent").
only sms twilio
double POST reset >/dev/null
nothing_parked() { [ "$(double GET stats | jq .delayed_now)" = 0 ]; }
wait_for 20 nothing_parked
double POST script '{"provider": "twilio", "responses": [{"delay_ms": 1500, "message_id": "SM7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e"}]}' >/dev/null
exec=$(trigger text early-7l)
wait_for 20 parked 1
ok $? "the SMS is in flight, its answer late"
is "$(sql "SELECT notiflow.record_delivery_event('twilio', '{\"MessageSid\": \"SM7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e\",
       \"MessageStatus\": \"undelivered\", \"ErrorCode\": \"30003\"}')")" 0 "its status callback comes first: nothing matches it yet"
wait_for 20 status_is "$exec" failed
ok $? "once the dispatcher records the send, the kept callback is applied: the SMS failed"
is "$(sql "SELECT provider_message_id || ' ' || e.event || ' ' || e.status_applied FROM notiflow.deliveries d
             JOIN notiflow.delivery_events e ON e.delivery_id = d.id WHERE d.execution_id = $exec")" \
   "SM7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e failed failed" "with the provider's sid and the event in its history"
is "$(sql "SELECT count(*) FROM notiflow.delivery_events_early")" 0 "and no longer kept"
double POST reset >/dev/null
# A callback kept after the record looked (it committed later, the record before it): the dispatchers'
# sweep applies it once both have committed.  (Kept here by hand, as that race leaves it.)  One that
# cannot be applied any more is dropped with a WARNING; the dispatcher goes on.
pid_before=$(dispatcher_pid)
exec=$(trigger text early-sweep)
wait_for 20 status_is "$exec" sent
sid=$(sql "SELECT provider_message_id FROM notiflow.deliveries WHERE execution_id = $exec")
sql "INSERT INTO notiflow.delivery_events_early (provider, message_id, body)
     VALUES ('twilio', '$sid', '{\"MessageSid\": \"$sid\"}'),
            ('twilio', '$sid', '{\"MessageSid\": \"$sid\", \"MessageStatus\": \"delivered\"}');
     SELECT notiflow.wake_dispatchers()" >/dev/null
wait_for 20 status_is "$exec" delivered
ok $? "the sweep applies a kept callback whose send was recorded before it was kept"
is "$(sql "SELECT count(*) FROM notiflow.delivery_events_early") $(dispatcher_pid)" "0 $pid_before" \
   "the one that cannot be applied (no MessageStatus) is dropped, the dispatcher goes on"
wait_for 10 grep -qs 'an early status callback of provider "twilio" for message '"$sid"' is dropped' "$CLUSTER_DIR/server.log"
ok $? "with a WARNING in the server log"

# --- 7m. a role without pg_read_all_stats sees the dispatcher ------------------------------------
# pg_stat_activity hides the backend_type of another role's sessions; worker_status (and with it
# health() and check_alerts' worker_down, run by pg_cron as the jobs' owner) counted no dispatcher.
sql "CREATE ROLE regress_watch LOGIN; GRANT USAGE ON SCHEMA notiflow TO regress_watch;
     GRANT SELECT ON notiflow.worker_status TO regress_watch" >/dev/null
is "$(psql -X -qAt -d $DB -U regress_watch -c "SELECT count(*) FROM notiflow.worker_status
       WHERE backend_type = 'notiflow dispatcher' AND database = current_database()")" 1 \
   "a role without pg_read_all_stats counts the dispatcher in worker_status"
sql "DROP OWNED BY regress_watch; DROP ROLE regress_watch" >/dev/null

# --- 7n. a record never waits for a correlation key another session holds ------------------------
# A webhook's send is recorded and its execution goes on into a wait whose key another session holds
# (an application's transaction that emitted an event for that key, still open).  The dispatcher
# waited for that transaction, its other requests in flight stalled (and were sent again after
# their timeout).  It now leaves the execution, due, for the timer, and goes on.
sql "SELECT notiflow.put_workflow('key_wait', '{\"nodes\": [{\"id\": \"t\", \"type\": \"trigger\"},
       {\"id\": \"h\", \"type\": \"webhook\"},
       {\"id\": \"w\", \"type\": \"wait\", \"events\": [\"e\"], \"key\": \"{{payload.marker}}\"}],
       \"edges\": [{\"from\": \"t\", \"to\": \"h\"}, {\"from\": \"h\", \"to\": \"w\", \"on\": \"sent\"}]}')" >/dev/null
coproc HOLD { psql -X -q -At -d $DB; }
echo "BEGIN; SELECT 'held' FROM (SELECT pg_advisory_xact_lock(notiflow.correlation_key_lock_id('key-7n'))) x;" >&"${HOLD[1]}"
read -r -t 20 line <&"${HOLD[0]}"
is "$line" held "another session holds the correlation key key-7n"
exec=$(trigger key_wait key-7n)
wait_for 20 status_is "$exec" sent
ok $? "the webhook's send is recorded while the key is held (the record does not wait for it)"
other=$(trigger hook other-7n)
wait_for 20 status_is "$other" sent
ok $? "and the dispatcher goes on sending other deliveries"
is "$(sql "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'notiflow dispatcher' AND wait_event_type = 'Lock'")" 0 \
   "no dispatcher waits for a lock"
is "$(sql "SELECT status || ' ' || (wake_at <= now()) FROM notiflow.executions WHERE id = $exec")" "waiting true" \
   "the execution is left waiting, due, for the timer"
echo "COMMIT;" >&"${HOLD[1]}"
echo "\\q" >&"${HOLD[1]}"
wait_for 20 sql_is "SELECT status FROM notiflow.execution_waits WHERE execution_id = $exec AND node_id = 'w'" waiting
ok $? "once the key is free, the timer resumes the execution into its wait"
is "$(sql "SELECT notiflow.emit_event('e', 'key-7n')")" 1 "and an event completes it"
wait_for 20 sql_is "SELECT status FROM notiflow.executions WHERE id = $exec" completed
ok $? "the execution completes"

# --- 7j. a claim that loses a lock conflict is run again, by the same dispatcher -----------------
# The delivery's provider was disabled, and it has no other, so the claim ends it (a dead letter)
# and resumes its execution, an UPDATE of the execution's row; another session holds that row, and
# lock_timeout cancels the wait.  The claim is rolled back and runs again later (before, the error
# ended the dispatcher).
psql -X -q -d postgres -c "ALTER SYSTEM SET lock_timeout = '300ms'" -c "SELECT pg_reload_conf()" >/dev/null
dispatcher_lock_timeout() { [ "$(psql -X -qAt -d $DB -c "SELECT setting FROM pg_settings WHERE name = 'lock_timeout'")" = 300 ]; }
wait_for 10 dispatcher_lock_timeout
pid_before=$(dispatcher_pid)
timeouts_before=$(grep -c 'canceling statement due to lock timeout' "$CLUSTER_DIR/server.log")
exec=$(sql "SELECT notiflow.trigger('hook', '{\"marker\": \"claim-conflict\"}', '\"ann\"');
            UPDATE notiflow.deliveries SET next_attempt_at = now() + interval '1 hour'
             WHERE execution_id = currval(pg_get_serial_sequence('notiflow.executions', 'id'))" | head -1)
coproc HOLD { psql -X -q -At -d $DB; }
echo "SET lock_timeout = 0; BEGIN; SELECT 'held' FROM notiflow.executions WHERE id = $exec FOR UPDATE;" >&"${HOLD[1]}"
read -r -t 20 line <&"${HOLD[0]}"
is "$line" held "another session holds the execution's row"
sql "UPDATE notiflow.providers SET enabled = false WHERE name = 'hooks';
     UPDATE notiflow.deliveries SET next_attempt_at = now() WHERE execution_id = $exec;
     SELECT notiflow.wake_dispatchers()" >/dev/null
claim_timed_out() { [ "$(grep -c 'canceling statement due to lock timeout' "$CLUSTER_DIR/server.log")" -gt "$timeouts_before" ]; }
wait_for 20 claim_timed_out
ok $? "the claim's dead letter waits to resume the execution, and lock_timeout cancels it"
echo "COMMIT;" >&"${HOLD[1]}"
echo "\\q" >&"${HOLD[1]}"
wait_for 20 sql_is "SELECT d.status || ' ' || e.status FROM notiflow.deliveries d JOIN notiflow.executions e ON e.id = d.execution_id
                     WHERE e.id = $exec" "failed failed"
ok $? "once the row is free, the delivery ends as a dead letter and its execution fails"
is "$(sql "SELECT count(*) FROM notiflow.dead_letters WHERE reference = '$(delivery_of "$exec")'")" 1 \
   "one dead letter"
is "$(dispatcher_pid)" "$pid_before" "by the same dispatcher: the claim was rolled back and run again"
sql "UPDATE notiflow.providers SET enabled = true WHERE name = 'hooks'" >/dev/null

# A claim rolled back gives back the rate tokens it took: its deliveries stay queued, none is sent.
# One claim takes a teams delivery (one token every 25 s) and an sms delivery whose request cannot
# be built (no number), which ends as a dead letter and resumes its execution, whose row another
# session holds: lock_timeout rolls the claim back, again and again while the row is held.  The
# teams delivery then goes at once; it waited for tokens its rolled-back claims had taken.
only chat teams
only sms vonage
sql "UPDATE notiflow.providers SET config = config || '{\"rate_per_second\": 0.04}' WHERE name = 'teams'" >/dev/null
later() { sql "SELECT notiflow.trigger('$1', '{\"marker\": \"$2\"}', '\"ann\"');
               UPDATE notiflow.deliveries SET next_attempt_at = now() + interval '1 hour'${3-}
                WHERE execution_id = currval(pg_get_serial_sequence('notiflow.executions', 'id'))" | head -1; }
x=$(later chat rollback-x)
y=$(later text rollback-y ", recipient = NULL")
timeouts_before=$(grep -c 'canceling statement due to lock timeout' "$CLUSTER_DIR/server.log")
coproc HOLD { psql -X -q -At -d $DB; }
echo "SET lock_timeout = 0; BEGIN; SELECT 'held' FROM notiflow.executions WHERE id = $y FOR UPDATE;" >&"${HOLD[1]}"
read -r -t 20 line <&"${HOLD[0]}"
is "$line" held "another session holds the sms execution's row"
sql "UPDATE notiflow.deliveries SET next_attempt_at = now() WHERE execution_id IN ($x, $y);
     SELECT notiflow.wake_dispatchers()" >/dev/null
claim_timed_out_twice() { [ "$(grep -c 'canceling statement due to lock timeout' "$CLUSTER_DIR/server.log")" -gt $((timeouts_before + 1)) ]; }
wait_for 20 claim_timed_out_twice
ok $? "the claim of both is rolled back twice"
echo "COMMIT;" >&"${HOLD[1]}"
echo "\\q" >&"${HOLD[1]}"
wait_for 10 status_is "$x" sent
ok $? "then the teams delivery is sent within 10 s (one token every 25 s): the rolled-back claims gave theirs back"
wait_for 20 status_is "$y" failed
ok $? "and the sms delivery without a number fails"
sql "UPDATE notiflow.providers SET config = config - 'rate_per_second' WHERE name = 'teams'" >/dev/null
psql -X -q -d postgres -c "ALTER SYSTEM RESET lock_timeout" -c "SELECT pg_reload_conf()" >/dev/null

# --- 7h. a due delivery another transaction holds is looked at again later, not in a loop -------
# Claims pass the held row (SKIP LOCKED) while the next-due query still sees it due: the
# dispatcher ran claim after claim, a whole core, for as long as the row was held.
exec=$(sql "SELECT notiflow.trigger('hook', '{\"marker\": \"held-7h\"}', '\"ann\"');
            UPDATE notiflow.deliveries SET next_attempt_at = now() + interval '3 seconds'
             WHERE execution_id = currval(pg_get_serial_sequence('notiflow.executions', 'id'))" | head -1)
coproc HOLD { psql -X -q -At -d $DB; }
echo "BEGIN; SELECT 1 FROM notiflow.deliveries WHERE execution_id = $exec FOR UPDATE;" >&"${HOLD[1]}"
read -r -t 20 line <&"${HOLD[0]}"
is "$line" 1 "another session holds a queued delivery that falls due in 3 s"
wait_for 20 sql_is "SELECT next_attempt_at < now() FROM notiflow.deliveries WHERE execution_id = $exec" t
cpu_ticks() { awk '{print $14 + $15}' "/proc/$(dispatcher_pid)/stat"; }
ticks_before=$(cpu_ticks)
sleep 2  # the window measured, not a wait for something to happen
ticks=$(( $(cpu_ticks) - ticks_before ))
ok $([ "$ticks" -lt 40 ]; echo $?) "while it is due and held, the dispatcher stays mostly idle ($ticks CPU ticks in 2 s)"
echo "COMMIT;" >&"${HOLD[1]}"
wait_for 20 status_is "$exec" sent
ok $? "once released, the delivery is sent"
# the same with a sending delivery whose lease ran out (the next-due time is then that lease's)
exec=$(trigger hook held-lease-7h)
wait_for 20 status_is "$exec" sent
sql "UPDATE notiflow.deliveries SET status = 'sending', finished_at = NULL, lease_expires_at = now() - interval '1 second'
      WHERE execution_id = $exec" >/dev/null
echo "BEGIN; SELECT 1 FROM notiflow.deliveries WHERE execution_id = $exec FOR UPDATE;" >&"${HOLD[1]}"
read -r -t 20 line <&"${HOLD[0]}"
sql "SELECT notiflow.wake_dispatchers()" >/dev/null  # nothing else wakes it: the UPDATE queued nothing
ticks_before=$(cpu_ticks)
sleep 2  # the window measured, not a wait for something to happen
ticks=$(( $(cpu_ticks) - ticks_before ))
ok $([ "$ticks" -lt 40 ]; echo $?) "while its expired lease is held, the dispatcher stays mostly idle ($ticks CPU ticks in 2 s)"
echo "COMMIT;" >&"${HOLD[1]}"
echo "\\q" >&"${HOLD[1]}"
wait_for 20 status_is "$exec" sent
ok $? "once released, it is claimed again and sent"

# --- 7k. a delivery queued in a prepared transaction is sent at COMMIT PREPARED ---------------
# The commit callback runs at PREPARE TRANSACTION, when nothing is visible yet; COMMIT PREPARED
# (another session, later) must wake the dispatchers itself.  Before, the delivery waited for the
# dispatcher's 10 s safety timer.
exec=$(trigger hook before-2pc)
wait_for 20 status_is "$exec" sent  # the dispatcher has just been busy: its safety timer is ~10 s away
exec=$(psql -X -q -At -v ON_ERROR_STOP=1 -d $DB <<SQL
BEGIN;
SELECT notiflow.trigger('hook', '{"marker": "prepared-7k"}', '"ann"');
PREPARE TRANSACTION 'notiflow_7k';
SQL
)
is "$(sql "SELECT count(*) FROM pg_prepared_xacts WHERE gid = 'notiflow_7k'")" 1 "a transaction that triggered a workflow is prepared"
sql "COMMIT PREPARED 'notiflow_7k'" >/dev/null
wait_for 3 status_is "$exec" sent
ok $? "COMMIT PREPARED wakes the dispatcher: the delivery is sent within 3 s"
out=$(psql -X -q -At -d $DB 2>&1 <<SQL
BEGIN;
SELECT notiflow.subscribe_kafka('prepared_7k', '127.0.0.1:9', '{t}', 'hook');
PREPARE TRANSACTION 'notiflow_7k_kafka';
SQL
)
ok $(grep -q "cannot PREPARE a transaction that changed Kafka subscriptions" <<<"$out"; echo $?) \
   "a transaction that changed Kafka subscriptions cannot be prepared (the launcher would not learn of it)"
is "$(sql "SELECT count(*) FROM pg_prepared_xacts") $(sql "SELECT count(*) FROM notiflow.kafka_subscriptions")" "0 0" "and nothing of it remains"
out=$(psql -X -q -At -d $DB 2>&1 <<SQL
BEGIN;
SAVEPOINT s;
SELECT notiflow.subscribe_kafka('prepared_7k', '127.0.0.1:9', '{t}', 'hook');
ROLLBACK TO SAVEPOINT s;
PREPARE TRANSACTION 'notiflow_7k_savepoint';
ROLLBACK PREPARED 'notiflow_7k_savepoint';
SQL
)
is "$out" "" "one whose change was rolled back to a savepoint can (no error)"

# --- 8. kill -9 of the dispatcher with deliveries in flight ------------------------------------
hooks_held 20 5000 crash
wait_for 20 parked 5
ok $? "webhook deliveries are in flight at the provider"
pid=$(dispatcher_pid)
kill -9 "$pid"
double POST reset >/dev/null
up_again() { psql -X -qAt -d postgres -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'notiflow dispatcher' AND pid <> $pid" 2>/dev/null | grep -qx 1; }
wait_for 60 up_again
ok $? "the server recovers and a new dispatcher starts"
wait_for 60 marked_sent crash 20
ok $? "every delivery in flight is sent after the restart: none lost"
echo "# crash deliveries by status: $(sql "SELECT string_agg(status || '=' || n, ' ') FROM (SELECT d.status, count(*) n FROM notiflow.deliveries d JOIN notiflow.executions e ON e.id = d.execution_id WHERE e.payload ->> 'marker' = 'crash' GROUP BY 1) s")"
echo "# their attempts: $(sql "SELECT string_agg(error_class || '=' || n, ' ') FROM (SELECT a.error_class, count(*) n FROM notiflow.delivery_attempts a JOIN notiflow.deliveries d ON d.id = a.delivery_id JOIN notiflow.executions e ON e.id = d.execution_id WHERE e.payload ->> 'marker' = 'crash' GROUP BY 1) s")"
received=$(double GET "requests?provider=webhook" | jq '[.[] | select(.verdict == "accepted")] | length')
echo "# after kill -9: 20 deliveries, $received accepted by the provider after the crash (the rest were accepted before it or are duplicates)"
is "$(sql "SELECT count(DISTINCT d.id) FROM notiflow.deliveries d JOIN notiflow.executions e ON e.id = d.execution_id WHERE e.payload ->> 'marker' = 'crash' AND d.status = 'sent'")" 20 \
   "each delivery is recorded once as sent"

# --- 8b. SIGTERM with deliveries in flight: answers first, then exit -------------------------------
# A dispatcher asked to stop claims nothing more, waits up to notiflow.stop_timeout (default 5 s)
# for the answers to its requests in flight and records them: ending at once sent each of them
# again after its lease (the provider saw every one twice).  A long lease here, so that nothing
# but the stop could end them; curl sends the first request to a new host alone (it waits to
# learn whether the connection multiplexes), the other nine after its answer.
psql -X -q -d postgres -c "ALTER SYSTEM SET notiflow.lease_time = '60s'" -c "SELECT pg_reload_conf()" >/dev/null
wait_for 10 sql_is "SHOW notiflow.lease_time" 1min
hooks_held 10 1500 stop
wait_for 20 parked 9
ok $? "webhook requests are in flight at the provider"
pid=$(dispatcher_pid)
psql -X -q -d postgres -c "SELECT pg_terminate_backend($pid)" >/dev/null
wait_for 20 marked_sent stop 10
ok $? "after SIGTERM every delivery in flight is recorded as sent, well within the lease"
gone() { ! kill -0 "$1" 2>/dev/null; }
wait_for 10 gone "$pid"
ok $? "and the dispatcher exited"
ok $(grep -Eq "notiflow dispatcher stopping: waiting up to 5000 ms for (9|10) requests in flight" "$CLUSTER_DIR/server.log"; echo $?) \
   "it logged that it waits for its requests"
is "$(sql "SELECT count(*) FROM notiflow.delivery_attempts a JOIN notiflow.deliveries d ON d.id = a.delivery_id JOIN notiflow.executions e ON e.id = d.execution_id WHERE e.payload ->> 'marker' = 'stop'")" 10 \
   "one attempt per delivery"
# (by marker: requests held by the double before section 8's kill -9 are recorded when their delay ends)
is "$(double GET "requests?provider=webhook" | jq '[.[] | select(.body | contains("\"marker\": \"stop\""))] | length')" 10 \
   "the provider received each request once"
wait_for 30 sql_is "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'notiflow dispatcher'" 1
ok $? "the launcher starts a dispatcher again"
# A server shutdown too: the postmaster's SIGTERM comes, then the ending launcher's; the answers
# are recorded before the server goes down.
hooks_held 5 1000 stop-server
wait_for 20 parked 1
# (the 3 s lease again from the restart on: no reload, the running dispatcher keeps its 60 s)
psql -X -q -d postgres -c "ALTER SYSTEM RESET notiflow.lease_time" >/dev/null
cluster_as_owner "$PG_BIN/pg_ctl" -D "$CLUSTER_DIR/data" -l "$CLUSTER_DIR/server.log" -m fast -w restart >/dev/null
ok $? "PostgreSQL restarts (fast) with webhook requests in flight"
is "$(sql "SELECT count(*) FILTER (WHERE d.status = 'sent') FROM notiflow.deliveries d JOIN notiflow.executions e ON e.id = d.execution_id WHERE e.payload ->> 'marker' = 'stop-server'")" 5 \
   "every delivery in flight was recorded as sent before the server stopped"
is "$(double GET "requests?provider=webhook" | jq '[.[] | select(.body | contains("\"marker\": \"stop-server\""))] | length')" 5 \
   "the provider received each request once"
double POST reset >/dev/null
wait_for 30 sql_is "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'notiflow dispatcher'" 1
ok $? "a dispatcher runs after the restart"
# Past notiflow.stop_timeout it leaves, and the lease (3 s here) brings the delivery back.
psql -X -q -d postgres -c "ALTER SYSTEM SET notiflow.stop_timeout = '500ms'" -c "SELECT pg_reload_conf()" >/dev/null
wait_for 10 sql_is "SHOW notiflow.stop_timeout" 500ms
double POST reset >/dev/null
double POST script '{"provider": "webhook", "responses": [{"delay_ms": 2500}], "repeat": true}' >/dev/null
exec=$(trigger hook stop-late)
wait_for 20 parked 1
pid=$(dispatcher_pid)
start=$SECONDS
psql -X -q -d postgres -c "SELECT pg_terminate_backend($pid)" >/dev/null
wait_for 10 gone "$pid"
ok $? "with notiflow.stop_timeout = 500ms it exits before the answer comes ($((SECONDS - start)) s)"
ok $(grep -q "notiflow dispatcher stopped with 1 request in flight" "$CLUSTER_DIR/server.log"; echo $?) \
   "it logged the request it left in flight"
is "$(sql "SELECT status FROM notiflow.deliveries WHERE execution_id = $exec")" sending \
   "the delivery is still sending (its answer was not waited for)"
double POST reset >/dev/null
wait_for 30 status_is "$exec" sent
ok $? "its lease brought it back, and it was sent"
# A transaction of the dispatcher's still running past the stop timeout (here a record waiting for
# a row a prepared transaction holds, which no shutdown ends) is ended a second after it: the one
# running when SIGTERM comes is cancelled, and runs again under the stop's timer.
wait_for 30 sql_is "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'notiflow dispatcher'" 1
hooks_held 1 2000 stop-locked
wait_for 20 parked 1
held=$(sql "SELECT d.id FROM notiflow.deliveries d JOIN notiflow.executions e ON e.id = d.execution_id WHERE e.payload ->> 'marker' = 'stop-locked'")
sql "BEGIN; SELECT 1 FROM notiflow.deliveries WHERE id = $held FOR UPDATE; PREPARE TRANSACTION 'notiflow_8b_hold'" >/dev/null
record_waits() { sql_is "SELECT wait_event_type FROM pg_stat_activity WHERE backend_type = 'notiflow dispatcher'" Lock; }
wait_for 20 record_waits
ok $? "the dispatcher's record waits for the row the prepared transaction holds"
pid=$(dispatcher_pid)
start=$SECONDS
psql -X -q -d postgres -c "SELECT pg_terminate_backend($pid)" >/dev/null
wait_for 15 gone "$pid"
ok $? "asked to stop, it ends all the same"
ok $([ $((SECONDS - start)) -le 6 ]; echo $?) "within the stop timeout and its margin: $((SECONDS - start)) s (stop_timeout 500ms)"
ok $(grep -q "notiflow dispatcher ended while stopping, before it had recorded what it sent" "$CLUSTER_DIR/server.log"; echo $?) \
   "it logged that it ended before recording"
sql "ROLLBACK PREPARED 'notiflow_8b_hold'" >/dev/null
double POST reset >/dev/null
wait_for 30 marked_sent stop-locked 1
ok $? "its lease brought the delivery back, and it was sent"
psql -X -q -d postgres -c "ALTER SYSTEM RESET notiflow.stop_timeout" -c "SELECT pg_reload_conf()" >/dev/null

# --- 8c. a record refused for its data does not take the batch with it ---------------------------
# Here an audit trigger someone added refuses one delivery's attempt row.  Raised, the error ended
# the dispatcher; after its restart the same batch came back after its lease, every request of it
# was sent again, and the record failed again, round after round.  Now the batch is recorded one
# by one, and the refused delivery ends as the provider answered, without its attempt row.
sql "CREATE FUNCTION public.audit_refuses() RETURNS trigger LANGUAGE plpgsql AS \$\$
     BEGIN
       IF EXISTS (SELECT 1 FROM notiflow.deliveries d JOIN notiflow.executions e ON e.id = d.execution_id
                  WHERE d.id = NEW.delivery_id AND e.payload ->> 'marker' LIKE 'poison%') THEN
         RAISE EXCEPTION 'audit refuses delivery %', NEW.delivery_id;
       END IF;
       RETURN NEW;
     END \$\$;
     CREATE TRIGGER audit_refuses BEFORE INSERT ON notiflow.delivery_attempts
       FOR EACH ROW EXECUTE FUNCTION public.audit_refuses()" >/dev/null
double POST reset >/dev/null
pid=$(dispatcher_pid)
poison=$(sql "SELECT count(*) FROM notiflow.trigger_many('hook', (SELECT jsonb_agg('ann'::text) FROM generate_series(1, 5)), '{\"marker\": \"beside-poison\"}');
              SELECT notiflow.trigger('hook', '{\"marker\": \"poison\"}', '\"ann\"')" | tail -1)
wait_for 20 marked_sent beside-poison 5
ok $? "the deliveries recorded beside a refused one are sent"
wait_for 20 status_is "$poison" sent
ok $? "the refused one is sent too (the provider accepted it)"
is "$(sql "SELECT count(*) FROM notiflow.delivery_attempts WHERE delivery_id = $(delivery_of "$poison")")" 0 "without its attempt row"
is "$(sql "SELECT attempts FROM notiflow.deliveries WHERE execution_id = $poison") $(sql "SELECT status FROM notiflow.executions WHERE id = $poison")" "1 completed" \
   "its attempt is counted and its execution went on"
is "$(double GET "requests?provider=webhook" | jq '[.[] | select(.body | test("\"marker\": \"(beside-)?poison\""))] | length')" 6 \
   "the provider received each of the six requests once"
is "$(dispatcher_pid)" "$pid" "the same dispatcher recorded them"
ok $(grep -Eq "recorded delivery $(delivery_of "$poison") \(sent\) without its attempt row" "$CLUSTER_DIR/server.log"; echo $?) \
   "it logged that it recorded it without its attempt row"
# a failure goes through the policy as usual: a 400 is permanent, no other webhook provider: a dead letter
double POST script '{"provider": "webhook", "responses": [{"status": 400}]}' >/dev/null
poison=$(trigger hook poison-refused)
wait_for 20 status_is "$poison" failed
ok $? "a refused one whose answer was a failure fails"
is "$(sql "SELECT count(*) FROM notiflow.dead_letters WHERE reference = '$(delivery_of "$poison")'") $(sql "SELECT attempts FROM notiflow.deliveries WHERE execution_id = $poison")" "1 1" \
   "with one dead letter and one attempt counted"
# a retryable answer is retried (and the retry, refused again, succeeds)
double POST script '{"provider": "webhook", "responses": [{"status": 503}]}' >/dev/null
poison=$(trigger hook poison-retried)
wait_for 30 status_is "$poison" sent
ok $? "a refused one whose answer was retryable is retried, and sent"
is "$(sql "SELECT attempts FROM notiflow.deliveries WHERE execution_id = $poison")" 2 "after two attempts"
sql "DROP TRIGGER audit_refuses ON notiflow.delivery_attempts; DROP FUNCTION public.audit_refuses()" >/dev/null
double POST reset >/dev/null

# --- 9. URLs from data may not reach private addresses (unless allowed) ---------------------
sql "SELECT notiflow.put_workflow('datahook', '{\"nodes\": [{\"id\": \"t\", \"type\": \"trigger\"},
       {\"id\": \"h\", \"type\": \"webhook\", \"url\": \"{{{payload.url}}}\"}], \"edges\": [{\"from\": \"t\", \"to\": \"h\"}]}')" >/dev/null
exec=$(sql "SELECT notiflow.trigger('datahook', '{\"url\": \"$DOUBLE/hooks/from-data\"}', '\"ann\"')")
wait_for 20 status_is "$exec" sent
ok $? "with notiflow.allow_private_urls on, a URL from data may reach the local double"
psql -X -q -d postgres -c "ALTER SYSTEM SET notiflow.allow_private_urls = off" -c "SELECT pg_reload_conf()" >/dev/null
private_off() { psql -X -qAt -d $DB -c "SHOW notiflow.allow_private_urls" | grep -qx off; }
wait_for 10 private_off
exec=$(sql "SELECT notiflow.trigger('datahook', '{\"url\": \"$DOUBLE/hooks/from-data\"}', '\"ann\"')")
wait_for 20 status_is "$exec" failed
ok $? "with it off (the default), a URL from data that resolves to loopback is refused"
is "$(sql "SELECT error FROM notiflow.delivery_attempts WHERE delivery_id = $(delivery_of "$exec")")" \
   "refused: the URL resolves to a private address" "the attempt says why"
# addresses that reach private ones another way, and ranges that are not public unicast: refused
# before any socket opens (port 9: nothing would answer there anyway)
for url in "http://[64:ff9b::7f00:1]:9/nat64" "http://[2002:7f00:1::1]:9/6to4" "http://[::ffff:127.0.0.1]:9/mapped" \
           "http://[fec0::1]:9/site-local" "http://198.18.0.1:9/bench" "http://192.0.0.8:9/ietf" "http://224.0.0.1:9/multicast"; do
    exec=$(sql "SELECT notiflow.trigger('datahook', '{\"url\": \"$url\"}', '\"ann\"')")
    wait_for 20 status_is "$exec" failed
    is "$(sql "SELECT error FROM notiflow.delivery_attempts WHERE delivery_id = $(delivery_of "$exec")")" \
       "refused: the URL resolves to a private address" "refused: $url"
done
exec=$(trigger hook private-config)
wait_for 20 status_is "$exec" sent
ok $? "a URL from the provider's configuration is still allowed"
psql -X -q -d postgres -c "ALTER SYSTEM RESET notiflow.allow_private_urls" -c "SELECT pg_reload_conf()" >/dev/null
# A URL from data that is no http(s) URL fails its delivery at once (curl failed on it, and it was
# retried max_attempts times).  One whose host does not resolve (a subscriber's dead endpoint) does
# not count toward the provider's circuit: three of them opened it for every delivery.
exec=$(sql "SELECT notiflow.trigger('datahook', '{\"url\": \"not a url\"}', '\"ann\"')")
wait_for 20 status_is "$exec" failed
ok $? "a webhook URL from data that is not an http(s) URL fails its delivery"
is "$(sql "SELECT count(*) || ' ' || min(error_class) || ' ' || min(error) FROM notiflow.delivery_attempts WHERE delivery_id = $(delivery_of "$exec")")" \
   "1 permanent webhook address is not a webhook URL: recipient: expected an http(s) URL, or no address to use config.url" \
   "after one attempt, which says why"
sql "UPDATE notiflow.providers SET config = config || '{\"max_attempts\": 1}' WHERE name = 'hooks'" >/dev/null
nowhere=$(sql "SELECT string_agg(notiflow.trigger('datahook', '{\"url\": \"http://nowhere.invalid/hook\"}', '\"ann\"')::text, ',')
                 FROM generate_series(1, 4)")
wait_for 30 sql_is "SELECT count(*) FROM notiflow.deliveries WHERE execution_id IN ($nowhere) AND status = 'failed'" 4
ok $? "four deliveries to a host that does not resolve fail"
is "$(sql "SELECT coalesce((SELECT state || ' ' || consecutive_failures FROM notiflow.provider_circuits WHERE provider = 'hooks'), 'closed 0')")" \
   "closed 0" "and the provider's circuit stays closed (notiflow.circuit_failures is 3 here)"
# Nor do endpoints from data that refuse connections or answer 503: the subscriber's host, not the
# provider (before, they opened the circuit for the provider's other deliveries).
double POST script '{"provider": "webhook", "responses": [{"status": 503}], "repeat": true}' >/dev/null
dead=$(sql "SELECT string_agg(notiflow.trigger('datahook', jsonb_build_object('url', u), '\"ann\"')::text, ',')
              FROM unnest(ARRAY['http://127.0.0.1:1/hook', '$DOUBLE/hooks/from-data']) u, generate_series(1, 3)")
wait_for 30 sql_is "SELECT count(*) FROM notiflow.deliveries WHERE execution_id IN ($dead) AND status = 'failed'" 6
ok $? "three deliveries to a port that refuses connections and three answered 503 fail"
is "$(sql "SELECT string_agg(n || ' ' || coalesce('HTTP ' || status_code, 'curl ' || curl_code), ', ' ORDER BY n, status_code)
             FROM (SELECT a.status_code, a.curl_code, count(*) n FROM notiflow.delivery_attempts a
                     JOIN notiflow.deliveries d ON d.id = a.delivery_id WHERE d.execution_id IN ($dead) GROUP BY 1, 2) s")" \
   "3 HTTP 503, 3 curl 7" "each after one attempt: connection refused (curl 7), or 503"
is "$(sql "SELECT coalesce((SELECT state || ' ' || consecutive_failures FROM notiflow.provider_circuits WHERE provider = 'hooks'), 'closed 0')")" \
   "closed 0" "and the provider's circuit stays closed"
double POST reset >/dev/null
put_hook

# --- 10. SIGHUP reload ---------------------------------------------------------------------
psql -X -q -d postgres -c "ALTER SYSTEM SET notiflow.dispatch_workers = 2" -c "SELECT pg_reload_conf()" >/dev/null
wait_for 30 sql_is "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'notiflow dispatcher'" 2
ok $? "SIGHUP with dispatch_workers = 2 starts a second dispatcher"
is "$(sql "SELECT context FROM pg_settings WHERE name = 'notiflow.database_name'")" postmaster \
   "notiflow.database_name is set at server start (a reload cannot move connected workers)"
psql -X -q -d postgres -c "ALTER SYSTEM SET notiflow.dispatch_workers = 1" -c "SELECT pg_reload_conf()" >/dev/null
wait_for 30 sql_is "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'notiflow dispatcher'" 1
ok $? "and lowering it stops one"

# A launcher that ends (here terminated) stops its dispatchers: the launcher started again knew
# none of them and started a second set beside them, which nothing stopped.
old_dispatcher=$(dispatcher_pid)
launcher_pid() { psql -X -qAt -d postgres -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'notiflow launcher'"; }
old_launcher=$(launcher_pid)
psql -X -q -d postgres -c "SELECT pg_terminate_backend($old_launcher)" >/dev/null
new_dispatcher() { local p; p=$(dispatcher_pid | grep -vx "$old_dispatcher" | head -1); [ -n "$p" ]; }
wait_for 30 new_dispatcher
ok $? "after the launcher was terminated, it starts a dispatcher again"
is "$(launcher_pid | grep -vxc "$old_launcher")" 1 "(a new launcher)"
is "$(psql -X -qAt -d postgres -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'notiflow dispatcher'")" 1 \
   "and only one runs: the old launcher's dispatcher was stopped"
exec=$(trigger hook after-launcher)
wait_for 20 status_is "$exec" sent
ok $? "the new dispatcher sends"
wait_for 10 sql_is "SELECT sent FROM notiflow.worker_status WHERE backend_type = 'notiflow dispatcher'" 1
ok $? "its counters count from its start, not the slot's: sent $(sql "SELECT sent FROM notiflow.worker_status WHERE backend_type = 'notiflow dispatcher'")"
# A query cancel is not for a worker: it ended the dispatcher (its requests in flight were sent
# again after their lease); pg_terminate_backend stops it.
pid_before=$(dispatcher_pid)
psql -X -q -d postgres -c "SELECT pg_cancel_backend($pid_before)" >/dev/null
exec=$(trigger hook after-cancel)
wait_for 20 status_is "$exec" sent
ok $? "after a query cancel the dispatcher still sends"
is "$(dispatcher_pid)" "$pid_before" "the same dispatcher: the cancel was ignored"

# DROP DATABASE that cannot succeed (not the owner, or in a transaction block) leaves the workers
# alone; it stopped them before PostgreSQL refused it, with their requests in flight.
psql -X -q -d postgres -c "CREATE ROLE stranger LOGIN" >/dev/null
pid_before=$(dispatcher_pid)
out=$(psql -X -q -d postgres -U stranger -c "DROP DATABASE $DB" 2>&1)
ok $(grep -q "must be owner of database" <<<"$out"; echo $?) "DROP DATABASE by a role that does not own the database fails"
out=$(psql -X -q -d postgres -c "BEGIN" -c "DROP DATABASE $DB" 2>&1)
ok $(grep -q "cannot run inside a transaction block" <<<"$out"; echo $?) "DROP DATABASE in a transaction block fails"
exec=$(trigger hook after-refused-drop)
wait_for 20 status_is "$exec" sent
ok $? "a delivery is sent after them"
is "$(dispatcher_pid)" "$pid_before" "by the same dispatcher: neither stopped it"

# --- 11. DROP EXTENSION and DROP DATABASE are not blocked ---------------------------------------
timeout 30 psql -X -q -d $DB -c "DROP EXTENSION notiflow CASCADE" >/dev/null 2>&1
ok $? "DROP EXTENSION completes while the dispatcher runs"
# the dispatcher notices the extension is gone (a reload wakes it for one more turn of its
# loop, seen as a change of its state), and that it is back
turned() { psql -X -qAt -d postgres -c "SELECT state_change FROM pg_stat_activity WHERE backend_type = 'notiflow dispatcher'"; }
before=$(turned)
psql -X -q -d postgres -c "SELECT pg_reload_conf()" >/dev/null
wait_for 20 eval '[ "$(turned)" != "$before" ]'
ok $? "after DROP EXTENSION the dispatcher runs its loop"
sql "CREATE EXTENSION notiflow" >/dev/null
put_hook
exec=$(sql "SELECT notiflow.trigger('hook', '{\"marker\": \"again\"}')")
wait_for 20 status_is "$exec" sent
ok $? "a delivery is sent after DROP EXTENSION and CREATE EXTENSION"
is "$(grep -c 'relation "notiflow\.[a-z_]*" does not exist' "$CLUSTER_DIR/server.log")" 0 \
   "the dispatcher never queried the dropped tables"
# A DROP DATABASE terminated while it waits for another session (FATAL: its cleanup never runs)
# left the workers' database marked as being dropped: no dispatcher ever started again.
coproc STAY { psql -X -q -At -d $DB; }
echo "SELECT 'connected';" >&"${STAY[1]}"
read -r -t 20 line <&"${STAY[0]}"
psql -X -q -d postgres -c "DROP DATABASE $DB" >/dev/null 2>&1 &
DROP_PID=$!
dropper() { psql -X -qAt -d postgres -c "SELECT pid FROM pg_stat_activity WHERE query LIKE 'DROP DATABASE%' AND state = 'active'"; }
drop_waits() { [ -n "$(dropper)" ] && [ "$(dispatchers)" = 0 ]; }
wait_for 20 drop_waits
ok $? "a DROP DATABASE waits for another session, the dispatcher has left"
psql -X -q -d postgres -c "SELECT pg_terminate_backend($(dropper | head -1))" >/dev/null
wait "$DROP_PID" 2>/dev/null
wait_for 30 sql_is "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'notiflow dispatcher' AND datname = '$DB'" 1
ok $? "the DROP DATABASE terminated, a dispatcher starts again"
echo "\\q" >&"${STAY[1]}"
timeout 30 psql -X -q -d $DB -c "DROP EXTENSION notiflow CASCADE" >/dev/null 2>&1
ok $? "DROP EXTENSION again"
start=$SECONDS
timeout 30 psql -X -q -d postgres -c "DROP DATABASE $DB" >/dev/null 2>&1
ok $? "DROP DATABASE of the workers' database completes ($((SECONDS - start)) s)"
is "$(psql -X -qAt -d postgres -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'notiflow launcher'")" 1 \
   "the launcher keeps running"

done_testing
