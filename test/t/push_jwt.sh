#!/usr/bin/env bash
# test/t/push_jwt.sh — the JWTs of notiflow.jwt_sign checked by another
# implementation, the openssl command line: ES256 tokens signed with a PEM key
# and with the raw base64url private scalar (the JOSE r || s signature is
# turned back into DER for `openssl dgst -verify`), and RS256 tokens.  A
# tampered header, claims or signature, or another key, must fail.  Every key
# is made here with openssl and thrown away.
set -uo pipefail
cd "$(dirname "$0")/../.."
source test/lib/tap.sh
source test/lib/cluster.sh

WORK=$(mktemp -d)
cleanup() {
    cluster_stop
    rm -rf "$WORK"
}
trap cleanup EXIT

b64u_encode() { basenc --base64url -w0 | tr -d '='; }
# b64u_decode TEXT: the bytes of unpadded base64url TEXT on stdout.
b64u_decode() {
    local s=$1
    while [ $((${#s} % 4)) -ne 0 ]; do s="$s="; done
    printf '%s' "$s" | basenc --base64url -d
}
hex() { od -An -tx1 -v | tr -d ' \n'; }

# --- keys -------------------------------------------------------------------------------
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/ec.pem" 2>/dev/null &&
    openssl pkey -in "$WORK/ec.pem" -pubout -out "$WORK/ec.pub" 2>/dev/null &&
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/other.pem" 2>/dev/null &&
    openssl pkey -in "$WORK/other.pem" -pubout -out "$WORK/other.pub" 2>/dev/null &&
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/rsa.pem" 2>/dev/null &&
    openssl pkey -in "$WORK/rsa.pem" -pubout -out "$WORK/rsa.pub" 2>/dev/null &&
    openssl ec -in "$WORK/ec.pem" -outform DER -out "$WORK/ec.der" 2>/dev/null ||
    { echo "Bail out! openssl cannot make the keys"; exit 1; }
# the RFC 5915 ECPrivateKey starts 30 77 02 01 01 04 20: the 32-byte scalar follows
EC_RAW=$(head -c 39 "$WORK/ec.der" | tail -c 32 | b64u_encode)

# --- the cluster ------------------------------------------------------------------------
cluster_start >/dev/null || { echo "Bail out! cluster did not start"; exit 1; }
DB=notiflow_push_jwt
psql -X -q -d postgres -c "CREATE DATABASE $DB" >/dev/null
psql -X -q -d $DB -c "CREATE EXTENSION notiflow" >/dev/null || { echo "Bail out! CREATE EXTENSION failed"; exit 1; }

# sign ALG KEY CLAIMS [KID] [COUNT]: COUNT tokens (default 1), one a line.
sign() {
    psql -X -q -At -v ON_ERROR_STOP=1 -d $DB -v alg="$1" -v key="$2" -v claims="$3" -v kid="${4:-}" \
        -v n="${5:-1}" <<<"SELECT notiflow.jwt_sign(:'alg', :'key', :'claims'::jsonb, NULLIF(:'kid', ''))
                           FROM generate_series(1, :n)"
}

# verify TOKEN ALG PUBLIC_KEY_FILE: succeeds when openssl accepts the token's signature.
verify() {
    local token=$1 alg=$2 pub=$3
    printf '%s' "${token%.*}" >"$WORK/input"
    b64u_decode "${token##*.}" >"$WORK/sig.raw" || return 1
    if [ "$alg" = ES256 ]; then
        [ "$(wc -c <"$WORK/sig.raw")" -eq 64 ] || return 1
        printf 'asn1=SEQUENCE:sig\n[sig]\nr=INTEGER:0x%s\ns=INTEGER:0x%s\n' \
            "$(head -c 32 "$WORK/sig.raw" | hex)" "$(tail -c 32 "$WORK/sig.raw" | hex)" >"$WORK/sig.cnf"
        openssl asn1parse -genconf "$WORK/sig.cnf" -out "$WORK/sig.der" -noout >/dev/null 2>&1 || return 1
    else
        cp "$WORK/sig.raw" "$WORK/sig.der"
    fi
    openssl dgst -sha256 -verify "$pub" -signature "$WORK/sig.der" "$WORK/input" >/dev/null 2>&1
}
# part TOKEN N: the decoded header (1) or claims (2), as compact sorted JSON.
part() { b64u_decode "$(cut -d. -f"$2" <<<"$1")" | jq -cS .; }
# with_claims TOKEN JSON: the token with its claims replaced, signature kept.
with_claims() { printf '%s.%s.%s' "$(cut -d. -f1 <<<"$1")" "$(printf '%s' "$2" | b64u_encode)" "$(cut -d. -f3 <<<"$1")"; }
# with_header TOKEN JSON: the token with its header replaced, signature kept.
with_header() { printf '%s.%s.%s' "$(printf '%s' "$2" | b64u_encode)" "$(cut -d. -f2 <<<"$1")" "$(cut -d. -f3 <<<"$1")"; }
# flip_signature TOKEN: the token with the first byte of its signature changed.
flip_signature() {
    local sig
    sig=$(b64u_decode "${1##*.}" | hex)
    sig=$(printf '%02x%s' $((0x${sig:0:2} ^ 1)) "${sig:2}")
    printf '%s.%s' "${1%.*}" "$(printf "$(sed 's/../\\x&/g' <<<"$sig")" | b64u_encode)"
}

CLAIMS='{"iss": "TEAM123456", "iat": 1700000000, "aud": "https://push.example.net"}'

# --- ES256 with a PEM key ---------------------------------------------------------------
es=$(sign ES256 "$(cat "$WORK/ec.pem")" "$CLAIMS" KEY1234567)
ok $([[ "$es" =~ ^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$ ]]; echo $?) \
   "ES256: three base64url parts without padding"
is "$(part "$es" 1)" '{"alg":"ES256","kid":"KEY1234567","typ":"JWT"}' "ES256: the header names alg, typ and kid"
is "$(part "$es" 2)" "$(jq -cS . <<<"$CLAIMS")" "ES256: the claims are the ones given"
verify "$es" ES256 "$WORK/ec.pub"
ok $? "ES256 (PEM key): openssl verifies the r || s signature as DER"
verify "$es" ES256 "$WORK/other.pub"
ok $((! $?)) "ES256: another public key does not verify it"
verify "$(with_claims "$es" '{"iss":"TEAM999999","iat":1700000000,"aud":"https://push.example.net"}')" ES256 "$WORK/ec.pub"
ok $((! $?)) "ES256: tampered claims fail"
verify "$(with_header "$es" '{"alg":"ES256","kid":"OTHERKEY00","typ":"JWT"}')" ES256 "$WORK/ec.pub"
ok $((! $?)) "ES256: a tampered header fails"
verify "$(flip_signature "$es")" ES256 "$WORK/ec.pub"
ok $((! $?)) "ES256: a tampered signature fails"

# many signatures: r or s with leading zero bytes must still be 32 bytes each
failed=0
while read -r t; do verify "$t" ES256 "$WORK/ec.pub" || failed=$((failed + 1)); done \
    < <(sign ES256 "$(cat "$WORK/ec.pem")" '{"n": 1}' '' 100)
is "$failed" 0 "ES256: 100 tokens all verify (fixed-width r and s)"

# --- ES256 with the raw private scalar (VAPID keys) --------------------------------------
raw=$(sign ES256 "$EC_RAW" '{"aud": "https://push.example.net", "exp": 1700043200, "sub": "mailto:ops@example.com"}')
is "$(part "$raw" 1)" '{"alg":"ES256","typ":"JWT"}' "ES256 (raw key): no kid unless given"
verify "$raw" ES256 "$WORK/ec.pub"
ok $? "ES256 (raw base64url scalar): verifies with the public key of the same key pair"

# --- RS256 ------------------------------------------------------------------------------
rs=$(sign RS256 "$(cat "$WORK/rsa.pem")" '{"iss": "sa@p.iam.gserviceaccount.com", "scope": "s", "iat": 1, "exp": 3601}' k1)
is "$(part "$rs" 1)" '{"alg":"RS256","kid":"k1","typ":"JWT"}' "RS256: the header"
is "$(b64u_decode "${rs##*.}" | wc -c | tr -d ' ')" 256 "RS256: a 2048-bit key makes a 256-byte signature"
verify "$rs" RS256 "$WORK/rsa.pub"
ok $? "RS256: openssl verifies the PKCS#1 v1.5 signature"
verify "$(with_claims "$rs" '{"iss":"attacker@p.iam.gserviceaccount.com","scope":"s","iat":1,"exp":3601}')" RS256 "$WORK/rsa.pub"
ok $((! $?)) "RS256: tampered claims fail"
verify "$(flip_signature "$rs")" RS256 "$WORK/rsa.pub"
ok $((! $?)) "RS256: a tampered signature fails"

done_testing
