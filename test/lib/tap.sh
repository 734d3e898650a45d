#!/usr/bin/env bash
# test/lib/tap.sh — minimal TAP producer for the shell tests in test/t/
# (run by `prove`).  Source it, then call ok / is / done_testing.

TAP_COUNT=0
TAP_FAILED=0

# ok CONDITION-EXIT-STATUS DESCRIPTION: passes when the status is 0.
ok() {
    local status=$1 desc=$2
    TAP_COUNT=$((TAP_COUNT + 1))
    if [ "$status" -eq 0 ]; then
        echo "ok $TAP_COUNT - $desc"
    else
        echo "not ok $TAP_COUNT - $desc"
        TAP_FAILED=$((TAP_FAILED + 1))
    fi
}

# is GOT WANT DESCRIPTION: passes when the strings are equal.
is() {
    local got=$1 want=$2 desc=$3
    if [ "$got" = "$want" ]; then
        ok 0 "$desc"
    else
        ok 1 "$desc"
        echo "#   got:  '$got'"
        echo "#   want: '$want'"
    fi
}

# wait_for SECONDS COMMAND...: polls COMMAND until it succeeds or the deadline passes.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ $SECONDS -ge $deadline ] && return 1
        sleep 0.05
    done
}

done_testing() {
    echo "1..$TAP_COUNT"
    [ "$TAP_FAILED" -eq 0 ]
}
