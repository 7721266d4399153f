#!/usr/bin/env bash
# Prepare, on a CPU machine with pip access, everything a bare GPU machine (Python 3.12 and
# PyTorch, no network) lacks to run the GPU tier of the benchmark suite offline:
#   - wheels (cp312, manylinux x86_64) of segmentation-models-pytorch, pydantic, lightning,
#     torchdistill and everything they need, pinned to the versions tested here
#     (benchmarks/gpu_bundle.py requirements; PyTorch, triton and CUDA libraries left out);
#   - a small JPEG copy of CamVid (labels stay PNG);
#   - install_and_run.sh, the one command to run there.
# The bundle goes to an ignored folder (.gpu_bundle/ by default): never commit it.
#
#   PY=../bench-venv/bin/python bash benchmarks/gpu_bundle.sh [BUNDLE_DIR]
#   # on the GPU machine, from the repository root (the bundle inside it):
#   bash .gpu_bundle/install_and_run.sh            # extra arguments go to suite.py
#
# Environment: PY (an interpreter with segkd's dependencies and torchdistill; default: python3),
# CAMVID (default ../shared/data/camvid), IMAGES / VAL (train / val images copied; 96 / 16),
# PYVER (target Python, default 3.12).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$(mkdir -p "${1:-$REPO/.gpu_bundle}" && cd "${1:-$REPO/.gpu_bundle}" && pwd)
PY=${PY:-python3}
CAMVID=${CAMVID:-$REPO/../shared/data/camvid}
PYVER=${PYVER:-3.12}
ABI=cp${PYVER/./}

echo "== requirements (imported by the suite, with their needs) -> $OUT/requirements-gpu.txt"
"$PY" "$REPO/benchmarks/gpu_bundle.py" requirements > "$OUT/requirements-gpu.txt"
wc -l < "$OUT/requirements-gpu.txt"

echo "== wheels for CPython $PYVER manylinux x86_64 -> $OUT/wheels"
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --dest "$OUT/wheels" \
  --python-version "$PYVER" --implementation cp --abi "$ABI" --abi abi3 --abi none \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_28_x86_64 --platform any \
  -r "$OUT/requirements-gpu.txt"
ls "$OUT/wheels" | wc -l

echo "== CamVid as JPEG -> $OUT/camvid"
rm -rf "$OUT/camvid"
"$PY" "$REPO/benchmarks/gpu_bundle.py" camvid "$CAMVID" "$OUT/camvid" \
  --images "${IMAGES:-96}" --val "${VAL:-16}"

cat > "$OUT/install_and_run.sh" <<'RUN'
#!/usr/bin/env bash
# The GPU tier from this bundle, offline: a venv that sees the machine's PyTorch, the bundle's
# wheels installed without dependency resolution (all are pinned here), then the suite.
# torchvision is kept from the machine when it has one (it must match its torch).
set -euo pipefail
B=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=${REPO:-$(cd "$B/.." && pwd)}
PY=${PY:-python3}
[ -x "$B/venv/bin/python" ] || "$PY" -m venv --system-site-packages "$B/venv"
V="$B/venv/bin/python"
if "$V" -c "import torchvision" 2>/dev/null; then
  grep -v '^torchvision==' "$B/requirements-gpu.txt" > "$B/requirements-install.txt"
else
  cp "$B/requirements-gpu.txt" "$B/requirements-install.txt"
fi
"$V" -m pip install --quiet --no-index --no-deps --find-links "$B/wheels" \
  -r "$B/requirements-install.txt"
cd "$REPO"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
exec "$V" benchmarks/suite.py --tier gpu --budget "${BUDGET:-480}" --require-td \
  --data-root "$B/camvid" --out "${RESULTS:-$B/results}" "$@"
RUN
chmod +x "$OUT/install_and_run.sh"
du -sh "$OUT/wheels" "$OUT/camvid"
echo "== done: carry $OUT to the GPU machine and run: bash $(basename "$OUT")/install_and_run.sh"
