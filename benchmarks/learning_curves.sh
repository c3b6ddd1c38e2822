#!/usr/bin/env bash
# Learning curves on particles none of our presets use: how fast UCaps and the UNet learn a user's own classes.
#   Four classes made from ../shared/data/templates_10A (mitochondrial ribosome 5mrc, capped proteasome 6utj,
#   fatty-acid synthase 2uv8, 1f4a), five simulated 128×256×256 tomograms (seed 7): four annotated (one of them
#   for validation), 32³ patches, four per particle; the fifth held out. Each run in RUNS (model:lr[:extra fit
#   options joined by commas]) trains on the 2 cores; per epoch: its training wall time (history.csv's
#   train_seconds) and validation Dice per class; then `pick` on the held-out tomogram and `evaluate` (F1).
# Usage: bash benchmarks/learning_curves.sh [WORKDIR]   (RUNS, UCAPS_EPOCHS, UNET_EPOCHS, PICK=0 to skip the held-out
# pick, about 9 minutes per UCaps run on 2 cores, in the environment)
set -euo pipefail
work=${1:-runs/learning}
ku=${KERAS_UCAPS:-keras-ucaps}
python=${PYTHON:-python}
templates=${TEMPLATES:-$(dirname "$0")/../../shared/data/templates_10A}
runs=${RUNS:-"ucaps:1e-4:--capsule-init,unit ucaps:1e-4:--capsule-init,reference unet:1e-4"}
mkdir -p "$work"
if [ ! -d "$work/sim" ]; then
  maps=$(for m in 5mrc 6utj 2uv8 1f4a; do printf '%s/%s.mrc,' "$templates" "$m"; done)
  $ku simulate --classes "${maps%,}" --size medium --count 5 --seed 7 --out "$work/sim"
fi
args=()
for i in 00 01 02 03; do
  args+=(--tomogram "$work/sim/tomo_$i.mrc" --particles "$work/sim/tomo_${i}_particles.csv")
done
[ -f "$work/patches.h5" ] || $ku patches "${args[@]}" --classes "$work/sim/classes.json" --out "$work/patches.h5" \
    --patch-size 32 --per-particle 4
for spec in $runs; do
  IFS=: read -r model lr extra <<< "$spec"
  name="$model-lr$lr${extra:+-${extra//[^a-z0-9.]/}}"
  if [ "$model" = ucaps ]; then epochs=${UCAPS_EPOCHS:-3}; steps=30; else epochs=${UNET_EPOCHS:-8}; steps=60; fi
  [ -f "$work/$name/checkpoint/state.json" ] && resume=(--resume) || resume=()
  # shellcheck disable=SC2086
  $ku fit --model "$model" --from-scratch --data "$work/patches.h5" --out "$work/$name" --epochs "$epochs" --steps-per-epoch $steps \
      --batch-size 4 --validation-steps 20 --patience 10 --mixed-precision off --lr "$lr" ${extra//,/ } "${resume[@]}"
  [ "${PICK:-1}" = 0 ] || [ -f "$work/$name/picks.csv" ] || $ku pick "$work/sim/tomo_04.mrc" --model "$work/$name" --out "$work/$name/picks.csv" > /dev/null
  echo "== $name: training seconds, validation Dice per class"
  $python -c "
import csv
for row in csv.DictReader(open('$work/$name/history.csv')):
    dice = {k.split('_dice_')[1]: float(v) for k, v in row.items() if k.startswith('val_') and '_dice_' in k}
    print(row['epoch'], round(float(row['train_seconds'])), *(f'{c} {d:.3f}' for c, d in dice.items()))"
  [ "${PICK:-1}" = 0 ] && continue
  echo "== $name: held-out F1"
  $ku evaluate "$work/sim/tomo_04_particles.csv" "$work/$name/picks.csv" --voxel-size 10 | tail -7
done
