#!/usr/bin/env bash
# Builds and tests the package against hiredis 1.x instead of the system's 0.14.
# hiredis 1.x sources come from PyPI's `hiredis` sdist (hiredis-py vendors the C library).
set -euo pipefail
cd "$(dirname "$0")/.."
work="${HIREDIS1_WORK:-/tmp/hiredis-kit-hiredis1}"
version="${HIREDIS_PY_VERSION:-2.3.2}"
prefix="$work/prefix"
rm -rf "$work" && mkdir -p "$work/src" "$prefix/lib/pkgconfig" "$prefix/include/hiredis" "$work/obj"
python3 -m pip download --quiet --no-deps --no-binary :all: -d "$work/src" "hiredis==$version"
tar -xzf "$work"/src/hiredis-*.tar.gz -C "$work/src"
vendor=$(ls -d "$work"/src/hiredis-*/vendor/hiredis)
major=$(awk '/define HIREDIS_MAJOR/ {print $3}' "$vendor/hiredis.h")
minor=$(awk '/define HIREDIS_MINOR/ {print $3}' "$vendor/hiredis.h")
patch=$(awk '/define HIREDIS_PATCH/ {print $3}' "$vendor/hiredis.h")
echo "hiredis $major.$minor.$patch from hiredis-py $version"
for f in alloc async hiredis net read sds sockcompat; do
  [ -f "$vendor/$f.c" ] && gcc -std=c99 -O2 -fPIC -c "$vendor/$f.c" -o "$work/obj/$f.o"
done
gcc -shared -Wl,-soname,libhiredis.so.$major.$minor.$patch -o "$prefix/lib/libhiredis.so.$major.$minor.$patch" "$work"/obj/*.o
ln -sf "libhiredis.so.$major.$minor.$patch" "$prefix/lib/libhiredis.so"
cp "$vendor"/*.h "$prefix/include/hiredis/"
cat > "$prefix/lib/pkgconfig/hiredis.pc" <<PC
prefix=$prefix
Name: hiredis
Description: hiredis $major.$minor.$patch (test build)
Version: $major.$minor.$patch
Libs: -L\${prefix}/lib -lhiredis
Cflags: -I\${prefix}/include -I\${prefix}/include/hiredis
PC
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig" LD_LIBRARY_PATH="$prefix/lib"
swift build --build-tests --scratch-path .build-hiredis1
readelf -d .build-hiredis1/debug/HiredisKitPackageTests.xctest | grep -q "libhiredis.so.$major" \
  || { echo "the test binary is not linked against hiredis $major.x"; exit 1; }
timeout --kill-after=10 "${TEST_TIMEOUT:-840}" swift test --skip-build --disable-xctest --scratch-path .build-hiredis1
