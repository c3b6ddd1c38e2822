"""A PredictionService over exported SavedModels, on loopback, that enforces TF Serving's rules.

For tests and for trying the client where ``tensorflow_model_server`` cannot be
installed (``python -m keras_ucaps.serving.loopback --base saved_models``). It
serves the latest version of every model under a base path over gRPC
(``PredictionService.Predict`` and ``GetModelMetadata``,
``ModelService.GetModelStatus``) and, optionally, REST (``GET
/v1/models/NAME[/metadata]``, ``POST /v1/models/NAME:predict``), and refuses
what TF Serving refuses, with TF Serving's status codes and messages:

- ``servables/tensorflow/predict_util.cc``, ``RunPredict``: an unknown signature
  is FAILED_PRECONDITION (``Serving signature key "NAME" not found.``);
  ``VerifyRequestInputsSize``: more or fewer inputs than the signature is
  INVALID_ARGUMENT ("input size does not match signature"); an input name the
  signature lacks, or an unknown or repeated ``output_filter`` alias, is
  INVALID_ARGUMENT (``PreProcessPrediction``).
- A dtype or shape that the signature's placeholder does not take is
  INVALID_ARGUMENT (TensorFlow's executor checks fed tensors against the
  graph's placeholders); the shape check is made before the model runs.
- With ``batching`` (what ``--enable_batching`` with a ``batching.config``
  does), every signature goes through a :class:`~keras_ucaps.serving.batching.BatchScheduler`,
  which applies the batching session's rules (see that module).
- ``model_servers/get_model_status_impl.cc``: an unknown model is NOT_FOUND
  ("Could not find any versions of model NAME"); a served version is AVAILABLE.

It is not TF Serving: no version policies, no model reloading, no Classify or
Regress, no monitoring.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from keras_ucaps.serving.batching import BatchingParameters, BatchScheduler, StatusError

MAX_MESSAGE_BYTES = 256 * 2**20
HTTP_STATUS = {"INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "NOT_FOUND": 404, "UNAVAILABLE": 503}


class ServedModel:
    """The latest version of one exported model, its signatures, and (with batching) their schedulers."""

    def __init__(self, name: str, folder: Path, batching: BatchingParameters | None):
        import tensorflow as tf
        from tensorflow.core.protobuf import saved_model_pb2

        versions = sorted((int(v.name), v) for v in folder.iterdir() if v.name.isdigit())
        self.name = name
        self.version, path = versions[-1]
        proto = saved_model_pb2.SavedModel()
        proto.ParseFromString((path / "saved_model.pb").read_bytes())
        self.signatures = {k: v for k, v in proto.meta_graphs[0].signature_def.items() if not k.startswith("__")}
        self.loaded = tf.saved_model.load(str(path))
        self.schedulers: dict[tuple, BatchScheduler] = {}
        self.batching = batching
        self.lock = threading.Lock()

    def check_version(self, version: int | None):
        if version is not None and version != self.version:
            raise StatusError("NOT_FOUND", f"Servable not found for request: Specific({self.name}, {version})")

    def predict(self, signature_name: str, inputs: dict[str, np.ndarray], output_filter=()) -> dict[str, np.ndarray]:
        """Run a signature on numpy inputs as TF Serving's Predict would (with its checks)."""
        name = signature_name or "serving_default"
        if name not in self.signatures:
            raise StatusError("FAILED_PRECONDITION", f'Serving signature key "{name}" not found.')
        signature = self.signatures[name]
        expected = set(signature.inputs)
        if len(inputs) != len(expected):
            raise StatusError("INVALID_ARGUMENT", (
                f"input size does not match signature: {len(inputs)}!={len(expected)} "
                f"len({{{','.join(sorted(inputs))}}}) != len({{{','.join(sorted(expected))}}}). "
                f"Sent extra: {{{','.join(sorted(set(inputs) - expected))}}}. "
                f"Missing but required: {{{','.join(sorted(expected - set(inputs)))}}}."))
        for key in inputs:
            if key not in expected:
                raise StatusError("INVALID_ARGUMENT", f"input tensor alias not found in signature: {key}. Inputs "
                                                      f"expected to be in the set {{{','.join(sorted(expected))}}}.")
        outputs = list(output_filter) or list(signature.outputs)
        if len(set(outputs)) != len(outputs):
            raise StatusError("INVALID_ARGUMENT", "duplicate output tensor alias: " + outputs[0])
        for alias in outputs:
            if alias not in signature.outputs:
                raise StatusError("INVALID_ARGUMENT", f"output tensor alias not found in signature: {alias} Outputs "
                                                      f"expected to be in the set {{{','.join(signature.outputs)}}}.")
        for i, (key, info) in enumerate(sorted(signature.inputs.items())):
            _check_fed(i, key, inputs[key], info)
        if self.batching is None:
            return self._run(name, outputs, inputs)
        key = (name, tuple(outputs))
        with self.lock:
            if key not in self.schedulers:
                self.schedulers[key] = BatchScheduler(lambda merged: self._run(name, outputs, merged), self.batching)
        return self.schedulers[key].submit(inputs)

    def _run(self, name: str, outputs: list[str], inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        result = self.loaded.signatures[name](**{k: tf.constant(v) for k, v in inputs.items()})
        return {k: result[k].numpy() for k in outputs}

    def stop(self):
        for scheduler in self.schedulers.values():
            scheduler.stop()


def _check_fed(index: int, key: str, value: np.ndarray, info) -> None:
    import tensorflow as tf

    dtype = tf.dtypes.as_dtype(info.dtype)
    given = tf.dtypes.as_dtype(value.dtype) if value.dtype.kind not in "OSU" else tf.string
    if given != dtype:
        raise StatusError("INVALID_ARGUMENT", f"Expects arg[{index}] to be {dtype.name} but {given.name} is provided")
    expected = [d.size for d in info.tensor_shape.dim]
    if not info.tensor_shape.unknown_rank and (
            value.ndim != len(expected) or any(e not in (-1, v) for e, v in zip(expected, value.shape, strict=True))):
        raise StatusError("INVALID_ARGUMENT", f"input '{key}' has shape {list(value.shape)}, but the signature "
                                              f"takes {expected}")


@dataclasses.dataclass
class Loopback:
    """A running loopback server: its gRPC address, its REST address (if any), and its models."""

    grpc_server: object
    models: dict[str, ServedModel]
    address: str
    rest_address: str | None = None
    http_server: ThreadingHTTPServer | None = None

    def stop(self, grace: float | None = 0):
        self.grpc_server.stop(grace)
        if self.http_server is not None:
            self.http_server.shutdown()
            self.http_server.server_close()
        for model in self.models.values():
            model.stop()


def start_server(base: str | Path, host: str = "127.0.0.1", port: int = 0, *,
                 batching: BatchingParameters | str | Path | None = None, rest_port: int | None = None,
                 workers: int = 32) -> Loopback:
    """Serve the models under ``base`` on ``host:port`` (0: any free port), with TF Serving's rules.

    ``batching``: parameters or a ``batching.config`` path (as ``--enable_batching
    --batching_parameters_file``); None serves without batching. ``rest_port``: also
    serve REST there (0: any free port).
    """
    import grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    if isinstance(batching, str | Path):
        batching = BatchingParameters.load(batching)
    base = Path(base)
    models = {p.name: ServedModel(p.name, p, batching) for p in sorted(base.iterdir())
              if p.is_dir() and any(v.name.isdigit() for v in p.iterdir())}
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=[
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(_PredictionService(models), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelService(models), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    server.start()
    loopback = Loopback(server, models, f"{host}:{bound}")
    if rest_port is not None:
        http = ThreadingHTTPServer((host, rest_port), _rest_handler(models))
        threading.Thread(target=http.serve_forever, daemon=True).start()
        loopback.http_server, loopback.rest_address = http, f"{host}:{http.server_address[1]}"
    return loopback


def _model(models: dict, name: str, version: int | None) -> ServedModel:
    if name not in models:
        raise StatusError("NOT_FOUND", f"Servable not found for request: Latest({name})")
    models[name].check_version(version)
    return models[name]


def _grpc_servicers():
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    return prediction_service_pb2_grpc.PredictionServiceServicer, model_service_pb2_grpc.ModelServiceServicer


def _aborting(method):
    """Turn a StatusError into the gRPC status TF Serving answers with."""
    import grpc

    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except StatusError as err:
            context.abort(getattr(grpc.StatusCode, err.code), err.message)

    return wrapper


def _version(spec) -> int | None:
    return spec.version.value if spec.HasField("version") else None


class _PredictionService(_grpc_servicers()[0]):
    def __init__(self, models):
        self.models = models

    @_aborting
    def Predict(self, request, context):  # noqa: N802 (gRPC method name)
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        model = _model(self.models, request.model_spec.name, _version(request.model_spec))
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        outputs = model.predict(request.model_spec.signature_name, inputs, request.output_filter)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = model.name
        response.model_spec.version.value = model.version
        response.model_spec.signature_name = request.model_spec.signature_name or "serving_default"
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response

    @_aborting
    def GetModelMetadata(self, request, context):  # noqa: N802 (gRPC method name)
        from tensorflow_serving.apis import get_model_metadata_pb2

        model = _model(self.models, request.model_spec.name, _version(request.model_spec))
        for field in request.metadata_field:
            if field != "signature_def":
                raise StatusError("INVALID_ARGUMENT", f"Metadata field {field} is not supported")
        signatures = get_model_metadata_pb2.SignatureDefMap()
        for key, value in model.signatures.items():
            signatures.signature_def[key].CopyFrom(value)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = model.name
        response.model_spec.version.value = model.version
        response.metadata["signature_def"].Pack(signatures)
        return response


class _ModelService(_grpc_servicers()[1]):
    def __init__(self, models):
        self.models = models

    @_aborting
    def GetModelStatus(self, request, context):  # noqa: N802 (gRPC method name)
        return _status(self.models, request.model_spec.name, _version(request.model_spec))


def _status(models, name: str, version: int | None):
    from tensorflow_serving.apis import get_model_status_pb2

    if name not in models:
        raise StatusError("NOT_FOUND", f"Could not find any versions of model {name}")
    model = models[name]
    if version is not None and version != model.version:
        raise StatusError("NOT_FOUND", f"Could not find version {version} of model {name}")
    response = get_model_status_pb2.GetModelStatusResponse()
    entry = response.model_version_status.add()
    entry.version = model.version
    entry.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    return response


# REST, as model_servers/http_rest_api_handler.cc routes it and util/json_tensor.cc encodes tensors.
_REST_PATH = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?(?::(predict)|/(metadata))?$")


def _rest_handler(models):
    from google.protobuf import json_format

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _answer(self, code: int, body: dict):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self, method: str):
            match = _REST_PATH.match(self.path)
            if not match or (method == "POST") != bool(match.group(3)):
                self._answer(404, {"error": f"Malformed request: {method} {self.path}"})
                return
            name, version = match.group(1), int(match.group(2)) if match.group(2) else None
            try:
                if match.group(3):
                    length = int(self.headers.get("Content-Length", 0))
                    body = self._predict(_model(models, name, version), self.rfile.read(length))
                elif match.group(4):
                    model = _model(models, name, version)
                    body = {"model_spec": {"name": name, "signature_name": "", "version": str(model.version)},
                            "metadata": {"signature_def": {"signature_def": {
                                k: json_format.MessageToDict(v) for k, v in model.signatures.items()}}}}
                else:
                    status = _status(models, name, version)
                    body = {"model_version_status": [{"version": str(s.version), "state": "AVAILABLE",
                                                      "status": {"error_code": "OK", "error_message": ""}}
                                                     for s in status.model_version_status]}
            except StatusError as err:
                self._answer(HTTP_STATUS.get(err.code, 500), {"error": err.message})
                return
            self._answer(200, body)

        def do_GET(self):  # noqa: N802 (http.server method name)
            self._route("GET")

        def do_POST(self):  # noqa: N802 (http.server method name)
            self._route("POST")

        def _predict(self, model: ServedModel, raw: bytes) -> dict:
            try:
                request = json.loads(raw)
            except ValueError as err:
                raise StatusError("INVALID_ARGUMENT", f"JSON Parse error: {err}") from None
            if not isinstance(request, dict) or ("instances" in request) == ("inputs" in request):
                raise StatusError("INVALID_ARGUMENT", "Missing 'inputs' or 'instances' key")
            name = request.get("signature_name") or "serving_default"
            if name not in model.signatures:
                raise StatusError("FAILED_PRECONDITION", f'Serving signature key "{name}" not found.')
            signature = model.signatures[name]
            keys = sorted(signature.inputs)
            if "instances" in request:  # row format: a list of instances, one per batch row
                rows = request["instances"]
                if not isinstance(rows, list) or not rows:
                    raise StatusError("INVALID_ARGUMENT", "'instances' must be a non-empty list")
                if all(isinstance(r, dict) for r in rows):
                    columns = {k: [r.get(k) for r in rows] for k in rows[0]}
                elif len(keys) == 1:
                    columns = {keys[0]: rows}
                else:
                    raise StatusError("INVALID_ARGUMENT", "instances must be objects naming each input")
            else:  # columnar format
                given = request["inputs"]
                named = isinstance(given, dict) and set(given) <= set(keys)
                columns = given if named or len(keys) != 1 else {keys[0]: given}
            inputs = {k: _from_json(v, signature.inputs[k].dtype if k in signature.inputs else None)
                      for k, v in columns.items()}
            outputs = model.predict(name, inputs)
            encoded = {k: _to_json(k, v) for k, v in outputs.items()}
            if "instances" in request:
                n = len(next(iter(encoded.values())))
                if len(encoded) == 1:
                    return {"predictions": next(iter(encoded.values()))}
                return {"predictions": [{k: v[i] for k, v in encoded.items()} for i in range(n)]}
            return {"outputs": next(iter(encoded.values())) if len(encoded) == 1 else encoded}

    return Handler


def _from_json(value, dtype_enum):
    import tensorflow as tf

    dtype = tf.dtypes.as_dtype(dtype_enum) if dtype_enum is not None else None
    if dtype == tf.string:
        def decode(v):
            if isinstance(v, list):
                return [decode(x) for x in v]
            return base64.b64decode(v["b64"]) if isinstance(v, dict) else str(v).encode()
        return np.array(decode(value), dtype=object)
    try:
        return np.asarray(value, dtype=dtype.as_numpy_dtype if dtype is not None else None)
    except (TypeError, ValueError) as err:
        raise StatusError("INVALID_ARGUMENT", f"JSON value is not a tensor of {dtype.name}: {err}") from None


def _to_json(alias: str, value: np.ndarray):
    if value.dtype.kind in "OSU":
        def encode(v):
            if isinstance(v, np.ndarray | list):
                return [encode(x) for x in v]
            raw = v if isinstance(v, bytes) else str(v).encode()
            return {"b64": base64.b64encode(raw).decode()} if alias.endswith("_bytes") else raw.decode()
        return encode(value)
    return value.tolist()


def main(argv=None):
    """``python -m keras_ucaps.serving.loopback --base DIR [--port 8500] [--rest-port 8501] [--batching F]``."""
    import argparse
    import time

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--base", default="saved_models")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8500)
    parser.add_argument("--rest-port", type=int, default=None)
    parser.add_argument("--batching", default=None, help="a batching.config; without it, no batching")
    args = parser.parse_args(argv)
    loopback = start_server(args.base, args.host, args.port, batching=args.batching, rest_port=args.rest_port)
    print(f"serving {', '.join(loopback.models)} on {loopback.address} (gRPC)"
          + (f" and {loopback.rest_address} (REST)" if loopback.rest_address else ""), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        loopback.stop()


if __name__ == "__main__":
    main()
