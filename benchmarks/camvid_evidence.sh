#!/usr/bin/env bash
# Tables of the CamVid evidence studies (configs/studies/camvid_*.yaml)
# from the per-run results committed under docs/results/: mean ± std over seeds (results.md),
# each method against its baseline with a Welch 95% interval and the share of the teacher-baseline
# gap it closes (comparison.md), per-class IoU (per_class.md) and parameters vs mIoU (plots).
# The teacher's val mIoU (0.543) is that of ../shared/teachers/camvid-unet-r34-128x96.pt.
set -euo pipefail
cd "$(dirname "$0")/.."
SEGKD=${SEGKD:-segkd}
TEACHER=0.543
report() {  # DIR BASELINE
  [ -d "docs/results/$1" ] && ls docs/results/$1/*/*/*/*/summary.json >/dev/null 2>&1 || return 0
  $SEGKD report "docs/results/$1" --out "docs/results/$1" --plot --baseline "$2" --teacher-score $TEACHER
}
report camvid_methods ce
# the search has no CE arm of its own: it is read together with the methods study's baseline
if ls docs/results/camvid_search/*/*/*/*/summary.json >/dev/null 2>&1; then
  $SEGKD report docs/results/camvid_search docs/results/camvid_methods/ce --out docs/results/camvid_search \
    --baseline ce --teacher-score $TEACHER
fi
report camvid_kdsemseg scratch
report camvid_pnp pnp60_labels,pnp40_labels  # each size against its labelled twin
report camvid_pnp_front front60_labels,front40_labels
# the stagewise follow-up next to the kdsemseg study's full-data scratch and stagewise arms
if ls docs/results/camvid_kdsemseg_followup/*/*/*/*/summary.json >/dev/null 2>&1; then
  K=docs/results/camvid_kdsemseg
  $SEGKD report docs/results/camvid_kdsemseg_followup $K/scratch/kd_resnet18/f1.0 \
    $K/stagewise/kd_resnet18/f1.0 --out docs/results/camvid_kdsemseg_followup --baseline scratch \
    --teacher-score $TEACHER
fi
# honest selection (epoch chosen on a held-out 10% of train, val reported): sample std over seeds
honest() {  # DIR BASELINE
  [ -d "docs/results/$1" ] && ls docs/results/$1/*/*/*/*/summary.json >/dev/null 2>&1 || return 0
  local base=(--baseline "$2")
  [ -d "docs/results/$1/$2" ] || base=()  # its baseline not run yet: the tables without Δ
  $SEGKD report "docs/results/$1" --out "docs/results/$1" "${base[@]}" --teacher-score $TEACHER --sample-std
}
honest camvid_select ce
honest camvid_xfamily_mbv2 ce
honest camvid_xfamily_r10 ce
honest camvid_xfamily_mbv2_3x ce
honest camvid_pnp_front_long front60_labels
honest camvid_kdsemseg_quarter scratch
honest camvid_pnp_where none  # no baseline arm: per-method tables
# the same three studies on one H200 (benchmarks/gpu_studies.sh: training inputs identical, val
# images JPEG at full size, teacher val 0.5429 on them vs 0.5430; fp32)
honest camvid_xfamily_mbv2_3x_h200 ce
honest camvid_pnp_front_long_h200 front60_labels
honest camvid_kdsemseg_quarter_h200 scratch
# every full-data arm of every study in one picture: docs/results/size_vs_miou.png
${PYTHON:-python} benchmarks/evidence_plot.py
