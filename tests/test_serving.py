"""The gRPC and REST clients end to end against a server that enforces TF Serving's rules.

The loopback server (``keras_ucaps.serving.loopback``) runs with batching on (the batching session's
rules, see ``test_batching.py``) and off; where a ``tensorflow_model_server`` binary is on PATH the
same tests run against it instead.
"""

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import keras
import numpy as np
import pytest
from conftest import metadata, run_cli

from keras_ucaps.io import read_volume, write_volume
from keras_ucaps.models import UNet3D

pytest.importorskip("tensorflow_serving.apis")

# allowed_batch_sizes make the server pad batches: results must not change.
TEST_BATCHING = """max_batch_size { value: 8 }
batch_timeout_micros { value: 100000 }
max_enqueued_batches { value: 64 }
num_batch_threads { value: 2 }
allowed_batch_sizes: 4
allowed_batch_sizes: 8
pad_variable_length_inputs: false
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _old_export(folder):
    """A SavedModel as keras-ucaps exported it before: a ``metadata`` signature with no input."""
    import tensorflow as tf

    class Old(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 32, 1], tf.float32, name="tomogram_patch")])
        def serve(self, tomogram_patch):
            return {"probabilities": tf.nn.softmax(tf.concat([tomogram_patch, -tomogram_patch], -1))}

        @tf.function(input_signature=[])
        def metadata(self):
            return {"config": tf.constant(json.dumps({"classes": {"classes": [{"name": "a", "label": 1,
                                                                                 "radius": 10.0}]}, "tile": 32}))}

    old = Old()
    tf.saved_model.save(old, str(folder / "1"), signatures={"serving_default": old.serve.get_concrete_function(),
                                                            "metadata": old.metadata.get_concrete_function()})


@pytest.fixture(scope="module", params=["batching", "no-batching"])
def served(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    keras.utils.set_random_seed(0)  # the untrained model's maps, hence how many voxels are near-ties, fixed
    UNet3D(3, filters=(4, 8), bottom_convs=1, metadata=metadata()).save(root / "m.keras")
    result = run_cli("export", root / "m.keras", "--name", "tiny", "--base", root / "saved_models", "--tile", "32")
    assert result.returncode == 0, result.stderr[-2000:]
    (root / "batching.config").write_text(TEST_BATCHING)
    batching = request.param == "batching"
    binary = shutil.which("tensorflow_model_server")
    if binary:  # the real server, when this machine has it
        port, rest = _free_port(), _free_port()
        flags = [f"--enable_batching={str(batching).lower()}", f"--batching_parameters_file={root / 'batching.config'}"]
        process = subprocess.Popen([binary, f"--port={port}", f"--rest_api_port={rest}", "--model_name=tiny",
                                    f"--model_base_path={root / 'saved_models' / 'tiny'}", *flags])
        time.sleep(5)
        yield root, f"127.0.0.1:{port}", f"127.0.0.1:{rest}", None
        process.terminate()
    else:
        from keras_ucaps.serving.loopback import start_server

        _old_export(root / "saved_models" / "old")
        server = start_server(root / "saved_models", batching=root / "batching.config" if batching else None,
                              rest_port=0)
        yield root, server.address, server.rest_address, server
        server.stop()


@pytest.fixture(scope="module")
def tomograms(tmp_path_factory):
    """Three tomograms and their maps predicted locally (tile 32, overlap 8: equal to one-pass prediction)."""
    root = tmp_path_factory.mktemp("tomograms")
    rng = np.random.default_rng(0)
    paths = [write_volume(root / f"t{i}.mrc", rng.normal(size=(40, 48, 56)), 10.0) for i in range(3)]
    return root, paths


def _local(served, tomograms):
    root, _, _, _ = served
    folder = root / "local"
    if not folder.is_dir():
        local = run_cli("predict", root / "m.keras", *tomograms[1], "--out", folder, "--tile", "32", "--overlap", "8")
        assert local.returncode == 0, local.stderr[-2000:]
    return folder


def _assert_same_maps(a, b, stem):
    """Equal probability maps (float16 on disk: 1e-3) and equal labels wherever the argmax is not a near-tie.

    Served and local models add the same float32 numbers in another order, so a voxel whose two best classes
    are within rounding of each other may take either label: those voxels are not compared.
    """
    probabilities = []
    for name in (f"{stem}_prob_class_1.mrc", f"{stem}_prob_class_2.mrc"):
        x, y = (np.asarray(read_volume(folder / name).data, np.float32) for folder in (a, b))
        np.testing.assert_allclose(x, y, atol=1e-3)
        probabilities.append(x)
    everything = np.stack([1 - probabilities[0] - probabilities[1], *probabilities])
    top_two = np.sort(everything, axis=0)[-2:]
    decided = top_two[1] - top_two[0] > 2e-3
    x, y = (read_volume(folder / f"{stem}_labels.mrc").data for folder in (a, b))
    assert decided.mean() > 0.5  # an untrained model's classes are close: most voxels are still compared
    np.testing.assert_array_equal(x[decided], y[decided])


# One request at a time equals local prediction as several do (test_concurrent_results_are_exactly_sequential_ones
# checks concurrent against sequential bit for bit): the sequential variant runs with -m slow.
@pytest.mark.parametrize("concurrency", [pytest.param("1", marks=pytest.mark.slow), "8"])
def test_remote_prediction_equals_local_prediction(served, tomograms, tmp_path, concurrency):
    root, address, _, server = served
    local = _local(served, tomograms)
    remote = run_cli("predict", "--server", address, "--model-name", "tiny", tomograms[1][0], "--out", tmp_path / "r",
                     "--overlap", "8", "--concurrency", concurrency)
    assert remote.returncode == 0, remote.stderr[-2000:]
    _assert_same_maps(local, tmp_path / "r", "t0")
    if server is not None and server.models["tiny"].batching is not None:
        runs = [r for s in server.models["tiny"].schedulers.values() for r in s.runs]
        assert runs and all(padded in (4, 8) for _, padded in runs)  # padded to allowed_batch_sizes
        if concurrency == "8":
            assert max(requests for requests, _ in runs) > 1  # requests in flight were batched together


def _batching_only(served):
    if served[3] is not None and served[3].models["tiny"].batching is None:
        pytest.skip("run once, against the batching server")


def test_concurrent_results_are_exactly_sequential_ones(served, tomograms, tmp_path):
    _batching_only(served)
    _, address, _, _ = served
    for concurrency in ("1", "5"):
        result = run_cli("predict", "--server", address, "--model-name", "tiny", tomograms[1][1], "--out",
                         tmp_path / concurrency, "--overlap", "8", "--concurrency", concurrency)
        assert result.returncode == 0, result.stderr[-2000:]
    for name in ("t1_prob_class_1.mrc", "t1_labels.mrc"):
        assert np.array_equal(read_volume(tmp_path / "1" / name).data, read_volume(tmp_path / "5" / name).data)


def test_several_clients_and_tomograms_at_once(served, tomograms, tmp_path):
    """A bounded load test: three clients at once, each with its own tomogram; every map equals local prediction."""
    _batching_only(served)
    _, address, _, _ = served
    local = _local(served, tomograms)
    processes = [subprocess.Popen([sys.executable, "-m", "keras_ucaps", "predict", "--server", address, "--model-name",
                                   "tiny", str(t), "--out", str(tmp_path / t.stem), "--overlap", "8"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for t in tomograms[1]]
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]
    for t in tomograms[1]:
        _assert_same_maps(local, tmp_path / t.stem, t.stem)


def test_client_reads_signature_config_and_status(served):
    from keras_ucaps.serving.client import ServingClient, ServingError

    _, address, _, _ = served
    client = ServingClient(address, "tiny")
    assert client.status() == {1: "AVAILABLE"}
    signature = client.signature()
    assert signature["inputs"]["tomogram_patch"]["shape"] == [-1, 32, 32, 32, 1]
    metadata = client.signatures()["metadata"]
    assert [d.size for d in metadata.inputs["request"].tensor_shape.dim] == [-1]  # batchable
    assert [d.size for d in metadata.outputs["config"].tensor_shape.dim] == [-1]
    assert client.config()["tile"] == 32
    out = client.predict(np.zeros((2, 32, 32, 32, 1), np.float32))
    assert out.shape == (2, 32, 32, 32, 3)
    with pytest.raises(ServingError, match="NOT_FOUND"):
        ServingClient(address, "nope", retries=0).status()


@pytest.mark.parametrize("case, message", [
    ("shape", "INVALID_ARGUMENT"), ("dtype", "INVALID_ARGUMENT"), ("model", "NOT_FOUND"),
    ("signature", "FAILED_PRECONDITION"), ("extra input", "INVALID_ARGUMENT")])
def test_malformed_requests_get_tf_serving_errors_not_hangs(served, case, message):
    from keras_ucaps.serving.client import ServingClient, ServingError

    _, address, _, _ = served
    client = ServingClient(address, "nope" if case == "model" else "tiny", timeout=20, retries=0)
    batch = np.zeros((1, 8, 32, 32, 1), np.float32) if case == "shape" else np.zeros((1, 32, 32, 32, 1), np.float32)
    if case == "dtype":
        batch = batch.astype(np.float64)
    started = time.time()
    with pytest.raises(ServingError, match=message):
        _raw_predict(client, batch, signature="nope" if case == "signature" else "serving_default",
                     extra=case == "extra input")
    assert time.time() - started < 20


def _raw_predict(client, batch, signature="serving_default", extra=False):
    """Send the array as it is (the client itself always sends float32 to serving_default)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = client._spec(predict_pb2.PredictRequest(), signature)
    request.inputs["tomogram_patch"].CopyFrom(tf.make_tensor_proto(batch))
    if extra:
        request.inputs["other"].CopyFrom(tf.make_tensor_proto(batch))
    return client._call(client.stub.Predict, request)


def test_an_old_export_works_without_batching_and_asks_for_a_re_export_with_it(served):
    from keras_ucaps.serving.client import ServingClient, ServingError

    _, address, _, server = served
    if server is None:
        pytest.skip("the old export is served by the loopback server only")
    client = ServingClient(address, "old", retries=0)
    if server.models["old"].batching is None:
        assert client.config()["tile"] == 32
    else:
        with pytest.raises(ServingError, match="must have at least one input tensor.*re-export"):
            client.config()


def _post(url, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_rest_requests_of_the_readme(served):
    """The JSON bodies the README's curl examples send (one patch, row format; metadata; status)."""
    import keras

    _batching_only(served)
    root, _, rest, _ = served
    url = f"http://{rest}/v1/models/tiny"
    patch = np.random.default_rng(1).normal(size=(1, 32, 32, 32, 1)).astype(np.float32)
    status, answer = _post(url + ":predict", {"instances": patch.tolist()})
    assert status == 200, answer
    expected = keras.saving.load_model(root / "m.keras")(patch)["probabilities"]
    np.testing.assert_allclose(np.array(answer["predictions"], np.float32), np.asarray(expected), atol=1e-5)
    status, answer = _post(url + ":predict", {"signature_name": "metadata", "instances": [""]})
    assert status == 200 and json.loads(answer["predictions"][0])["tile"] == 32
    status, answer = _post(url + ":predict", {"inputs": {"tomogram_patch": patch[:, :8].tolist()}})
    assert status == 400 and "shape" in answer["error"]
    with urllib.request.urlopen(url, timeout=60) as response:
        assert json.loads(response.read())["model_version_status"][0]["state"] == "AVAILABLE"


def test_unreachable_server_is_a_clear_error(tmp_path):
    tomo = write_volume(tmp_path / "t.mrc", np.zeros((32, 32, 32)), 10.0)
    result = run_cli("predict", "--server", f"127.0.0.1:{_free_port()}", "--model-name", "tiny", tomo, "--out",
                     tmp_path / "o")
    assert result.returncode == 2 and "UNAVAILABLE" in result.stderr


def test_concurrency_without_a_server_is_refused(tmp_path):
    tomo = write_volume(tmp_path / "t.mrc", np.zeros((32, 32, 32)), 10.0)
    result = run_cli("predict", tmp_path / "m.keras", tomo, "--out", tmp_path / "o", "--concurrency", "4")
    assert result.returncode == 2 and "--concurrency" in result.stderr
