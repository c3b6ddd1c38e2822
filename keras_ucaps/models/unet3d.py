"""The DeepFinder-style 3D-UNet."""

from __future__ import annotations

import math

import keras

from keras_ucaps.models.base import TomogramModel
from keras_ucaps.models.blocks import instance_norm
from keras_ucaps.models.contract import TileContract, whole_input_tile


@keras.saving.register_keras_serializable(package="keras_ucaps")
class UNet3D(TomogramModel):
    """A 3D U-Net laid out as DeepFinder's segmentation network.

    3³ convolutions with ReLU and same padding throughout: 32, 32 | max-pool |
    48, 48 | max-pool | 64 ×4 | nearest upsampling + 2³ conv 64, concatenate,
    48, 48 | upsampling + 2³ conv 48, concatenate, 32, 32 | 1³ conv → C,
    softmax. 902,928 + 33·C parameters with the defaults.

    Args:
        num_classes: int. Output classes, background included (C).
        input_channels: int. Channels of the input volume.
        filters: tuple of int. Widths per level, shallow to deep (default
            32, 48, 64); its length minus one is the number of poolings.
        bottom_convs: int. Convolutions at the deepest level (DeepFinder: 4).
        normalization: None, "batch" or "instance" after each 3³ conv.
        **kwargs: Model arguments (name, dtype) and ``metadata``: what the trained model needs to be used
            (:class:`~keras_ucaps.models.metadata.ModelMetadata`), saved with it.

    Outputs: a dict with ``probabilities`` (batch, z, y, x, C; softmax, float32).

    Example:
    >>> model = UNet3D(num_classes=3)
    >>> model.count_params()
    903027

    Reference:
        Moebel, Martinez-Sanchez, Lamm, Righetto, Wietrzynski, Albert, Larivière,
        Fourmentin, Pfeffer, Ortiz, Baumeister, Peng, Engel & Kervrann, "Deep
        learning improves macromolecule identification in 3D cellular cryo-electron
        tomograms", Nature Methods 18, 1386–1394 (2021).
    """

    def __init__(
        self,
        num_classes: int,
        input_channels: int = 1,
        filters: tuple[int, ...] = (32, 48, 64),
        bottom_convs: int = 4,
        normalization: str | None = None,
        **kwargs,
    ):
        if normalization not in (None, "batch", "instance"):
            raise ValueError(f"normalization must be None, 'batch' or 'instance', got {normalization!r}")
        filters = tuple(int(f) for f in filters)
        dtype = kwargs.pop("dtype", None)

        def conv(x, width, name):
            x = keras.layers.Conv3D(width, 3, padding="same", activation=None if normalization else "relu",
                                    name=name, dtype=dtype)(x)
            if normalization == "batch":
                x = keras.layers.BatchNormalization(name=f"{name}_norm", dtype=dtype)(x)
            elif normalization == "instance":
                x = instance_norm(width, f"{name}_norm", dtype)(x)
            if normalization:
                x = keras.layers.Activation("relu", name=f"{name}_relu", dtype=dtype)(x)
            return x

        # === Layers and functional graph ===
        inputs = keras.Input((None, None, None, input_channels), name="tomogram_patch")
        x = inputs
        skips = []
        for level, width in enumerate(filters[:-1]):
            x = conv(x, width, f"down_{level}_a")
            x = conv(x, width, f"down_{level}_b")
            skips.append(x)
            x = keras.layers.MaxPooling3D(2, name=f"pool_{level}", dtype=dtype)(x)
        for i in range(bottom_convs):
            x = conv(x, filters[-1], f"bottom_{i}")
        for level in reversed(range(len(filters) - 1)):
            x = keras.layers.UpSampling3D(2, name=f"upsample_{level}", dtype=dtype)(x)
            x = keras.layers.Conv3D(filters[level + 1], 2, padding="same", activation="relu", name=f"up_{level}_conv",
                                    dtype=dtype)(x)
            x = keras.layers.Concatenate(name=f"concat_{level}", dtype=dtype)([x, skips[level]])
            x = conv(x, filters[level], f"up_{level}_a")
            x = conv(x, filters[level], f"up_{level}_b")
        logits = keras.layers.Conv3D(num_classes, 1, name="logits", dtype=dtype)(x)
        probabilities = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
        super().__init__(inputs=inputs, outputs={"probabilities": probabilities}, dtype=dtype, **kwargs)
        # === Config ===
        self.num_classes = num_classes
        self.input_channels = input_channels
        self.filters = filters
        self.bottom_convs = bottom_convs
        self.normalization = normalization

    @property
    def patch_multiple(self) -> int:
        return 2 ** (len(self.filters) - 1)

    def training_targets(self) -> dict:
        """Its probabilities against the label patch."""
        from keras_ucaps.data.targets import LabelTarget

        return {"probabilities": LabelTarget()}

    def training_losses(self, class_weights, loss_weights: dict | None = None, **options) -> tuple[dict, dict]:
        """Dice plus class-weighted cross-entropy on the probabilities."""
        from keras_ucaps.models.losses import DiceCrossEntropy

        weight = float((loss_weights or {}).get("probabilities", 1.0))
        return ({"probabilities": DiceCrossEntropy(self.num_classes, class_weights=class_weights)},
                {"probabilities": weight})

    @classmethod
    def contract_of(cls, config: dict, patch_size: int) -> TileContract:
        """Local without normalisation or with batch normalisation (an affine map at inference); with
        instance normalisation every output depends on the whole input, so it predicts on fixed tiles of
        ``whole_input_tile`` side, as UCaps. ``radius``: each k³ convolution at scale s (voxels per feature voxel)
        adds (k − 1)/2 · s, each 2× pooling at scale s adds s/2, each upsampling with its 2³ conv adds s."""
        depth = len(config["filters"]) - 1
        radius = sum(2 * 2**level + 2**level / 2 for level in range(depth))  # two 3³ convs, then pool
        radius += config["bottom_convs"] * 2**depth
        radius += sum(2**level + 2 * 2**level for level in range(depth))  # upsample + 2³ conv, two 3³ convs
        multiple = 2**depth
        whole = config.get("normalization") == "instance"
        return TileContract(radius=int(math.ceil(radius)), multiple=multiple, whole_input=whole,
                            tile=whole_input_tile(patch_size, multiple) if whole else None)

    def architecture_config(self) -> dict:
        return {
            "num_classes": self.num_classes,
            "input_channels": self.input_channels,
            "filters": list(self.filters),
            "bottom_convs": self.bottom_convs,
            "normalization": self.normalization,
        }
