"""TensorFlow Serving's server-side batching, as the loopback server applies it.

With ``--enable_batching`` TF Serving wraps every signature of a model in a
batching session (``servables/tensorflow/bundle_factory_util.cc``,
``WrapSessionForBatching``: one scheduler per signature). What a request must
then satisfy, and what the scheduler does with it, is reproduced here rule by
rule; each rule names the TF Serving (or TensorFlow) source it comes from:

- ``batching/batching_util.h``, ``ComputeTensorBatchSize``: a request has at
  least one input tensor ("Batching Run() must have at least one input
  tensor"), every input has at least one dimension, and all inputs have the
  same 0th dimension (INVALID_ARGUMENT).
- ``tensorflow/core/kernels/batching_util/shared_batch_scheduler.h``,
  ``ValidateBatchTaskQueueCapacity``: a request larger than ``max_batch_size``
  is refused ("Task size N is larger than maximum input batch size M",
  INVALID_ARGUMENT); a request that needs a new batch when
  ``max_enqueued_batches`` are queued is refused with UNAVAILABLE ("The batch
  scheduling queue to which this task was submitted is full").
- ``batching/batching_session.cc``, ``MergeInputTensors``: with
  ``pad_variable_length_inputs: false`` the requests merged into one batch must
  have equal dimensions after the 0th (FAILED_PRECONDITION); with it true each
  is padded to the largest with its own first element
  (``batching_util.h``, ``AddPadding``). The merged batch is padded up to the
  smallest of ``allowed_batch_sizes`` that holds it with copies of the last
  request's first row (``RoundToLowestAllowedBatchSize``).
- ``batching/batching_session.cc``, ``SplitOutputTensors``: every output must
  have a 0th dimension ("Batched output tensor has 0 dimensions") equal to the
  batch plus padding (FAILED_PRECONDITION); outputs are split back per request.
- ``servables/tensorflow/bundle_factory_util.cc``, ``CreateBatchScheduler``:
  the last of ``allowed_batch_sizes`` must equal ``max_batch_size``
  ("Last entry in allowed_batch_sizes must match max_batch_size").

A batch is run when it is full, when a request did not fit and closed it, or
when its oldest request has waited ``batch_timeout_micros``; up to
``num_batch_threads`` batches run at once. Defaults are TF Serving's
(``session_bundle_config.proto``: max_batch_size 1000, timeout 0, 10 enqueued
batches).
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from pathlib import Path

import numpy as np

# The batching.config that `keras-ucaps export` writes beside models.config (the Dockerfile serves with it).
BATCHING_CONFIG = """max_batch_size { value: 8 }
batch_timeout_micros { value: 5000 }
max_enqueued_batches { value: 64 }
num_batch_threads { value: 4 }
pad_variable_length_inputs: false
"""


class StatusError(Exception):
    """A request the server refuses: a gRPC status code name and TF Serving's message."""

    def __init__(self, code: str, message: str):
        self.code, self.message = code, message
        super().__init__(f"{code}: {message}")


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    """The fields of TF Serving's ``BatchingParameters`` text proto that shape batches."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = 4
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    def __post_init__(self):
        sizes = self.allowed_batch_sizes
        if any(b <= a for a, b in zip(sizes, sizes[1:], strict=False)):
            raise StatusError("INVALID_ARGUMENT", "allowed_batch_sizes entries must be monotonically increasing")
        if sizes and sizes[-1] != self.max_batch_size:
            raise StatusError("INVALID_ARGUMENT", "Last entry in allowed_batch_sizes must match max_batch_size; "
                                                    f"last entry was {sizes[-1]}; expected {self.max_batch_size}")

    @classmethod
    def parse(cls, text: str) -> BatchingParameters:
        """Read a ``batching.config`` (``name { value: N }``, ``allowed_batch_sizes: N``, ``pad_…: bool``)."""
        values: dict = {}
        wrapped = dict(re.findall(r"(\w+)\s*\{\s*value\s*:\s*(\w+)\s*\}", text))
        for field in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads"):
            if field in wrapped:
                values[field] = int(wrapped[field])
        allowed = re.findall(r"allowed_batch_sizes\s*:\s*(\d+)", text)
        if allowed:
            values["allowed_batch_sizes"] = tuple(int(a) for a in allowed)
        pad = re.search(r"pad_variable_length_inputs\s*:\s*(\w+)", text)
        if pad:
            values["pad_variable_length_inputs"] = pad.group(1).lower() == "true"
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path) -> BatchingParameters:
        return cls.parse(Path(path).read_text())

    def padded_size(self, size: int) -> int:
        """``RoundToLowestAllowedBatchSize``: the smallest allowed batch size holding ``size`` rows."""
        return next((a for a in self.allowed_batch_sizes if a >= size), size)


def batch_size_of(inputs: dict[str, np.ndarray]) -> int:
    """``ComputeTensorBatchSize``: the common 0th dimension of a request's inputs."""
    if not inputs:
        raise StatusError("INVALID_ARGUMENT", "Batching Run() must have at least one input tensor")
    sizes = set()
    for value in inputs.values():
        if np.ndim(value) == 0:
            raise StatusError("INVALID_ARGUMENT", "Batching Run() input tensors must have at least one dimension")
        sizes.add(np.shape(value)[0])
    if len(sizes) > 1:
        raise StatusError("INVALID_ARGUMENT", "Batching Run() input tensors must have equal 0th-dimension size")
    return sizes.pop()


def _pad_to(value: np.ndarray, shape) -> np.ndarray:
    """``AddPadding``: pad every dimension but the 0th up to ``shape`` with the tensor's first element."""
    if value.size == 0:
        raise StatusError("INVALID_ARGUMENT", "Cannot add padding to an empty tensor")
    widths = [(0, 0)] + [(0, t - s) for s, t in zip(value.shape[1:], shape[1:], strict=True)]
    return np.pad(value, widths, constant_values=value.flat[0])


@dataclasses.dataclass(eq=False)
class _Task:
    inputs: dict
    size: int
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    outputs: dict | None = None
    error: StatusError | None = None


@dataclasses.dataclass(eq=False)
class _Batch:
    created: float
    tasks: list = dataclasses.field(default_factory=list)
    size: int = 0
    closed: bool = False


class BatchScheduler:
    """Batches concurrent calls of one signature, as TF Serving's batching session does.

    Args:
        run: runs one merged batch: ``{input name: array}`` → ``{output name: array}``.
        parameters: the server's :class:`BatchingParameters`.
    """

    def __init__(self, run, parameters: BatchingParameters):
        self.run, self.parameters = run, parameters
        self.batches: list[_Batch] = []
        self.condition = threading.Condition()
        self.stopped = False
        self.runs: list[tuple[int, int]] = []  # (requests, padded rows) of every batch run
        self.threads = [threading.Thread(target=self._work, daemon=True, name=f"batch-{i}")
                        for i in range(parameters.num_batch_threads)]
        for thread in self.threads:
            thread.start()

    def submit(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Queue one request, wait for its batch to run, and return its share of the outputs."""
        size = batch_size_of(inputs)
        p = self.parameters
        if size > p.max_batch_size:
            raise StatusError("INVALID_ARGUMENT",
                                f"Task size {size} is larger than maximum input batch size {p.max_batch_size}")
        task = _Task(inputs, size)
        with self.condition:
            open_batch = self.batches[-1] if self.batches and not self.batches[-1].closed else None
            if open_batch is not None and open_batch.size + size > p.max_batch_size:
                open_batch.closed, open_batch = True, None
            if open_batch is None:
                if len(self.batches) >= p.max_enqueued_batches:
                    raise StatusError("UNAVAILABLE", "The batch scheduling queue to which this task was submitted "
                                                       "is full")
                open_batch = _Batch(time.monotonic())
                self.batches.append(open_batch)
            open_batch.tasks.append(task)
            open_batch.size += size
            if open_batch.size == p.max_batch_size:
                open_batch.closed = True
            self.condition.notify_all()
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.outputs

    def stop(self):
        with self.condition:
            self.stopped = True
            self.condition.notify_all()

    def _next_batch(self) -> _Batch | None:
        timeout = self.parameters.batch_timeout_micros / 1e6
        with self.condition:
            while not self.stopped:
                if self.batches:
                    oldest = self.batches[0]
                    wait = oldest.created + timeout - time.monotonic()
                    if oldest.closed or wait <= 0:
                        return self.batches.pop(0)
                    self.condition.wait(wait)
                else:
                    self.condition.wait()
        return None

    def _work(self):
        while (batch := self._next_batch()) is not None:
            try:
                outputs = self._process(batch)
            except StatusError as err:
                for task in batch.tasks:
                    task.error = err
            except Exception as err:  # the model failed: every request in the batch gets the error
                for task in batch.tasks:
                    task.error = StatusError("INTERNAL", f"{type(err).__name__}: {err}")
            else:
                for task, result in zip(batch.tasks, outputs, strict=True):
                    task.outputs = result
            for task in batch.tasks:
                task.done.set()

    def _process(self, batch: _Batch) -> list[dict]:
        p = self.parameters
        padded = p.padded_size(batch.size)
        merged = {}
        for name in batch.tasks[0].inputs:
            values = [np.asarray(t.inputs[name]) for t in batch.tasks]
            if p.pad_variable_length_inputs:
                largest = np.max([v.shape for v in values], axis=0)
                values = [_pad_to(v, largest) for v in values]
            elif any(v.shape[1:] != values[0].shape[1:] for v in values):
                raise StatusError("FAILED_PRECONDITION",
                                    f"Tensors with name '{name}' from different tasks have different shapes and "
                                    "padding is turned off.Set pad_variable_length_inputs to true, or ensure that "
                                    "all tensors with the same namehave equal dimensions starting with the first dim.")
            values += [values[-1][:1]] * (padded - batch.size)
            merged[name] = np.concatenate(values)
        self.runs.append((len(batch.tasks), padded))
        outputs = self.run(merged)
        splits = np.cumsum([t.size for t in batch.tasks])[:-1]
        per_task = [{} for _ in batch.tasks]
        for name, value in outputs.items():
            value = np.asarray(value)
            if value.ndim == 0:
                raise StatusError("FAILED_PRECONDITION", "Batched output tensor has 0 dimensions")
            if value.shape[0] != padded:
                raise StatusError("FAILED_PRECONDITION", "Batched output tensor's 0th dimension does not equal "
                                                           "the sum of the 0th dimension sizes of the input tensors")
            for share, part in zip(per_task, np.split(value[:batch.size], splits), strict=True):
                share[name] = part
        return per_task
