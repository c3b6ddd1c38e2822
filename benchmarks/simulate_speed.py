"""Time `simulate` on a SHREC-sized tomogram (200×512×512, ~600 particles).

    python benchmarks/simulate_speed.py [--shape 200 512 512] [--particles 600] [--mode tilt-series]

Prints seconds for placement and imaging, the particle count and peak memory.
"""

import argparse
import os
import platform
import resource
import time

from keras_ucaps.data.simulate import settings_for_preset, simulate


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", nargs=3, type=int, default=(200, 512, 512))
    parser.add_argument("--particles", type=int, default=600)
    parser.add_argument("--mode", default="tilt-series")
    parser.add_argument("--preset", default="shrec")
    args = parser.parse_args()
    settings = settings_for_preset(args.preset, shape=tuple(args.shape), max_particles=args.particles,
                                   occupancy=0.3, mode=args.mode, seed=0)
    start = time.perf_counter()
    sim = simulate(settings)
    total = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"shape {settings.shape}, mode {settings.mode}: {len(sim.particles)} particles + "
          f"{len(sim.distractors)} distractors")
    print(f"placement {sim.seconds['placement']:.1f} s, imaging {sim.seconds['imaging']:.1f} s, "
          f"total {total:.1f} s, peak RSS {peak_gb:.1f} GB")


if __name__ == "__main__":
    main()
