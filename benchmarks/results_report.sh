#!/usr/bin/env bash
# A CamVid study as one HTML page (segkd report --html) and the screenshot of it that README's
# results section shows:
#   bash benchmarks/results_report.sh [STUDY]   # default camvid_methods -> docs/results/<STUDY>_report.png
# docs/results/<STUDY>/ holds the committed small files of each run (summary.json, metrics.jsonl,
# config.yaml; no checkpoints), so the page has no prediction gallery, and GFLOPs and latency are
# measured on the architectures rebuilt from summary.json (CPU, fp32, 1 thread, the runs' 96x128
# input). The shared teacher is not a run of the study: its `segkd eval --json` file
# (docs/results/teacher_val.json) stands in for it. The page itself goes to runs/report/<STUDY>/.
# Needs a headless Chromium (Debian: apt-get install -y chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
SEGKD=${SEGKD:-segkd}
STUDY=${1:-camvid_methods}
OUT=runs/report/$STUDY
$SEGKD report "docs/results/$STUDY" --out "$OUT" --sample-std --teacher-eval docs/results/teacher_val.json \
  --html "$OUT/report.html" --screenshot
cp "$OUT/report.png" "docs/results/${STUDY}_report.png"
echo "wrote docs/results/${STUDY}_report.png (the page: $OUT/report.html)"
