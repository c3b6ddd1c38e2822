"""Tiles per second through TF Serving's gRPC API against local prediction, on the same machine.

    python benchmarks/serving_throughput.py [--model shrec-unet] [--shape 128 256 256] [--clients 1 3]
                                            [--concurrency 1 8]

Serves ``saved_models/`` with the loopback server (``python -m keras_ucaps.serving.loopback``, in its
own process, with the ``batching.config`` that export writes: the server our Dockerfile starts,
minus TF Serving's C++), simulates tomograms, and predicts them:

- locally, with the bundled Keras model, on the exported tile side with the same fixed-tile layout
  (one process, one tomogram at a time);
- through ``predict --server`` code (``ServingClient``), for each ``--concurrency`` (requests in
  flight per client) and each ``--clients`` (clients at once, each with its own tomogram).

Prints tiles/s for each, the ratio to local, and checks every remote map against the local one
(largest difference; the run fails above 1e-3). Bounded: every client has a deadline per request and
the whole run a time limit.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="shrec-unet")
    parser.add_argument("--shape", type=int, nargs=3, default=[128, 256, 256])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    import keras

    from keras_ucaps import pretrained
    from keras_ucaps.data.normalization import measure
    from keras_ucaps.inference.predict import normalised_view, predict_volume
    from keras_ucaps.inference.tiling import count_tiles
    from keras_ucaps.serving.client import RemoteModel, ServingClient

    work = Path(tempfile.mkdtemp(prefix="serving-bench-"))
    n_tomos = max(args.clients)
    subprocess.run([sys.executable, "-m", "keras_ucaps", "simulate", "--shape", *map(str, args.shape),
                    "--count", str(n_tomos), "--seed", "99", "--out", str(work / "sim")], check=True,
                   capture_output=True)
    tomos = [t for t in sorted((work / "sim").glob("tomo*.mrc")) if not t.stem.endswith(("_labels", "_masks"))]
    from keras_ucaps.io import read_volume

    volumes = []
    for t in tomos:
        data = read_volume(t).data
        volumes.append(normalised_view(data, measure(data, "tomogram z-score")))  # the bundled models' method

    port = args.port or _free_port()
    server = subprocess.Popen([sys.executable, "-m", "keras_ucaps.serving.loopback", "--base",
                               str(ROOT / "saved_models"), "--port", str(port), "--batching",
                               str(ROOT / "saved_models" / "batching.config")],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=os.environ.copy())
    try:
        server.stdout.readline()  # "serving ... on ..."
        model = keras.saving.load_model(pretrained.pretrained_run(args.model) / "weights_best.keras", compile=False)
        remote = RemoteModel(ServingClient(f"127.0.0.1:{port}", args.model, timeout=120), 1)
        tile = remote.tile
        contract = remote.contract
        margin = min(contract.radius, tile // 8)
        classes = int(model.get_config()["num_classes"])
        n_tiles = count_tiles(volumes[0].shape, tile, margin, fixed=True)
        layout = dict(tile=tile, margin=margin, fixed_tiles=True, blend=not contract.whole_input)
        predict_volume(model, volumes[0], classes, **layout)  # warm up (tracing)
        started = time.perf_counter()
        local = [np.array(predict_volume(model, v, classes, **layout)) for v in volumes]
        local_rate = n_tiles * len(volumes) / (time.perf_counter() - started)
        print(f"{args.model}, {len(volumes)} tomogram(s) of {tuple(args.shape)} (z, y, x), {n_tiles} tiles of "
              f"{tile}³ each, {os.cpu_count()} CPU(s)\n")
        print("| prediction | clients | requests in flight per client | tiles/s | × local | max |Δ| vs local |")
        print("| --- | --- | --- | --- | --- | --- |")
        print(f"| local (Keras, traced) | 1 | 1 | {local_rate:.2f} | 1.00 | — |")
        predict_volume(remote, volumes[0], classes, **layout)  # warm up (server tracing)
        for clients in args.clients:
            for concurrency in args.concurrency:
                results, errors = [None] * clients, []

                def run(i, concurrency=concurrency, results=results, errors=errors):
                    try:
                        client = RemoteModel(ServingClient(f"127.0.0.1:{port}", args.model, timeout=120), concurrency)
                        results[i] = np.array(predict_volume(client, volumes[i], classes, **layout))
                    except Exception as err:  # reported below
                        errors.append(err)

                threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
                started = time.perf_counter()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(1800)
                elapsed = time.perf_counter() - started
                if errors or any(t.is_alive() for t in threads):
                    raise SystemExit(f"clients failed or hung: {errors}")
                rate = n_tiles * clients / elapsed
                delta = max(float(np.max(np.abs(r - local[i]))) for i, r in enumerate(results))
                print(f"| remote (gRPC, batching on) | {clients} | {concurrency} | {rate:.2f} | "
                      f"{rate / local_rate:.2f} | {delta:.1e} |")
                if delta > 1e-3:
                    raise SystemExit("remote prediction differs from local prediction")
    finally:
        server.terminate()
        server.wait(30)


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
