#!/usr/bin/env bash
# Queue B: the R18 baseline (15 epochs), the kdsemseg study (scratch arms first; the stagewise
# arms use queue A's teacher), then the remaining distillation arms.
set -u
R=${RUNS:-/work/runs}
S="--set trainer.threads=1 --set data.num_workers=1 --set data.size=[96,128]"
segkd -q train configs/camvid/unet_r18_scratch.yaml $S --set stages.0.epochs=15 \
  --run-dir $R/baseline-r18 > $R/baseline-r18.log 2>&1
segkd -q study configs/studies/camvid_scratch_cpu.yaml --keep-going --no-report > $R/study-scratch.log 2>&1
while [ ! -f $R/teacher-r34/summary.json ]; do sleep 30; done  # queue A's teacher
segkd -q study configs/studies/camvid_stagewise_cpu.yaml --keep-going > $R/study.log 2>&1
for m in ${ARMS_B:-at dist}; do
  segkd -q distill configs/camvid/$m.yaml $S --set stages.-1.epochs=15 \
    --set teacher.checkpoint=$R/teacher-r34/best.pt --run-dir $R/r18-$m > $R/r18-$m.log 2>&1
done
