#!/usr/bin/env bash
# The CamVid evidence studies of issue 29 on one lent GPU machine, in one call (see
# benchmarks/gpu_studies.py for what the bundle holds and how it differs from the CPU protocol).
#
#   python benchmarks/gpu_studies.py bundle .gpudata      # here, once; .gpudata is git-ignored
#   device run, carry [.gpudata]:  bash benchmarks/gpu_studies.sh
#
# Every study spec named in STUDIES runs as a "_h200" variant (results under
# docs/results/<study>_h200), sharded over SHARDS[i] processes for the i-th study on the one GPU, fp32
# (the CPU protocol's precision; strict fp32, no TF32, unless EXTRA sets trainer.tf32=true), until DEADLINE seconds after the start; finished runs and the
# logs come back as one archive in $OUT. Unfinished runs are lost (a machine is bare each time).
# Environment: STUDIES, SHARDS ("3 6 4"), DEADLINE (530), ACCEL (gpu), EXTRA (more --set values,
# space-separated), PY (python3).
set -u
T0=$(date +%s)
PY=${PY:-python3}
OUT=${OUT:-/tmp/gpu_studies_out}
SHARDS=(${SHARDS:-3 6 4})  # processes per study, in the order of STUDIES (the last repeats)
DEADLINE=${DEADLINE:-530}
ACCEL=${ACCEL:-gpu}
STUDIES=${STUDIES:-"configs/studies/camvid_xfamily_mbv2_3x.yaml configs/studies/camvid_pnp_front_long.yaml configs/studies/camvid_kdsemseg_quarter.yaml"}
B=.gpudata
mkdir -p "$OUT" logs_h200
if ! "$PY" -c "import segmentation_models_pytorch, pydantic" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target $B/site $B/wheels/*.whl || exit 1
  export PYTHONPATH=$PWD/$B/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
T=$B/camvid-unet-r34-128x96.pt  # relative: the run configs record it
mkdir -p "$(dirname $T)"
[ -f $T ] || xz -dc $B/camvid-unet-r34-128x96.pt.xz > $T || exit 1
[ "$(sha256sum < $T | cut -d' ' -f1)" = "$(cut -d' ' -f1 < $B/camvid-unet-r34-128x96.pt.sha256)" ] || \
  { echo "teacher: sha256 differs from the bundle's"; exit 1; }
SETS=(--set data.root=$B/camvid --set trainer.accelerator=$ACCEL --set trainer.precision=32)
for e in ${EXTRA:-}; do SETS+=(--set "$e"); done
"$PY" benchmarks/gpu_studies.py specs logs_h200/specs $STUDIES --teacher $T "${SETS[@]}" > logs_h200/specs.txt || exit 1
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv 2>/dev/null | tee logs_h200/gpu.txt
"$PY" -c "import torch, segkd; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a logs_h200/gpu.txt
left=$(( DEADLINE - ($(date +%s) - T0) ))
echo "studies: ${left}s left"
PIDS=()
i=0
for spec in $(cat logs_h200/specs.txt); do
  n_sh=${SHARDS[$i]:-${SHARDS[-1]}}; i=$((i + 1))
  for ((k = 0; k < n_sh; k++)); do
    n=$(basename "$spec" .yaml)
    timeout -s INT -k 10 "$left" "$PY" -m segkd.cli -q study "$spec" --keep-going --no-report \
      --shard $k/$n_sh > logs_h200/$n.$k.log 2>&1 &
    PIDS+=($!)
  done
done
( while sleep 60; do echo "t=$(( $(date +%s) - T0 ))s finished: $(find docs/results -path '*_h200*' -name summary.json | wc -l)"; done ) &
TICK=$!
wait "${PIDS[@]}"
kill $TICK 2>/dev/null
echo "finished runs: $(find docs/results -path '*_h200*' -name summary.json | wc -l) after $(( $(date +%s) - T0 ))s"
tar czf "$OUT/h200_results.tgz" docs/results/*_h200 logs_h200 2>/dev/null
ls -la "$OUT"
