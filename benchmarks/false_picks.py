"""Where false picks lie: on cellular context, on unlabelled crowding particles, on particles of another class,
or elsewhere.

    python benchmarks/false_picks.py WORK [--models shrec-unet,shrec-ucaps] [--near 1] [--context-near 3]

WORK is a folder of `benchmarks/accuracy.py --seeds ... --work WORK` (its seedNN/ folders, each with the
simulation's tomo_particles.csv and tomo_distractors.csv, and each model's NAME_picks.csv and NAME_scores.json;
folders without picks of every model are left out, and named).
Per model and class, summed over the seeds: the false picks `evaluate` counted (one-to-one matching within 0.5 ×
the class radius); of the picks with no particle of their class within that tolerance, those within --near ×
the class radius (default 1) of a crowding particle, else of a particle of another class, else elsewhere; the
rest of evaluate's false picks are second picks on a particle of their own class. In tomograms simulated with
context (seedNN_context/, `accuracy.py --context`), a pick off its class within --context-near voxels of a
context structure (membrane, filament, gold, contamination, edge; NAME_context.mrc) counts as "on context"
first; and per model, the density of such picks (per million voxels of the structures' --context-near
neighbourhood) is set beside that of the other false picks elsewhere in the volume.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import maps_name  # noqa: E402

from keras_ucaps.io import read_particles  # noqa: E402

GROUPS = ("on context", "on a distractor", "on another class", "elsewhere", "a second pick")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work", type=Path)
    parser.add_argument("--models", default="shrec-unet,shrec-ucaps")
    parser.add_argument("--near", type=float, default=1.0)
    parser.add_argument("--context-near", type=float, default=3.0)
    args = parser.parse_args()
    from scipy import ndimage

    from keras_ucaps.io import read_volume
    models = args.models.split(",")
    found = sorted(args.work.glob("seed*/tomo_distractors.csv"))
    seeds = [p for p in found if all((p.parent / f"{maps_name(m)}_picks.csv").is_file() for m in models)]
    if not seeds:
        raise SystemExit(f"{args.work}: holds no seedNN/ folder with picks of {', '.join(models)} (run "
                         "benchmarks/accuracy.py --seeds ... --models ... --work WORK)")
    if len(seeds) < len(found):
        print("left out, without picks of every model: "
              + ", ".join(p.parent.name for p in found if p not in seeds))
    import keras_ucaps

    # the radii evaluate scored with: the model's own (the simulation's classes.json may differ, as invitro-unet's
    # radii were measured in its training tomogram), else a negative count of second picks
    registries = {model: keras_ucaps.load(model).classes for model in models}
    counts, density = {}, {}
    for distractors_path in seeds:
        folder = distractors_path.parent
        voxel = float(json.loads((folder / "tomo_settings.json").read_text()).get("voxel_size", 10.0))
        truth = read_particles(folder / "tomo_particles.csv")
        crowd = cKDTree(read_particles(distractors_path).coords)
        near_context = None
        if (folder / "tomo_context.mrc").is_file():
            labels = np.asarray(read_volume(folder / "tomo_context.mrc").data)
            near_context = ndimage.distance_transform_edt(labels == 0) <= args.context_near
        for model in models:
            if near_context is not None:
                seen = density.setdefault(model, [0, 0, 0, 0])
                seen[2] += int(near_context.sum())
                seen[3] += int(near_context.size - near_context.sum())
            name = maps_name(model)
            picks = read_particles(folder / f"{name}_picks.csv")
            scored = json.loads((folder / f"{name}_scores.json").read_text())["classes"]
            for cls in registries[model].classes:
                radius = cls.radius / voxel
                row = counts.setdefault((model, cls.name), dict.fromkeys(("false", *GROUPS), 0))
                row["false"] += scored[cls.name]["fp"]
                mine = picks.where(class_name=cls.name).coords
                own = truth.where(class_name=cls.name).coords
                others = truth.coords[truth.class_name != cls.name]
                if len(mine) == 0:
                    continue
                nowhere = np.full(len(mine), np.inf)
                off = (cKDTree(own).query(mine)[0] if len(own) else nowhere) > 0.5 * radius
                n_off = int(off.sum())
                on_context = np.zeros(len(mine), bool)
                if near_context is not None:
                    zyx = np.clip(np.round(mine[:, ::-1]).astype(int), 0, np.array(near_context.shape) - 1)
                    on_context = near_context[tuple(zyx.T)]
                    seen = density[model]  # false picks on / off context, voxels on / off
                    seen[0] += int((off & on_context).sum())
                    seen[1] += int((off & ~on_context).sum())
                row["on context"] += int((off & on_context).sum())
                off = off & ~on_context
                on_crowd = crowd.query(mine)[0] <= args.near * radius
                on_other = (cKDTree(others).query(mine)[0] if len(others) else nowhere) <= args.near * radius
                row["on a distractor"] += int((off & on_crowd).sum())
                row["on another class"] += int((off & ~on_crowd & on_other).sum())
                row["elsewhere"] += int((off & ~on_crowd & ~on_other).sum())
                row["a second pick"] += scored[cls.name]["fp"] - n_off  # matched one-to-one: fp >= off
    print(f"{len(seeds)} tomograms ({', '.join(p.parent.name for p in seeds)}); near = {args.near:g} × the class "
          "radius")
    print("| model | class | false picks | " + " | ".join(GROUPS) + " |")
    print("| --- | --- | --- |" + " --- |" * len(GROUPS))
    for (model, name), row in counts.items():
        print(f"| `{model}` | {name} | {row['false']} | " + " | ".join(str(row[g]) for g in GROUPS) + " |")
    if density:
        print(f"\nfalse picks per million voxels, within {args.context_near:g} voxels of context and elsewhere:")
        print("| model | on context | elsewhere | ratio |")
        print("| --- | --- | --- | --- |")
        for model, (on, away, voxels_on, voxels_away) in density.items():
            a, b = 1e6 * on / max(voxels_on, 1), 1e6 * away / max(voxels_away, 1)
            print(f"| `{model}` | {a:.1f} | {b:.1f} | {a / b if b else float('inf'):.2f} |")


if __name__ == "__main__":
    main()
