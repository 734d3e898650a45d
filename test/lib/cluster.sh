#!/usr/bin/env bash
# test/lib/cluster.sh — starts and stops a throw-away PostgreSQL 15 cluster for
# tests, the demo and benchmarks.  Source it, then:
#   cluster_start [extra postgresql.conf lines...]   # sets PGHOST, PGPORT, PGUSER, CLUSTER_DIR
#   cluster_stop
#   cluster_start_sms_db NAME                        # a cluster and a database for engine tests
# PostgreSQL refuses to run as root, so when run as root the server runs as
# the "postgres" user; clients connect over a Unix socket in CLUSTER_DIR.

PG_BIN=${PG_BIN:-$(pg_config --bindir)}

# Prints a free TCP port on the loopback interface.
cluster_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Runs a command as the server's owner.
cluster_as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

cluster_start() {
    CLUSTER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/notiflow-pg.XXXXXX")
    chmod 755 "$CLUSTER_DIR"
    [ "$(id -u)" = 0 ] && chown postgres: "$CLUSTER_DIR"
    PGPORT=${CLUSTER_PORT:-$(cluster_free_port)}
    cluster_as_owner "$PG_BIN/initdb" -D "$CLUSTER_DIR/data" -U postgres -A trust -E UTF8 \
        --locale=C.UTF-8 >"$CLUSTER_DIR/initdb.log" 2>&1 || { cat "$CLUSTER_DIR/initdb.log"; return 1; }
    {
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $PGPORT"
        echo "unix_socket_directories = '$CLUSTER_DIR'"
        echo "max_connections = 100"
        echo "log_min_messages = warning"
        for line in "$@"; do echo "$line"; done
    } >>"$CLUSTER_DIR/data/postgresql.conf"
    cluster_as_owner "$PG_BIN/pg_ctl" -D "$CLUSTER_DIR/data" -l "$CLUSTER_DIR/server.log" -w -t 60 start \
        >/dev/null || { cat "$CLUSTER_DIR/server.log"; return 1; }
    export PGHOST=$CLUSTER_DIR PGPORT PGUSER=postgres CLUSTER_DIR
}

cluster_stop() {
    [ -n "${CLUSTER_DIR:-}" ] && [ -d "$CLUSTER_DIR/data" ] || return 0
    cluster_as_owner "$PG_BIN/pg_ctl" -D "$CLUSTER_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$CLUSTER_DIR"
    CLUSTER_DIR=
}

# cluster_start_sms_db NAME: starts a cluster (stopped at exit, or bails out),
# creates database NAME (in $DB) with notiflow, an SMS provider "text" and a
# subscriber "ann" with a phone, for tests that need an execution with one
# delivery and no worker.  It defines q SQL, which runs SQL there.
cluster_start_sms_db() {
    cluster_start >/dev/null || { echo "Bail out! cluster did not start"; exit 1; }
    trap cluster_stop EXIT
    DB=$1
    q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$DB" -c "$1"; }
    psql -X -q -d postgres -c "CREATE DATABASE $DB" >/dev/null
    q "CREATE EXTENSION notiflow;
       SELECT notiflow.put_provider('text', 'sms', 'twilio', '{\"account_sid\": \"AC1\", \"auth_token\": \"t\", \"from\": \"+15550001111\"}');
       SELECT notiflow.put_subscriber('ann', '{\"phone\": \"+15551234567\"}');" >/dev/null
}
