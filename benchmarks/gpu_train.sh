#!/usr/bin/env bash
# Mixed-precision training on the lent GPU machine (JAX, no TensorFlow), in one call of the `device` tool:
#   1. a patch store: carried in runs/gpu/patches.h5, else simulated (shrec preset) and cut here;
#   2. step time, samples/s and peak GPU memory of UNet and UCaps in float32, mixed_bfloat16 and
#      mixed_float16 (loss-scaled): `keras-ucaps fit` for two short epochs each, read from history.csv
#      (step_seconds: median step of the second epoch; peak_accelerator_gb);
#   3. shrec-ucaps, then shrec-unet, trained (or resumed) for the rest of a wall-time budget, killed
#      cleanly at its end (SIGTERM: a run loses at most its current epoch and resumes);
#   4. results into $OUT: gpu_benchmark.md and each run folder as ≤15 MiB tar parts (carry them back as
#      runs/gpu/*.part-* to resume in the next call; weights_best.keras is in the parts).
#
# Usage (device tool, from the repo root):
#   bash benchmarks/gpu_train.sh [--cpu] [--budget SECONDS] [--train-seconds S] [--steps N] [--work DIR]
# --train-seconds: train each model S seconds whatever the benchmark took (else the rest of --budget,
# two thirds to UCaps).
# --cpu: a dry run on this machine's CPU (JAX on CPU, tiny data and models, a few steps) that checks every
# stage of the script; CI runs it in tests/test_jax.py. Wheels that the GPU machine lacks (keras, mrcfile,
# starfile and their needs) travel in .whl/ (see the README, "Training on a GPU").
set -euo pipefail
cpu=0; budget=420; steps=20; work=runs/gpu; train_seconds=
while [ $# -gt 0 ]; do
  case $1 in
    --cpu) cpu=1 ;;
    --budget) budget=$2; shift ;;
    --steps) steps=$2; shift ;;
    --train-seconds) train_seconds=$2; shift ;;
    --work) work=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
out=${OUT:-$work/out}
mkdir -p "$work" "$out"
start=$(date +%s)
if [ -d .whl ] && ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
ku=("$python" -m keras_ucaps)
if [ $cpu = 1 ]; then
  export JAX_PLATFORMS=cpu
  sim=(--shape 32 64 64 --count 2); patch=32; unet=(--filters 4,6,8); ucaps=(--levels 2); batch=2
  precisions="off bf16"
else
  sim=(--size medium --count 4); patch=64; unet=(); ucaps=(); batch=4
  precisions="off bf16 fp16"
fi
"$python" -c "import jax; print('devices:', jax.devices())"

# 1. Data (resume: unpack runs carried back from an earlier call).
for parts in "$work"/*.tgz.part-aa; do
  [ -e "$parts" ] || continue
  cat "${parts%-aa}"-* | tar xzf - -C "$work"
done
if [ ! -f "$work/patches.h5" ]; then
  "${ku[@]}" simulate --preset shrec "${sim[@]}" --seed 10 --out "$work/sim"
  "${ku[@]}" patches --simulation "$work/sim" --out "$work/patches.h5" --patch-size $patch --per-particle 2
fi
echo "data ready after $(( $(date +%s) - start )) s"

# 2. Step time per model and precision.
report="$out/gpu_benchmark.md"
{
  echo "| model | precision | step (s) | samples/s | peak GPU memory (GB) |"
  echo "| --- | --- | --- | --- | --- |"
} > "$report"
for model in unet ucaps; do
  for precision in $precisions; do
    run="$work/bench-$model-$precision"; rm -rf "$run"
    options=("${unet[@]}"); [ $model = ucaps ] && options=("${ucaps[@]}")
    "${ku[@]}" fit --model $model --from-scratch "${options[@]}" --data "$work/patches.h5" --out "$run" --epochs 2 \
        --steps-per-epoch "$steps" --validation-steps 1 --batch-size $batch --mixed-precision $precision > "$run.log" 2>&1 \
      || { tail -5 "$run.log"; exit 1; }
    "$python" - "$run/history.csv" $model $precision $batch >> "$report" <<'EOF'
import csv, sys
row = list(csv.DictReader(open(sys.argv[1])))[-1]
step, batch = float(row["step_seconds"]), int(sys.argv[4])
peak = row.get("peak_accelerator_gb") or "n/a"
peak = f"{float(peak):.2f}" if peak != "n/a" else peak
print(f"| {sys.argv[2]} | {sys.argv[3]} | {step:.4f} | {batch / step:.1f} | {peak} |")
EOF
    rm -rf "$run" "$run.log"
  done
done
cat "$report"

# 3. Train the bundled models for what is left of the budget, UCaps first (two thirds), resumable.
train() {  # name model seconds options...
  local name=$1 model=$2 seconds=$3; shift 3
  local run="$work/$name" resume=()
  [ -f "$run/config.json" ] && resume=(--resume)
  if [ "$seconds" -le 5 ]; then echo "$name: no time left to train (budget spent)"; return 0; fi
  timeout --signal=TERM "$seconds" "${ku[@]}" fit --model "$model" --from-scratch "$@" --data "$work/patches.h5" --out "$run" \
      --epochs 200 --batch-size $batch --mixed-precision auto "${resume[@]}" > "$work/$name.log" 2>&1 || true
  tail -n 3 "$run/history.csv" 2>/dev/null || true
  tar czf - -C "$work" "$name" | split -b 15M - "$out/$name.tgz.part-"
}
left=$(( budget - ($(date +%s) - start) ))
train shrec-ucaps ucaps "${train_seconds:-$(( left * 2 / 3 ))}" "${ucaps[@]}" --steps-per-epoch $(( steps * 5 ))
left=$(( budget - ($(date +%s) - start) ))
train shrec-unet unet "${train_seconds:-$left}" "${unet[@]}" --steps-per-epoch $(( steps * 5 ))
ls -la "$out"
echo "finished after $(( $(date +%s) - start )) s"
