#!/usr/bin/env bash
# scripts/bench-compare.sh REF [bench args…]
#
# Builds hiredis-bench of another git revision REF (its tree from `git archive`, into
# .build-compare/<sha>/src, built in release with the scratch path .build-compare/<sha>/build;
# kept for the next comparison with the same REF), then runs this tree's bench and REF's
# alternately, RUNS times each (default 3: new, old, new, old, …), each with --json and the
# bench args given (e.g. --quick --only sequential), and prints old/new medians per shape
# (scripts/bench-compare.py). Every bench run starts and kills its own redis-server
# (or uses REDIS_URL). REF needs hiredis-bench with --json (any revision since 11e95e9).
#
# This tree's bench is .build/release/hiredis-bench (built here when missing; make
# bench-compare builds it first). The runs' JSON and output go to .build-compare/runs/<time>/.
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "usage: $0 REF [bench args…]   (e.g. $0 HEAD~1 --quick --only sequential)" >&2
  exit 2
fi
ref=$1
shift
SWIFT=${SWIFT:-swift}
RUNS=${RUNS:-3}
root=$(git rev-parse --show-toplevel)
cd "$root"

sha=$(git rev-parse --verify --quiet "$ref^{commit}") || { echo "bench-compare: $ref is not a revision of this repository" >&2; exit 2; }
base=.build-compare/${sha:0:12}
src=$base/src
if [ ! -f "$src/Package.swift" ]; then
  rm -rf "$src"
  mkdir -p "$src"
  git archive "$sha" | tar -x -C "$src"
fi
if ! grep -qs -- 'var json' "$src"/Sources/hiredis-bench/*.swift; then
  echo "bench-compare: $ref ($sha) has no hiredis-bench with --json" >&2
  exit 2
fi
# The same dependency versions as this tree where the old manifest allows them.
if [ ! -f "$src/Package.resolved" ] && [ -f Package.resolved ]; then cp Package.resolved "$src/"; fi

echo "bench-compare: building $ref (${sha:0:12}) in $base"
"$SWIFT" build -c release --product hiredis-bench --package-path "$src" --scratch-path "$base/build"
old=$base/build/release/hiredis-bench
new=.build/release/hiredis-bench
if [ ! -x "$new" ]; then
  echo "bench-compare: building this tree"
  "$SWIFT" build -c release --product hiredis-bench
fi
# Both builds count allocations with this tree's shim (when built and when they can).
if [ -f .build/libhiredis-malloc-count.so ]; then export HIREDIS_BENCH_MALLOC_COUNT=$root/.build/libhiredis-malloc-count.so; fi

runs=.build-compare/runs/$(date +%Y%m%d-%H%M%S)
mkdir -p "$runs"
new_files=()
old_files=()
for i in $(seq 1 "$RUNS"); do
  for side in new old; do
    binary=$new; [ $side = old ] && binary=$old
    echo "bench-compare: run $i of $RUNS, $side ($binary $*)"
    # No subcommand: `run` is the default one in every revision.
    if ! "$binary" --json "$runs/$side-$i.json" "$@" >"$runs/$side-$i.txt" 2>&1; then
      echo "bench-compare: the $side bench failed; its output:" >&2
      tail -20 "$runs/$side-$i.txt" >&2
      exit 1
    fi
    if [ $side = new ]; then new_files+=("$runs/$side-$i.json"); else old_files+=("$runs/$side-$i.json"); fi
  done
done
python3 scripts/bench-compare.py --old-label "$ref (${sha:0:12})" --new-label "this tree ($(git rev-parse --short HEAD)$(git diff --quiet HEAD -- Sources Package.swift || echo ', modified'))" \
  --new "${new_files[@]}" --old "${old_files[@]}" | tee "$runs/comparison.md"
echo "bench-compare: runs in $runs"
