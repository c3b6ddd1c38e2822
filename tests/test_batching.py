"""The loopback server's batching session refuses and reshapes what TF Serving's does.

Each test names the TF Serving (or TensorFlow) source of the rule it checks.
"""

import threading

import numpy as np
import pytest

from keras_ucaps.serving.batching import BATCHING_CONFIG, BatchingParameters, BatchScheduler, StatusError


def _doubling(merged):
    return {"y": merged["x"] * 2}


@pytest.fixture
def scheduler_of():
    made = []

    def make(run=_doubling, **parameters):
        scheduler = BatchScheduler(run, BatchingParameters(**parameters))
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        scheduler.stop()


def _together(scheduler, requests, timeout=20):
    """Submit requests from as many threads at once; returns results or StatusErrors in order."""
    results = [None] * len(requests)

    def go(i):
        try:
            results[i] = scheduler.submit(requests[i])
        except StatusError as err:
            results[i] = err

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a request hung"
    return results


# batching/batching_util.h, ComputeTensorBatchSize
@pytest.mark.parametrize("inputs, message", [
    ({}, "must have at least one input tensor"),
    ({"x": np.float32(1)}, "must have at least one dimension"),
    ({"x": np.zeros((2, 3)), "z": np.zeros((3, 3))}, "equal 0th-dimension size"),
])
def test_requests_that_cannot_be_batched_are_invalid(scheduler_of, inputs, message):
    with pytest.raises(StatusError, match=message) as err:
        scheduler_of().submit(inputs)
    assert err.value.code == "INVALID_ARGUMENT"


# tensorflow/core/kernels/batching_util/shared_batch_scheduler.h, ValidateBatchTaskQueueCapacity
def test_a_request_larger_than_max_batch_size_is_refused(scheduler_of):
    with pytest.raises(StatusError, match="Task size 5 is larger than maximum input batch size 4") as err:
        scheduler_of(max_batch_size=4).submit({"x": np.zeros((5, 2))})
    assert err.value.code == "INVALID_ARGUMENT"


def test_a_full_queue_answers_unavailable(scheduler_of):
    import time

    started, release = threading.Event(), threading.Event()

    def slow(merged):
        started.set()
        release.wait(10)
        return _doubling(merged)

    scheduler = scheduler_of(slow, max_batch_size=1, max_enqueued_batches=1, num_batch_threads=1)
    first = threading.Thread(target=scheduler.submit, args=({"x": np.zeros((1, 2))},))
    first.start()
    assert started.wait(10)  # the only batch thread is busy with it
    second = threading.Thread(target=scheduler.submit, args=({"x": np.zeros((1, 2))},))
    second.start()  # fills the one batch the queue may hold
    deadline = time.monotonic() + 10
    while not scheduler.batches and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(StatusError, match="queue to which this task was submitted is full") as err:
        scheduler.submit({"x": np.zeros((1, 2))})
    assert err.value.code == "UNAVAILABLE"
    release.set()
    first.join(10)
    second.join(10)
    assert not first.is_alive() and not second.is_alive()


# batching/batching_session.cc, MergeInputTensors
def test_unequal_shapes_fail_when_padding_is_off(scheduler_of):
    scheduler = scheduler_of(max_batch_size=2, batch_timeout_micros=2_000_000)
    results = _together(scheduler, [{"x": np.zeros((1, 3))}, {"x": np.zeros((1, 4))}])
    assert all(isinstance(r, StatusError) and r.code == "FAILED_PRECONDITION" for r in results)
    assert "different shapes and padding is turned off" in results[0].message


# batching/batching_util.h, AddPadding: padded with each tensor's own first element
def test_variable_length_inputs_are_padded_with_their_first_element(scheduler_of):
    scheduler = scheduler_of(max_batch_size=2, batch_timeout_micros=2_000_000, pad_variable_length_inputs=True)
    results = _together(scheduler, [{"x": np.array([[7.0, 1.0, 1.0]])}, {"x": np.array([[5.0, 1.0]])}])
    assert scheduler.runs == [(2, 2)]
    got = sorted((r["y"].tolist() for r in results), key=len)
    assert [[14.0, 2.0, 2.0]] in got and [[10.0, 2.0, 10.0]] in got


# batching/batching_util.h, RoundToLowestAllowedBatchSize; batching_session.cc pads with the last task's first row
def test_batches_are_padded_to_allowed_sizes_and_split_back(scheduler_of):
    seen = []

    def run(merged):
        seen.append(merged["x"].copy())
        return _doubling(merged)

    scheduler = scheduler_of(run, max_batch_size=4, allowed_batch_sizes=(2, 4), batch_timeout_micros=500_000)
    requests = [{"x": np.full((1, 2), i, np.float32)} for i in range(3)]
    results = _together(scheduler, requests)
    assert scheduler.runs == [(3, 4)] and seen[0].shape == (4, 2)
    assert seen[0][3].tolist() == seen[0][2].tolist()  # padding repeats the last task's first row
    for i, result in enumerate(results):
        assert result["y"].tolist() == [[2.0 * i, 2.0 * i]]


# batching/batching_session.cc, SplitOutputTensors
@pytest.mark.parametrize("output, message", [
    (lambda merged: {"y": np.float32(1)}, "Batched output tensor has 0 dimensions"),
    (lambda merged: {"y": np.zeros(7)}, "0th dimension does not equal"),
])
def test_outputs_must_be_batched(scheduler_of, output, message):
    with pytest.raises(StatusError, match=message) as err:
        scheduler_of(output).submit({"x": np.zeros((2, 3))})
    assert err.value.code == "FAILED_PRECONDITION"


# servables/tensorflow/bundle_factory_util.cc, CreateBatchScheduler
def test_allowed_batch_sizes_must_end_at_max_batch_size():
    with pytest.raises(StatusError, match="Last entry in allowed_batch_sizes must match max_batch_size"):
        BatchingParameters.parse("max_batch_size { value: 8 }\nallowed_batch_sizes: 2\nallowed_batch_sizes: 4\n")
    parsed = BatchingParameters.parse("max_batch_size { value: 8 }\nallowed_batch_sizes: 4\nallowed_batch_sizes: 8\n"
                                      "pad_variable_length_inputs: true\n")
    assert parsed.allowed_batch_sizes == (4, 8) and parsed.pad_variable_length_inputs and parsed.padded_size(5) == 8


def test_the_exported_batching_config_parses():
    assert BatchingParameters.parse(BATCHING_CONFIG) == BatchingParameters(
        max_batch_size=8, batch_timeout_micros=5000, max_enqueued_batches=64, num_batch_threads=4)
