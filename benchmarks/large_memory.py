"""Peak memory of `predict` and `pick` on a large tomogram with many classes at another voxel size.

    python benchmarks/large_memory.py [--shape 500 1000 1000] [--classes 13] [--voxel-size 7.84]
                                      [--limit-gb 8] [--work /tmp/keras-ucaps-memory]

Writes a synthetic tomogram (Gaussian noise with dense spheres, float32 MRC, written a slab at a time)
at ``--voxel-size`` Å, and a run folder holding an untrained UNet with ``--classes`` particle classes
at ``--model-voxel-size`` Å (so prediction resamples the tomogram, predicts on the model's grid and
brings every map back). Memory does not depend on the weights; the last layer's background bias is
set so that a few percent of the voxels are called particles, as a trained model's maps look, so
that `pick` has components to measure. Then runs, each in its own process:

    keras-ucaps predict RUN TOMO.mrc --out MAPS
    keras-ucaps pick MAPS/TOMO_labels.mrc --out picks.star
    keras-ucaps pick DENSE/TOMO_labels.mrc --out dense_picks.star

The second pick reads a label map in which every one of the tomogram's particles (one per 40³ voxels,
13 classes by size) is a ball, as a well-trained model calls them (`keras-ucaps targets`), beside the
predicted probability maps: an untrained model's label map is mostly specks, this one has thousands of
components per class, some merged into blobs that are split at their peaks.

and prints, per command, wall time, peak resident memory (``ru_maxrss``: anonymous memory plus the
file pages the process had mapped) and the peak of anonymous memory alone (``RssAnon``, sampled
every 0.2 s), and, where this machine lets root make a memory cgroup, runs each command under a hard
limit of ``--limit-gb`` (page cache included, reclaimable): exit 0 there is the proof that it fits.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

CGROUP = Path("/sys/fs/cgroup/memory")


def particles(shape, seed: int = 0):
    """(z, y, x) centres and radii (voxels) of one particle per 40³ voxels."""
    rng = np.random.default_rng(seed)
    count = int(np.prod(shape) / 40**3)
    return rng.uniform(0, shape, size=(count, 3)), rng.uniform(5, 16, size=count)


def make_tomogram(path: Path, shape, voxel_size: float, noise: float, seed: int = 0) -> None:
    from keras_ucaps.io.mrc import volume_writer

    rng = np.random.default_rng(seed + 1)
    centres, radii = particles(shape, seed)
    with volume_writer(path, shape, voxel_size) as write:
        for z0 in range(0, shape[0], 16):
            z1 = min(shape[0], z0 + 16)
            slab = noise * rng.standard_normal((z1 - z0, *shape[1:]), dtype=np.float32)
            zz = np.arange(z0, z1)[:, None, None]
            for (cz, cy, cx), r in zip(centres, radii, strict=True):
                if cz + r < z0 or cz - r >= z1:
                    continue
                y0, y1 = int(max(0, cy - r)), int(min(shape[1], cy + r + 1))
                x0, x1 = int(max(0, cx - r)), int(min(shape[2], cx + r + 1))
                yy, xx = np.ogrid[y0:y1, x0:x1]
                inside = (zz - cz) ** 2 + (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
                slab[:, y0:y1, x0:x1] -= 1.5 * inside  # dense protein is dark in cryo-ET
            write(slab)


def class_radii(classes: int) -> dict[str, float]:
    return {f"p{i:02d}": float(r) for i, r in zip(range(1, classes + 1), np.linspace(40, 130, classes), strict=True)}


def make_dense_maps(work: Path, maps: Path, shape, voxel_size: float, classes: int) -> Path:
    """A folder holding a label map of every particle as a trained model would call it (`keras-ucaps targets`
    on the particles' table, 13 classes by size) beside the predicted probability maps (linked)."""
    from keras_ucaps.io import ParticleTable, write_particles

    centres, radii = particles(shape)
    centres = np.clip(centres, 0, np.array(shape) - 1)  # voxel centres: the table's range is 0 … n - 1
    names = list(class_radii(classes))
    sizes = np.array(list(class_radii(classes).values())) / voxel_size
    table = ParticleTable.from_columns(centres[:, ::-1], [names[i] for i in
                                                          np.abs(radii[:, None] - sizes).argmin(axis=1)], "tomo")
    write_particles(table, work / "particles.csv")
    dense = work / "dense"
    dense.mkdir(exist_ok=True)
    subprocess.run([sys.executable, "-m", "keras_ucaps", "targets", str(work / "particles.csv"), "--tomogram",
                    str(work / "tomo.mrc"), "--classes", str(maps / "classes.json"), "--out",
                    str(dense / "tomo_labels.mrc")], check=True)
    for source in [*maps.glob("tomo_prob_*.mrc"), maps / "classes.json"]:
        link = dense / source.name
        link.unlink(missing_ok=True)
        link.symlink_to(source)
    return dense / "tomo_labels.mrc"


def make_run(run: Path, classes: int, voxel_size: float, filters, sample: np.ndarray) -> None:
    import keras

    from keras_ucaps.classes import ClassRegistry
    from keras_ucaps.models import build_model

    keras.utils.set_random_seed(0)
    model = build_model("unet", classes + 1, filters=filters)
    # Background bias: the 97th percentile of (best class logit - background logit) on a sample, so ~3 % of
    # the voxels get a particle label.
    probs = np.asarray(model((sample - sample.mean()) / sample.std())["probabilities"])[0]
    margin = np.log(np.max(probs[..., 1:], axis=-1) + 1e-12) - np.log(probs[..., 0] + 1e-12)
    last = [layer for layer in model.layers if getattr(layer, "bias", None) is not None][-1]
    kernel, bias = last.get_weights()
    bias[0] += float(np.percentile(margin, 97))
    last.set_weights([kernel, bias])
    run.mkdir(parents=True, exist_ok=True)
    model.save(run / "weights_best.keras")
    registry = ClassRegistry.from_radii(class_radii(classes))
    (run / "config.json").write_text(json.dumps({"classes": registry.to_dict(), "voxel_size": voxel_size,
                                                 "patch_size": 64}))


def measure(command, limit_gb: float | None):
    """Run ``command``; (seconds, exit status, peak RSS GB, peak anonymous GB, cgroup peak GB or None)."""
    group = None
    if limit_gb and os.geteuid() == 0 and (CGROUP / "cgroup.procs").exists():
        group = CGROUP / f"keras-ucaps-bench-{os.getpid()}"
        try:
            group.mkdir(exist_ok=True)
            (group / "memory.limit_in_bytes").write_text(str(int(limit_gb * 2**30)))
        except OSError:
            group = None
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.perf_counter()

    def enter_group():  # in the child, before it runs the command: everything it allocates is charged
        (group / "cgroup.procs").write_text(str(os.getpid()))

    process = subprocess.Popen(command, env=env, preexec_fn=enter_group if group is not None else None)
    anon = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            try:
                for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                    if line.startswith("RssAnon:"):
                        anon[0] = max(anon[0], int(line.split()[1]) * 1024)
            except OSError:
                pass
            done.wait(0.2)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    _, status, usage = os.wait4(process.pid, 0)
    done.set()
    seconds = time.perf_counter() - start
    cgroup_peak = None
    if group is not None:
        cgroup_peak = int((group / "memory.max_usage_in_bytes").read_text()) / 2**30
        group.rmdir()
    return seconds, os.waitstatus_to_exitcode(status), usage.ru_maxrss / 2**20, anon[0] / 2**30, cgroup_peak


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=[500, 1000, 1000])
    parser.add_argument("--classes", type=int, default=13)
    parser.add_argument("--voxel-size", type=float, default=7.84, help="the tomogram's (Å)")
    parser.add_argument("--model-voxel-size", type=float, default=10.0)
    parser.add_argument("--filters", default="8,12,16", help="UNet widths (memory is the point, not accuracy)")
    parser.add_argument("--noise", type=float, default=0.2, help="noise σ against spheres of contrast 1.5")
    parser.add_argument("--limit-gb", type=float, default=8.0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/keras-ucaps-memory"))
    parser.add_argument("--reuse-maps", action="store_true", help="pick only, from the maps of an earlier run")
    parser.add_argument("--make-run", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_run is not None:
        import mrcfile

        with mrcfile.mmap(args.work / "tomo.mrc", mode="r") as mrc:
            sample = np.array(mrc.data[:64, :64, :64], dtype=np.float32)[None, ..., None]
        make_run(args.make_run, args.classes, args.model_voxel_size, tuple(int(f) for f in args.filters.split(",")),
                 sample)
        return
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    tomo, run, maps = work / "tomo.mrc", work / "run", work / "maps"
    t0 = time.perf_counter()
    if not tomo.is_file():
        make_tomogram(tomo, tuple(args.shape), args.voxel_size, args.noise)
    made = time.perf_counter() - t0
    # The model is built in a process of its own: this one stays small, so the commands it starts (forked
    # from it) do not begin with its memory counted in theirs.
    if not (args.reuse_maps and (run / "config.json").is_file()):
        subprocess.run([sys.executable, __file__, "--make-run", str(run), "--classes", str(args.classes),
                        "--model-voxel-size", str(args.model_voxel_size), "--filters", args.filters, "--work",
                        str(work)], check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    cli = [sys.executable, "-m", "keras_ucaps"]
    size = "×".join(map(str, args.shape))
    grid = "×".join(str(round(n * args.voxel_size / args.model_voxel_size)) for n in args.shape)
    header = (f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; tomogram {size} float32 at "
              f"{args.voxel_size} Å ({made:.0f} s to write), {args.classes} classes, model at "
              f"{args.model_voxel_size} Å (prediction grid {grid}), UNet filters {args.filters}\n\n"
              f"| command | wall time | exit | peak RSS | peak anonymous | under a {args.limit_gb:g} GB cgroup |\n"
              "| --- | --- | --- | --- | --- | --- |")
    rows = []
    for name, command in [("predict", cli + ["predict", str(run), str(tomo), "--out", str(maps)]),
                          ("pick (predicted maps)", cli + ["pick", str(maps / "tomo_labels.mrc"), "--out",
                                                           str(work / "picks.star")]),
                          ("pick (every particle called)", None)]:
        if name == "predict" and args.reuse_maps and (maps / "tomo_labels.mrc").is_file():
            continue
        if command is None:
            dense = make_dense_maps(work, maps, tuple(args.shape), args.voxel_size, args.classes)
            command = cli + ["pick", str(dense), "--out", str(work / "dense_picks.star")]
        seconds, code, peak, anon, cgroup_peak = measure(command, args.limit_gb)
        limited = "not available" if cgroup_peak is None else (f"{'fits' if code == 0 else 'fails'} (peak "
                                                               f"{cgroup_peak:.2f} GB incl. page cache)")
        rows.append(f"| {name} | {seconds:.0f} s | {code} | {peak:.2f} GB | {anon:.2f} GB | {limited} |")
        print("\n".join([header, *rows]), flush=True)  # the table so far, after every command
        if code != 0:
            break


if __name__ == "__main__":
    main()
