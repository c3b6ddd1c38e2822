"""What every keras-ucaps architecture shares: the metadata it carries, and loading a bundled preset."""

from __future__ import annotations

import keras

from keras_ucaps.models.contract import TileContract
from keras_ucaps.models.metadata import ModelMetadata


class TomogramModel(keras.Model):
    """A functional Keras model over (batch, z, y, x, channels) tomogram patches that carries its
    :class:`~keras_ucaps.models.metadata.ModelMetadata` in its config (``metadata``: None until trained).

    Subclasses build their graph in ``__init__``, pass ``**kwargs`` on (``metadata`` among them), state their
    :class:`~keras_ucaps.models.contract.TileContract` in ``contract_of`` and their architecture options in
    ``architecture_config``.
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

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, **self.architecture_config(),
                "metadata": None if self.metadata is None else self.metadata.to_dict()}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @classmethod
    def from_preset(cls, name: str):
        """The bundled model ``name`` (see ``keras-ucaps show models``) as a Keras model of this class, its
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
