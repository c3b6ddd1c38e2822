"""Every architecture states what its outputs depend on, and prediction honours it.

The stated contract is checked against a measurement (perturb one input voxel, see which outputs move,
as stardist measures a receptive field); prediction at every trusted voxel is checked against the
model's output on the context that defines it: the whole volume for local models, the one
training-sized tile that owns the voxel for models that normalise over their whole input.
"""

import numpy as np
import pytest

from keras_ucaps.inference.predict import predict_volume
from keras_ucaps.inference.tiling import ownership_1d, tile_starts
from keras_ucaps.models import UCaps3D, UNet3D
from keras_ucaps.models.contract import TileContract, measure_context

# Small widths, the depths and normalisations of the real options.
ARCHITECTURES = {
    "unet": lambda: UNet3D(3, filters=(4, 6, 8), bottom_convs=2),
    "unet-batch": lambda: UNet3D(3, filters=(4, 6, 8), bottom_convs=2, normalization="batch"),
    "unet-instance": lambda: UNet3D(3, filters=(4, 6, 8), bottom_convs=2, normalization="instance"),
    "ucaps": lambda: UCaps3D(3),
    "ucaps-levels-2": lambda: UCaps3D(3, levels=2),
    "ucaps-kernel-5-dilated": lambda: UCaps3D(3, levels=2, encoder_kernel_size=5, dilation=True),
}
PATCH = 16


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def model(request):
    import keras

    keras.utils.set_random_seed(0)  # the same weights every run
    return request.param, ARCHITECTURES[request.param]()


def test_the_stated_contract_matches_the_measured_context(model):
    name, model = model
    contract = model.tile_contract(PATCH)
    side = 2 * contract.radius + 2 * contract.multiple if not contract.whole_input else 2 * PATCH
    side = -(-side // contract.multiple) * contract.multiple
    radius, whole = measure_context(model, side)
    assert whole == contract.whole_input, name
    if not whole:
        assert radius <= contract.radius, f"{name}: outputs move {radius} voxels away, stated {contract.radius}"
        assert radius >= contract.radius // 2, f"{name}: stated radius {contract.radius} is far too loose"
    else:
        assert contract.tile >= PATCH and contract.tile % contract.multiple == 0
    assert TileContract.from_dict(contract.to_dict()) == contract


def _owned_expectation(model, volume, tile, margin):
    """For every voxel, the model's output on the tile it lies deepest inside, found voxel by voxel."""
    starts = [tile_starts(n, tile, margin) for n in volume.shape]

    def owner(i, axis):
        n = volume.shape[axis]
        depth = [min(i - s if s > 0 else n, s + tile - 1 - i if s + tile < n else n) if s <= i < s + tile else -1
                 for s in starts[axis]]
        return starts[axis][int(np.argmax(depth))]

    expected = np.zeros((3, *volume.shape), np.float32)
    cache = {}
    for z in range(volume.shape[0]):
        for y in range(volume.shape[1]):
            for x in range(volume.shape[2]):
                key = (owner(z, 0), owner(y, 1), owner(x, 2))
                if key not in cache:
                    crop = volume[key[0]:key[0] + tile, key[1]:key[1] + tile, key[2]:key[2] + tile]
                    cache[key] = np.asarray(model(crop[None, ..., None])["probabilities"])[0]
                expected[:, z, y, x] = cache[key][z - key[0], y - key[1], x - key[2]]
    return expected


def test_prediction_at_every_voxel_equals_the_model_on_its_defining_context(model):
    name, model = model
    contract = model.tile_contract(PATCH)
    rng = np.random.default_rng(1)
    if contract.whole_input:
        volume = rng.normal(size=(24, 32, 40)).astype(np.float32)
        margin = 2
        predicted = predict_volume(model, volume, 3, tile=PATCH, margin=margin, fixed_tiles=True, blend=False)
        expected = _owned_expectation(model, volume, PATCH, margin)
    else:  # tiles of 4 radii (the layout keeps margins within a quarter tile), two of them along x
        volume = rng.normal(size=(24, 32, 8 * contract.radius)).astype(np.float32)
        tile = -(-4 * contract.radius // contract.multiple) * contract.multiple
        predicted = predict_volume(model, volume, 3, tile=tile, margin=contract.radius)
        expected = np.moveaxis(np.asarray(model(volume[None, ..., None])["probabilities"])[0], -1, 0)
    np.testing.assert_allclose(np.moveaxis(np.asarray(predicted), -1, 0), expected, atol=1e-3, err_msg=name)


def test_a_whole_input_models_tiles_do_not_change_with_the_tomograms_size():
    """The same region in a small and a large volume gets the same outputs where the same tile owns it
    (tiles of the training side start at the same places): before, the tile length followed the volume."""
    model = UCaps3D(3, levels=2)
    large = np.random.default_rng(2).normal(size=(40, 48, 64)).astype(np.float32)
    small = large[:24, :32, :40]
    kwargs = dict(tile=PATCH, margin=2, fixed_tiles=True, blend=False)
    a = np.asarray(predict_volume(model, small, 3, **kwargs))
    b = np.asarray(predict_volume(model, large, 3, **kwargs))
    region = (slice(0, 12), slice(0, 12), slice(0, 12))  # owned by the tiles starting at 0 in both
    np.testing.assert_allclose(a[region], b[region], atol=1e-5)


def test_ownership_gives_each_voxel_to_exactly_one_tile():
    for size, tile, margin in ((70, 16, 3), (16, 16, 2), (33, 16, 4)):
        starts = tile_starts(size, tile, margin)
        count = np.zeros(size)
        for s, w in zip(starts, ownership_1d(starts, tile, size), strict=True):
            count[s:s + tile] += w
            inner = np.flatnonzero(w) + s
            assert all(i - s >= margin or s == 0 for i in inner) and all(s + tile - 1 - i >= margin or
                                                                         s + tile == size for i in inner)
        assert (count == 1).all()


def test_fixed_tiles_shrink_on_axes_shorter_than_the_tile_and_stay_on_the_pooling_grid():
    from keras_ucaps.inference.tiling import layouts

    assert layouts((40, 20, 70), 32, 4, multiple=8, fixed=True) == [
        (32, [0, 8], 4), (16, [0, 4], 4), (32, [0, 24, 38], 4)]
    assert layouts((32, 24, 16), 32, 4, multiple=8, fixed=True)[0] == (32, [0], 4)
