#!/usr/bin/env bash
# The recipe of the bundled models (docs/training.md, "Reproducing the bundled models"): domain-randomised data,
# robust normalisation, balanced classes, imaging augmentation. Resumable: run it again and each fit continues
# with --resume until EPOCHS; every 5th epoch's model is kept in RUN/epochs/NN/ (fit --save-every), for
# `python benchmarks/learning_f1.py RUN` (held-out F1 against training time).
#   8 tomograms 128×256×256 (`simulate --randomize`, seeds 1000-1007) and 2 thicker ones 200×256×256
#   (seeds 2000-2001), 32³ patches (2 per particle; 2 tomograms for validation);
#   UNet: 80 steps of 4 per epoch; UCaps (--capsule-init unit): 40 steps of 4 per epoch.
#   invitro (its own data, WORKDIR/invitro_*): the same recipe on `--preset invitro` (3j9i + 4v4r): 8 randomised
#   128×256×256 tomograms (seeds 3000-3007) and 2 randomised 200×256×256 (seeds 4000-4001), UNet as above.
# Usage: bash tools/retrain_bundled.sh [WORKDIR] [ucaps|unet|both|invitro]  (EPOCHS_UNET, EPOCHS_UCAPS, EPOCHS_INVITRO)
set -euo pipefail
work=${1:-runs/retrain}
which=${2:-both}
ku=${KERAS_UCAPS:-keras-ucaps}
mkdir -p "$work"
common_fit=(--batch-size 4 --patience 10 --mixed-precision off --balance-classes --augment-imaging --save-every 5)
resume() { [ -f "$1/checkpoint/state.json" ] && echo --resume || true; }
# The training data of one preset: 8 randomised 128×256×256 tomograms, 2 randomised 200-deep ones, 32³ patches.
# Usage: make_data PRESET SIM_FOLDER SEED THICK_SEED PATCHES
make_data() {
  [ -f "$2/tomo_07.mrc" ] || $ku simulate --preset "$1" --size medium --randomize --count 8 --seed "$3" --out "$2"
  [ -f "$2/thick_01.mrc" ] || $ku simulate --preset "$1" --shape 200 256 256 --randomize --count 2 --seed "$4" \
      --name thick --out "$2"
  [ -f "$5" ] || $ku patches --simulation "$2" --out "$5" --patch-size 32 --per-particle 2
}
if [ "$which" = invitro ]; then
  make_data invitro "$work/invitro_sim" 3000 4000 "$work/invitro_patches32.h5"
  # shellcheck disable=SC2046
  $ku fit --model unet --from-scratch --data "$work/invitro_patches32.h5" --out "$work/invitro_unet" \
      --epochs "${EPOCHS_INVITRO:-20}" --steps-per-epoch 80 --validation-steps 80 "${common_fit[@]}" \
      $(resume "$work/invitro_unet")
  exit 0
fi
make_data shrec "$work/sim" 1000 2000 "$work/patches32.h5"
common=(--data "$work/patches32.h5" "${common_fit[@]}")
if [ "$which" != ucaps ]; then
  # shellcheck disable=SC2046
  $ku fit --model unet --from-scratch --out "$work/unet" --epochs "${EPOCHS_UNET:-20}" --steps-per-epoch 80 \
      --validation-steps 80 "${common[@]}" $(resume "$work/unet")
fi
if [ "$which" != unet ]; then
  # shellcheck disable=SC2046
  $ku fit --model ucaps --from-scratch --capsule-init unit --out "$work/ucaps" --epochs "${EPOCHS_UCAPS:-40}" \
      --steps-per-epoch 40 --validation-steps 40 "${common[@]}" $(resume "$work/ucaps")
fi
