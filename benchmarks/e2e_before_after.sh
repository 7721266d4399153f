#!/bin/bash
# End-to-end KD training throughput of two checkouts of segkd, alternating, 2 rounds:
#   benchmarks/e2e_before_after.sh OLD_CHECKOUT NEW_CHECKOUT TEACHER_CKPT CAMVID_ROOT OUT_DIR
# e.g. git worktree add /work/before 0cdf4df; then
#   benchmarks/e2e_before_after.sh /work/before /work/main /work/runs/teacher-r34/best.pt \
#       /work/shared/data/camvid /work/runs
# Each run: `segkd distill configs/camvid/kd.yaml` (the recipe's defaults) for 2 epochs, the
# checkout's own code imported through PYTHONPATH; compare train/images_per_s in metrics.jsonl.
set -euo pipefail
OLD=$1 NEW=$2 TEACHER=$3 DATA=$4 OUT=$5
PY=${PY:-python}  # an interpreter with segkd's dependencies
ARGS=(--set "data.root=$DATA" --set "teacher.checkpoint=$TEACHER" --set stages.-1.epochs=2
      --set "eval.splits=[val]")
for round in 1 2; do
  for code in "$OLD" "$NEW"; do
    name="e2e-$(basename "$code")-$round"
    rm -rf "$OUT/$name"
    (cd "$code" && PYTHONPATH="$code" "$PY" -c "from segkd.cli import main; main()" -q distill \
        configs/camvid/kd.yaml "${ARGS[@]}" --run-dir "$OUT/$name") > "$OUT/$name.log" 2>&1
    echo "$name: done"
  done
done
