#!/bin/sh
# A/B two accord-bench binaries in one session, alternating, so both see the
# same moments of a shared machine (BENCHMARKS.md: compare only within a run).
#
#   cp target/release/accord-bench /tmp/bench-old   # before the change
#   cp target/release/accord-bench /tmp/bench-new   # after it
#   bench/ab.sh /tmp/bench-old /tmp/bench-new 3 first-sync --records 100000
#
# Each binary is a whole client + server pair (accord-bench spawns itself as
# the server), so the server under test is the one built with it.
set -eu
if [ $# -lt 4 ]; then
  echo "usage: $0 OLD NEW ROUNDS ARGS..." >&2
  exit 2
fi
old=$1; new=$2; rounds=$3; shift 3
for i in $(seq 1 "$rounds"); do
  for b in "$old" "$new"; do
    echo "== round $i: $b"
    "$b" "$@" 2>&1 | grep -E "ratio|concurrent |first-sync sqlite|policy|three-way|empty-call|raw-sqlite" || true
  done
done
