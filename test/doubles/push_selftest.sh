#!/usr/bin/env bash
# push_selftest.sh — TAP self-test of push_double.mjs, the double of the push
# providers (FCM with its OAuth token endpoint, APNs, Web Push) that notiflow's
# push adapters are tested against.
#
# Makes throw-away keys and a certificate with openssl, starts the double on a
# free port and checks with curl (HTTP/2 over TLS) that each route accepts a
# correct request in the provider's shape and refuses wrong ones the way the
# provider does: JWTs signed by the wrong key, in DER instead of r||s, for the
# wrong audience or too old; unregistered tokens and gone subscriptions;
# missing headers; bodies that do not decrypt. JWTs are signed by openssl, not
# by the double's code. The Web Push decryption is checked against the worked
# example of RFC 8291 Appendix A ($NOTIFLOW_SHARED/webpush-rfc8291-appendix-a.json).
#
# Run from the project root:  prove -v --exec bash test/doubles/push_selftest.sh
# Needs node (>= 20), curl with HTTP/2, jq, openssl and coreutils' basenc.

set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
shared=${NOTIFLOW_SHARED:-$here/../../../shared}
rfc=$shared/webpush-rfc8291-appendix-a.json
work=$(mktemp -d)
pids=()
n=0
DELAY_MS=600

# Stops the double this script started and removes its scratch directory.
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

# Sends one request with curl (HTTP/2 unless told otherwise, trusting the test CA);
# sets status, elapsed, rc and fills $work/head and $work/body.
http() {
	local out
	: >"$work/head"
	: >"$work/body"
	out=$(curl -sS --http2 --cacert "$work/cert.pem" -o "$work/body" -D "$work/head" \
		-w '%{http_code} %{time_total}' --max-time 20 "$@" 2>"$work/curl.err")
	rc=$?
	status=${out%% *}
	elapsed=${out##* }
}

# One TAP line: the last response had STATUS and every KIND/ARG check holds
# (jq FILTER on the body, hdr REGEX on the headers, slow MS / fast MS on the time).
expect() {
	local desc=$1 want=$2 why=""
	shift 2
	[ "$rc" -eq 0 ] || why="curl exited $rc: $(cat "$work/curl.err")"
	[ -n "$why" ] || [ "$status" = "$want" ] || why="status $status, wanted $want"
	while [ $# -ge 2 ] && [ -z "$why" ]; do
		case $1 in
		jq) jq -e "$2" "$work/body" >/dev/null 2>&1 || why="body fails jq: $2" ;;
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

# One TAP line: the last record of provider $2 satisfies jq filter $3.
expect_record() {
	local rec
	rec=$(curl -s --cacert "$work/cert.pem" "$base/_double/requests?provider=$2" | jq -c last)
	jq -e "$3" <<<"$rec" >/dev/null 2>&1
	tap "$1" "$([ $? -eq 0 ] || echo "record fails jq $3: ${rec:0:600}")"
}

# Calls the control API: control METHOD PATH [JSON body].
control() {
	if [ $# -ge 3 ]; then
		http -X "$1" "$base/_double/$2" -H 'Content-Type: application/json' --data-binary "$3"
	else
		http -X "$1" "$base/_double/$2"
	fi
}

# Encodes stdin as base64url without padding.
b64u() {
	basenc --base64url -w0 | tr -d '='
}

# Writes the bytes of hex string $1 to stdout.
hexbin() {
	local hex=$1 i
	for ((i = 0; i < ${#hex}; i += 2)); do
		printf "\\x${hex:i:2}"
	done
}

# Converts a DER ECDSA signature on stdin to the 64-byte r||s form JWS ES256 uses.
der_to_raw() {
	local int hex=""
	while read -r int; do
		int=$(printf '%064s' "$int" | tr ' ' 0)
		hex+=${int: -64}
	done < <(openssl asn1parse -inform DER | sed -n 's/.*INTEGER *:\([0-9A-Fa-f]*\)$/\1/p')
	hexbin "$hex"
}

# Prints a compact JWS: jwt ALG KEYFILE HEADER-JSON CLAIMS-JSON [der].
# ES256 signatures are converted to r||s unless "der" asks for openssl's DER form.
jwt() {
	local input sig
	input=$(printf '%s' "$3" | b64u).$(printf '%s' "$4" | b64u)
	if [ "$1" = ES256 ] && [ "${5:-}" != der ]; then
		sig=$(printf '%s' "$input" | openssl dgst -sha256 -sign "$2" | der_to_raw | b64u)
	else
		sig=$(printf '%s' "$input" | openssl dgst -sha256 -sign "$2" | b64u)
	fi
	printf '%s.%s' "$input" "$sig"
}

# Makes a P-256 key $1.pem and prints "PRIVATE PUBLIC": the raw key and point in base64url.
ec_key() {
	openssl ecparam -name prime256v1 -genkey -noout -out "$work/$1.pem" 2>/dev/null
	openssl ec -in "$work/$1.pem" -outform DER -out "$work/$1.der" 2>/dev/null
	echo "$(head -c 39 "$work/$1.der" | tail -c 32 | b64u) $(tail -c 65 "$work/$1.der" | b64u)"
}

command -v node >/dev/null || bail "node is needed"
command -v jq >/dev/null || bail "jq is needed"
command -v openssl >/dev/null || bail "openssl is needed"
command -v basenc >/dev/null || bail "basenc (coreutils) is needed"
curl -V | grep -q HTTP2 || bail "curl lacks HTTP/2"
[ -f "$rfc" ] || bail "no $rfc (set NOTIFLOW_SHARED)"

# ------------------------------------------------------------ keys and config
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 \
	-addext subjectAltName=IP:127.0.0.1 -keyout "$work/key.pem" -out "$work/cert.pem" \
	2>"$work/openssl.err" || bail "cannot make a test certificate: $(cat "$work/openssl.err")"
for k in fcm fcm_other; do
	openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/$k.pem" 2>/dev/null ||
		bail "cannot make an RSA key"
done
openssl pkey -in "$work/fcm.pem" -pubout -out "$work/fcm.pub" 2>/dev/null
read -r _ _ <<<"$(ec_key apns)"
read -r _ _ <<<"$(ec_key apns_other)"
openssl pkey -in "$work/apns.pem" -pubout -out "$work/apns.pub" 2>/dev/null
read -r _ VAPID_PUB <<<"$(ec_key vapid)"
read -r _ OTHER_VAPID_PUB <<<"$(ec_key vapid_other)"
read -r SUB_PRIV SUB_PUB <<<"$(ec_key sub1)"
SUB_AUTH=$(openssl rand 16 | b64u)
OTHER_AUTH=$(openssl rand 16 | b64u)

PROJECT=notiflow-double
CLIENT_EMAIL=push@notiflow-double.iam.gserviceaccount.com
TEAM=TEAM123456
KEY_ID=KEYID12345
TOPIC=com.example.notiflow
GOOD_TOKEN=fcm-token-good:APA91b_0123456789
APNS_DEV=$(openssl rand -hex 32)
APNS_GONE=$(openssl rand -hex 32)
APNS_BAD=$(openssl rand -hex 32)
jq -n --rawfile fcm "$work/fcm.pub" --rawfile apns "$work/apns.pub" \
	--arg project "$PROJECT" --arg email "$CLIENT_EMAIL" --arg team "$TEAM" --arg kid "$KEY_ID" \
	--arg topic "$TOPIC" --arg gone "$APNS_GONE" --arg bad "$APNS_BAD" \
	--arg sp "$SUB_PRIV" --arg sa "$SUB_AUTH" --arg vapid "$VAPID_PUB" \
	--arg rp "$(jq -r .ua_private "$rfc")" --arg ra "$(jq -r .auth_secret "$rfc")" '{
	fcm: {project_id: $project, client_email: $email, private_key_id: "kid-1", public_key: $fcm,
	      unregistered: ["fcm-token-unregistered"], invalid: ["fcm-token-invalid"]},
	apns: {team_id: $team, key_id: $kid, topic: $topic, public_key: $apns,
	       unregistered: [$gone], bad_tokens: [$bad]},
	webpush: {subscriptions: {
	    sub1: {private_key: $sp, auth: $sa},
	    restricted: {private_key: $sp, auth: $sa, vapid_public_key: $vapid},
	    rfc8291: {private_key: $rp, auth: $ra},
	    gone: {private_key: $sp, auth: $sa, gone: 410},
	    deleted: {private_key: $sp, auth: $sa, gone: 404}}}
}' >"$work/config.json" || bail "cannot write the config"

# Encrypts plaintext $3 for a subscription (p256dh $1, auth $2) as aes128gcm with $4
# bytes of padding, like an application server (RFC 8291 §3.4, RFC 8188): body on stdout.
cat >"$work/encrypt.mjs" <<'EOF'
import crypto from 'node:crypto';
const [p256dh, auth, text, pad = '0'] = process.argv.slice(2);
const ua = Buffer.from(p256dh, 'base64url');
const as = crypto.createECDH('prime256v1');
as.generateKeys();
const asPub = as.getPublicKey();
const salt = crypto.randomBytes(16);
const kdf = (ikm, s, info, n) => Buffer.from(crypto.hkdfSync('sha256', ikm, s, Buffer.from(info), n));
const ikm = kdf(as.computeSecret(ua), Buffer.from(auth, 'base64url'),
	Buffer.concat([Buffer.from('WebPush: info\0'), ua, asPub]), 32);
const c = crypto.createCipheriv('aes-128-gcm', kdf(ikm, salt, 'Content-Encoding: aes128gcm\0', 16),
	kdf(ikm, salt, 'Content-Encoding: nonce\0', 12));
const rec = Buffer.concat([c.update(Buffer.concat([Buffer.from(text), Buffer.from([2]), Buffer.alloc(Number(pad))])),
	c.final(), c.getAuthTag()]);
const rs = Buffer.alloc(4);
rs.writeUInt32BE(4096);
process.stdout.write(Buffer.concat([salt, rs, Buffer.from([65]), asPub, rec]));
EOF

# ----------------------------------------------------------------- the double
node "$here/push_double.mjs" --port 0 --cert "$work/cert.pem" --key "$work/key.pem" \
	--config "$work/config.json" >"$work/double.out" 2>"$work/double.err" &
pid=$!
pids+=("$pid")
deadline=$((SECONDS + 15))
until grep -q '^listening on 127\.0\.0\.1:[0-9]*$' "$work/double.out" 2>/dev/null; do
	kill -0 "$pid" 2>/dev/null || bail "push_double exited: $(cat "$work/double.err")"
	[ "$SECONDS" -lt "$deadline" ] || bail "push_double did not print its listening line in time"
	sleep 0.05
done
port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$work/double.out")
base=https://127.0.0.1:$port

# ---------------------------------------------------------- FCM token endpoint
now=$(date +%s)
SCOPE=https://www.googleapis.com/auth/firebase.messaging
# Prints an FCM assertion: fcm_assertion [key] [claims overrides as jq object].
fcm_assertion() {
	jwt RS256 "$work/${1:-fcm}.pem" '{"alg":"RS256","typ":"JWT","kid":"kid-1"}' \
		"$(jq -nc --arg iss "$CLIENT_EMAIL" --arg aud "$base/token" --arg scope "$SCOPE" --argjson now "$now" \
			"{iss: \$iss, scope: \$scope, aud: \$aud, iat: \$now, exp: (\$now + 3600)} + ${2:-"{}"}")"
}
# Asks for an access token: fcm_token ASSERTION [grant type].
fcm_token() {
	http "$base/token" --data-urlencode "grant_type=${2:-urn:ietf:params:oauth:grant-type:jwt-bearer}" \
		--data-urlencode "assertion=$1"
}
fcm_token "$(fcm_assertion)"
expect "fcm_token: a service account's RS256 assertion gets an access token" 200 \
	jq '(.access_token | test("^ya29\\.")) and .expires_in == 3600 and .token_type == "Bearer"'
ACCESS=$(jq -r .access_token "$work/body")
expect_record "fcm_token: the record keeps the form and the verified claims" fcm_token \
	".verdict == \"accepted\" and .form.grant_type == \"urn:ietf:params:oauth:grant-type:jwt-bearer\" and .jwt.claims.iss == \"$CLIENT_EMAIL\" and .http_version == \"2.0\""
fcm_token "$(fcm_assertion fcm_other)"
expect "fcm_token: an assertion signed by another key is refused with invalid_grant" 400 \
	jq '.error == "invalid_grant" and .error_description == "Invalid JWT Signature."'
fcm_token "$(fcm_assertion fcm '{aud: "https://oauth2.googleapis.com/token"}')"
expect "fcm_token: an assertion for another audience is refused" 400 jq '.error == "invalid_grant"'
fcm_token "$(fcm_assertion fcm "{iat: ($now - 7200), exp: ($now - 3600)}")"
expect "fcm_token: an expired assertion is refused" 400 jq '.error == "invalid_grant" and (.error_description | test("short-lived"))'
fcm_token "$(fcm_assertion fcm '{iss: "someone@else.iam.gserviceaccount.com"}')"
expect "fcm_token: an assertion from another account is refused" 400 jq '.error == "invalid_grant"'
fcm_token "$(fcm_assertion fcm '{scope: "https://www.googleapis.com/auth/userinfo.email"}')"
expect "fcm_token: an assertion without the firebase.messaging scope is refused with invalid_scope" 400 jq '.error == "invalid_scope"'
fcm_token "$(fcm_assertion)" client_credentials
expect "fcm_token: another grant type is refused with unsupported_grant_type" 400 jq '.error == "unsupported_grant_type"'

# ------------------------------------------------------------------- FCM send
FCM_MSG=$(jq -nc --arg t "$GOOD_TOKEN" '{message: {token: $t, notification: {title: "Order shipped", body: "On its way"}, data: {order: "A-1"}}}')
# Sends an FCM message: fcm_send [bearer] [body] [project].
fcm_send() {
	http "$base/v1/projects/${3:-$PROJECT}/messages:send" -H "Authorization: Bearer ${1:-$ACCESS}" \
		-H 'Content-Type: application/json; charset=UTF-8' --data-binary "${2:-$FCM_MSG}"
}
fcm_send
expect "fcm: a message to a registration token is accepted with its name" 200 \
	jq ".name | test(\"^projects/$PROJECT/messages/0:[0-9]+%[0-9a-f]+\$\")"
expect_record "fcm: the record keeps the message, the HTTP version and the message id" fcm \
	'.verdict == "accepted" and (.body | fromjson | .message.data.order) == "A-1" and .http_version == "2.0" and (.message_id | startswith("projects/"))'
fcm_send ya29.not-issued
expect "fcm: a bearer token the double did not issue is refused with 401" 401 jq '.error.code == 401 and .error.status == "UNAUTHENTICATED"'
http "$base/v1/projects/$PROJECT/messages:send" -H 'Content-Type: application/json' --data-binary "$FCM_MSG"
expect "fcm: no Authorization is refused with 401" 401 jq '.error.status == "UNAUTHENTICATED"'
fcm_send "$ACCESS" '{"message":{"token":"fcm-token-unregistered","notification":{"title":"x"}}}'
expect "fcm: an unregistered token gets 404 UNREGISTERED in FCM's shape" 404 \
	jq '.error == {code: 404, status: "NOT_FOUND", message: "Requested entity was not found.", details: [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", errorCode: "UNREGISTERED"}]}'
fcm_send "$ACCESS" '{"message":{"token":"fcm-token-invalid","notification":{"title":"x"}}}'
expect "fcm: an invalid token gets 400 INVALID_ARGUMENT" 400 jq '.error.details[0].errorCode == "INVALID_ARGUMENT"'
fcm_send "$ACCESS" "{\"message\":{\"token\":\"$GOOD_TOKEN\",\"data\":{\"count\":3}}}"
expect "fcm: a data value that is not a string is refused" 400 jq '.error.status == "INVALID_ARGUMENT" and (.error.message | test("message.data\\[0\\].value"))'
fcm_send "$ACCESS" "{\"message\":{\"token\":\"$GOOD_TOKEN\",\"title\":\"x\"}}"
expect "fcm: an unknown message field is refused" 400 jq '.error.message | test("Unknown name \"title\"")'
fcm_send "$ACCESS" '{"message":{"notification":{"title":"x"}}}'
expect "fcm: a message without a target is refused" 400 jq '.error.status == "INVALID_ARGUMENT"'
fcm_send "$ACCESS" "$FCM_MSG" other-project
expect "fcm: another project is refused with 403" 403 jq '.error.status == "PERMISSION_DENIED"'
http --http1.1 "$base/v1/projects/$PROJECT/messages:send" -H "Authorization: Bearer $ACCESS" \
	-H 'Content-Type: application/json' --data-binary "$FCM_MSG"
expect "fcm: HTTP/1.1 is served too" 200 jq '.name | length > 0'
expect_record "fcm: the record says HTTP/1.1" fcm '.http_version == "1.1"'
control POST revoke_tokens
expect "control: revoke_tokens forgets the issued access tokens" 200 jq '.revoked >= 1'
fcm_send
expect "fcm: a revoked access token is refused with 401 (as an expired one is)" 401 jq '.error.status == "UNAUTHENTICATED"'
fcm_token "$(fcm_assertion)"
ACCESS=$(jq -r .access_token "$work/body")

# ----------------------------------------------------------------------- APNs
APNS_BODY='{"aps":{"alert":{"title":"Order shipped","body":"On its way"},"sound":"default"},"order":"A-1"}'
# Prints an APNs provider token: apns_jwt [key] [iat] [der].
apns_jwt() {
	jwt ES256 "$work/${1:-apns}.pem" "{\"alg\":\"ES256\",\"kid\":\"$KEY_ID\"}" \
		"{\"iss\":\"$TEAM\",\"iat\":${2:-$now}}" "${3:-}"
}
APNS_JWT=$(apns_jwt)
# Sends an APNs notification: apns_send [device] [provider token] [topic] [extra curl args...].
apns_send() {
	local dev=${1:-$APNS_DEV} tok=${2:-$APNS_JWT} topic=${3:-$TOPIC}
	shift $(($# > 3 ? 3 : $#))
	http "$base/3/device/$dev" -H "authorization: bearer $tok" -H "apns-topic: $topic" \
		-H 'apns-push-type: alert' -H 'apns-priority: 10' --data-binary "$APNS_BODY" "$@"
}
apns_send
expect "apns: a notification over HTTP/2 with a valid provider token is accepted with apns-id" 200 \
	hdr '^apns-id: [0-9A-F]{8}-([0-9A-F]{4}-){3}[0-9A-F]{12}'
expect_record "apns: the record keeps HTTP/2, the token's claims and the payload" apns \
	".verdict == \"accepted\" and .http_version == \"2.0\" and .jwt.header.kid == \"$KEY_ID\" and .jwt.claims.iss == \"$TEAM\" and (.body | fromjson | .aps.alert.title) == \"Order shipped\""
apns_send "$APNS_DEV" "$APNS_JWT" "$TOPIC" -H 'apns-id: 123e4567-e89b-12d3-a456-426614174000'
expect "apns: a given apns-id is echoed" 200 hdr '^apns-id: 123e4567-e89b-12d3-a456-426614174000'
apns_send "$APNS_DEV" "$APNS_JWT" "$TOPIC" --http1.1
expect "apns: HTTP/1.1 is refused (APNs is HTTP/2 only)" 505 jq '.reason == "HTTP2Required"'
apns_send "$APNS_DEV" "$(apns_jwt apns_other)"
expect "apns: a provider token signed by another key gets 403 InvalidProviderToken" 403 jq '.reason == "InvalidProviderToken"'
apns_send "$APNS_DEV" "$(apns_jwt apns "$now" der)"
expect "apns: an ES256 signature in DER form (not r||s) gets 403 InvalidProviderToken" 403 jq '.reason == "InvalidProviderToken"'
apns_send "$APNS_DEV" "$(apns_jwt apns $((now - 7200)))"
expect "apns: a provider token issued over an hour ago gets 403 ExpiredProviderToken" 403 jq '.reason == "ExpiredProviderToken"'
http "$base/3/device/$APNS_DEV" -H "apns-topic: $TOPIC" -H 'apns-push-type: alert' --data-binary "$APNS_BODY"
expect "apns: no provider token gets 403 MissingProviderToken" 403 jq '.reason == "MissingProviderToken"'
apns_send "$APNS_DEV" "$APNS_JWT" com.example.other
expect "apns: another topic gets 400 TopicDisallowed" 400 jq '.reason == "TopicDisallowed"'
http "$base/3/device/$APNS_DEV" -H "authorization: bearer $APNS_JWT" -H "apns-topic: $TOPIC" --data-binary "$APNS_BODY"
expect "apns: no apns-push-type gets 400 InvalidPushType" 400 jq '.reason == "InvalidPushType"'
apns_send "$APNS_BAD"
expect "apns: a bad device token gets 400 BadDeviceToken" 400 jq '.reason == "BadDeviceToken"'
apns_send not-hex
expect "apns: a device token that is not hex gets 400 BadDeviceToken" 400 jq '.reason == "BadDeviceToken"'
apns_send "$APNS_GONE"
expect "apns: an unregistered device gets 410 Unregistered with a timestamp" 410 \
	jq '.reason == "Unregistered" and (.timestamp | type == "number")'
http "$base/3/device/$APNS_DEV" -H "authorization: bearer $APNS_JWT" -H "apns-topic: $TOPIC" \
	-H 'apns-push-type: alert' --data-binary '{"alert":"no aps"}'
expect "apns: a payload without aps is refused" 400 jq '.reason == "BadPayload"'

# ------------------------------------------------------------------- Web Push
# Prints a VAPID Authorization value: vapid [key] [claims overrides] [k].
vapid() {
	local t
	t=$(jwt ES256 "$work/${1:-vapid}.pem" '{"typ":"JWT","alg":"ES256"}' \
		"$(jq -nc --arg aud "$base" --argjson now "$now" \
			"{aud: \$aud, exp: (\$now + 43200), sub: \"mailto:ops@example.com\"} + ${2:-"{}"}")")
	printf 'vapid t=%s, k=%s' "$t" "${3:-$VAPID_PUB}"
}
VAPID=$(vapid)
# Sends a Web Push message: webpush SUBSCRIPTION BODYFILE [Authorization] [extra curl args...].
webpush() {
	local sub=$1 file=$2 auth=${3:-$VAPID}
	shift $(($# > 3 ? 3 : $#))
	http "$base/push/$sub" -H "Authorization: $auth" -H 'TTL: 3600' -H 'Urgency: normal' \
		-H 'Content-Encoding: aes128gcm' -H 'Content-Type: application/octet-stream' \
		--data-binary "@$file" "$@"
}
PLAIN='{"title":"Order shipped","body":"On its way","data":{"order":"A-1"}}'
node "$work/encrypt.mjs" "$SUB_PUB" "$SUB_AUTH" "$PLAIN" 7 >"$work/push.bin"
webpush sub1 "$work/push.bin"
expect "webpush: an encrypted message with VAPID is accepted with 201 and a Location" 201 \
	hdr "^location: $base/message/[A-Za-z0-9_-]+" hdr '^ttl: 3600'
expect_record "webpush: the double decrypted the body (padding stripped) and recorded the plaintext" webpush \
	".verdict == \"accepted\" and .plaintext == $(jq -Rn --arg p "$PLAIN" '$p') and .encryption.padding == 7 and .encryption.rs == 4096 and .jwt.claims.aud == \"$base\""
hdr=$(jq -r .body "$rfc" | tr -- '-_' '+/')
while [ $((${#hdr} % 4)) -ne 0 ]; do hdr+='='; done
base64 -d <<<"$hdr" >"$work/rfc.bin"
webpush rfc8291 "$work/rfc.bin"
expect "webpush: the body of RFC 8291 Appendix A is accepted" 201
expect_record "webpush: and decrypts to the RFC's plaintext" webpush \
	".plaintext == $(jq .plaintext "$rfc") and .encryption.keyid == $(jq .as_public "$rfc") and .encryption.salt == $(jq .salt "$rfc")"
node "$here/push_double.mjs" --self-check "$rfc" >"$work/body"
tap "webpush: --self-check decrypts RFC 8291 Appendix A" \
	"$(jq -e '.ok and .plaintext == "When I grow up, I want to be a watermelon"' "$work/body" >/dev/null || echo "self-check said $(cat "$work/body")")"
webpush restricted "$work/push.bin"
expect "webpush: a subscription restricted to the application server key accepts that key" 201
webpush restricted "$work/push.bin" "$(vapid vapid_other '{}' "$OTHER_VAPID_PUB")"
expect "webpush: and refuses another key with 403" 403 jq '.reason == "VapidKeyMismatch"'
webpush sub1 "$work/push.bin" "$(vapid vapid_other)"
expect "webpush: a VAPID JWT not signed by k is refused with 403" 403 jq '.reason == "InvalidVapidSignature" and .code == 403'
t=$(vapid)
t=${t#vapid t=}
t=${t%%,*}
t=${t%.*}.$(printf '%s' "${t%.*}" | openssl dgst -sha256 -sign "$work/vapid.pem" | b64u)
webpush sub1 "$work/push.bin" "vapid t=$t, k=$VAPID_PUB"
expect "webpush: a VAPID JWT with a DER signature is refused with 403" 403 jq '.reason == "InvalidVapidSignature"'
webpush sub1 "$work/push.bin" "$(vapid vapid '{aud: "https://fcm.googleapis.com"}')"
expect "webpush: a VAPID JWT for another audience is refused with 403" 403 jq '.reason == "InvalidAudience"'
webpush sub1 "$work/push.bin" "$(vapid vapid "{exp: ($now + 2 * 86400)}")"
expect "webpush: a VAPID JWT valid for more than 24 hours is refused with 403" 403 jq '.reason == "InvalidExpiration"'
webpush sub1 "$work/push.bin" "$(vapid vapid '{sub: "ops@example.com"}')"
expect "webpush: a VAPID subject that is not mailto: or https: is refused with 403" 403 jq '.reason == "InvalidSubject"'
webpush sub1 "$work/push.bin" "WebPush $(vapid)"
expect "webpush: another Authorization scheme is refused with 401" 401 jq '.reason == "InvalidAuthorization"'
http "$base/push/sub1" -H 'TTL: 60' -H 'Content-Encoding: aes128gcm' --data-binary "@$work/push.bin"
expect "webpush: no Authorization is refused with 401" 401 jq '.reason == "MissingAuthorization"'
http "$base/push/sub1" -H "Authorization: $VAPID" -H 'Content-Encoding: aes128gcm' --data-binary "@$work/push.bin"
expect "webpush: no TTL header is refused with 400" 400 jq '.reason == "MissingTTL"'
http "$base/push/sub1" -H "Authorization: $VAPID" -H 'TTL: 60' -H 'Content-Encoding: aesgcm' --data-binary "@$work/push.bin"
expect "webpush: Content-Encoding aesgcm is refused with 400" 400 jq '.reason == "UnsupportedContentEncoding"'
node "$work/encrypt.mjs" "$SUB_PUB" "$OTHER_AUTH" "$PLAIN" >"$work/wrong.bin"
webpush sub1 "$work/wrong.bin"
expect "webpush: a body encrypted with another auth secret does not decrypt: 400" 400 jq '.reason == "DecryptionFailed"'
webpush gone "$work/push.bin"
expect "webpush: a subscription configured as gone gets 410" 410 jq '.reason == "SubscriptionGone"'
webpush deleted "$work/push.bin"
expect "webpush: a subscription configured with gone 404 gets 404" 404
webpush nosuch "$work/push.bin"
expect "webpush: an unknown subscription gets 404" 404 jq '.reason == "SubscriptionNotFound"'

# ------------------------------------------------------------- scripted failures
# Runs the scripted-failure checks for provider $1 sent by function $2 (accepted with
# status $3); curl exits $4 on a dropped HTTP/2 stream; the rest checks the error shape.
scripted_failures() {
	local name=$1 sender=$2 ok=$3 dropped=$4
	shift 4
	control POST reset
	control POST script "{\"provider\":\"$name\",\"responses\":[{\"status\":429,\"retry_after\":2},{\"status\":503},{\"delay_ms\":$DELAY_MS},{\"drop\":true}]}"
	expect "$name: the control API accepts a failure script" 200 jq '.scripts == 1'
	$sender
	expect "$name: scripted 429 carries Retry-After: 2 in $name's error shape" 429 hdr '^retry-after: 2' "$@"
	$sender
	expect "$name: scripted 503 comes in $name's error shape" 503 "$@"
	$sender
	expect "$name: scripted delay answers normally after $DELAY_MS ms" "$ok" slow "$DELAY_MS"
	$sender
	tap "$name: scripted drop resets the stream without an answer" \
		"$([ "$rc" -eq "$dropped" ] || echo "curl exited $rc (status $status), wanted $dropped")"
	$sender
	expect "$name: once the script is used up, requests are handled normally" "$ok"
	control GET "requests?provider=$name"
	expect "$name: the records show the verdicts in order" 200 \
		jq '[.[].verdict] == ["scripted","scripted","accepted","dropped","accepted"] and .[2].delay_ms > 0'
}
fcm_ok() { fcm_send; }
apns_ok() { apns_send; }
webpush_ok() { webpush sub1 "$work/push.bin"; }
token_ok() { fcm_token "$(fcm_assertion)"; }
# curl reports a reset HTTP/2 stream as exit 92 (CURLE_HTTP2_STREAM).
scripted_failures fcm fcm_ok 200 92 jq '.error.code >= 429 and (.error.details[0].errorCode | IN("QUOTA_EXCEEDED", "UNAVAILABLE"))'
scripted_failures apns apns_ok 200 92 jq '.reason | IN("TooManyRequests", "ServiceUnavailable")'
scripted_failures webpush webpush_ok 201 92 jq '.code >= 429 and (.reason | type == "string")'
scripted_failures fcm_token token_ok 200 92 jq '.error | IN("rate_limit_exceeded", "temporarily_unavailable")'

control POST script '{"match":"/3/device/","responses":[{"status":410,"error":"ExpiredToken"},{"status":200,"body":{"x":1}}]}'
apns_send
expect "script: error names the provider's code, and a 410 carries APNs' timestamp" 410 \
	jq '.reason == "ExpiredToken" and (.timestamp | type == "number")'
apns_send
expect "script: a body is answered verbatim" 200 jq '.x == 1'
control POST script '{"provider":"apns","responses":[{"status":200}]}'
expect "script: a status below 400 without body or error is refused" 400 jq '.error | test("below 400")'
control POST script '{"provider":"apns","responses":[{"stauts":503}]}'
expect "script: an unknown key is refused" 400 jq '.error | test("unknown key")'
control POST script '{"provider":"gcm","responses":[{"status":503}]}'
expect "script: an unknown provider is refused" 400 jq '.error | test("provider")'

# ------------------------------------------------------------------ control API
control GET stats
expect "control: stats count per provider" 200 \
	jq '.providers.fcm_token.requests == 5 and .providers.apns.scripted == 2 and .total == 7 and .delayed_now == 0'
http "$base/nowhere" -d x
expect "an unrouted path gets 404" 404 jq '.error == "not_found"'
http "$base/3/device/$APNS_DEV"
expect "a GET to a provider route gets 405" 405 hdr '^allow: POST' jq '.reason == "MethodNotAllowed"'
control GET "requests?provider=unknown"
expect "control: requests?provider= filters the records" 200 jq 'length == 1 and .[0].verdict == "unrouted"'
control POST script "{\"provider\":\"webpush\",\"responses\":[{\"delay_ms\":1500}]}"
curl -s --http2 --cacert "$work/cert.pem" -o /dev/null -w '%{http_code} %{time_total}\n' "$base/push/sub1" \
	-H "Authorization: $VAPID" -H 'TTL: 60' -H 'Content-Encoding: aes128gcm' --data-binary "@$work/push.bin" \
	>"$work/slow" &
slow_pid=$!
deadline=$((SECONDS + 10))
until [ "$(curl -s --cacert "$work/cert.pem" "$base/_double/stats" | jq .delayed_now)" = 1 ] || [ "$SECONDS" -ge "$deadline" ]; do
	sleep 0.02
done
control GET stats
expect "control: stats show the request held by a scripted delay" 200 jq '.delayed_now == 1'
apns_send
expect "control: a delayed answer does not hold up other requests" 200 fast 1000
wait "$slow_pid"
read -r slow_status slow_elapsed <"$work/slow"
tap "control: the delayed request is answered after its delay" \
	"$(awk -v s="$slow_status" -v t="$slow_elapsed" 'BEGIN { if (s != 201 || t < 1.4) print "status " s " after " t "s" }')"
control POST reset
control GET stats
expect "control: reset zeroes the counters" 200 jq '.total == 0 and .providers.webpush.requests == 0'

# ------------------------------------------------------------------- shutdown
control POST script '{"provider":"apns","responses":[{"delay_ms":30000}]}'
curl -s --http2 --cacert "$work/cert.pem" -o "$work/late" -w '%{http_code}\n' "$base/3/device/$APNS_DEV" \
	-H "authorization: bearer $APNS_JWT" -H "apns-topic: $TOPIC" -H 'apns-push-type: alert' \
	--data-binary "$APNS_BODY" --max-time 20 >"$work/late.status" &
late_pid=$!
deadline=$((SECONDS + 10))
until [ "$(curl -s --cacert "$work/cert.pem" "$base/_double/stats" | jq .delayed_now)" = 1 ] || [ "$SECONDS" -ge "$deadline" ]; do
	sleep 0.02
done
start=$SECONDS
kill -TERM "$pid"
wait "$late_pid"
wait "$pid"
tap "SIGTERM answers a request held by a delay at once, then exits" \
	"$([ "$(cat "$work/late.status")" = 200 ] && [ $((SECONDS - start)) -lt 5 ] || echo "status $(cat "$work/late.status") after $((SECONDS - start)) s")"

echo "1..$n"
