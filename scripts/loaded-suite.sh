#!/usr/bin/env bash
# Issue 12's proof that the suite does not flake: runs the README's test command (scripts/test)
# N times in a row (default 5) while a CPU hog of two busy loops competes for the cores, and prints
# one line per run with its result and wall time. Stops at the first failure (its log is kept).
#   scripts/loaded-suite.sh [N] [LOGDIR]
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs="${1:-5}"
logs="${2:-$(mktemp -d /tmp/dsys-loaded-XXXXXX)}"
mkdir -p "$logs"
hogs=()
for _ in 1 2; do
  bash -c 'while :; do :; done' &
  hogs+=("$!")
done
trap 'kill "${hogs[@]}" 2>/dev/null' EXIT
echo "loaded-suite: $runs runs of scripts/test in $root, hogs ${hogs[*]}, logs in $logs"
echo "loaded-suite: commit $(git -C "$root" rev-parse --short HEAD), load $(cut -d' ' -f1-3 /proc/loadavg)"
for i in $(seq 1 "$runs"); do
  start=$(date +%s)
  "$root/scripts/test" >"$logs/run-$i.log" 2>&1
  rc=$?
  secs=$(($(date +%s) - start))
  summary=$(sed 's/\x1b\[[0-9;]*m//g' "$logs/run-$i.log" | grep -E "^(ok|FAILED) [|]" | tail -1)
  echo "run $i: exit $rc, $((secs / 60)) min $((secs % 60)) s, load $(cut -d' ' -f1-3 /proc/loadavg): $summary"
  if ((rc != 0)); then
    echo "loaded-suite: run $i failed; see $logs/run-$i.log"
    exit 1
  fi
done
echo "loaded-suite: $runs of $runs passed"
