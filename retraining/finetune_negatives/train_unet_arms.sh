# Two arms of one fine-tune of the bundled shrec-unet, side by side on the 2 cores: the same steps from the same
# weights, on the retraining's store without (plain) and with (neg) patches centred on the crowding particles.
ku=.venv/bin/keras-ucaps
common=(--init-weights shrec-unet --epochs ${EPOCHS:-5} --steps-per-epoch 80 --validation-steps 80 --batch-size 4 \
        --lr 5e-5 --patience 10 --mixed-precision off --balance-classes --augment-imaging)
$ku fit --data patches32.h5 --out runs/ft/unet_plain "${common[@]}" > runs/ft/plain.log 2>&1 &
$ku fit --data patches32_neg.h5 --out runs/ft/unet_neg "${common[@]}" > runs/ft/neg.log 2>&1 &
wait
date
