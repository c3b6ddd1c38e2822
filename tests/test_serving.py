"""The gRPC client end to end against a PredictionService on loopback (or tensorflow_model_server)."""

import shutil
import socket
import subprocess
import time

import numpy as np
import pytest
from conftest import run_cli

from keras_ucaps.io import read_volume, write_volume
from keras_ucaps.models import UNet3D

pytest.importorskip("tensorflow_serving.apis")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    UNet3D(3, filters=(4, 8), bottom_convs=1).save(root / "m.keras")
    result = run_cli("export", root / "m.keras", "--name", "tiny", "--base", root / "saved_models", "--tile", "32")
    assert result.returncode == 0, result.stderr[-2000:]
    binary = shutil.which("tensorflow_model_server")
    if binary:  # the real server, when this machine has it
        port = _free_port()
        process = subprocess.Popen([binary, f"--port={port}", "--model_name=tiny",
                                    f"--model_base_path={root / 'saved_models' / 'tiny'}"])
        time.sleep(5)
        yield root, f"127.0.0.1:{port}"
        process.terminate()
    else:
        from keras_ucaps.serving.loopback import start_server

        server, port = start_server(root / "saved_models")
        yield root, f"127.0.0.1:{port}"
        server.stop(0)


def test_remote_prediction_equals_local_prediction(served, tmp_path):
    root, address = served
    # A served model takes fixed 32³ tiles, local prediction uses the fewest tiles per axis: with overlaps of the
    # receptive radius (8) both equal one-pass prediction, so they equal each other.
    tomo = write_volume(tmp_path / "t.mrc", np.random.default_rng(0).normal(size=(40, 48, 56)), 10.0)
    local = run_cli("predict", root / "m.keras", tomo, "--out", tmp_path / "local", "--tile", "32", "--overlap", "8")
    assert local.returncode == 0, local.stderr[-2000:]
    remote = run_cli("predict", "--server", address, "--model-name", "tiny", tomo, "--out", tmp_path / "remote",
                     "--overlap", "8")
    assert remote.returncode == 0, remote.stderr[-2000:]
    for name in ("t_prob_class_1.mrc", "t_prob_class_2.mrc", "t_labels.mrc"):
        a, b = read_volume(tmp_path / "local" / name).data, read_volume(tmp_path / "remote" / name).data
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), atol=1e-3)


def test_client_reads_signature_and_config(served):
    from keras_ucaps.serving.client import ServingClient

    _, address = served
    client = ServingClient(address, "tiny")
    signature = client.signature()
    assert signature["inputs"]["tomogram_patch"]["shape"] == [-1, 32, 32, 32, 1]
    assert client.config()["tile"] == 32
    out = client.predict(np.zeros((2, 32, 32, 32, 1), np.float32))
    assert out.shape == (2, 32, 32, 32, 3)


@pytest.mark.parametrize("case, message", [
    ("shape", "INVALID_ARGUMENT"), ("dtype", "INVALID_ARGUMENT"), ("model", "NOT_FOUND")])
def test_malformed_requests_get_clear_errors_not_hangs(served, case, message):
    from keras_ucaps.serving.client import ServingClient, ServingError

    _, address = served
    client = ServingClient(address, "nope" if case == "model" else "tiny", timeout=20, retries=0)
    batch = np.zeros((1, 8, 32, 32, 1), np.float32) if case == "shape" else np.zeros((1, 32, 32, 32, 1), np.float32)
    if case == "dtype":
        batch = batch.astype(np.float64)
        client.predict = _raw_predict(client)
    started = time.time()
    with pytest.raises(ServingError, match=message):
        client.predict(batch)
    assert time.time() - started < 20


def _raw_predict(client):
    """Send the array as it is (the client itself always sends float32)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    def send(batch):
        request = client._spec(predict_pb2.PredictRequest(), "serving_default")
        request.inputs["tomogram_patch"].CopyFrom(tf.make_tensor_proto(batch))
        return client._call(client.stub.Predict, request)

    return send


def test_unreachable_server_is_a_clear_error(tmp_path):
    tomo = write_volume(tmp_path / "t.mrc", np.zeros((32, 32, 32)), 10.0)
    result = run_cli("predict", "--server", f"127.0.0.1:{_free_port()}", "--model-name", "tiny", tomo, "--out",
                     tmp_path / "o")
    assert result.returncode == 2 and "UNAVAILABLE" in result.stderr
