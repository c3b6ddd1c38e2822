"""3D-UCaps: a CNN feature extractor, a 3D capsule encoder and a CNN decoder."""

from __future__ import annotations

import keras
import numpy as np

from keras_ucaps.layers.capsules import (
    CapsuleLength,
    ChannelsToCapsule,
    ConvCapsule3D,
    FlattenCapsules,
    UnitLengthVotes,
)
from keras_ucaps.models.base import TomogramModel
from keras_ucaps.models.blocks import conv_norm_act
from keras_ucaps.models.contract import TileContract, whole_input_tile

# Encoder (types, atoms) per level; each level is a stride-2 then a stride-1 capsule layer.
ENCODER_LEVELS = (((16, 8), (16, 8)), ((8, 16), (8, 16)), ((8, 32), (None, 64)))
DECODER_UP = (256, 128, 64)
DECODER_CONV = (128, 64)
# How the capsule layers' vote kernels start: "unit" (UnitLengthVotes: the input-dependent part of each capsule
# about unit length, not swamped by the bias) or "reference" (Glorot uniform, as the reference code).
CAPSULE_INITS = ("unit", "reference")
TANH_OF_UNIT_NORMAL_STD = 0.63


@keras.saving.register_keras_serializable(package="keras_ucaps")
class UCaps3D(TomogramModel):
    """3D-UCaps for volumetric segmentation into ``num_classes`` classes.

    Feature extractor: three 5³ convolutions (no bias, instance norm) 1→16
    PReLU, 16→32 PReLU, 32→64 tanh. Its 64 channels become one capsule type
    of 64 atoms. Primary capsules: 3³, 16 types × 4 atoms, 1 routing. Encoder:
    six 3³ capsule layers with 3 routings, strides 2, 1, 2, 1, 2, 1, types
    16, 16, 8, 8, 8, C and atoms 8, 8, 16, 16, 32, 64. Decoder with skips
    (capsules flattened to types·atoms channels): transpose-conv 2³/2 → 256,
    concatenate encoder layer 3; conv 3³ → 128, IN, PReLU; transpose-conv →
    128, concatenate encoder layer 1; conv → 64, IN, PReLU; transpose-conv →
    64, concatenate the primary capsules; 1³ conv → C, softmax. The
    reconstruction branch (1³ convs 128→64→128→1, ReLU between) rebuilds the
    input from the last 128-channel tensor for the reconstruction loss.

    Args:
        num_classes: int. Output classes, background included (C).
        input_channels: int. Channels of the input volume.
        levels: int. Encoder/decoder levels: 3 (default, the paper) or 2 (the
            shallower ablation). Input sides must be multiples of 2**levels.
        encoder_kernel_size: int. 3 (default) or 5 (ablation).
        dilation: bool. Dilate the 2nd and 3rd feature-extractor
            convolutions by 2 (the ablation the paper found to hurt).
        routings: int. Routing iterations of the encoder layers.
        capsule_init: str. "unit" (default: :class:`keras_ucaps.layers.capsules.UnitLengthVotes`, capsules
            start driven by the image rather than by their bias; every class above chance within 90 steps
            where the reference collapsed onto one; docs/models.md) or "reference" (Glorot uniform vote
            kernels, as the reference code). Only training sees it: a saved model loads its weights.
        **kwargs: Model arguments (name, dtype) and ``metadata``: what the trained model needs to be used
            (:class:`~keras_ucaps.models.metadata.ModelMetadata`), saved with it.

    Outputs: a dict with ``probabilities`` (batch, z, y, x, C; softmax,
    float32), ``reconstruction`` (batch, z, y, x, input_channels; linear) and
    ``capsule_lengths`` (batch, z/2**levels, y/…, x/…, C; the final capsules'
    lengths, for the margin loss).

    Example:
    >>> model = UCaps3D(num_classes=3)
    >>> model(keras.ops.zeros((1, 32, 32, 32, 1)))["probabilities"].shape
    (1, 32, 32, 32, 3)

    Reference:
        Hajarolasvadi, Sunkara, Khavnekar, Beck, Brandt & Baum, "Volumetric
        macromolecule identification in cryo-electron tomograms using capsule
        networks", BMC Bioinformatics 23, 360 (2022); Nguyen et al.,
        "3D-UCaps: 3D Capsules Unet for Volumetric Image Segmentation", MICCAI 2021.
    """

    def __init__(
        self,
        num_classes: int,
        input_channels: int = 1,
        levels: int = 3,
        encoder_kernel_size: int = 3,
        dilation: bool = False,
        routings: int = 3,
        capsule_init: str = "unit",
        **kwargs,
    ):
        if levels not in (2, 3):
            raise ValueError(f"levels must be 2 or 3, got {levels}")
        if num_classes < 2:
            raise ValueError(f"num_classes counts background too and must be at least 2, got {num_classes}")
        if capsule_init not in CAPSULE_INITS:
            raise ValueError(f"capsule_init must be one of {', '.join(CAPSULE_INITS)}, got {capsule_init!r}")
        dtype = kwargs.pop("dtype", None)

        def votes_init(input_atom_std=None):
            if capsule_init == "reference":
                return "glorot_uniform"
            return UnitLengthVotes(input_atom_std)

        # === Layers and functional graph ===
        inputs = keras.Input((None, None, None, input_channels), name="tomogram_patch")
        dil = 2 if dilation else 1
        x = conv_norm_act(inputs, 16, 5, "features_1", dtype=dtype)
        x = conv_norm_act(x, 32, 5, "features_2", dilation_rate=dil, dtype=dtype)
        x = conv_norm_act(x, 64, 5, "features_3", activation="tanh", dilation_rate=dil, dtype=dtype)
        x = ChannelsToCapsule(name="to_capsule", dtype=dtype)(x)
        # The features' atoms: tanh of instance-normalised values, standard deviation about 0.63.
        primary = ConvCapsule3D(16, 4, kernel_size=3, routings=1, name="primary_capsules", dtype=dtype,
                                kernel_initializer=votes_init(TANH_OF_UNIT_NORMAL_STD))(x)

        level_specs = ENCODER_LEVELS[:levels - 1] + (ENCODER_LEVELS[-1],)
        skips = [primary]
        x = primary
        for level, layers in enumerate(level_specs):
            for step, (types, atoms) in enumerate(layers):
                x = ConvCapsule3D(
                    types or num_classes, atoms, kernel_size=encoder_kernel_size, strides=2 if step == 0 else 1,
                    routings=routings, name=f"encoder_{2 * level + step}", dtype=dtype,
                    kernel_initializer=votes_init(),
                )(x)
            skips.append(x)
        capsule_lengths = CapsuleLength(name="capsule_lengths")(x)

        up_filters = DECODER_UP[3 - levels:]
        conv_filters = DECODER_CONV[3 - levels:]
        x = FlattenCapsules(name="flatten_encoder_out", dtype=dtype)(x)
        for i, filters in enumerate(up_filters):
            x = keras.layers.Conv3DTranspose(filters, 2, strides=2, name=f"decoder_up_{i}", dtype=dtype)(x)
            skip = FlattenCapsules(name=f"flatten_skip_{i}", dtype=dtype)(skips[-2 - i])
            x = keras.layers.Concatenate(name=f"decoder_concat_{i}", dtype=dtype)([x, skip])
            if i < len(conv_filters):
                x = conv_norm_act(x, conv_filters[i], 3, f"decoder_{i}", dtype=dtype)
        logits = keras.layers.Conv3D(num_classes, 1, name="logits", dtype=dtype)(x)
        probabilities = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(logits)

        r = keras.layers.Conv3D(64, 1, activation="relu", name="reconstruct_1", dtype=dtype)(x)
        r = keras.layers.Conv3D(128, 1, activation="relu", name="reconstruct_2", dtype=dtype)(r)
        reconstruction = keras.layers.Conv3D(input_channels, 1, dtype="float32", name="reconstruction")(r)

        super().__init__(
            inputs=inputs,
            outputs={
                "probabilities": probabilities,
                "reconstruction": reconstruction,
                "capsule_lengths": capsule_lengths,
            },
            dtype=dtype,
            **kwargs,
        )
        # === Config ===
        self.num_classes = num_classes
        self.input_channels = input_channels
        self.levels = levels
        self.encoder_kernel_size = encoder_kernel_size
        self.dilation = dilation
        self.routings = routings
        self.capsule_init = capsule_init

    @property
    def patch_multiple(self) -> int:
        """Input sides must be multiples of this."""
        return 2**self.levels

    @property
    def capsule_stride(self) -> int:
        """Voxels per final capsule along each axis: the block that ``capsule_lengths`` scores."""
        return 2**self.levels

    LOSS_WEIGHTS = {"probabilities": 1.0, "capsule_lengths": 1.0, "reconstruction": 0.1}

    def training_targets(self) -> dict:
        """Probabilities against the label patch, the class capsules' lengths against which classes each
        capsule's block holds, the reconstruction against the image and its foreground."""
        from keras_ucaps.data.targets import BlockPresenceTarget, ImageAndForegroundTarget, LabelTarget

        return {"probabilities": LabelTarget(), "reconstruction": ImageAndForegroundTarget(),
                "capsule_lengths": BlockPresenceTarget(self.capsule_stride)}

    def training_losses(self, class_weights, loss_weights: dict | None = None, reconstruction: str = "mse",
                        **options) -> tuple[dict, dict]:
        """Dice plus class-weighted cross-entropy on the probabilities, the margin loss on the class capsules'
        lengths, and the reconstruction loss (``reconstruction``: "mse" or "bce") on foreground voxels;
        weighted 1, 1 and 0.1 unless ``loss_weights`` says otherwise."""
        from keras_ucaps.models.losses import DiceCrossEntropy, MarginLoss, ReconstructionLoss

        losses = {"probabilities": DiceCrossEntropy(self.num_classes, class_weights=class_weights),
                  "capsule_lengths": MarginLoss(self.num_classes),
                  "reconstruction": ReconstructionLoss(reconstruction)}
        weights = {k: float((loss_weights or {}).get(k, self.LOSS_WEIGHTS[k])) for k in losses}
        return losses, weights

    @classmethod
    def contract_of(cls, config: dict, patch_size: int) -> TileContract:
        """Instance normalisation in the feature extractor and decoder couples every output to the whole
        input: predict on fixed tiles of ``whole_input_tile`` side, each voxel
        owned by one tile. ``radius`` counts the convolutions:
        three 5³ (the 2nd and 3rd dilated by 2 in the ablation), the 3³ primary capsules, per level a
        stride-2 and a stride-1 k³ capsule layer at the finer and coarser scale, then the 2³/2 transpose
        convolutions and 3³ decoder convolutions back up."""
        k = config.get("encoder_kernel_size", 3)
        dil = 2 if config.get("dilation") else 1
        levels = config.get("levels", 3)
        radius = 2 + 2 * dil + 2 * dil + 1
        scale = 1
        for _level in range(levels):
            radius += (k - 1) / 2 * scale
            scale *= 2
            radius += (k - 1) / 2 * scale
        while scale > 1:
            scale //= 2
            radius += 2 * scale
        multiple = 2**levels
        return TileContract(radius=int(np.ceil(radius)), multiple=multiple, whole_input=True,
                            tile=whole_input_tile(patch_size, multiple))

    def architecture_config(self) -> dict:
        return {
            "num_classes": self.num_classes,
            "input_channels": self.input_channels,
            "levels": self.levels,
            "encoder_kernel_size": self.encoder_kernel_size,
            "dilation": self.dilation,
            "routings": self.routings,
            "capsule_init": self.capsule_init,
        }

    @classmethod
    def from_config(cls, config):
        # Models saved before the option were initialised (and trained) as the reference.
        return cls(**{"capsule_init": "reference", **config})
