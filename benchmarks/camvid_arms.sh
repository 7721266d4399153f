#!/usr/bin/env bash
# Distillation arms on CamVid (128x96, 8 epochs each, the baseline's budget), taken from a shared
# list by whichever queue is free: a queue claims an arm by creating its lock directory.
set -u
R=${RUNS:-/work/runs}
S="--set trainer.threads=1 --set data.num_workers=1 --set data.size=[96,128]"
for m in kd ofd cwd dist at combo pnp; do
  mkdir "$R/claim-$m" 2>/dev/null || continue
  E="--set stages.-1.epochs=8"; [ $m = ofd ] && E="--set stages.-1.epochs=7"  # + 1 connector epoch
  [ $m = pnp ] && E="--set stages.0.epochs=8 --set stages.0.iters_per_epoch=46"  # 8 epochs of images
  segkd -q distill configs/camvid/$m.yaml $S $E --set teacher.checkpoint=$R/teacher-r34/best.pt \
    --run-dir $R/r18-$m > $R/r18-$m.log 2>&1
done
