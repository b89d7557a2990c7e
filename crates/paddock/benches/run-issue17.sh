#!/bin/sh
# Every issue-17 bench (create, pools, exec, files, proxy, network, density, creates/s) in
# one release build and one run, each with its bubblewrap/crun/direct rows measured in the
# same run, then all their tables together.
#
#   crates/paddock/benches/run-issue17.sh            # as root, from anywhere in the checkout
#   BENCHES="density pools" crates/paddock/benches/run-issue17.sh   # a subset
#
# Needs: root, btrfs-progs, nftables, bubblewrap and crun (`apt-get install -y btrfs-progs
# nftables bubblewrap crun`; without bwrap/crun their rows say "skipped"). The benches'
# own knobs pass through (PADDOCK_BENCH_RUNS, PADDOCK_BENCH_IDLE, PADDOCK_BENCH_SECS, ...;
# see each bench's header); the defaults take about 10 minutes on the 2-core dev machine
# after the build. Logs and the tables go to target/issue17-bench/<UTC time>/.
set -eu

root=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$root"
export PATH="$HOME/.cargo/bin:$PATH" CARGO_INCREMENTAL=0
benches=${BENCHES:-runtime api pools files proxy network density}

if [ "$(id -u)" -ne 0 ]; then
    echo "run-issue17.sh: the benches make sandboxes; run as root" >&2
    exit 1
fi
for tool in bwrap crun nft btrfs; do
    command -v "$tool" >/dev/null 2>&1 || echo "run-issue17.sh: $tool not found; its rows or benches will be skipped or fail" >&2
done

out="target/issue17-bench/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
args=""
for b in $benches; do args="$args --bench $b"; done

echo "== building (release, once)"
t0=$(date +%s)
# shellcheck disable=SC2086
if ! cargo bench -p paddock --no-run $args >"$out/build.log" 2>&1; then
    tail -n 30 "$out/build.log" >&2
    echo "run-issue17.sh: the release build failed (log: $out/build.log)" >&2
    exit 1
fi
echo "   built in $(($(date +%s) - t0)) s"

{
    echo "# issue-17 benches, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "release build of $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) CPUs, kernel $(uname -r), load average at start $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$out/tables.md"

failed=""
for b in $benches; do
    echo "== $b (log: $out/$b.log)"
    t=$(date +%s)
    # The table lines (and the benches' own headings) go to stdout; the servers' logs to
    # stderr. Both are kept in the log.
    if cargo bench -p paddock --bench "$b" >"$out/$b.out" 2>"$out/$b.log"; then
        status="ok"
    else
        status="FAILED (see $out/$b.log)"
        failed="$failed $b"
    fi
    {
        echo
        echo "## $b: $status, $(($(date +%s) - t)) s, load average after $(cut -d' ' -f1 /proc/loadavg)"
        echo
        grep -v '^running [0-9]* tests\|^test result\|^$' "$out/$b.out" || true
    } >>"$out/tables.md"
    tail -n 20 "$out/$b.out"
done

echo
echo "== all tables ($out/tables.md), $(($(date +%s) - t0)) s in all"
cat "$out/tables.md"
[ -z "$failed" ] || { echo "failed:$failed" >&2; exit 1; }
