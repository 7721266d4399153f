#!/usr/bin/env bash
# Queue B: the R18 baseline (8 epochs, 128x96), the kdsemseg study at 96x64 (its own teacher,
# scratch arms, stagewise arms), then whatever distillation arms queue A has not claimed.
set -u
R=${RUNS:-/work/runs}
S="--set trainer.threads=1 --set data.num_workers=1 --set data.size=[96,128]"
segkd -q train configs/camvid/unet_r18_scratch.yaml $S --set stages.0.epochs=8 \
  --run-dir $R/baseline-r18 > $R/baseline-r18.log 2>&1
segkd -q study configs/studies/camvid_scratch_cpu.yaml --keep-going --no-report > $R/study-scratch.log 2>&1
segkd -q study configs/studies/camvid_stagewise_cpu.yaml --keep-going > $R/study.log 2>&1
while [ ! -f $R/teacher-r34/summary.json ]; do sleep 30; done  # queue A's teacher
bash benchmarks/camvid_arms.sh
