#!/usr/bin/env bash
# The retraining's UCaps (#14) on the lent GPU machine (JAX, no TensorFlow), inside one call of the `device`
# tool: the data of tools/retrain_bundled.sh, simulated again from the same seeds (one process per tomogram),
# the same fit options, but 500 steps of 4 per epoch (12.5 of the CPU recipe's epochs) and 80 validation
# steps. It trains until --seconds after the call began, stops the fit cleanly (SIGTERM: at most the current
# epoch is lost; the CLI acts on it between Python steps, so a fit still inside XLA's compilation 60 s later is
# killed) and leaves in $OUT (≤ 8 files of ≤ 15 MiB, the device tool's limits):
#   carried.tgz             retraining/ucaps without its checkpoint (tools/carry_retraining.py save): the best
#                           model without optimizer state, config.json, history.csv, each kept epoch's state.json
#   epoch_NN.keras          up to three epochs' models (without optimizer state), spread over the training
#                           time, for F1 against training time (benchmarks/learning_f1.py)
#   retrain_gpu.log
# and in WORK/back/ the checkpoint (weights and optimizer state, for fit --resume) as checkpoint.tgz.part-*,
# which a second call, made while the machine is still warm, copies out: `cp WORK/back/* $OUT/`.
# Back here: `tar xzf carried.tgz -C retraining/` (and the checkpoint's parts: `cat checkpoint.tgz.part-* | tar
# xzf - -C retraining/`), then `python tools/carry_retraining.py restore runs/retrain/ucaps`; each epoch_NN.keras
# goes to runs/retrain/ucaps/epochs/NN/weights_best.keras with config.json, for benchmarks/learning_f1.py.
#
# Usage (device tool, repo root, carry [".whl"]; the wheels as for benchmarks/gpu_train.sh, see the README):
#   bash tools/retrain_gpu.sh [--seconds S] [--work DIR] [--negatives] [--cpu]
# --negatives: the patch store also gets one background patch around each unlabelled crowding particle
# (`patches --simulation-negatives`; the bundled models' false 3gl1 picks lie on them), as patches32_neg.h5.
# --cpu: a dry run on a CPU (JAX, four small tomograms, a 2-level UCaps, 2 steps per epoch) that checks
# every stage, e.g. `bash tools/retrain_gpu.sh --cpu --seconds 420 --work /tmp/retrain_gpu` (8 minutes on 2 cores).
set -euo pipefail
seconds=540; work=runs/retrain_gpu; cpu=0; negatives=()
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) seconds=$2; shift ;;
    --work) work=$2; shift ;;
    --cpu) cpu=1 ;;
    --negatives) negatives=(--simulation-negatives) ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }
out=${OUT:-$work/out}
mkdir -p "$work" "$out"
exec > >(tee -a "$out/retrain_gpu.log") 2>&1
if [ $cpu = 0 ] && [ -d .whl ] && ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1 \
  XLA_PYTHON_CLIENT_PREALLOCATE=false
python=${PYTHON:-python3}
ku=("$python" -m keras_ucaps)
if [ $cpu = 1 ]; then
  export JAX_PLATFORMS=cpu
  medium=(--shape 48 64 64); thick=(--shape 64 64 64); count=2; model=(--levels 2); steps=2; validation=1
else
  medium=(--size medium); thick=(--shape 200 256 256); count=8; model=(); steps=500; validation=80
fi

# 1. The data, one process per tomogram (seed 1000+i is what `--count 8 --seed 1000` gives tomo_0i), while
#    the accelerator is checked.
sim=$work/sim
store=$work/patches32${negatives:+_neg}.h5
if [ ! -f "$store" ]; then
  pids=()
  for i in $(seq 0 $((count - 1))); do
    "${ku[@]}" simulate --preset shrec "${medium[@]}" --randomize --seed $((1000 + i)) --name "tomo_0$i" \
        --out "$sim" > "$work/sim_tomo_0$i.log" 2>&1 & pids+=($!)
  done
  for i in 0 1; do
    "${ku[@]}" simulate --preset shrec "${thick[@]}" --randomize --seed $((2000 + i)) --name "thick_0$i" \
        --out "$sim" > "$work/sim_thick_0$i.log" 2>&1 & pids+=($!)
  done
fi
"$python" -c "
import jax, keras, sys
print('jax', jax.__version__, 'keras', keras.__version__, 'devices:', jax.devices())
sys.exit(0 if $cpu or jax.default_backend() == 'gpu' else 'no GPU seen by JAX')
" || { kill "${pids[@]}" 2> /dev/null; exit 1; }
if [ ! -f "$store" ]; then
  for pid in "${pids[@]}"; do wait "$pid" || { cat "$work"/sim_*.log; exit 1; }; done
  head -qn 1 "$work"/sim_*.log
  "${ku[@]}" patches --simulation "$sim" --out "$store" --patch-size 32 --per-particle 2 "${negatives[@]}"
fi
echo "data ready after $(elapsed) s"

# 2. UCaps, the recipe's options, until the deadline; each finished epoch kept for the learning curve.
run=$work/ucaps
resume=(); [ -f "$run/checkpoint/state.json" ] && resume=(--resume)
bash tools/snapshot_epochs.sh --every 5 "$run" > "$work/snapshots.log" 2>&1 & snapshots=$!
left=$(( seconds - $(elapsed) ))
[ "$left" -gt 60 ] || { echo "no time left to train ($(elapsed) s spent)"; exit 1; }
timeout --signal=TERM --kill-after=60 "$left" "${ku[@]}" fit --model ucaps --capsule-init unit "${model[@]}" \
    --data "$store" --out "$run" --epochs 1000 --steps-per-epoch $steps --validation-steps $validation \
    --batch-size 4 --patience 10 --mixed-precision off --balance-classes --augment-imaging "${resume[@]}" \
    > "$work/fit.log" 2>&1 || true
kill $snapshots 2> /dev/null || true
bash tools/snapshot_epochs.sh --once "$run" >> "$work/snapshots.log" 2>&1
grep -v "^\s*[0-9]*/[0-9]* " "$work/fit.log" | tail -n 5
cut -d, -f1-12 "$run/history.csv"
echo "trained until $(elapsed) s"
[ -f "$run/checkpoint/state.json" ] || { echo "no epoch finished within --seconds $seconds: nothing to bring back"; exit 1; }

# 3. Back: the carried state (without its checkpoint) and three epochs' models into $OUT, the checkpoint
#    into WORK/back for a second call.
"$python" tools/carry_retraining.py --carried "$work/carried" save "$run"
tar czf "$out/carried.tgz" -C "$work/carried" --exclude ucaps/checkpoint ucaps
rm -rf "$work/back"; mkdir -p "$work/back"
tar czf - -C "$work/carried" ucaps/checkpoint | split -b 15M - "$work/back/checkpoint.tgz.part-"
"$python" - "$run" "$out" <<'EOF'
import json, sys
from pathlib import Path

sys.path.insert(0, "tools")
from carry_retraining import _model_alone

run, out = Path(sys.argv[1]), Path(sys.argv[2])
kept = sorted(int(p.name) for p in (run / "epochs").glob("*") if (p / "weights_best.keras").is_file())
last = json.loads((run / "checkpoint" / "state.json").read_text())["epoch"] if kept else 0
kept = [e for e in kept if e < last]  # the last epoch is the carried checkpoint; the best, weights_best.keras
chosen = sorted({kept[round(q * (len(kept) - 1))] for q in (0.0, 0.4, 0.75)}) if kept else []
for epoch in chosen:
    _model_alone(run / "epochs" / f"{epoch:02d}" / "weights_best.keras", out / f"epoch_{epoch:02d}.keras")
    print(f"epoch {epoch}: {out / f'epoch_{epoch:02d}.keras'}")
EOF
ls -la "$out" "$work/back"
echo "finished after $(elapsed) s"
