#!/usr/bin/env bash
# Build the engine's C extension with AddressSanitizer + UndefinedBehaviorSanitizer into
# build/sanitize (the normal build is untouched) and run tests/engine against it (not the
# tests marked slow: they train real models first, and run the same kernels).
# Any memory error or undefined behaviour aborts the test run. Usage: scripts/engine_sanitize.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
CC=${CC:-gcc}
OUT=build/sanitize
FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g"

rm -rf "$OUT/src"
mkdir -p "$OUT/src"
CC="$CC" CFLAGS="$FLAGS" LDFLAGS="-fsanitize=address,undefined" \
    "$PY" setup.py -q build_ext --build-temp "$OUT/temp" --build-lib "$OUT/lib" >/dev/null
# A copy of the package with the sanitized extension in place of the normal one
cp -r src/hybnn "$OUT/src/"
find "$OUT/src" \( -name '_kernels*.so' -o -name '__pycache__' \) -prune -exec rm -rf {} +
cp "$OUT"/lib/hybnn/engine/_kernels*.so "$OUT/src/hybnn/engine/"

# CPython is not built with ASan: its runtime must be loaded first, and CPython's
# deliberate leaks at exit are not errors.
ASAN_LIB=$("$CC" -print-file-name=libasan.so)
UBSAN_LIB=$("$CC" -print-file-name=libubsan.so)
export LD_PRELOAD="$ASAN_LIB $UBSAN_LIB"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export PYTHONPATH="$PWD/$OUT/src"
"$PY" - <<'EOF'
import hybnn.engine._kernels as k, sys
maps = open("/proc/self/maps").read()
assert "build/sanitize" in k.__file__, k.__file__
assert "libasan" in maps, "AddressSanitizer runtime not loaded"
print(f"sanitized engine: {k.__file__}", file=sys.stderr)
EOF
# Not the tests of the generated C and the cross builds (test_c_export, test_c_graph,
# test_cortex_m4, test_neon): they compile and run separate programs (gcc, qemu), which
# LD_PRELOAD would load the sanitizer runtimes into, minutes of work that checks nothing of
# the extension (test_c_graph builds the generated C with -fsanitize itself).
"$PY" -m pytest -q -p no:cacheprovider -m "not slow" tests/engine \
  --ignore=tests/engine/test_c_export.py --ignore=tests/engine/test_c_graph.py \
  --ignore=tests/engine/test_cortex_m4.py --ignore=tests/engine/test_neon.py "$@"
