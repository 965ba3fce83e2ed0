#!/usr/bin/env bash
# Runs each fuzzer built by Fuzz/build.sh for SECONDS, one after the other; exits non-zero
# when one of them finds a crash, a leak, a timeout or an out-of-memory.
#   Fuzz/run.sh SECONDS [name…]   (names: url command reply; default all)
# The growing corpus, logs and crash artifacts stay in .build-fuzz (never in the repo);
# Fuzz/corpus/<name> holds the seeds, Fuzz/dict/<name>.dict the dictionaries.
# Reproduce a crash: .build-fuzz/bin/fuzz-<name> .build-fuzz/artifacts/<name>/crash-…
set -uo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:?usage: Fuzz/run.sh SECONDS [name…]}
shift
SCRATCH=${FUZZ_SCRATCH:-.build-fuzz}
BIN=${FUZZ_BUILD:-$SCRATCH/bin}
names=("$@"); [ ${#names[@]} -gt 0 ] || names=(url command reply)
# Swift's own crash backtracer, reading the crashed process's stack, trips ASan
# (stack-buffer-underflow in memserver_read) and hides the real report, or hangs: libFuzzer's
# deadly-signal handler prints the stack instead.
export SWIFT_BACKTRACE=${SWIFT_BACKTRACE:-enable=no}
failed=()
for name in "${names[@]}"; do
  corpus="$SCRATCH/corpus/$name" artifacts="$SCRATCH/artifacts/$name" log="$SCRATCH/logs/$name.log"
  mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
  options=(-max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
           -artifact_prefix="$artifacts/")
  [ -f "Fuzz/dict/$name.dict" ] && options+=(-dict="Fuzz/dict/$name.dict")
  status=0
  # The first folder receives new inputs; the seeds are only read.
  "$BIN/fuzz-$name" "${options[@]}" "$corpus" "Fuzz/corpus/$name" >"$log" 2>&1 || status=$?
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 | sed -E 's/^#([0-9]+)[[:space:]]+DONE +/\1 runs, /; s/ lim: [0-9]+//; s/ exec\/s: [0-9]+//')
  rate=$(grep -o 'average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$')
  if [ $status -eq 0 ]; then
    echo "fuzz-$name: ${SECONDS_EACH}s, ${rate:-?} exec/s, ${done_line:-no stats}"
  else
    echo "fuzz-$name: FAILED (exit $status); log $log" >&2
    grep -E -A 12 '==ERROR|Fatal error|SUMMARY|deadly signal' "$log" | head -n 40 >&2
    ls -t "$artifacts" 2>/dev/null | head -n 3 | sed "s|^|  artifact: $artifacts/|" >&2
    failed+=("$name")
  fi
done
[ ${#failed[@]} -eq 0 ] || { echo "fuzz: ${failed[*]} found a failure" >&2; exit 1; }
