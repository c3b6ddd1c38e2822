"""A gRPC client for TensorFlow Serving: predict whole tomograms on a server.

Tiles (of the exported, fixed side) and blends like local prediction; each batch of tiles goes out
as a ``PredictRequest`` (``tensorflow-serving-api`` protos). The client reads
the served signature with ``GetModelMetadata`` (the fixed tile side) and the
model's config from its ``metadata`` signature (classes, voxel size). Messages
up to 256 MiB are accepted (a 2×64³×2 float32 response is just over gRPC's
4 MiB default); every call has a deadline, and transient failures
(UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED) are retried with
exponential backoff. Other errors raise :class:`ServingError` with the
server's message.

Install the protos beside tensorflow-cpu with
``pip install --no-deps tensorflow-serving-api==2.21.0`` (the package depends on
``tensorflow`` by name).
"""

from __future__ import annotations

import json
import time

import numpy as np

from keras_ucaps.errors import InputError

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
            from tensorflow_serving.apis import prediction_service_pb2_grpc
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

    def signature(self) -> dict:
        """Input and output names, dtypes and shapes of ``serving_default``."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = self._spec(get_model_metadata_pb2.GetModelMetadataRequest())
        request.metadata_field.append("signature_def")
        response = self._call(self.stub.GetModelMetadata, request)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        serving = signatures.signature_def["serving_default"]

        def describe(infos):
            return {k: {"dtype": v.dtype, "shape": [d.size for d in v.tensor_shape.dim]} for k, v in infos.items()}

        return {"inputs": describe(serving.inputs), "outputs": describe(serving.outputs)}

    def config(self) -> dict:
        """The exported model's config (classes, voxel size, tile), from its ``metadata`` signature."""
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        response = self._call(self.stub.Predict, self._spec(predict_pb2.PredictRequest(), "metadata"))
        return json.loads(tf.make_ndarray(response.outputs["config"]).item())

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

    def __init__(self, client: ServingClient):
        self.client = client
        config = client.config()
        shape = client.signature()["inputs"]["tomogram_patch"]["shape"]
        self.tile = int(shape[1])
        self.config = config
        self.patch_multiple = int(config.get("patch_multiple", 8))

    def __call__(self, x, training=False):
        return {"probabilities": self.client.predict(np.asarray(x))}
