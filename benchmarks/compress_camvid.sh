#!/usr/bin/env bash
# `segkd compress` on CamVid from the shared UNet-R34 teacher (val 0.543) at the camvid-small
# protocol (configs/camvid/compress_small.yaml: 128x96, flip only, teacher cache exact), 336
# optimiser steps (8 epochs of the 330 training images left after the 10% held out to choose the
# epoch on), one thread. One target and seed per call; a stopped call continues (--resume).
#   bash benchmarks/compress_camvid.sh TARGET SEED [--baseline]     e.g. 0.35 0
# BUDGET=default leaves the budget to compress (max(300 steps, 30 epochs)); BUDGET=N steps.
# Another budget than 336 goes to p<TARGET%>_<BUDGET>.
# Run from the repository root. The run goes to ../runs/compress_camvid/p<TARGET%>/s<SEED> (or
# $RUNS/...), its small results to docs/results/compress_camvid/p<TARGET%>/s<SEED>; the table:
# python benchmarks/compress_table.py
set -euo pipefail
target=$1; seed=$2; shift 2
name=p$(python3 -c "print(round(float('$target') * 100))")
budget=(--budget "${BUDGET:-336}")
if [ -n "${BUDGET:-}" ]; then name=${name}_$BUDGET; fi
if [ "${BUDGET:-}" = default ]; then budget=(); fi
out=${RUNS:-../runs/compress_camvid}/$name/s$seed
resume=(); [ -f "$out/compress.json" ] && resume=(--resume)
OMP_NUM_THREADS=1 ${SEGKD:-segkd} -q compress ../shared/teachers/camvid-unet-r34-128x96.pt \
  --data configs/camvid/compress_small.yaml --params "$target" --size 96,128 "${budget[@]}" \
  --seed "$seed" --no-html --out "$out" "${resume[@]}" "$@"
${PYTHON:-python3} benchmarks/compress_table.py --collect "$out" "docs/results/compress_camvid/$name/s$seed"
