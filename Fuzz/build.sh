#!/usr/bin/env bash
# Builds the libFuzzer targets in Fuzz/Sources into $FUZZ_BUILD (default .build-fuzz/bin),
# one binary per file, without touching the normal build:
#   1. SwiftPM builds the Hiredis target (and Logging, DequeModule…) with
#      `-sanitize=fuzzer,address` into its own scratch path, .build-fuzz;
#   2. swiftc compiles each fuzzer (`@_cdecl("LLVMFuzzerTestOneInput")`, no `main`) against
#      that Hiredis module (with the package's name, for its `package` helpers) and links
#      it with the instrumented objects, libFuzzer's main, ASan and libhiredis.
# Usage: Fuzz/build.sh [name…]   (names: url command reply; default all)
set -euo pipefail
cd "$(dirname "$0")/.."
SWIFT=${SWIFT:-swift}
SCRATCH=${FUZZ_SCRATCH:-.build-fuzz}
OUT=${FUZZ_BUILD:-$SCRATCH/bin}
SANITIZE=-sanitize=fuzzer,address

"$SWIFT" build --scratch-path "$SCRATCH" --target Hiredis -Xswiftc "$SANITIZE" 2>&1 \
  | grep -v -e '^\[' -e '^Fetch' -e '^Comput' -e 'Building for' -e 'Planning build' || true
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "fuzz: building Hiredis failed" >&2; exit 1; }
BIN=$("$SWIFT" build --scratch-path "$SCRATCH" --show-bin-path)

# SwiftPM names the package after its folder (`-package-name wt_sec_fuzz`): read it back.
PACKAGE_NAME=$(grep -o '"-module-name","Hiredis".*' "$SCRATCH/debug.yaml" \
  | grep -o '"-package-name","[^"]*"' | head -n 1 | cut -d'"' -f4)
[ -n "$PACKAGE_NAME" ] || { echo "fuzz: no -package-name for Hiredis in $SCRATCH/debug.yaml" >&2; exit 1; }

# Hiredis and the modules it depends on, as SwiftPM compiled them.
OBJECTS=()
for module in Hiredis Logging CoreMetrics DequeModule InternalCollectionsUtilities ContainersPreview; do
  [ -d "$BIN/$module.build" ] && OBJECTS+=("$BIN/$module.build"/*.swift.o)
done

mkdir -p "$OUT"
names=("$@"); [ ${#names[@]} -gt 0 ] || names=(url command reply)
for name in "${names[@]}"; do
  case "$name" in
    url) source=URLFuzzer.swift ;;
    command) source=CommandFuzzer.swift ;;
    reply) source=ReplyFuzzer.swift ;;
    *) echo "fuzz: unknown fuzzer $name (url, command, reply)" >&2; exit 2 ;;
  esac
  echo "fuzz: linking $OUT/fuzz-$name"
  "${SWIFTC:-swiftc}" "$SANITIZE" -use-ld=lld -parse-as-library -swift-version 6 -g -Onone \
    -module-name "Fuzz_$name" -package-name "$PACKAGE_NAME" \
    -I "$BIN/Modules" -Xcc -fmodule-map-file=Sources/CHiredis/module.modulemap \
    $(pkg-config --cflags-only-I hiredis) -module-cache-path "$BIN/ModuleCache" \
    "Fuzz/Sources/$source" "${OBJECTS[@]}" $(pkg-config --libs hiredis) \
    -o "$OUT/fuzz-$name"
done
