#!/bin/bash
# Epoch wall time of `segkd distill configs/camvid/kd.yaml` at 128x96, live teacher vs teacher
# cache, interleaved (live, cached cold = with the build, cached warm, live, cached warm) so
# that the load of a shared machine hits both alike. One epoch each, no validation.
#   benchmarks/teacher_cache_epoch.sh OUT_DIR [TEACHER]
set -euo pipefail
out=${1:?output directory}; teacher=${2:-../shared/teachers/camvid-unet-r34-128x96.pt}
mkdir -p "$out"; rm -rf "$out/cache" "$out"/run_*
common=(--set "data.size=[96,128]" --set "teacher.checkpoint=$teacher" --set trainer.threads=1
        --set data.num_workers=1 --set stages.0.epochs=1 --set "eval.splits=[]"
        --set data.val_split=null --set trainer.progress=false)
i=0
for variant in live cold warm live warm; do
  i=$((i + 1))
  if [ "$variant" = live ]; then extra=(--set teacher.cache=false)
  else extra=(--set "teacher.cache.dir=$out/cache"); fi
  start=$(date +%s.%N)
  OMP_NUM_THREADS=1 .venv/bin/segkd distill configs/camvid/kd.yaml "${common[@]}" "${extra[@]}" \
      --run-dir "$out/run_$i" > "$out/run_$i.log" 2>&1
  wall=$(echo "$(date +%s.%N) - $start" | bc)
  epoch=$(.venv/bin/python -c "import json,sys; r=[json.loads(l) for l in open('$out/run_$i/metrics.jsonl')]; r=[x for x in r if 'train/images_per_s' in x][-1]; print(f\"{367 // 8 * 8 / r['train/images_per_s']:.1f}\")")
  build=$(grep -o "computed in [0-9.]* s" "$out/run_$i.log" | grep -o "[0-9.]*" || echo -)
  echo "$i $variant wall_s=$wall epoch_s=$epoch build_s=$build" | tee -a "$out/results.txt"
done
