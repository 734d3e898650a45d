#!/usr/bin/env bash
# selftest.sh — TAP self-test of the provider test doubles (provider_double and
# smtp_double.py) that notiflow's delivery integration tests and benchmarks use.
#
# Builds the HTTP double, starts both doubles on free ports and checks with curl
# that, for every provider, a correct request is accepted in the provider's
# shape, a wrong credential and a malformed body are rejected, and scripted
# failures (429 with Retry-After, 503, late answer, dropped connection) behave.
# SigV4 requests are signed by curl's --aws-sigv4 and webhook signatures by
# openssl, so the double's verification meets independent signers.
#
# Run from the project root:  prove -v --exec bash test/doubles/selftest.sh
# Needs curl, jq, openssl and a python3 with aiosmtpd (PYTHON=... to choose it).

set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cfg=$here/credentials.json
work=$(mktemp -d)
pids=()
n=0
DELAY_MS=600

# Stops the doubles this script started and removes its scratch directory.
cleanup() {
	local pid
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	rm -rf "$work"
}
trap cleanup EXIT

# Aborts the whole run with a TAP "Bail out!".
bail() {
	echo "Bail out! $*"
	exit 1
}

# Prints one TAP result: ok when the reason ($2) is empty, else not ok with diagnostics.
tap() {
	n=$((n + 1))
	if [ -z "$2" ]; then
		echo "ok $n - $1"
	else
		echo "not ok $n - $1"
		echo "# $2"
		head -c 600 "$work/body" 2>/dev/null | sed 's/^/#   /'
		echo
	fi
}

# Starts a double in the background and waits (with a deadline) for its listening line; sets $port.
start_double() {
	local name=$1 pid deadline=$((SECONDS + 15))
	shift
	"$@" >"$work/$name.out" 2>"$work/$name.err" &
	pid=$!
	pids+=("$pid")
	until grep -q '^listening on 127\.0\.0\.1:[0-9]*$' "$work/$name.out" 2>/dev/null; do
		kill -0 "$pid" 2>/dev/null || bail "$name exited: $(cat "$work/$name.err")"
		[ "$SECONDS" -lt "$deadline" ] || bail "$name did not print its listening line in time"
		sleep 0.05
	done
	port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$work/$name.out")
}

# Sends one request with curl; sets status, elapsed, rc and fills $work/head and $work/body.
http() {
	local out
	: >"$work/head"
	: >"$work/body"
	out=$(curl -sS -o "$work/body" -D "$work/head" -w '%{http_code} %{time_total}' \
		--max-time 20 "$@" 2>"$work/curl.err")
	rc=$?
	status=${out%% *}
	elapsed=${out##* }
}

# One TAP line: the last response had STATUS and every KIND/ARG check holds
# (jq FILTER on the body, re REGEX on the body, hdr REGEX on the headers,
# slow MS: answered after at least MS, fast MS: answered within MS).
expect() {
	local desc=$1 want=$2 why=""
	shift 2
	[ "$rc" -eq 0 ] || why="curl exited $rc: $(cat "$work/curl.err")"
	[ -n "$why" ] || [ "$status" = "$want" ] || why="status $status, wanted $want"
	while [ $# -ge 2 ] && [ -z "$why" ]; do
		case $1 in
		jq) jq -e "$2" "$work/body" >/dev/null 2>&1 || why="body fails jq: $2" ;;
		re) grep -Eq "$2" "$work/body" || why="body does not match /$2/" ;;
		hdr) grep -Eiq "$2" "$work/head" || why="no header matches /$2/" ;;
		slow) awk -v t="$elapsed" -v ms="$2" 'BEGIN { exit !(t * 1000 >= ms * 0.95) }' ||
			why="answered after ${elapsed}s, wanted at least $2 ms" ;;
		fast) awk -v t="$elapsed" -v ms="$2" 'BEGIN { exit !(t * 1000 < ms) }' ||
			why="answered after ${elapsed}s, wanted under $2 ms" ;;
		esac
		shift 2
	done
	tap "$desc" "$why"
}

# One TAP line: the connection was closed without any answer.
expect_drop() {
	local why=""
	[ "$rc" -eq 52 ] || why="curl exited $rc (status $status), wanted 52 (empty reply)"
	tap "$1" "$why"
}

# Calls the control API: control METHOD PATH [JSON body].
control() {
	if [ $# -ge 3 ]; then
		http -X "$1" "$base/_double/$2" -H 'Content-Type: application/json' --data-binary "$3"
	else
		http -X "$1" "$base/_double/$2"
	fi
}

# Prints the HMAC-SHA256 webhook signature header value of body $2 at time $1 with secret $3.
webhook_signature() {
	printf 't=%s,v1=%s' "$1" "$(printf '%s.%s' "$1" "$2" | openssl dgst -sha256 -hmac "$3" -r | cut -d' ' -f1)"
}

# Runs the scripted-failure checks for provider $1 whose correct request is sent by
# function $2 and accepted with status $3; the remaining KIND/ARG pairs describe the
# provider's error shape, checked on the scripted 429 and 503 answers.
scripted_failures() {
	local name=$1 sender=$2 ok=$3
	shift 3
	control POST reset
	control POST script "{\"provider\":\"$name\",\"responses\":[{\"status\":429,\"retry_after\":2},{\"status\":503},{\"delay_ms\":$DELAY_MS},{\"drop\":true}]}"
	expect "$name: the control API accepts a failure script" 200 jq '.scripts == 1'
	$sender
	expect "$name: scripted 429 carries Retry-After: 2 in $name's error shape" 429 hdr '^Retry-After: 2' "$@"
	$sender
	expect "$name: scripted 503 comes in $name's error shape" 503 "$@"
	$sender
	expect "$name: scripted delay answers normally after $DELAY_MS ms" "$ok" slow "$DELAY_MS"
	$sender
	expect_drop "$name: scripted drop closes the connection without an answer"
	$sender
	expect "$name: once the script is used up, requests are handled normally" "$ok"
	control GET "requests?provider=$name"
	expect "$name: the records show the verdicts in order" 200 \
		jq '[.[].verdict] == ["scripted","scripted","accepted","dropped","accepted"] and .[2].delay_ms > 0'
}

command -v jq >/dev/null || bail "jq is needed"
command -v openssl >/dev/null || bail "openssl is needed"
python=${PYTHON:-}
if [ -z "$python" ]; then
	for candidate in $(type -ap python3); do
		if "$candidate" -c 'import aiosmtpd' 2>/dev/null; then
			python=$candidate
			break
		fi
	done
fi
[ -n "$python" ] || bail "no python3 with aiosmtpd found (apt-get install python3-aiosmtpd, or set PYTHON)"
make -s -C "$here" >&2 || bail "building provider_double failed"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 \
	-addext subjectAltName=IP:127.0.0.1 -keyout "$work/key.pem" -out "$work/cert.pem" \
	2>"$work/openssl.err" || bail "cannot make a test certificate: $(cat "$work/openssl.err")"

# One listener thread, so a late answer that blocked its thread would hold up everything.
start_double http "$here/provider_double" --config "$cfg" --port 0 --threads 1
base=http://127.0.0.1:$port

SG_KEY=$(jq -r .sendgrid.api_key "$cfg")
MG_KEY=$(jq -r .mailgun.api_key "$cfg")
MG_DOMAIN=$(jq -r .mailgun.domain "$cfg")
AWS_ID=$(jq -r .aws.access_key_id "$cfg")
AWS_SECRET=$(jq -r .aws.secret_access_key "$cfg")
AWS_REGION=$(jq -r .aws.region "$cfg")
TW_SID=$(jq -r .twilio.account_sid "$cfg")
TW_TOKEN=$(jq -r .twilio.auth_token "$cfg")
VN_KEY=$(jq -r .vonage.api_key "$cfg")
VN_SECRET=$(jq -r .vonage.api_secret "$cfg")
SLACK_TOKEN=$(jq -r .slack.bot_token "$cfg")
SLACK_HOOK=$(jq -r .slack.webhook "$cfg")
DC_ID=$(jq -r .discord.webhook_id "$cfg")
DC_TOKEN=$(jq -r .discord.webhook_token "$cfg")
TEAMS_PATH=$(jq -r .teams.connector_path "$cfg")
WF_ID=$(jq -r .teams.workflow_id "$cfg")
WF_SIG=$(jq -r .teams.workflow_sig "$cfg")
WH_SECRET=$(jq -r .webhook.secret "$cfg")

# ------------------------------------------------------------------ SendGrid
SG_MAIL='{"personalizations":[{"to":[{"email":"ada@example.test"}]}],"from":{"email":"noreply@example.test"},"subject":"Welcome","content":[{"type":"text/plain","value":"Hello Ada"}]}'
# Sends a SendGrid mail: sendgrid [api key] [body].
sendgrid() {
	http "$base/v3/mail/send" -H "Authorization: Bearer ${1:-$SG_KEY}" \
		-H 'Content-Type: application/json' --data-binary "${2:-$SG_MAIL}"
}
sendgrid
expect "sendgrid: a correct mail is accepted with 202 and X-Message-Id" 202 hdr '^X-Message-Id: [A-Za-z0-9_-]{22}'
sendgrid SG.wrong-key
expect "sendgrid: a wrong API key is rejected with 401 errors[]" 401 jq '.errors[0].message | test("authorization grant")'
sendgrid "$SG_KEY" '{"from":{"email":"noreply@example.test"},"subject":"x","content":[{"type":"text/plain","value":"x"}]}'
expect "sendgrid: a body without personalizations is rejected with 400 and the field" 400 jq '.errors[0].field == "personalizations"'
sendgrid "$SG_KEY" '{"personalizations":[{"to":[{"email":"ada@example.test"},{"email":"not an address"}]}],"from":{"email":"noreply@example.test"},"subject":"x","content":[{"type":"text/plain","value":"x"}]}'
expect "sendgrid: a bad address is rejected with 400 naming its place" 400 jq '.errors[0].field == "personalizations.0.to.1.email"'
sendgrid "$SG_KEY" '{"personalizations":[{"to":[{"email":"ada@example.test"}]}],"from":{"email":"noreply@example.test"},"subject":"x","content":[{"type":"text/plain","value":"x"},{"type":"text/html","value":""}]}'
expect "sendgrid: an empty content block is rejected with 400 naming it" 400 jq '.errors[0].field == "content.1"'
scripted_failures sendgrid sendgrid 202 jq '.errors[0].message | type == "string"'

# ------------------------------------------------------------------- Mailgun
# Sends a Mailgun message: mailgun [api key] [extra curl args...]; default fields from, to, subject, text.
mailgun() {
	local key=${1:-$MG_KEY}
	shift $(($# > 0 ? 1 : 0))
	if [ $# -eq 0 ]; then
		set -- --data-urlencode 'from=Notiflow <noreply@mg.example.test>' --data-urlencode to=ada@example.test \
			--data-urlencode subject=Welcome --data-urlencode 'text=Hello Ada'
	fi
	http "$base/v3/$MG_DOMAIN/messages" -u "api:$key" "$@"
}
mailgun
expect "mailgun: a correct urlencoded message is queued" 200 jq ".message == \"Queued. Thank you.\" and (.id | test(\"^<.+@$MG_DOMAIN>\$\"))"
mailgun "$MG_KEY" -F 'from=noreply@mg.example.test' -F to=ada@example.test -F subject=Hi --form-string 'html=<p>Hi</p>'
expect "mailgun: a correct multipart message is queued" 200 jq '.message == "Queued. Thank you."'
mailgun key-wrong
expect "mailgun: a wrong API key is rejected with 401 Forbidden" 401 re '^Forbidden$'
mailgun "$MG_KEY" --data-urlencode from=noreply@mg.example.test --data-urlencode text=hi
expect "mailgun: a message without 'to' is rejected with 400 {message}" 400 jq '.message == "'"'"'to'"'"' parameter is missing"'
scripted_failures mailgun mailgun 200 jq '.message | type == "string"'

# ------------------------------------------------------------------- SES v2
SES_MAIL='{"FromEmailAddress":"noreply@example.test","Destination":{"ToAddresses":["ada@example.test"]},"Content":{"Simple":{"Subject":{"Data":"Welcome"},"Body":{"Text":{"Data":"Hello Ada"},"Html":{"Data":"<p>Hello Ada</p>"}}}}}'
# Sends an SES v2 SendEmail request signed by curl: ses [secret] [body].
ses() {
	http "$base/v2/email/outbound-emails" --aws-sigv4 "aws:amz:$AWS_REGION:ses" \
		--user "$AWS_ID:${1:-$AWS_SECRET}" -H 'Content-Type: application/json' --data-binary "${2:-$SES_MAIL}"
}
ses
expect "ses: a correctly signed SendEmail is accepted with a MessageId" 200 jq '.MessageId | length > 20'
ses wrong-secret
expect "ses: a signature made with a wrong secret is rejected with 403" 403 hdr '^x-amzn-ErrorType: SignatureDoesNotMatch' jq '.message | test("signature")'
http "$base/v2/email/outbound-emails" -H 'Content-Type: application/json' --data-binary "$SES_MAIL"
expect "ses: an unsigned request is rejected with 403 MissingAuthenticationToken" 403 hdr '^x-amzn-ErrorType: MissingAuthenticationToken'
ses "$AWS_SECRET" '{"FromEmailAddress":"noreply@example.test","Content":{"Simple":{"Subject":{"Data":"x"},"Body":{"Text":{"Data":"x"}}}}}'
expect "ses: a body without Destination is rejected with 400 BadRequestException" 400 hdr '^x-amzn-ErrorType: BadRequestException'
scripted_failures ses ses 200 hdr '^x-amzn-ErrorType: (TooManyRequestsException|InternalFailure)' jq '.message | type == "string"'

# -------------------------------------------------------------------- Twilio
# Sends a Twilio message: twilio [auth token] [To]; the Body holds a '+' to check form decoding.
twilio() {
	http "$base/2010-04-01/Accounts/$TW_SID/Messages.json" -u "$TW_SID:${1:-$TW_TOKEN}" \
		--data-urlencode "To=${2:-+15555550100}" --data-urlencode From=+15555550199 \
		--data-urlencode 'Body=Your code: 1 + 1'
}
twilio
expect "twilio: a correct message is created with 201, sid SM… and status queued" 201 \
	jq '(.sid | test("^SM[0-9a-f]{32}$")) and .status == "queued" and .body == "Your code: 1 + 1" and .to == "+15555550100"'
twilio wrong-token
expect "twilio: a wrong auth token is rejected with 401 code 20003" 401 jq '.code == 20003 and .status == 401'
twilio "$TW_TOKEN" not-a-number
expect "twilio: an invalid To is rejected with 400 code 21211" 400 jq '.code == 21211 and (.more_info | test("21211"))'
scripted_failures twilio twilio 201 jq '.code >= 20000 and (.message | type == "string") and (.status | type == "number")'

# ----------------------------------------------------------------------- SNS
# Sends an SNS Publish signed by curl: sns [secret] [no-message].
sns() {
	local message=(--data-urlencode 'Message=Your code is 1234')
	[ "${2:-}" = no-message ] && message=()
	http "$base/" --aws-sigv4 "aws:amz:$AWS_REGION:sns" --user "$AWS_ID:${1:-$AWS_SECRET}" \
		--data-urlencode Action=Publish --data-urlencode PhoneNumber=+15555550100 \
		"${message[@]}" --data-urlencode Version=2010-03-31
}
sns
expect "sns: a correctly signed Publish answers PublishResponse with a MessageId" 200 re '<PublishResponse .*' re '<MessageId>[0-9a-f-]{36}</MessageId>'
sns wrong-secret
expect "sns: a signature made with a wrong secret is rejected with 403 SignatureDoesNotMatch" 403 re '<Code>SignatureDoesNotMatch</Code>'
sns "$AWS_SECRET" no-message
expect "sns: a Publish without Message is rejected with 400 ValidationError" 400 re '<Code>ValidationError</Code>'
scripted_failures sns sns 200 re '<Code>(Throttling|ServiceUnavailable)</Code>'

# -------------------------------------------------------------------- Vonage
# Sends a Vonage SMS as a form: vonage [api secret] [to].
vonage() {
	http "$base/sms/json" --data-urlencode "api_key=$VN_KEY" --data-urlencode "api_secret=${1:-$VN_SECRET}" \
		--data-urlencode from=Notiflow --data-urlencode "to=${2:-15555550100}" --data-urlencode 'text=Hello Ada'
}
vonage
expect "vonage: a correct form SMS answers message-count 1 and status \"0\"" 200 \
	jq '."message-count" == "1" and .messages[0].status == "0" and (.messages[0]."message-id" | length > 0)'
http "$base/sms/json" -H 'Content-Type: application/json' \
	--data-binary "{\"api_key\":\"$VN_KEY\",\"api_secret\":\"$VN_SECRET\",\"from\":\"Notiflow\",\"to\":\"15555550100\",\"text\":\"hi\"}"
expect "vonage: a correct JSON SMS is accepted too" 200 jq '.messages[0].status == "0"'
vonage wrong-secret
expect "vonage: a wrong secret answers HTTP 200 with status \"4\" Bad Credentials" 200 jq '.messages[0].status == "4" and .messages[0]."error-text" == "Bad Credentials"'
vonage "$VN_SECRET" abc
expect "vonage: an invalid to answers status \"3\"" 200 jq '.messages[0].status == "3"'
control POST script '{"provider":"vonage","responses":[{"error":"1"}]}'
vonage
expect "vonage: a scripted per-message failure answers HTTP 200 with status \"1\" Throttled" 200 jq '.messages[0].status == "1" and .messages[0]."error-text" == "Throttled"'
scripted_failures vonage vonage 200 jq '.title | type == "string"'

# --------------------------------------------------------------------- Slack
SLACK_MSG='{"channel":"C0123456789","text":"Hello Ada"}'
# Posts a Slack message: slack [token] [body].
slack() {
	http "$base/api/chat.postMessage" -H "Authorization: Bearer ${1:-$SLACK_TOKEN}" \
		-H 'Content-Type: application/json; charset=utf-8' --data-binary "${2:-$SLACK_MSG}"
}
slack
expect "slack: a correct chat.postMessage answers ok, channel and ts" 200 jq '.ok == true and .channel == "C0123456789" and (.ts | test("^[0-9]+\\.[0-9]{6}$"))'
slack xoxb-wrong
expect "slack: a wrong token answers HTTP 200 ok:false invalid_auth" 200 jq '.ok == false and .error == "invalid_auth"'
slack "$SLACK_TOKEN" '{"channel":'
expect "slack: malformed JSON answers ok:false invalid_json" 200 jq '.ok == false and .error == "invalid_json"'
slack "$SLACK_TOKEN" '{"channel":"C0123456789"}'
expect "slack: a message without text answers ok:false no_text" 200 jq '.error == "no_text"'
control POST script '{"provider":"slack","responses":[{"error":"channel_not_found"}]}'
slack
expect "slack: a scripted error answers HTTP 200 ok:false with that error" 200 jq '.ok == false and .error == "channel_not_found"'
scripted_failures slack slack 200 jq '.ok == false and (.error | type == "string")'

# ------------------------------------------------------------ Slack webhooks
SLACK_HOOK_MSG='{"text":"Hello Ada"}'
# Posts to a Slack incoming webhook: slack_webhook [T/B/secret] [body].
slack_webhook() {
	http "$base/services/${1:-$SLACK_HOOK}" -H 'Content-Type: application/json' --data-binary "${2:-$SLACK_HOOK_MSG}"
}
slack_webhook
expect "slack_webhook: a correct payload answers 200 ok" 200 re '^ok$'
slack_webhook "${SLACK_HOOK%/*}/wrong-secret"
expect "slack_webhook: a wrong secret is rejected with 403 invalid_token" 403 re '^invalid_token$'
slack_webhook "$SLACK_HOOK" 'text=hello'
expect "slack_webhook: a non-JSON payload is rejected with 400 invalid_payload" 400 re '^invalid_payload$'
scripted_failures slack_webhook slack_webhook 200 re '^(rate_limited|internal_error)$'

# ------------------------------------------------------------------- Discord
DC_MSG='{"content":"Hello Ada"}'
# Executes a Discord webhook: discord [token] [body] [query, default ?wait=true].
discord() {
	http "$base/api/webhooks/$DC_ID/${1:-$DC_TOKEN}${3-?wait=true}" -H 'Content-Type: application/json' \
		--data-binary "${2:-$DC_MSG}"
}
discord
expect "discord: with wait=true a correct message answers 200 with the message id" 200 jq '(.id | test("^[0-9]+$")) and .content == "Hello Ada"'
discord "$DC_TOKEN" "$DC_MSG" ""
expect "discord: without wait a correct message answers 204" 204
discord wrong-token
expect "discord: a wrong token is rejected with 401 code 50027" 401 jq '.code == 50027'
discord "$DC_TOKEN" '{"content":'
expect "discord: malformed JSON is rejected with 400 code 50109" 400 jq '.code == 50109'
discord "$DC_TOKEN" '{"content":""}'
expect "discord: an empty message is rejected with 400 code 50006" 400 jq '.code == 50006'
scripted_failures discord discord 200 jq '.message | type == "string"'
control POST script '{"provider":"discord","responses":[{"status":429,"retry_after":3}]}'
discord
expect "discord: a scripted 429 carries retry_after in the body as Discord does" 429 jq '.retry_after == 3 and .global == false'

# --------------------------------------------------------- Teams (connector)
TEAMS_CARD='{"@type":"MessageCard","@context":"https://schema.org/extensions","summary":"Welcome","text":"Hello Ada"}'
# Posts to the Teams connector: teams [path] [body].
teams() {
	http "$base${1:-$TEAMS_PATH}" -H 'Content-Type: application/json' --data-binary "${2:-$TEAMS_CARD}"
}
teams
expect "teams: a correct MessageCard answers 200 with body 1" 200 re '^1$'
teams "$TEAMS_PATH" '{"type":"message","attachments":[{"contentType":"application/vnd.microsoft.card.adaptive","content":{"type":"AdaptiveCard","version":"1.4","body":[{"type":"TextBlock","text":"Hi"}]}}]}'
expect "teams: a correct Adaptive Card message answers 200 with body 1" 200 re '^1$'
teams /webhookb2/unknown/IncomingWebhook/x/y
expect "teams: an unknown connector URL is rejected with 404" 404
teams "$TEAMS_PATH" '{"@type":"MessageCard"}'
expect "teams: a card without summary or text is rejected with 400" 400 re 'Summary or Text is required'
scripted_failures teams teams 200 re '.'

# --------------------------------------------------------- Teams (Workflows)
WF_CARD='{"type":"message","attachments":[{"contentType":"application/vnd.microsoft.card.adaptive","content":{"type":"AdaptiveCard","version":"1.4","body":[{"type":"TextBlock","text":"Hello Ada"}]}}]}'
# Posts to the Teams Workflows trigger: teams_workflow [sig] [body].
teams_workflow() {
	http "$base/workflows/$WF_ID/triggers/manual/paths/invoke?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=${1:-$WF_SIG}" \
		-H 'Content-Type: application/json' --data-binary "${2:-$WF_CARD}"
}
teams_workflow
expect "teams_workflow: a correct Adaptive Card message answers 202" 202
teams_workflow wrong-sig
expect "teams_workflow: a wrong sig is rejected with 401 and an error code" 401 jq '.error.code == "DirectApiInvalidAuthorizationSignature"'
teams_workflow "$WF_SIG" "$TEAMS_CARD"
expect "teams_workflow: a MessageCard is rejected with 400 TriggerInputSchemaMismatch" 400 jq '.error.code == "TriggerInputSchemaMismatch"'
scripted_failures teams_workflow teams_workflow 202 jq '.error.code | type == "string"'

# ----------------------------------------------------------- generic webhook
WH_BODY='{"event":"order.created","id":42}'
# Posts a signed generic webhook: webhook [secret] [body] [unix time].
webhook() {
	local body=${2:-$WH_BODY} t=${3:-$(date +%s)}
	http "$base/hooks/orders/created" -H 'Content-Type: application/json' \
		-H "X-Notiflow-Signature: $(webhook_signature "$t" "$body" "${1:-$WH_SECRET}")" --data-binary "$body"
}
webhook
expect "webhook: a correctly signed JSON body answers 200" 200 jq '.received == true'
webhook wrong-secret
expect "webhook: a signature made with a wrong secret is rejected with 401" 401 jq '.error == "signature_mismatch"'
webhook "$WH_SECRET" "$WH_BODY" $(($(date +%s) - 3600))
expect "webhook: a signature an hour old is rejected with 401" 401 jq '.error == "timestamp_out_of_tolerance"'
webhook "$WH_SECRET" 'not json'
expect "webhook: a signed non-JSON body is rejected with 400" 400 jq '.error == "invalid_json"'
scripted_failures webhook webhook 200 jq '.error | test("^http_")'

# --------------------------------------------------------------- control API
control POST reset
control POST script '{"match":"/v3/mail/send","responses":[{"status":400},{"status":500,"body":"oops","headers":{"X-Debug":"scripted"}}],"repeat":true}'
expect "control: a path-matched repeating script is accepted" 200 jq '.scripts == 1'
sendgrid
expect "control: a scripted 400 answers in SendGrid's error shape" 400 jq '.errors[0].message == "Bad Request"'
sendgrid
expect "control: a scripted body, status and header are answered verbatim" 500 re '^oops$' hdr '^X-Debug: scripted'
sendgrid
expect "control: a repeating script starts over" 400
control POST script '{"match":"/v3/mail/send","responses":[{"status":200}]}'
expect "control: a status below 400 without body or error is refused" 400 jq '.error | test("below 400")'
control POST script '{"provider":"nope","responses":[{"status":500}]}'
expect "control: an unknown provider is refused" 400 jq '.error | test("unknown provider")'
control POST script '{"provider":"sendgrid","responses":[{"stauts":500}]}'
expect "control: an unknown response key is refused" 400 jq '.error | test("stauts")'
http "$base/no/such/provider?x=1" -d 'hello'
expect "control: an unknown path answers 404" 404 jq '.error == "not_found"'
control GET requests
expect "control: records carry provider, method, path, query, headers, body, status, verdict and time" 200 \
	jq '.[-1] | .provider == "unknown" and .method == "POST" and .path == "/no/such/provider" and .query.x == "1" and .headers.Host != null and .body == "hello" and .status == 404 and .verdict == "unrouted" and (.received_at | test("Z$"))'
control GET stats
expect "control: stats count requests per provider" 200 jq '.total == 4 and .providers.sendgrid.requests == 3 and .providers.sendgrid.scripted == 3 and .unknown.requests == 1'
control POST reset
control GET requests
expect "control: reset forgets the records" 200 jq 'length == 0'
control GET stats
expect "control: reset zeroes the stats" 200 jq '.total == 0'
sendgrid
expect "control: reset unloads the scripts" 202
control POST script '{"provider":"sendgrid","responses":[{"status":429}]}'
http "$base/v3/mail/send"
expect "control: a GET on a provider path answers 405 and takes no scripted response" 405 hdr '^Allow: POST'
sendgrid
expect "control: the scripted response goes to the next POST" 429
control POST script '{"provider":"discord","responses":[{"delay_ms":1500}]}'
curl -s -o /dev/null -w '%{http_code} %{time_total}' --max-time 20 "$base/api/webhooks/$DC_ID/$DC_TOKEN" \
	-H 'Content-Type: application/json' --data-binary "$DC_MSG" >"$work/slow" &
slow_pid=$!
deadline=$((SECONDS + 10))
until [ "$(curl -s "$base/_double/stats" | jq .delayed_now)" = 1 ] || [ "$SECONDS" -ge "$deadline" ]; do
	sleep 0.02
done
control GET stats
expect "control: stats show the request held by a scripted delay" 200 jq '.delayed_now == 1'
sendgrid
expect "control: a delayed answer does not hold up other requests" 202 fast 1000
wait "$slow_pid"
read -r slow_status slow_elapsed <"$work/slow"
tap "control: the delayed request is answered after its delay" \
	"$(awk -v s="$slow_status" -v t="$slow_elapsed" 'BEGIN { if (s != 204 || t < 1.4) print "status " s " after " t "s" }')"
control GET stats
expect "control: once answered it is no longer counted as delayed" 200 jq '.delayed_now == 0'

# ------------------------------------------------------------------------ TLS
start_double https "$here/provider_double" --config "$cfg" --port 0 --no-record --threads 1 \
	--cert "$work/cert.pem" --key "$work/key.pem"
tls_base=https://127.0.0.1:$port
http "$tls_base/v3/mail/send" --cacert "$work/cert.pem" -H "Authorization: Bearer $SG_KEY" \
	-H 'Content-Type: application/json' --data-binary "$SG_MAIL"
expect "tls: with --cert/--key the double serves HTTPS verified against the CA file" 202
http "$tls_base/v3/mail/send" -H "Authorization: Bearer $SG_KEY" --data-binary "$SG_MAIL"
tap "tls: a client without the CA file refuses the certificate" "$([ "$rc" -eq 60 ] || echo "curl exited $rc, wanted 60")"
http "$tls_base/_double/requests" --cacert "$work/cert.pem"
expect "tls: --no-record keeps no records" 200 jq 'length == 0'
http "$tls_base/_double/stats" --cacert "$work/cert.pem"
expect "tls: --no-record still counts" 200 jq '.providers.sendgrid.accepted == 1'

# ----------------------------------------------------------------------- SMTP
smtp_out=$work/smtp.jsonl
start_double smtp "$python" "$here/smtp_double.py" --config "$cfg" --out "$smtp_out" --port 0 \
	--cert "$work/cert.pem" --key "$work/key.pem" --reject-rcpt '^blocked@'
smtp_port=$port
SMTP_USER=$(jq -r .smtp.username "$cfg")
SMTP_PASS=$(jq -r .smtp.password "$cfg")
cat >"$work/mail.eml" <<'EOF'
From: Notiflow <noreply@example.test>
To: Ada <ada@example.test>
Subject: Welcome, Ada
Message-ID: <welcome-1@example.test>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="notiflow-boundary"

--notiflow-boundary
Content-Type: text/plain; charset=utf-8

Hello Ada
--notiflow-boundary
Content-Type: text/html; charset=utf-8

<p>Hello Ada</p>
--notiflow-boundary--
EOF

# Sends mail.eml over SMTP to port $1 with extra curl args; sets rc and keeps the dialogue in $work/smtp.log.
smtp_send() {
	local p=$1
	shift
	curl -sv --max-time 20 "smtp://127.0.0.1:$p" --mail-from noreply@example.test \
		--upload-file "$work/mail.eml" "$@" >/dev/null 2>"$work/smtp.log"
	rc=$?
}

# Counts the captured lines of file $1.
lines() {
	if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi
}

smtp_send "$smtp_port" --mail-rcpt ada@example.test --user "$SMTP_USER:$SMTP_PASS"
tap "smtp: a plain-text session with AUTH PLAIN delivers" "$([ "$rc" -eq 0 ] || echo "curl exited $rc")"
jq -e --arg u "$SMTP_USER" 'select(.queue_id == "DOUBLE000001") | .mail_from == "noreply@example.test" and .rcpt_tos == ["ada@example.test"] and .subject == "Welcome, Ada" and .text == "Hello Ada" and .html == "<p>Hello Ada</p>" and .auth_user == $u and .tls == false and .headers["Message-ID"] == "<welcome-1@example.test>"' \
	"$smtp_out" >/dev/null 2>&1
tap "smtp: the captured line has envelope, headers, text and html parts" "$([ $? -eq 0 ] || echo "capture: $(cat "$smtp_out" 2>/dev/null)")"
smtp_send "$smtp_port" --mail-rcpt ada@example.test --user "$SMTP_USER:$SMTP_PASS" --ssl-reqd \
	--cacert "$work/cert.pem" --login-options AUTH=LOGIN
tap "smtp: STARTTLS with the generated certificate and AUTH LOGIN delivers" "$([ "$rc" -eq 0 ] || echo "curl exited $rc")"
jq -e 'select(.queue_id == "DOUBLE000002") | .tls == true and .auth_user != null' "$smtp_out" >/dev/null 2>&1
tap "smtp: the captured line records TLS" "$([ $? -eq 0 ] || echo "capture: $(tail -n 1 "$smtp_out")")"
before=$(lines "$smtp_out")
smtp_send "$smtp_port" --mail-rcpt ada@example.test --user "$SMTP_USER:wrong"
tap "smtp: a wrong password is refused with 535" "$(grep -q '^< 535' "$work/smtp.log" && [ "$rc" -ne 0 ] || echo "curl exited $rc")"
smtp_send "$smtp_port" --mail-rcpt ada@example.test
tap "smtp: sending without AUTH is refused with 530" "$(grep -q '^< 530' "$work/smtp.log" && [ "$rc" -ne 0 ] || echo "curl exited $rc")"
smtp_send "$smtp_port" --mail-rcpt blocked@example.test --user "$SMTP_USER:$SMTP_PASS"
tap "smtp: a recipient matching --reject-rcpt is refused with 550" "$(grep -q '^< 550 5.1.1' "$work/smtp.log" && [ "$rc" -ne 0 ] || echo "curl exited $rc")"
tap "smtp: refused sessions capture nothing" "$([ "$(lines "$smtp_out")" -eq "$before" ] || echo "capture grew")"

smtp451_out=$work/smtp451.jsonl
start_double smtp451 "$python" "$here/smtp_double.py" --config "$cfg" --out "$smtp451_out" --port 0 \
	--tempfail 451 --tempfail-count 1
smtp_send "$port" --mail-rcpt ada@example.test --user "$SMTP_USER:$SMTP_PASS"
tap "smtp: --tempfail 451 answers 451 after DATA" "$(grep -q '^< 451' "$work/smtp.log" && [ "$rc" -ne 0 ] || echo "curl exited $rc")"
smtp_send "$port" --mail-rcpt ada@example.test --user "$SMTP_USER:$SMTP_PASS"
tap "smtp: after --tempfail-count failures the retry is delivered" "$([ "$rc" -eq 0 ] && [ "$(lines "$smtp451_out")" -eq 1 ] || echo "curl exited $rc")"

smtp421_out=$work/smtp421.jsonl
start_double smtp421 "$python" "$here/smtp_double.py" --config "$cfg" --out "$smtp421_out" --port 0 \
	--tempfail 421 --tempfail-at mail --tempfail-count 1
smtp_send "$port" --mail-rcpt ada@example.test --user "$SMTP_USER:$SMTP_PASS"
tap "smtp: --tempfail 421 at MAIL answers 421" "$(grep -q '^< 421' "$work/smtp.log" && [ "$rc" -ne 0 ] || echo "curl exited $rc")"
smtp_send "$port" --mail-rcpt ada@example.test --user "$SMTP_USER:$SMTP_PASS"
tap "smtp: the retry after a 421 is delivered" "$([ "$rc" -eq 0 ] && [ "$(lines "$smtp421_out")" -eq 1 ] || echo "curl exited $rc")"

echo "1..$n"
