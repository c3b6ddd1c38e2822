#!/usr/bin/env bash
# The effect of `fit --balance-classes` on a short UCaps run (3 epochs of 30 steps) where the tiny class is rare among the
# annotated particle centres, as when a user annotated few of one kind:
#   3 simulated shrec tomograms (128×256×256); patches centred on every 4v94 and 1bxn but on only
#   15 % of the 3gl1s (the label maps still mark every particle); the same short run twice, plain
#   and balanced; per-class validation Dice from history.csv and F1 on a held-out 64×128×128 tomogram.
# Usage: bash benchmarks/balanced_sampling.sh [WORKDIR]
set -euo pipefail
work=${1:-runs/balance}
ku=${KERAS_UCAPS:-keras-ucaps}
python=${PYTHON:-python}
mkdir -p "$work"
[ -d "$work/sim" ] || $ku simulate --preset shrec --size medium --count 3 --seed 20 --out "$work/sim"
[ -d "$work/test" ] || $ku simulate --preset shrec --size small --seed 21 --out "$work/test"
$python - "$work" <<'EOF'
import sys
from pathlib import Path

import numpy as np

from keras_ucaps.io import read_particles, write_particles

work = Path(sys.argv[1])
(work / "thin").mkdir(exist_ok=True)
rng = np.random.default_rng(0)
for table in sorted((work / "sim").glob("tomo*_particles.csv")):
    particles = read_particles(table)
    keep = (particles.class_name != "3gl1") | (rng.random(len(particles)) < 0.15)
    write_particles(particles[keep], work / "thin" / table.name)
    print(table.stem, dict(zip(*np.unique(particles[keep].class_name, return_counts=True))))
EOF
args=()
for t in "$work"/sim/tomo_??.mrc; do
  stem=$(basename "$t" .mrc)
  args+=(--tomogram "$t" --particles "$work/thin/${stem}_particles.csv" --labels "$work/sim/${stem}_labels.mrc")
done
[ -f "$work/patches.h5" ] || $ku patches "${args[@]}" --classes "$work/sim/classes.json" --out "$work/patches.h5" \
    --patch-size 32 --per-particle 2
for mode in plain balanced; do
  flag=(); [ $mode = balanced ] && flag=(--balance-classes)
  t0=$(date +%s)
  [ -f "$work/$mode/weights_best.keras" ] || $ku fit --model ucaps --from-scratch --data "$work/patches.h5" --out "$work/$mode" \
      --epochs 3 --steps-per-epoch 30 --batch-size 4 --validation-steps 30 --patience 10 --mixed-precision off \
      "${flag[@]}"
  echo "$mode trained in $(( $(date +%s) - t0 )) s"
  $ku pick "$work/test/tomo.mrc" --model "$work/$mode" --out "$work/$mode/picks.csv" > /dev/null
  echo "== $mode: validation Dice per epoch (4v94 1bxn 3gl1)"
  $python -c "
import csv
for row in csv.DictReader(open('$work/$mode/history.csv')):
    dice = {k.rsplit('_', 1)[1]: float(v) for k, v in row.items() if k.startswith('val_') and '_dice_' in k}
    print(row['epoch'], *(f'{dice[c]:.3f}' for c in ('4v94', '1bxn', '3gl1')))"
  echo "== $mode: held-out F1"
  $ku evaluate "$work/test/tomo_particles.csv" "$work/$mode/picks.csv" --voxel-size 10 | tail -6
done
