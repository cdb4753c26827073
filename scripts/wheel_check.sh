#!/usr/bin/env bash
# Build the sdist and a platform wheel (tag set by auditwheel) and install the WHEEL, not an
# editable tree, into two fresh venvs:
#   full:    hybnn[all]: a quick pretrain -> extract -> train -> export -> predict on digits;
#   runtime: plain `pip install hybnn`: no torch; it loads the full venv's bundle and engine
#            file and predicts, and every command that needs an extra ends in one line.
# Both must pass `pip check`. Catches package data missing from the wheel (the C sources,
# the Flower app, forward.c, the shipped encoder). Usage: scripts/wheel_check.sh [WORKDIR]
# (default: build/wheel). The full venv sees the interpreter's site-packages, where
# `make install` put the same dependencies (torch, Flower), so only the wheel is installed
# into it (it shadows the editable checkout: asserted below); WHEEL_CHECK_ISOLATED=1 installs
# every dependency into it from scratch instead (minutes more; prints its size).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
WORK=$(realpath -m "${1:-build/wheel}")
rm -rf "$WORK"
mkdir -p "$WORK/dist" "$WORK/data"

$PY -m build --sdist --wheel --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1 \
  || { tail -30 "$WORK/build.log"; exit 1; }
WHEEL=$(ls "$WORK"/dist/hybnn-*.whl)
if command -v auditwheel >/dev/null || $PY -m auditwheel --version >/dev/null 2>&1; then
  $PY -m auditwheel repair -w "$WORK/wheelhouse" "$WHEEL" >"$WORK/auditwheel.log" 2>&1 \
    || { cat "$WORK/auditwheel.log"; exit 1; }
  WHEEL=$(ls "$WORK"/wheelhouse/hybnn-*.whl)
fi
echo "wheel: $(basename "$WHEEL")"
LISTING=$($PY -m zipfile -l "$WHEEL")
for f in hybnn/engine/embedded/forward.c hybnn/federated/flower_app/pyproject.toml \
         hybnn/py.typed hybnn/engine/_kernels hybnn/encoders/general/weights.safetensors \
         hybnn/encoders/general/meta.json; do
  grep -q "^$f" <<<"$LISTING" || { echo "wheel lacks $f"; exit 1; }
done

venv() {  # venv DIR SPEC [VENV ARGS]: a fresh venv with SPEC installed; prints its size
  $PY -m venv ${3:-} "$1"
  "$1/bin/pip" install -q --no-compile "$2" 2>&1 | grep -v '^WARNING: Location' || true
  "$1/bin/pip" check
  echo "$(basename "$1") venv: $(du -sm "$1" | cut -f1) MB${3:+ (beside the system site-packages)}"
}

if [ -n "${WHEEL_CHECK_ISOLATED:-}" ]; then
  venv "$WORK/full" "$WHEEL[all]"
else
  venv "$WORK/full" "$WHEEL[all]" --system-site-packages
fi
"$WORK/full/bin/python" -c "import hybnn, sys; assert '$WORK/full/' in hybnn.__file__, hybnn.__file__"
venv "$WORK/runtime" "$WHEEL"

cd "$WORK/data"
F="$WORK/full/bin"
export HYBNN_NO_PROGRESS=1 OMP_NUM_THREADS=1
"$F/hybnn" pretrain --data digits --epochs 1 --out enc --no-progress >/dev/null
"$F/hybnn" extract --encoder enc --data digits --task 0v1 --split train --out tr.safetensors >/dev/null
"$F/hybnn" extract --encoder enc --data digits --task 0v1 --split test --out te.safetensors >/dev/null
"$F/hybnn" train --model head --codes tr.safetensors --test-codes te.safetensors --epochs 2 \
  --out head --no-progress >/dev/null
"$F/hybnn" export head --out head.engine >/dev/null
"$F/hybnn" export head --encoder enc --out model.bundle >/dev/null
"$F/hybnn" export head --out firmware --format c --name head >/dev/null
"$F/python" - <<'EOF'
import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

d = load_digits()
keep = np.isin(d.target, [0, 1])
x, y = d.images[keep][:20] / 16.0, d.target[keep][:20]
np.save("x.npy", x.astype(np.float32))
np.save("y.npy", y)
Image.fromarray((x[0] * 255).astype(np.uint8)).save("digit.png")
EOF
"$F/hybnn" predict --model head --encoder enc x.npy >full.txt
test -s firmware/head.c

R="$WORK/runtime/bin"
if "$R/python" -c "import torch" 2>/dev/null; then echo "torch in the runtime venv"; exit 1; fi
"$R/hybnn" predict --model model.bundle x.npy >runtime.txt
"$R/hybnn" predict --model model.bundle digit.png >/dev/null
cmp full.txt runtime.txt || { echo "runtime and full predictions differ"; diff full.txt runtime.txt; exit 1; }
"$R/python" - <<'EOF'
import numpy as np
from hybnn.engine import load

model = load("head.engine")
print("runtime venv: engine file loads:", model)
EOF
# Commands that need an extra: one `hybnn: error:` line naming the extra, exit 2, no traceback.
for cmd in "pretrain --data digits --out e2" "predict --model head --encoder enc x.npy" \
           "federate --out f2"; do
  set +e
  "$R/hybnn" $cmd >out.txt 2>err.txt
  rc=$?
  set -e
  if [ "$rc" != 2 ] || [ "$(wc -l <err.txt)" != 1 ] || ! grep -q "^hybnn: error: .*pip install 'hybnn\[" err.txt; then
    echo "runtime venv: 'hybnn $cmd' gave exit $rc:"; cat err.txt; exit 1
  fi
done
echo "wheel check passed"
