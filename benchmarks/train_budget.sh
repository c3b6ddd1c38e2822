#!/usr/bin/env bash
# Train both models on a small simulated SHREC-like dataset within a bounded CPU budget and
# print the best validation Dice per class. Usage: bash benchmarks/train_budget.sh [WORKDIR]
set -euo pipefail
work=${1:-runs/budget}
ku=${KERAS_UCAPS:-keras-ucaps}
mkdir -p "$work"
start=$(date +%s)
$ku simulate --preset shrec --size medium --count 6 --seed 10 --out "$work/sim"
$ku patches --simulation "$work/sim" --out "$work/patches32.h5" --patch-size 32 --per-particle 2
echo "data ready after $(( $(date +%s) - start )) s"
t0=$(date +%s)
$ku fit --model unet --from-scratch --data "$work/patches32.h5" --out "$work/unet" --epochs 10 --steps-per-epoch 80 \
    --batch-size 4 --validation-steps 40 --patience 6 --mixed-precision off
echo "unet trained in $(( $(date +%s) - t0 )) s"
t0=$(date +%s)
$ku fit --model ucaps --from-scratch --data "$work/patches32.h5" --out "$work/ucaps" --epochs 6 --steps-per-epoch 40 \
    --batch-size 4 --validation-steps 40 --patience 6 --mixed-precision off
echo "ucaps trained in $(( $(date +%s) - t0 )) s"
