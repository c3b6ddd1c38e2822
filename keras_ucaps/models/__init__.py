"""Keras models of keras-ucaps; importing this registers them with Keras."""

from keras_ucaps.models.ucaps3d import UCaps3D
from keras_ucaps.models.unet3d import UNet3D

ARCHITECTURES = {"ucaps": UCaps3D, "unet": UNet3D}


def build_model(architecture: str, num_classes: int, **options):
    """``build_model("ucaps" | "unet", num_classes, **options)``: a new, untrained model."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r} (choose {', '.join(ARCHITECTURES)})")
    return ARCHITECTURES[architecture](num_classes=num_classes, **options)


__all__ = ["ARCHITECTURES", "UCaps3D", "UNet3D", "build_model"]
