#!/usr/bin/env bash
# Queue B: the R18 baseline (10 epochs, camvid-cpu protocol), then the stagewise study (half res).
set -u
R=${RUNS:-/work/runs}
S="--set trainer.threads=1 --set data.num_workers=1"
segkd -q train configs/camvid/unet_r18_scratch.yaml $S --set stages.0.epochs=10 \
  --run-dir $R/baseline-r18 > $R/baseline-r18.log 2>&1
segkd -q study configs/studies/camvid_stagewise_cpu.yaml --keep-going > $R/study.log 2>&1
