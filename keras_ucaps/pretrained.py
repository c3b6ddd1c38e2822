"""Pretrained models shipped with the package, registered by name with a checksum.

Each lives in ``keras_ucaps/resources/models/NAME/`` as a run folder:
``weights_best.keras`` (no optimizer state; it carries its classes, voxel size,
normalisation and picking settings, :mod:`keras_ucaps.models.metadata`), the run's
record ``config.json`` and ``thresholds.json``, and ``MODEL_CARD.md`` (training data,
simulation settings, voxel size, held-out F1, training time and hardware). The weights' SHA-256 is checked before use.
"""

from __future__ import annotations

import hashlib
import os
from importlib import resources
from pathlib import Path

from keras_ucaps.errors import InputError

# name -> (SHA-256 of weights_best.keras, one-line description)
REGISTRY: dict[str, tuple[str, str]] = {
    "shrec-unet": (
        "de7f454064a2e141aa05b7bc9cbf14aa76ddca888351a9e2c7d8e6d2a1bc44eb",
        "3D-UNet, 4v94 / 1bxn / 3gl1 at 10 Å, trained on domain-randomised 'shrec' simulations, fine-tuned with "
        "negatives and on simulations with cellular context (held-out macro F1 0.81 over four tomograms, 0.70 "
        "with context)",
    ),
    "shrec-ucaps": (
        "97363656563ffd15b0275236eb168d4e33c322c2bfa58bb606cd684c3770b2eb",
        "3D-UCaps, 4v94 / 1bxn / 3gl1 at 10 Å, trained on domain-randomised 'shrec' simulations on a GPU, "
        "fine-tuned with negatives on a CPU (held-out macro F1 0.80 over four tomograms)",
    ),
    "invitro-unet": (
        "016b6964dd252277e1e747f65ee1fb09416ba20f50fdb1d2bb94a38e216502f5",
        "3D-UNet, proteasome 3j9i / ribosome 4v4r at 10 Å, trained on domain-randomised 'invitro' "
        "simulations and fine-tuned on simulations with cellular context (held-out macro F1 0.99 over four "
        "tomograms, 0.92 with context)",
    ),
    "generalist-unet": (
        "4e37c15bd28eb7e4d9985a5724a16f16b93164c6e4c9826c0b1cd1c1ada49151",
        "3D-UNet, 22 proteins of 3 to 17 nm radius at 10 Å, each its own class, trained on randomised simulations "
        "with and without cellular context: the starting point `fit` fine-tunes for a new class set",
    ),
    "shrec12-unet": (
        "2819140840a294c0bc03ff777a90e1083b7522d3cd995fa7c736dedac95af415",
        "3D-UNet, the 12 SHREC'19 proteins at 10 Å, trained on randomised 'full' simulations with and without "
        "cellular context (held-out macro F1 0.40 over four tomograms, localisation F1 0.64; 0.29 and 0.46 with "
        "context): finds particles better than it names them",
    ),
}
DEFAULT = "shrec-unet"

# The bundled model a new run of each architecture starts from unless told otherwise (`fit --from-scratch`, or
# `--init-weights MODEL`): trained on many particle shapes, so that a new class set needs only its class head
# learned and the rest adapted (keras_ucaps.training.warm_start).
STARTING_POINTS: dict[str, str] = {"unet": "generalist-unet", "ucaps": "shrec-ucaps"}


def models_folder() -> Path:
    return Path(str(resources.files("keras_ucaps") / "resources" / "models"))


def pretrained_run(name: str | None = None) -> Path:
    """The run folder of pretrained model ``name`` (default: the bundled default), checksum verified."""
    name = name or DEFAULT
    if name is None or name not in REGISTRY:
        known = ", ".join(REGISTRY) or "none bundled yet"
        raise InputError("--model", f"unknown pretrained model {name!r} (bundled: {known})")
    folder = models_folder() / name
    digest = sha256(folder / "weights_best.keras")
    if digest != REGISTRY[name][0]:
        raise InputError(folder / "weights_best.keras", f"checksum mismatch ({digest[:12]}…): reinstall keras-ucaps")
    return folder


def model_path(name_or_path: str | os.PathLike | None) -> Path:
    """A run folder or .keras file that exists, else the bundled model of that name (None: the default)."""
    if name_or_path is not None and Path(name_or_path).exists():
        return Path(name_or_path)
    if name_or_path is not None and str(name_or_path) not in REGISTRY:
        known = ", ".join(REGISTRY) or "none bundled yet"
        raise InputError(name_or_path, f"no such file, nor a bundled model (bundled: {known})")
    return pretrained_run(None if name_or_path is None else str(name_or_path))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            h.update(block)
    return h.hexdigest()
