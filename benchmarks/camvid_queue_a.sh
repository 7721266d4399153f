#!/usr/bin/env bash
# CPU runs on ../shared/data/camvid at half the camvid-cpu resolution (128x96), bf16-mixed,
# 1 thread per run (two queues share the 2 cores). Every student arm: 15 epochs in total.
# Queue A: the teacher (UNet-R34, 30 epochs, scale 0.75-1.5 + crop), then distillation arms.
set -u
R=${RUNS:-/work/runs}
S="--set trainer.threads=1 --set data.num_workers=1 --set data.size=[96,128]"
segkd -q train configs/camvid/unet_r34_teacher.yaml $S --set stages.0.epochs=30 \
  --set 'data.scale=[0.75,1.5]' --set 'data.crop=[96,128]' --run-dir $R/teacher-r34 > $R/teacher-r34.log 2>&1
for m in ${ARMS_A:-kd ofd cwd combo}; do
  E="--set stages.-1.epochs=15"; [ $m = ofd ] && E="--set stages.-1.epochs=14"  # + 1 connector epoch
  segkd -q distill configs/camvid/$m.yaml $S $E --set teacher.checkpoint=$R/teacher-r34/best.pt \
    --run-dir $R/r18-$m > $R/r18-$m.log 2>&1
done
