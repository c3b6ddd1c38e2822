"""Copy the template maps the simulator presets need into the package.

Each map is cropped to a cube around its particle (density > 0.1 × max, plus a
margin), kept at 10 Å/voxel, and gzip-compressed. Run from the repository root:

    python tools/bundle_templates.py ../shared/data/templates_10A
"""

import gzip
import shutil
import sys
from pathlib import Path

import mrcfile
import numpy as np

MAPS = ["1bxn", "1qvr", "1s3x", "1u6g", "2cg9", "3cf3", "3d2f", "3gl1", "3h84", "3qm1", "3j9i", "4cr2", "4v4r",
        "4v94"]
MARGIN = 3


def main(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in MAPS:
        with mrcfile.open(source / f"{name}.mrc", permissive=True) as mrc:
            data = np.asarray(mrc.data, dtype=np.float32)
            voxel_size = float(mrc.voxel_size.x)
        zz, yy, xx = np.nonzero(data > 0.1 * data.max())
        centre = np.round([zz.mean(), yy.mean(), xx.mean()]).astype(int)
        radius = int(np.ceil(np.sqrt(((np.stack([zz, yy, xx], 1) - centre) ** 2).sum(1)).max())) + MARGIN
        padded = np.pad(data, radius)
        lo = centre + radius - radius
        crop = padded[tuple(slice(c, c + 2 * radius + 1) for c in lo)]
        tmp = target / f"{name}.mrc"
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(crop)
            mrc.voxel_size = voxel_size
        with open(tmp, "rb") as raw, gzip.open(target / f"{name}.mrc.gz", "wb", compresslevel=9) as gz:
            shutil.copyfileobj(raw, gz)
        tmp.unlink()
        print(name, data.shape, "->", crop.shape)
    for extra in ("LICENSE", "NOTICE"):
        shutil.copy(source / extra, target / extra)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(__file__).resolve().parents[1] / "keras_ucaps" / "resources" / "templates")
