#!/usr/bin/env bash
# bench/lib.sh — what the benchmarks in bench/*.sh share; source it from the
# project root after setting BENCH_NAME (trigger, dispatch, kafka, latency):
#
#   RESULTS_DIR      bench/results for full runs, bench/results/quick (not
#                    committed) with QUICK=1, so a smoke run never overwrites
#                    the committed figures
#   bench_row ID MEASUREMENT NOTIFLOW REFERENCE RATIO TARGET VERDICT [CHART_N CHART_R CHART_LABEL]
#                    appends one row of the summary table that bench/run.sh
#                    prints, to $RESULTS_DIR/$BENCH_NAME.rows.tsv (cleared by
#                    bench_begin).  CHART_*: the two throughputs (per second) to
#                    plot for this row, when it is a throughput.
#   bench_settings   records the server's settings (SHOW) given as arguments,
#                    in $RESULTS_DIR/$BENCH_NAME.settings.tsv
#   bench_stats X... "median min max" (rounded), bench_ratio A B, bench_fmt MED MIN MAX
#   bench_wait_for SECONDS COMMAND...  polls COMMAND (deadline), 50 ms apart
#   sql ARGS...      psql on $DB: quiet, unaligned, stopping at the first error
#   say TEXT...      prints a line and appends it to $REPORT
#   bench_create_database  creates $DB with the notiflow extension (exits when
#                    the extension is not installed)
#   bench_workdir    makes the temporary directory $WORK ($REPORT in it) and sets the exit
#                    trap: when the script failed, the end of the server log;
#                    then the helper processes whose pids are in the variables
#                    named by BENCH_HELPER_VARS are killed, the cluster
#                    (test/lib/cluster.sh) stopped and $WORK removed

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then RESULTS_DIR=bench/results/quick; else RESULTS_DIR=bench/results; fi

bench_begin() {
    mkdir -p "$RESULTS_DIR"
    : >"$RESULTS_DIR/$BENCH_NAME.rows.tsv"
    : >"$RESULTS_DIR/$BENCH_NAME.settings.tsv"
}

bench_row() {
    local IFS=$'\t'
    printf '%s\n' "$*" >>"$RESULTS_DIR/$BENCH_NAME.rows.tsv"
}

# bench_settings DBNAME SETTING...: one "setting<TAB>value" line each, as the server reports it
bench_settings() {
    local db=$1 s
    shift
    for s in "$@"; do
        printf '%s\t%s\n' "$s" "$(psql -X -q -At -d "$db" -c "SELECT current_setting('$s')")"
    done >>"$RESULTS_DIR/$BENCH_NAME.settings.tsv"
}

bench_stats() {
    printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {
        m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
        printf "%.0f %.0f %.0f\n", m, a[1], a[NR] }'
}

bench_ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# bench_fmt MED MIN MAX [UNIT]: "12,345 [11,000–13,000] UNIT" with thousands separators
bench_fmt() {
    awk -v m="$1" -v lo="$2" -v hi="$3" -v u="${4:-}" '
        function th(x,   s, r) { s = sprintf("%.0f", x); r = ""
            while (length(s) > 3) { r = "," substr(s, length(s) - 2) r; s = substr(s, 1, length(s) - 3) }
            return s r }
        BEGIN { printf "%s [%s–%s]%s", th(m), th(lo), th(hi), (u != "") ? " " u : "" }'
}

bench_wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ $SECONDS -ge $deadline ] && return 1
        sleep 0.05
    done
}

BENCH_HELPER_VARS=${BENCH_HELPER_VARS:-}

bench_cleanup() {
    local rc=$? v p
    if [ "$rc" != 0 ] && [ -n "${CLUSTER_DIR:-}" ] && [ -f "$CLUSTER_DIR/server.log" ]; then
        echo "bench: failed; the end of the server log:" >&2
        tail -n 40 "$CLUSTER_DIR/server.log" >&2
    fi
    for v in $BENCH_HELPER_VARS; do
        for p in ${!v:-}; do
            kill "$p" 2>/dev/null || true
            wait "$p" 2>/dev/null || true
        done
    done
    cluster_stop
    rm -rf "$WORK"
}

bench_workdir() {
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/notiflow-bench.XXXXXX")
    REPORT=$WORK/report.md
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

sql() { psql -X -q -v ON_ERROR_STOP=1 -At -d "$DB" "$@"; }
say() { printf '%s\n' "$*" | tee -a "$REPORT"; }

bench_create_database() {
    psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE $DB" >/dev/null || exit 1
    if ! sql -c "CREATE EXTENSION notiflow" >"$WORK/setup.log" 2>&1; then
        cat "$WORK/setup.log" >&2
        echo "bench: the notiflow extension is not installed (make && make install)" >&2
        exit 1
    fi
}
