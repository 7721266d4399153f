#!/usr/bin/env bash
# CPU runs on ../shared/data/camvid at half the camvid-cpu resolution (128x96), bf16-mixed,
# 1 thread per run (two queues share the 2 cores).
# Queue A: the teacher (UNet-R34, 30 epochs, scale 0.75-1.5 + crop), then distillation arms.
set -u
R=${RUNS:-/work/runs}
S="--set trainer.threads=1 --set data.num_workers=1 --set data.size=[96,128]"
[ -f $R/teacher-r34/summary.json ] || segkd -q train configs/camvid/unet_r34_teacher.yaml $S \
  --set stages.0.epochs=30 --set 'data.scale=[0.75,1.5]' --set 'data.crop=[96,128]' \
  --run-dir $R/teacher-r34 > $R/teacher-r34.log 2>&1
bash benchmarks/camvid_arms.sh
