"""A gRPC client for TensorFlow Serving: predict whole tomograms on a server.

Tiles (of the exported, fixed side) and blends like local prediction; each batch of tiles goes out
as a ``PredictRequest`` (``tensorflow-serving-api`` protos), up to ``concurrency`` requests in flight
at once so that the server's batching scheduler has requests to batch; results are blended in the
order the tiles were sent, so the maps equal sequential prediction exactly. The client checks the
model with ``ModelService.GetModelStatus``, reads the served signatures with ``GetModelMetadata``
(the fixed tile side) and the model's config from its batchable ``metadata`` signature (classes,
voxel size). Messages up to 256 MiB are accepted (a 2×64³×2 float32 response is just over gRPC's
4 MiB default); every call has a deadline, and transient failures (UNAVAILABLE, DEADLINE_EXCEEDED,
RESOURCE_EXHAUSTED) are retried per request with exponential backoff. Other errors raise
:class:`ServingError` with the server's message.

Install the protos beside tensorflow-cpu with
``pip install --no-deps tensorflow-serving-api==2.21.0`` (the package depends on
``tensorflow`` by name).
"""

from __future__ import annotations

import json
import time

import numpy as np

from keras_ucaps.errors import InputError
from keras_ucaps.serving.batching import BATCHING_CONFIG, BatchingParameters

# Requests in flight by default: enough to fill one batch of the batching.config that export writes.
DEFAULT_CONCURRENCY = BatchingParameters.parse(BATCHING_CONFIG).max_batch_size
MAX_MESSAGE_BYTES = 256 * 2**20
RETRYABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED")


class ServingError(RuntimeError):
    """The server refused or failed a request."""


class ServingClient:
    """Predict through TF Serving's PredictionService.

    Args:
        address: ``HOST:PORT`` of the gRPC endpoint (8500 by default in the Dockerfile).
        model_name: the served model's name.
        version: a version number, or None for the latest.
        timeout: seconds allowed per call.
        retries: attempts after the first for transient failures.
    """

    def __init__(self, address: str, model_name: str, version: int | None = None, timeout: float = 120.0,
                 retries: int = 3):
        import grpc

        try:
            from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc
        except ImportError:  # pragma: no cover - depends on the install
            raise InputError("--server", "needs tensorflow-serving-api: pip install --no-deps "
                                         "tensorflow-serving-api==2.21.0") from None
        self.address, self.model_name, self.version = address, model_name, version
        self.timeout, self.retries = timeout, retries
        self.channel = grpc.insecure_channel(address, options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ])
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.model_stub = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self._signatures = None

    def close(self):
        self.channel.close()

    def _spec(self, message, signature: str | None = None):
        message.model_spec.name = self.model_name
        if self.version is not None:
            message.model_spec.version.value = self.version
        if signature is not None:
            message.model_spec.signature_name = signature
        return message

    def _call(self, method, request):
        import grpc

        delay = 0.5
        for attempt in range(self.retries + 1):
            try:
                return method(request, timeout=self.timeout)
            except grpc.RpcError as err:
                code = err.code().name if err.code() else "UNKNOWN"
                if code in RETRYABLE and attempt < self.retries:
                    time.sleep(delay)
                    delay *= 2
                    continue
                raise ServingError(f"{self.address} ({self.model_name}): {code}: {err.details()}") from None
        raise AssertionError("unreachable")

    def status(self) -> dict[int, str]:
        """State of each served version (``ModelService.GetModelStatus``), e.g. ``{1: "AVAILABLE"}``."""
        from tensorflow_serving.apis import get_model_status_pb2

        response = self._call(self.model_stub.GetModelStatus,
                              self._spec(get_model_status_pb2.GetModelStatusRequest()))
        names = get_model_status_pb2.ModelVersionStatus.State
        return {int(s.version): names.Name(s.state) for s in response.model_version_status}

    def signatures(self):
        """Every served signature (``GetModelMetadata``), as TF Serving's ``SignatureDefMap``."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        if self._signatures is None:
            request = self._spec(get_model_metadata_pb2.GetModelMetadataRequest())
            request.metadata_field.append("signature_def")
            response = self._call(self.stub.GetModelMetadata, request)
            signatures = get_model_metadata_pb2.SignatureDefMap()
            response.metadata["signature_def"].Unpack(signatures)
            self._signatures = signatures.signature_def
        return self._signatures

    def signature(self) -> dict:
        """Input and output names, dtypes and shapes of ``serving_default``."""
        serving = self.signatures()["serving_default"]

        def describe(infos):
            return {k: {"dtype": v.dtype, "shape": [d.size for d in v.tensor_shape.dim]} for k, v in infos.items()}

        return {"inputs": describe(serving.inputs), "outputs": describe(serving.outputs)}

    def config(self) -> dict:
        """The exported model's config (classes, voxel size, tile), from its ``metadata`` signature.

        The signature takes a ``request`` string per batch row and answers the config JSON in each,
        which TF Serving accepts with batching on. Exports made before it (no input) are refused by a
        batching server: that ends in a message that says to re-export.
        """
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        if "metadata" not in self.signatures():
            raise ServingError(f"{self.address} ({self.model_name}): has no 'metadata' signature: not exported by "
                               "keras-ucaps; export it with `keras-ucaps export`")
        request = self._spec(predict_pb2.PredictRequest(), "metadata")
        old_export = not self.signatures()["metadata"].inputs
        if not old_export:
            request.inputs["request"].CopyFrom(tf.make_tensor_proto(np.array([b"config"], dtype=object)))
        try:
            response = self._call(self.stub.Predict, request)
        except ServingError as err:
            if old_export:
                raise ServingError(f"{err}; this export's 'metadata' signature takes no input, which TF Serving "
                                   "refuses with batching on: re-export the model with `keras-ucaps export`") from None
            raise
        config = tf.make_ndarray(response.outputs["config"])
        return json.loads(config.item() if config.ndim == 0 else config[0])

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities (batch, D, H, W, C) for tiles (batch, D, H, W, 1)."""
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = self._spec(predict_pb2.PredictRequest(), "serving_default")
        request.inputs["tomogram_patch"].CopyFrom(tf.make_tensor_proto(np.ascontiguousarray(batch, np.float32)))
        response = self._call(self.stub.Predict, request)
        return tf.make_ndarray(response.outputs["probabilities"])


class RemoteModel:
    """Looks enough like a local model for :func:`keras_ucaps.inference.predict.predict_volume`."""

    def __init__(self, client: ServingClient, concurrency: int = DEFAULT_CONCURRENCY):
        self.client = client
        self.concurrency = concurrency
        client.status()  # NOT_FOUND for an unknown model, before anything else
        config = client.config()
        shape = client.signature()["inputs"]["tomogram_patch"]["shape"]
        self.tile = int(shape[1])
        self.config = config
        self.contract = served_contract(config, self.tile)
        self.patch_multiple = self.contract.multiple

    def __call__(self, x, training=False):
        return {"probabilities": self.client.predict(np.asarray(x))}


def served_contract(config: dict, tile: int):
    """The served model's tile contract: from its exported config, or, for exports made before
    contracts were exported, from its architecture's config."""
    from keras_ucaps.models import ARCHITECTURES
    from keras_ucaps.models.contract import TileContract

    if "tile_contract" in config:
        return TileContract.from_dict(config["tile_contract"])
    architectures = {cls.__name__: cls for cls in ARCHITECTURES.values()}
    if config.get("model_class") not in architectures:
        raise ServingError(f"served config names no known architecture ({config.get('model_class')!r}): re-export "
                           "the model with `keras-ucaps export`")
    return architectures[config["model_class"]].contract_of(config["model_config"], config.get("patch_size", tile))
