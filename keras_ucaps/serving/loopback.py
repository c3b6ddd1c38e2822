"""A minimal PredictionService over exported SavedModels, on loopback.

For tests and for trying the client where ``tensorflow_model_server`` cannot
be installed: it answers ``Predict`` and ``GetModelMetadata`` for the
latest version of every model in a base path, checking model names,
signature names, input names, dtypes and shapes the way TF Serving does
(NOT_FOUND, INVALID_ARGUMENT). It is not a replacement for TF Serving
(no batching, no version policies, no REST).
"""

from __future__ import annotations

from concurrent import futures
from pathlib import Path


def _latest(base: Path) -> dict:
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    models = {}
    for folder in sorted(p for p in base.iterdir() if p.is_dir()):
        versions = sorted((int(v.name), v) for v in folder.iterdir() if v.name.isdigit())
        if not versions:
            continue
        number, path = versions[-1]
        proto = saved_model_pb2.SavedModel()
        proto.ParseFromString((path / "saved_model.pb").read_bytes())
        models[folder.name] = {"version": number, "loaded": tf.saved_model.load(str(path)),
                               "signatures": proto.meta_graphs[0].signature_def}
    return models


def start_server(base: str | Path, host: str = "127.0.0.1", port: int = 0):
    """Start serving the models under ``base``; returns (grpc server, bound port)."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

    models = _latest(Path(base))

    class Service(prediction_service_pb2_grpc.PredictionServiceServicer):
        def _model(self, spec, context):
            if spec.name not in models:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({spec.name})")
            entry = models[spec.name]
            if spec.HasField("version") and spec.version.value != entry["version"]:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Servable not found: {spec.name} version "
                                                         f"{spec.version.value}")
            return entry

        def Predict(self, request, context):  # noqa: N802 (gRPC method name)
            entry = self._model(request.model_spec, context)
            name = request.model_spec.signature_name or "serving_default"
            if name not in entry["signatures"]:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Serving signature name: '{name}' not found")
            signature = entry["signatures"][name]
            if set(request.inputs) != set(signature.inputs):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"input keys {sorted(request.inputs)} differ from {sorted(signature.inputs)}")
            kwargs = {}
            for key, info in signature.inputs.items():
                tensor = request.inputs[key]
                if tensor.dtype != info.dtype:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                  f"input '{key}' has dtype {tensor.dtype}, expected {info.dtype}")
                value = tf.make_ndarray(tensor)
                expected = [d.size for d in info.tensor_shape.dim]
                if len(value.shape) != len(expected) or any(e not in (-1, v) for e, v in zip(expected, value.shape,
                                                                                              strict=False)):
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                  f"input '{key}' has shape {list(value.shape)}, expected {expected}")
                kwargs[key] = tf.constant(value)
            outputs = entry["loaded"].signatures[name](**kwargs)
            response = predict_pb2.PredictResponse()
            response.model_spec.name = request.model_spec.name
            response.model_spec.version.value = entry["version"]
            for key, value in outputs.items():
                response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
            return response

        def GetModelMetadata(self, request, context):  # noqa: N802 (gRPC method name)
            entry = self._model(request.model_spec, context)
            signatures = get_model_metadata_pb2.SignatureDefMap()
            for key, value in entry["signatures"].items():
                if not key.startswith("__"):
                    signatures.signature_def[key].CopyFrom(value)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = request.model_spec.name
            response.model_spec.version.value = entry["version"]
            response.metadata["signature_def"].Pack(signatures)
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), options=[
        ("grpc.max_receive_message_length", 256 * 2**20), ("grpc.max_send_message_length", 256 * 2**20)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Service(), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    server.start()
    return server, bound
