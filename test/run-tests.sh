#!/usr/bin/env bash
# test/run-tests.sh — `make test`: installs what is missing, builds and
# installs the extension, starts a throw-away cluster and runs every suite:
#   pg_regress  (sql/ + expected/)       SQL-visible behaviour
#   pg_prove    (test/pgtap/*.sql)        engine semantics, Mustache spec, indexes
#   prove       (test/t/*.sh)             multi-session and process-level tests,
#               (test/doubles/selftest.sh) the provider test doubles
#   bench/run.sh with QUICK=1                the benchmark harness's smoke run
#               (fails on a harness error or a missing table, never on speed)
# Prints each runner's summary; exits non-zero when any suite fails.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export NOTIFLOW_SHARED=${NOTIFLOW_SHARED:-$ROOT/../shared}

test/install-deps.sh || exit 1
make -s >/dev/null || { echo "build failed"; make; exit 1; }
if [ "$(id -u)" = 0 ]; then make -s install >/dev/null; else sudo make -s install >/dev/null; fi || exit 1

# shellcheck source=test/lib/cluster.sh
source test/lib/cluster.sh
cluster_start || exit 1
trap cluster_stop EXIT

failed=0

echo "== pg_regress (sql/, expected/)"
if ! make -s installcheck; then
    failed=1
    [ -f regression.diffs ] && head -200 regression.diffs
fi

echo "== pgTAP (test/pgtap)"
PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "DROP DATABASE IF EXISTS notiflow_test" \
    -c "CREATE DATABASE notiflow_test" >/dev/null || exit 1
psql -X -q -v ON_ERROR_STOP=1 -d notiflow_test \
    -c "CREATE EXTENSION pgtap" -c "CREATE EXTENSION notiflow" >/dev/null || exit 1
pg_prove -d notiflow_test test/pgtap/*.sql || failed=1

echo "== process-level tests (test/t) and the provider doubles' self-test"
make -s -C test/doubles >/dev/null || exit 1
prove --exec bash test/t/*.sh test/doubles/selftest.sh test/doubles/push_selftest.sh || failed=1

# fails only when the harness errors or prints no table, never on speed (bench/README.md)
echo "== benchmarks, smoke run (make bench QUICK=1)"
QUICK=1 bench/run.sh || { echo "the benchmark smoke run failed"; failed=1; }

exit $failed
