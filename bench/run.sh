#!/usr/bin/env bash
# bench/run.sh — `make bench`: runs every benchmark bench/*.sh (except this
# file) one after the other, each on its own throw-away durable cluster.
# QUICK=1 is passed through (short smoke runs for CI).  Exits non-zero when a
# benchmark failed (errored); missing a performance target is not a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
export QUICK=${QUICK:-0}

failed=0
mode=
[ "$QUICK" = 1 ] && mode=" (QUICK=1)"
for bench in bench/*.sh; do
    [ "$bench" = bench/run.sh ] && continue
    echo "== $bench$mode"
    if ! bash "$bench"; then
        echo "== $bench FAILED"
        failed=1
    fi
    echo
done
exit $failed
