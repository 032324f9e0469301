#!/usr/bin/env bash
# Runs the test suite on a clean copy of the repository while N busy processes compete for the
# CPU, K times in a row, and prints passed/failed/duration per run (docs/testing.md).
#
#   scripts/test-under-load.sh [--busy N] [--runs K] [--slowdown F] [--source DIR] [--worktree]
#                              [--files "PATH..."] [--run-timeout SEC] [--keep]
#
#   --busy N         busy processes (each a shell spinning on one core; default 4)
#   --runs K         full runs in a row (default 3)
#   --slowdown F     VSVA_TEST_SLOWDOWN for the runs (default: $VSVA_TEST_SLOWDOWN, else 3)
#   --source DIR     repository to copy (default: the one this script is in)
#   --worktree       copy the working tree as it is (tracked + untracked, not ignored files)
#                    instead of `git clone` of its HEAD — for trying uncommitted changes
#   --files "P..."   test paths to run instead of the whole suite (vitest filters)
#   --run-timeout S  a run still going after S seconds is killed and counted as failed
#                    (default 3600): a hang is reported, never waited out
#   --keep           leave the copy in place (its path is printed)
#
# The copy lives in a fresh directory under the temp directory — where a new user's clone under
# /tmp would be, and inside the host's memory directories, which the tests must not depend on.
# Installation is `npm ci --prefer-offline` (it builds the native addon). The busy processes
# start after installation and the type check (a failed type check is reported, and the runs go
# on), and are stopped on exit, whatever the outcome. Exit status: 0 when the type check and
# every run passed.
set -euo pipefail

busy=4
runs=3
slowdown="${VSVA_TEST_SLOWDOWN:-3}"
source_dir="$(cd "$(dirname "$0")/.." && pwd)"
worktree=0
files=""
run_timeout=3600
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --busy) busy="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --slowdown) slowdown="$2"; shift 2 ;;
    --source) source_dir="$(cd "$2" && pwd)"; shift 2 ;;
    --worktree) worktree=1; shift ;;
    --files) files="$2"; shift 2 ;;
    --run-timeout) run_timeout="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "test-under-load: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
for n in "$busy" "$runs" "$run_timeout"; do
  case "$n" in ''|*[!0-9]*) echo "test-under-load: '$n' is not a non-negative integer" >&2; exit 2 ;; esac
done

work="$(mktemp -d "${TMPDIR:-/tmp}/vsva-load-XXXXXX")"
copy="$work/vsva"
busy_pids=()
stop_busy() {
  for p in "${busy_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${busy_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  busy_pids=()
}
cleanup() {
  stop_busy
  if [ "$keep" = 1 ]; then echo "test-under-load: copy kept at $copy"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "test-under-load: copying $source_dir to $copy ($([ "$worktree" = 1 ] && echo 'working tree' || echo 'git clone of HEAD'))"
if [ "$worktree" = 1 ]; then
  mkdir -p "$copy"
  (cd "$source_dir" && git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do if [ -e "$f" ]; then printf '%s\0' "$f"; fi; done |
    tar -c --null -T - -f -) | (cd "$copy" && tar -xf -)
  (cd "$copy" && git init -q && git add -A)
else
  git clone --quiet "$source_dir" "$copy"
fi

cd "$copy"
echo "test-under-load: installing (npm ci --prefer-offline)"
if ! npm ci --prefer-offline --no-audit --no-fund --loglevel=error >"$work/install.log" 2>&1; then
  echo "test-under-load: npm ci failed (lock file out of date?); trying npm install --prefer-offline"
  npm install --prefer-offline --no-audit --no-fund --loglevel=error >>"$work/install.log" 2>&1 || { cat "$work/install.log" >&2; exit 1; }
fi
echo "test-under-load: type check"
typecheck=passed
npx tsc --noEmit -p . || typecheck=FAILED

echo "test-under-load: starting $busy busy processes on $(nproc 2>/dev/null || echo '?') cores"
for _ in $(seq 1 "$busy"); do
  bash -c 'while :; do :; done' &
  busy_pids+=("$!")
done

results=()
failed_runs=0
for i in $(seq 1 "$runs"); do
  report="$work/run-$i.json"
  t0=$(date +%s)
  status=0
  # shellcheck disable=SC2086 # $files is a list of paths on purpose
  VSVA_TEST_SLOWDOWN="$slowdown" timeout --kill-after=30 "$run_timeout" \
    npx vitest run $files --reporter=default --reporter=json --outputFile.json="$report" >"$work/run-$i.log" 2>&1 || status=$?
  t1=$(date +%s)
  if [ -f "$report" ]; then
    counts=$(node -e 'const r = require(process.argv[1]); process.stdout.write(`${r.numPassedTests} passed, ${r.numFailedTests} failed`)' "$report")
  else
    counts="no report"
  fi
  if [ "$status" = 124 ] || [ "$status" = 137 ]; then counts="$counts, TIMED OUT after ${run_timeout} s"; fi
  line="run $i/$runs: $counts, $((t1 - t0)) s, exit $status"
  echo "test-under-load: $line"
  if [ "$status" != 0 ]; then
    failed_runs=$((failed_runs + 1))
    grep -E '(FAIL|×) ' "$work/run-$i.log" | sed 's/\x1b\[[0-9;]*m//g' | sort -u | head -40 >&2 || true
  fi
  results+=("$line")
done
stop_busy

echo
echo "test-under-load: $busy busy processes, VSVA_TEST_SLOWDOWN=$slowdown, ${files:-full suite}"
echo "  type check: $typecheck"
for l in "${results[@]}"; do echo "  $l"; done
if [ "$failed_runs" = 0 ]; then echo "  all $runs runs passed"; else echo "  $failed_runs of $runs runs failed"; exit 1; fi
[ "$typecheck" = passed ]
