"""The benchmark's baselines do what they claim: the naive app streams correctly through
Keras's stateful layers, and the baseline record keeps its CAS token in front."""

import numpy as np

from bench.baseline import TOKEN_BYTES, BaselineRecord
from bench.naive_app import StatefulModel, stateful_twin
from service.core.models import PROBE_TOLERANCE, scaled_error
from tests.models import DEMO_DIR, keras_predict


def test_baseline_record_round_trips_with_its_token_in_front():
    record = BaselineRecord(7, 42, bytes(range(256)) * 4, b"\x01" * 32)
    blob = record.encode()

    assert BaselineRecord.decode(blob, 1024) == record
    assert blob[:TOKEN_BYTES] == record.token
    assert record.token != BaselineRecord(8, 42, record.state).token


def test_naive_stateful_streaming_matches_keras_on_the_whole_sequence():
    path = DEMO_DIR / "sensor-lstm.keras"
    model = StatefulModel(stateful_twin(path))
    inputs = np.random.default_rng(3).normal(size=(12, 16)).astype(np.float32)
    assert model.state_bytes == 1024

    state, outputs, start = bytes(model.state_bytes), [], 0
    for size in (1, 4, 7):
        model.restore(state)
        outputs.append(model.predict(inputs[start : start + size].tolist()))
        state = model.read()
        start += size

    assert scaled_error(np.concatenate(outputs), keras_predict(path, inputs)) <= PROBE_TOLERANCE
