"""The picture of docs/simulate.md's "Cellular context": a slice through a simulated tomogram with context.

    python tools/context_picture.py [--out docs/images/cellular_context.png]

A 128×256×256 tomogram at 10 Å (`simulate --preset shrec --seed 4 --vesicles 3 --sheets 1 --actin 5
--microtubules 2 --gold 6 --contamination 1 --edge lamella --ice-gradient 1.5 --alignment-shift 0.5
--alignment-rotation 0.3 --dose-b-factor 4 --snr 0.3`): left the noise-free density of particles and context,
right the tomogram, each a 5-voxel slab through the gold beads' depth, with a 100 nm scale bar.
"""

import argparse
from pathlib import Path

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/images/cellular_context.png"))
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_ucaps.data.context import ContextSettings
    from keras_ucaps.data.simulate import settings_for_preset, simulate
    from keras_ucaps.evaluation.slices import slab_mean, stretch

    context = ContextSettings(vesicles=3, sheets=1, actin=5, microtubules=2, gold=6, contamination=1, edge="lamella",
                              ice_gradient=1.5, alignment_shift=0.5, alignment_rotation=0.3, dose_b_factor=4)
    sim = simulate(settings_for_preset("shrec", shape=(128, 256, 256), seed=4, snr=0.3, context=context))
    gold = [s["centre"][2] for s in sim.context_drawn["structures"] if s["kind"] == "gold"]
    z = int(round(np.median(gold))) if gold else 64
    z = min(max(z, 20), 108)
    density = slab_mean(sim.density + sim.context_density, 0, z, 5)
    tomogram = slab_mean(sim.tomogram, 0, z, 5)
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.2))
    for ax, image, title in ((axes[0], -density, "noise-free density"), (axes[1], tomogram, "tomogram")):
        ax.imshow(stretch(image), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{title}, z = {z}")
        ax.axis("off")
        bar = 100.0  # nm: 100 voxels at 10 Å
        ax.plot([246 - bar, 246], [244, 244], color="white", lw=4)
        ax.text(246 - bar / 2, 236, "100 nm", color="white", ha="center", va="bottom", fontsize=11)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=64)
    print(f"wrote {args.out} (slice z = {z})")


if __name__ == "__main__":
    main()
