#!/usr/bin/env bash
# bench/run.sh — `make bench`: runs every benchmark (bench/trigger.sh,
# dispatch.sh, kafka.sh, latency.sh), each on its own throw-away durable
# cluster, then prints ONE table of every figure next to its reference
# measured in the same run, with the targets, and writes it with the machine
# and the PostgreSQL settings to bench/results/latest.md plus a chart,
# bench/results/latest.png (gnuplot).  QUICK=1 (`make bench QUICK=1`): short
# smoke runs for CI, written to bench/results/quick/ (not committed).
# Each benchmark's own output goes to <results>/<name>.log and its detail to
# <results>/<name>-latest.md.  Exits non-zero when a benchmark errored or the
# table could not be produced; a missed target is reported, not failed.
#   BENCHES="trigger kafka"   run only these (the table then has only their rows)
set -uo pipefail
cd "$(dirname "$0")/.."
export QUICK=${QUICK:-0}
BENCH_NAME=run
# shellcheck source=bench/lib.sh
source bench/lib.sh
BENCHES=${BENCHES:-"trigger dispatch kafka latency"}
mkdir -p "$RESULTS_DIR"

command -v gnuplot >/dev/null || { echo "bench: gnuplot not found (run test/install-deps.sh)" >&2; exit 1; }

mode=full
[ "$QUICK" = 1 ] && mode="QUICK=1 (smoke run: figures not for comparison)"
started=$(date -u '+%Y-%m-%d %H:%M UTC')
# the tree now (another build may be installed during a long run: then the end differs)
tree_rev() {
    local r
    r=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    git diff --quiet HEAD -- src worker 2>/dev/null || r="$r + uncommitted changes in src/ or worker/"
    echo "$r"
}
REV_START=$(tree_rev)
load_start=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo n/a)
echo "== notiflow benchmarks, $mode: $BENCHES (details in $RESULTS_DIR/<name>.log and <name>-latest.md)"
failed=0
for b in $BENCHES; do
    [ -f "bench/$b.sh" ] || { echo "== bench/$b.sh: no such benchmark"; failed=1; continue; }
    t0=$SECONDS
    rm -f "$RESULTS_DIR/$b.rows.tsv"
    if bash "bench/$b.sh" >"$RESULTS_DIR/$b.log" 2>&1; then
        echo "== bench/$b.sh: done in $((SECONDS - t0)) s"
    else
        echo "== bench/$b.sh FAILED after $((SECONDS - t0)) s; the end of $RESULTS_DIR/$b.log:"
        grep -v '^[0-9-]* [0-9:.]* UTC \[' "$RESULTS_DIR/$b.log" | tail -n 30
        failed=1
    fi
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo n/a)

# -- the table ---------------------------------------------------------------------------------
ROWS=$RESULTS_DIR/latest.tsv
: >"$ROWS"
for b in $BENCHES; do [ -s "$RESULTS_DIR/$b.rows.tsv" ] && cat "$RESULTS_DIR/$b.rows.tsv" >>"$ROWS"; done
if ! [ -s "$ROWS" ]; then
    echo "bench: no benchmark produced a row: no table" >&2
    exit 1
fi

OUT=$RESULTS_DIR/latest.md
TMP=$OUT.tmp
CPU=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo 2>/dev/null || echo unknown)
MEM=$(awk '/^MemTotal:/{printf "%.1f GiB", $2 / 1048576}' /proc/meminfo 2>/dev/null || echo unknown)
PGV=$(pg_config --version 2>/dev/null || echo unknown)
REV=$(tree_rev)
[ "$REV" != "$REV_START" ] && REV="$REV_START at the start, $REV at the end"
{
    echo "# notiflow benchmarks"
    echo ""
    echo "- date: $started; mode: $mode"
    echo "- machine: $(nproc) cores ($CPU), $MEM memory, $(uname -sr); load average at start $load_start, at the end $load_end"
    echo "- $PGV; notiflow tree at $REV (the installed build is measured)"
    echo "- each figure: median of the runs [min–max]; every reference was measured in the same run on the same machine"
    echo ""
    echo "| # | measured | notiflow | reference (same run) | ratio | target | met |"
    echo "|---|---|---|---|---|---|---|"
    awk -F'\t' '{ printf "| %d | %s | %s | %s | %s | %s | %s |\n", NR, $2, $3, $4, $5, $6, $7 }' "$ROWS"
    echo ""
    echo "PostgreSQL settings, as the servers reported them (durable: fsync and synchronous_commit on):"
    echo ""
    echo "| setting | value | benchmarks |"
    echo "|---|---|---|"
    for b in $BENCHES; do
        [ -f "$RESULTS_DIR/$b.settings.tsv" ] && awk -F'\t' -v b="$b" '{ print $1 "\t" $2 "\t" b }' "$RESULTS_DIR/$b.settings.tsv"
    done | awk -F'\t' '{ k = $1 "\t" $2; if (!(k in seen)) { order[++n] = k; seen[k] = $3 } else seen[k] = seen[k] ", " $3 }
        END { for (i = 1; i <= n; i++) { split(order[i], kv, "\t"); printf "| %s | %s | %s |\n", kv[1], kv[2], seen[order[i]] } }'
    if [ -s "$RESULTS_DIR/dispatch.rss.tsv" ]; then
        echo ""
        echo "Dispatcher memory along the soak (MB, per dispatcher pid: VmHWM / RssAnon):"
        echo ""
        echo "| deliveries | dispatchers |"
        echo "|---|---|"
        awk -F'\t' '{ k = $2; if (!(k in s)) order[++n] = k; s[k] = s[k] (s[k] == "" ? "" : "; ") sprintf("%s: %.0f / %.1f", $3, $6 / 1024, $5 / 1024) }
            END { for (i = 1; i <= n; i++) printf "| %s | %s |\n", order[i], s[order[i]] }' "$RESULTS_DIR/dispatch.rss.tsv"
    fi
    echo ""
    echo "Details, with every run: $(for b in $BENCHES; do printf '[%s](%s-latest.md) ' "$b" "$b"; done)"
    echo ""
    echo "![throughput per configuration](latest.png)"
} >"$TMP" || exit 1
mv "$TMP" "$OUT"

echo ""
sed -n '/^- machine/,/^Dispatcher memory\|^Details/p' "$OUT" | grep -v '^Dispatcher memory\|^Details'
echo "(written to $OUT)"

# -- the chart ----------------------------------------------------------------------------------
DAT=$RESULTS_DIR/latest.chart.tsv
awk -F'\t' '$8 != "" && $9 != "" { printf "\"%s\"\t%s\t%s\n", $10, $8, $9 }' "$ROWS" >"$DAT"
RSSDAT=$RESULTS_DIR/latest.rss.tsv
if [ -s "$RESULTS_DIR/dispatch.rss.tsv" ]; then
    awk -F'\t' '{ hwm[$2] = (hwm[$2] > $6 ? hwm[$2] : $6); anon[$2] = (anon[$2] > $5 ? anon[$2] : $5) }
        END { for (k in hwm) printf "%s\t%.1f\t%.1f\n", k, hwm[k] / 1024, anon[k] / 1024 }' "$RESULTS_DIR/dispatch.rss.tsv" | sort -n >"$RSSDAT"
else
    : >"$RSSDAT"
fi
if [ -s "$DAT" ]; then
    {
        echo "set terminal png size 1400,$([ -s "$RSSDAT" ] && echo 1100 || echo 700) font ',10'"
        echo "set output '$RESULTS_DIR/latest.png'"
        [ -s "$RSSDAT" ] && echo "set multiplot layout 2,1"
        echo "set title 'notiflow vs references, same machine and run ($mode, $started)'"
        echo "set style data histogram; set style histogram clustered gap 1; set style fill solid 0.8 border -1"
        echo "set termoption noenhanced; set logscale y; set ylabel 'per second (log scale)'; set grid ytics"
        echo "set xtics rotate by -20 left; set key inside top left box opaque; set yrange [*:*]; set bmargin 8"
        echo "plot '$DAT' using 2:xtic(1) title 'notiflow' lc rgb '#2b6cb0', '' using 3 title 'reference measured in the same run (INSERT, COPY, wrk, Graphile Worker, raw consume)' lc rgb '#a0aec0'"
        if [ -s "$RSSDAT" ]; then
            echo "unset logscale y; set style data linespoints; set bmargin 4; set xtics norotate"
            echo "set title 'dispatcher memory along the soak (largest of the dispatchers)'"
            echo "set xlabel 'deliveries'; set ylabel 'MB'; set yrange [0:*]; set key inside center right box opaque; set format x '%.0f'"
            echo "plot '$RSSDAT' using 1:2 title 'VmHWM (peak RSS, includes touched shared buffers)' lw 2, '' using 1:3 title 'RssAnon (private memory)' lw 2"
            echo "unset multiplot"
        fi
    } >"$RESULTS_DIR/latest.gp"
    if ! gnuplot "$RESULTS_DIR/latest.gp" 2>"$RESULTS_DIR/gnuplot.err"; then
        cat "$RESULTS_DIR/gnuplot.err" >&2
        echo "bench: gnuplot failed" >&2
        failed=1
    else
        echo "(chart: $RESULTS_DIR/latest.png)"
    fi
fi
exit $failed
