#!/usr/bin/env bash
# Builds and tests the package against hiredis 1.x instead of the system's 0.14, with
# hiredis's TLS library (libhiredis_ssl, built against Debian's libssl-dev) beside it.
# hiredis 1.x sources come from PyPI's `hiredis` sdist (hiredis-py vendors the C library).
#   TEST_FILTER=regex   run only the matching tests (make test-tls: the TLS suites)
#   HIREDIS1_SCRATCH    the build folder (.build-hiredis1)
#   HIREDISKIT_CORE_ONLY=0  also build the operations products (Hummingbird) against 1.x
set -euo pipefail
cd "$(dirname "$0")/.."
work="${HIREDIS1_WORK:-/tmp/hiredis-kit-hiredis1}"
version="${HIREDIS_PY_VERSION:-2.3.2}"
scratch="${HIREDIS1_SCRATCH:-.build-hiredis1}"
prefix="$work/prefix"
cc="${CC:-$(command -v gcc || command -v cc || command -v clang)}"
rm -rf "$work" && mkdir -p "$work/src" "$prefix/lib/pkgconfig" "$prefix/include/hiredis" "$work/obj"
python3 -m pip download --quiet --no-deps --no-binary :all: -d "$work/src" "hiredis==$version"
tar -xzf "$work"/src/hiredis-*.tar.gz -C "$work/src"
vendor=$(ls -d "$work"/src/hiredis-*/vendor/hiredis)
major=$(awk '/define HIREDIS_MAJOR/ {print $3}' "$vendor/hiredis.h")
minor=$(awk '/define HIREDIS_MINOR/ {print $3}' "$vendor/hiredis.h")
patch=$(awk '/define HIREDIS_PATCH/ {print $3}' "$vendor/hiredis.h")
so="$major.$minor.$patch"
echo "hiredis $so from hiredis-py $version"
for f in alloc async hiredis net read sds sockcompat; do
  [ -f "$vendor/$f.c" ] && "$cc" -std=c99 -O2 -fPIC -c "$vendor/$f.c" -o "$work/obj/$f.o"
done
"$cc" -shared -Wl,-soname,libhiredis.so.$so -o "$prefix/lib/libhiredis.so.$so" "$work"/obj/*.o
ln -sf "libhiredis.so.$so" "$prefix/lib/libhiredis.so"
# libhiredis_ssl, as distributions ship it: a library of its own that needs libhiredis,
# libssl and libcrypto. The package finds it at run time (it never links it).
"$cc" -std=c99 -O2 -fPIC -c "$vendor/ssl.c" -o "$work/ssl.o"
"$cc" -shared -Wl,-soname,libhiredis_ssl.so.$so -o "$prefix/lib/libhiredis_ssl.so.$so" "$work/ssl.o" \
  -L"$prefix/lib" -lhiredis -lssl -lcrypto
ln -sf "libhiredis_ssl.so.$so" "$prefix/lib/libhiredis_ssl.so"
cp "$vendor"/*.h "$prefix/include/hiredis/"
cat > "$prefix/lib/pkgconfig/hiredis.pc" <<PC
prefix=$prefix
Name: hiredis
Description: hiredis $so (test build)
Version: $so
Libs: -L\${prefix}/lib -lhiredis
Cflags: -I\${prefix}/include -I\${prefix}/include/hiredis
PC
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig" LD_LIBRARY_PATH="$prefix/lib"
# The operations products (Hummingbird) are left out of this build: see Package.swift. The
# manifest cache stays in the scratch folder, since the manifest's outcome depends on it.
export HIREDISKIT_CORE_ONLY="${HIREDISKIT_CORE_ONLY:-1}"
swift build --build-tests --scratch-path "$scratch" --manifest-cache local
readelf -d "$scratch"/debug/HiredisKitPackageTests.xctest | grep -q "libhiredis.so.$major" \
  || { echo "the test binary is not linked against hiredis $major.x"; exit 1; }
filter=()
[ -n "${TEST_FILTER:-}" ] && filter=(--filter "$TEST_FILTER")
timeout --kill-after=10 "${TEST_TIMEOUT:-840}" swift test --skip-build --disable-xctest --scratch-path "$scratch" --manifest-cache local "${filter[@]}"
