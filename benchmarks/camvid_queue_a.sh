#!/usr/bin/env bash
# CPU runs on ../shared/data/camvid (camvid-cpu protocol, bf16-mixed, 1 thread per run).
# Queue A: a strong teacher (UNet-R34, 35 epochs, scale 0.75-1.5 + crop), then distillation arms.
set -u
R=${RUNS:-/work/runs}
S="--set trainer.threads=1 --set data.num_workers=1"
segkd -q train configs/camvid/unet_r34_teacher.yaml $S --set stages.0.epochs=35 \
  --set 'data.scale=[0.75,1.5]' --set 'data.crop=[192,256]' --run-dir $R/teacher-r34 > $R/teacher-r34.log 2>&1
