#!/usr/bin/env bash
# test/t/web.sh — the web console (web/) end to end in a real browser: starts
# a throw-away cluster with the delivery workers, the provider double, the
# real PostgREST (api/) and the console's static server (web/serve.mjs), then
# runs test/web/console.test.mjs, which drives Debian's Chromium with
# playwright-core (web/node_modules, from web/install-playwright.sh) through
# the console and prints TAP. Screenshots go to $NOTIFLOW_TEST_LOGS/web when
# set, else to a new directory under $TMPDIR (printed, kept).
set -uo pipefail
cd "$(dirname "$0")/../.."
source test/lib/tap.sh
source test/lib/cluster.sh

CHROMIUM=${NOTIFLOW_CHROMIUM:-/usr/bin/chromium}
if ! [ -x "$CHROMIUM" ]; then
    echo "1..0 # skip no Chromium at $CHROMIUM (Debian package chromium; test/install-deps.sh installs it)"
    exit 0
fi

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    if [ -n "${NOTIFLOW_TEST_LOGS:-}" ]; then
        cp "$WORK/postgrest.log" "$NOTIFLOW_TEST_LOGS/web-postgrest.log" 2>/dev/null
        [ -n "${CLUSTER_DIR:-}" ] && cp "$CLUSTER_DIR/server.log" "$NOTIFLOW_TEST_LOGS/web-server.log" 2>/dev/null
    fi
    cluster_stop
    rm -rf "$WORK"
}
trap cleanup EXIT

if [ -n "${NOTIFLOW_TEST_LOGS:-}" ]; then
    ARTIFACTS=$NOTIFLOW_TEST_LOGS/web
    mkdir -p "$ARTIFACTS"
else
    ARTIFACTS=$(mktemp -d "${TMPDIR:-/tmp}/notiflow-web-screenshots.XXXXXX")
fi
echo "# screenshots: $ARTIFACTS"

# --- what runs: playwright-core, PostgREST, the provider double, the cluster -----------------
web/install-playwright.sh >/dev/null || { echo "Bail out! cannot install playwright-core (web/install-playwright.sh)"; exit 1; }
POSTGREST=$(api/install-postgrest.sh) || { echo "Bail out! cannot install PostgREST (api/install-postgrest.sh)"; exit 1; }
make -s -C test/doubles >/dev/null || { echo "Bail out! cannot build the provider double"; exit 1; }
CREDS=test/doubles/credentials.json
test/doubles/provider_double --config "$CREDS" --port 0 >"$WORK/double.out" 2>"$WORK/double.err" &
PIDS+=($!)
double_up() { grep -qs 'listening on' "$WORK/double.out"; }
wait_for 20 double_up || { echo "Bail out! the provider double did not start"; cat "$WORK/double.err"; exit 1; }
DOUBLE=http://127.0.0.1:$(grep -o '[0-9]*$' "$WORK/double.out")

DB=notiflow_web
cluster_start "shared_preload_libraries = 'notiflow'" "notiflow.database_name = '$DB'" >/dev/null ||
    { echo "Bail out! cluster did not start"; exit 1; }
psql -X -q -d postgres -c "CREATE DATABASE $DB" >/dev/null
sql() { psql -X -q -At -v ON_ERROR_STOP=1 -d $DB -c "$1"; }
sql "CREATE EXTENSION notiflow" >/dev/null || { echo "Bail out! CREATE EXTENSION failed"; exit 1; }
# one attempt per delivery: a refused request becomes a dead letter at once
sql "SELECT notiflow.put_provider('hooks', 'webhook', 'webhook',
            jsonb_build_object('url', '$DOUBLE/hooks/console', 'secret', '$(jq -r .webhook.secret "$CREDS")',
                               'max_attempts', 1))" >/dev/null
READER_KEY=$(sql "SELECT notiflow.create_api_key('console-reader', 'reader')")
ADMIN_KEY=$(sql "SELECT notiflow.create_api_key('console-admin', 'admin')")

# --- the console and the API, on free ports; CORS allows the console's origin ------------------
WEB_PORT=$(cluster_free_port)
node web/serve.mjs --port "$WEB_PORT" >"$WORK/web.out" 2>&1 &
PIDS+=($!)
web_up() { grep -qs 'listening on' "$WORK/web.out"; }
wait_for 20 web_up || { echo "Bail out! web/serve.mjs did not start"; cat "$WORK/web.out"; exit 1; }
CONSOLE=http://127.0.0.1:$WEB_PORT

API_PORT=$(cluster_free_port)
API=http://127.0.0.1:$API_PORT
NOTIFLOW_API_DB_URI="postgresql://notiflow_authenticator@127.0.0.1:$PGPORT/$DB" \
NOTIFLOW_API_JWT_SECRET=$(openssl rand -hex 32) PGRST_SERVER_PORT=$API_PORT \
PGRST_SERVER_CORS_ALLOWED_ORIGINS=$CONSOLE \
    "$POSTGREST" api/postgrest.conf >"$WORK/postgrest.log" 2>&1 &
PIDS+=($!)
api_up() { [ "$(curl -s -o /dev/null -w '%{http_code}' "$API/rpc/health")" = 200 ]; }
wait_for 30 api_up || { echo "Bail out! PostgREST did not start"; cat "$WORK/postgrest.log"; exit 1; }

# --- the browser test prints the TAP -------------------------------------------------------------
CONSOLE_URL=$CONSOLE API_URL=$API DOUBLE_URL=$DOUBLE DB=$DB \
READER_KEY=$READER_KEY ADMIN_KEY=$ADMIN_KEY ARTIFACTS=$ARTIFACTS CHROMIUM=$CHROMIUM \
    node test/web/console.test.mjs
status=$?
exit $status
