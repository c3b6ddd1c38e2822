# UCaps, continued from the bundled fine-tune (runs/ft/ucaps_neg) at the GPU recipe's learning rate 1e-4.
ku=.venv/bin/keras-ucaps
date
$ku fit --init-weights runs/ft/ucaps_neg --data runs/ft/patches32_neg.h5 --out runs/ft/ucaps_neg2 --epochs 30 \
  --steps-per-epoch 40 --validation-steps 20 --batch-size 4 --lr 1e-4 --patience 10 --mixed-precision off \
  --balance-classes --augment-imaging
date
