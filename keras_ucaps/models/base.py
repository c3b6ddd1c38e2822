"""What every keras-ucaps architecture shares: the metadata it carries, what it is trained against, its options,
and loading a bundled preset."""

from __future__ import annotations

import inspect

import keras

from keras_ucaps.models.contract import TileContract
from keras_ucaps.models.metadata import ModelMetadata


class TomogramModel(keras.Model):
    """A functional Keras model over (batch, z, y, x, channels) tomogram patches that carries its
    :class:`~keras_ucaps.models.metadata.ModelMetadata` in its config (``metadata``: None until trained).

    Subclasses build their graph in ``__init__``, pass ``**kwargs`` on (``metadata`` among them), and state
    what the rest of the package asks of an architecture: its :class:`~keras_ucaps.models.contract.TileContract`
    (``contract_of``), its options (``architecture_config``), and what each output is trained against
    (``training_targets``, ``training_losses``). Training and the data pipeline never test an architecture's
    name.
    """

    def __init__(self, inputs, outputs, *, metadata: ModelMetadata | dict | None = None, **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        if isinstance(metadata, dict):
            metadata = ModelMetadata.from_dict(metadata, f"{type(self).__name__} config")
        self.metadata = metadata

    def tile_contract(self, patch_size: int | None = None) -> TileContract:
        """How prediction tiles this model (see :mod:`keras_ucaps.models.contract`); ``patch_size``: its training
        patch side (default: its metadata's)."""
        if patch_size is None:
            if self.metadata is None:
                raise ValueError(f"{self.name} carries no metadata: give the patch size it was trained on")
            patch_size = self.metadata.patch_size
        return self.contract_of(self.architecture_config(), patch_size)

    @classmethod
    def contract_of(cls, config: dict, patch_size: int) -> TileContract:
        raise NotImplementedError

    def architecture_config(self) -> dict:
        """The constructor arguments that define the architecture (no name, metadata or dtype)."""
        raise NotImplementedError

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The architecture options its constructor takes (``num_classes`` aside)."""
        parameters = inspect.signature(cls.__init__).parameters
        return tuple(name for name, p in parameters.items()
                     if name not in ("self", "num_classes") and p.kind is p.POSITIONAL_OR_KEYWORD)

    def training_targets(self) -> dict:
        """Output name → the target it is trained against (:mod:`keras_ucaps.data.targets`)."""
        raise NotImplementedError

    def training_losses(self, class_weights, loss_weights: dict | None = None, **options) -> tuple[dict, dict]:
        """(output name → Keras loss, output name → its weight in the total loss) for training on patches whose
        classes are weighted by ``class_weights``; ``loss_weights`` overrides the architecture's weights."""
        raise NotImplementedError

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, **self.architecture_config(),
                "metadata": None if self.metadata is None else self.metadata.to_dict()}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @classmethod
    def from_preset(cls, name: str):
        """The bundled model ``name`` (one of ``keras_ucaps.pretrained.REGISTRY``) as a Keras model of this class, its
        checksum verified, with its metadata; for fine-tuning in a training loop of one's own.

        Example:
        >>> model = UNet3D.from_preset("shrec-unet")  # doctest: +SKIP
        >>> model.metadata.classes.names  # doctest: +SKIP
        ['4v94', '1bxn', '3gl1']
        """
        from keras_ucaps.errors import InputError
        from keras_ucaps.models.loading import load_trained
        from keras_ucaps.pretrained import pretrained_run

        loaded = load_trained(pretrained_run(name))
        if not isinstance(loaded.model, cls):
            raise InputError(name, f"is a {type(loaded.model).__name__}, not a {cls.__name__}")
        return loaded.model
