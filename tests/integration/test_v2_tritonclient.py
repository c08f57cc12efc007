"""The real `tritonclient[http]` (sync and aio) against a real lstm-serve and a real Redis.

The reference for every output is the native stateless `POST /v1/models/{m}/predict`.
"""

import asyncio
import importlib.util
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import tritonclient.http.aio as triton_aio
from tritonclient.utils import InferenceServerException

from tests.processes import ServiceProcess
from tests.streaming import predict, random_chunking

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture(scope="module")
def service(redis_server, model_dir):
    with ServiceProcess(redis_server.url, model_dir) as process:
        yield process


@pytest.fixture(scope="module")
def native(service):
    with httpx.Client(base_url=service.url, timeout=30) as client:
        yield client


@pytest.fixture
def client(service):
    triton_client = triton.InferenceServerClient(service.url.removeprefix("http://"))
    yield triton_client
    triton_client.close()


def int_id() -> int:
    return uuid.uuid4().int >> 65 or 1


def str_id() -> str:
    return f"seq-{uuid.uuid4()}"


def fp32(x: np.ndarray, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("inputs", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x.astype(np.float32), binary_data=binary)
    return tensor


def chunk(client, model, x, sequence_id, **flags) -> np.ndarray:
    result = client.infer(model, [fp32(x[None])], sequence_id=sequence_id, **flags)
    return result.as_numpy("outputs")[0]


def refused(status: str, call, *args, **kwargs) -> str:
    with pytest.raises(InferenceServerException) as info:
        call(*args, **kwargs)
    assert info.value.status() == status, info.value
    message = info.value.message()
    assert isinstance(message, str)  # {"error": "message"}, not the native {"error": {...}}
    return message


def test_health_and_metadata(client, native):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert {"sequence", "binary_tensor_data"} <= set(client.get_server_metadata()["extensions"])
    for name in ("sensor-lstm", "lstm-last-step"):
        info = native.get(f"/v1/models/{name}").json()
        metadata = client.get_model_metadata(name)
        assert metadata["versions"] == [str(info["version_number"])]
        assert metadata["inputs"] == [
            {"name": "inputs", "datatype": "FP32", "shape": [-1, -1, info["input_features"]]}
        ]
        output_shape = [-1, -1, info["output_features"]] if info["per_step"] else [-1, 2]
        assert metadata["outputs"] == [
            {"name": "outputs", "datatype": "FP32", "shape": output_shape}
        ]
        assert client.is_model_ready(name)
        assert client.is_model_ready(name, model_version=info["version"])
        assert client.get_model_metadata(name, model_version=info["version"]) == metadata
    assert not client.is_model_ready("no-such-model")
    assert "no-such-model" in refused("404", client.get_model_metadata, "no-such-model")
    message = refused("404", client.get_model_metadata, "sensor-lstm", model_version="2")
    assert "version" in message


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("model", ["gru-lstm-dense", "lstm-last-step"])
def test_stateless_batch_rows_equal_native_predict(client, native, model, binary):
    features = native.get(f"/v1/models/{model}").json()["input_features"]
    x = np.random.default_rng(3).normal(size=(3, 17, features)).astype(np.float32)
    requested = [triton.InferRequestedOutput("outputs", binary_data=binary)]
    result = client.infer(model, [fp32(x, binary)], outputs=requested, request_id="batch-1")

    response = result.get_response()
    assert response["id"] == "batch-1"
    assert ("parameters" in response["outputs"][0]) is binary
    outputs = result.as_numpy("outputs")
    assert outputs.dtype == np.float32 and outputs.shape[0] == 3
    for row in range(3):
        assert outputs[row].tobytes() == predict(native, model, x[row]).tobytes()


@pytest.mark.parametrize("sequence_id", [int_id(), str_id()], ids=["int", "str"])
def test_sequence_in_chunks_is_bit_identical_to_native_predict(client, native, sequence_id):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(90, 16)).astype(np.float32)
    sizes = random_chunking(len(x), rng, largest=25)
    ends = np.cumsum(sizes)
    outputs = []
    for index, (end, size) in enumerate(zip(ends, sizes, strict=True)):
        result = client.infer(
            "sensor-lstm",
            [fp32(x[None, end - size : end])],
            sequence_id=sequence_id,
            sequence_start=index == 0,
            sequence_end=index == len(sizes) - 1,
        )
        outputs.append(result.as_numpy("outputs")[0])
        assert result.get_response()["parameters"]["sequence_steps"] == end
        size_param = result.get_output("outputs")["parameters"]["binary_data_size"]
        assert size_param == size * 8 * 4  # FP32 little-endian, 8 units per step

    full = predict(native, "sensor-lstm", x)
    assert np.concatenate(outputs).tobytes() == full.tobytes()


def test_aio_client_streams_json_and_binary_alike(service, native):
    x = np.random.default_rng(8).normal(size=(40, 5)).astype(np.float32)

    async def run() -> list[np.ndarray]:
        client = triton_aio.InferenceServerClient(service.url.removeprefix("http://"))
        try:
            assert await client.is_server_live()
            assert await client.is_model_ready("gru-lstm-dense")
            sequence_id, outputs = str_id(), []
            for start in range(0, 40, 10):
                binary = start % 20 == 0
                result = await client.infer(
                    "gru-lstm-dense",
                    [fp32(x[None, start : start + 10], binary)],
                    outputs=[triton.InferRequestedOutput("outputs", binary_data=binary)],
                    sequence_id=sequence_id,
                    sequence_start=start == 0,
                )
                outputs.append(result.as_numpy("outputs")[0])
            return outputs
        finally:
            await client.close()

    outputs = asyncio.run(run())
    assert np.concatenate(outputs).tobytes() == predict(native, "gru-lstm-dense", x).tobytes()


def test_start_resets_to_zero_state(client, native):
    x = np.random.default_rng(9).normal(size=(12, 2)).astype(np.float32)
    sequence_id = int_id()
    chunk(client, "seed-lstm", x[:5], sequence_id, sequence_start=True)
    chunk(client, "seed-lstm", x[5:], sequence_id)

    again = chunk(client, "seed-lstm", x, sequence_id, sequence_start=True)
    assert again.tobytes() == predict(native, "seed-lstm", x).tobytes()


def test_end_deletes_the_sequence(client):
    x = np.zeros((3, 2), dtype=np.float32)
    sequence_id = str_id()
    chunk(client, "seed-lstm", x, sequence_id, sequence_start=True, sequence_end=True)

    message = refused("400", chunk, client, "seed-lstm", x, sequence_id)
    assert "never started or has expired" in message and "sequence_start" in message


def test_unknown_sequence_is_400_and_int_and_str_ids_differ(client):
    x = np.zeros((2, 2), dtype=np.float32)
    number = int_id()
    chunk(client, "seed-lstm", x, number, sequence_start=True)

    message = refused("400", chunk, client, "seed-lstm", x, str(number))
    assert f'"{number}"' in message and "never started" in message
    chunk(client, "seed-lstm", x, number, sequence_end=True)


def test_sequences_are_per_model(client):
    sequence_id = int_id()
    chunk(client, "seed-lstm", np.zeros((2, 2), np.float32), sequence_id, sequence_start=True)
    message = refused(
        "400", chunk, client, "gru-lstm-dense", np.zeros((2, 5), np.float32), sequence_id
    )
    assert "gru-lstm-dense" in message


def test_bad_inputs_are_refused_and_change_nothing(client, native):
    x = np.random.default_rng(10).normal(size=(8, 2)).astype(np.float32)
    sequence_id = int_id()
    first = chunk(client, "seed-lstm", x[:4], sequence_id, sequence_start=True)

    def send(status: str, tensor: triton.InferInput) -> str:
        return refused(status, client.infer, "seed-lstm", [tensor], sequence_id=sequence_id)

    wrong_rank = fp32(x[4:])  # (T, F): the batch dimension is missing
    assert "[-1, -1, 2]" in send("400", wrong_rank)
    wrong_features = fp32(np.zeros((1, 4, 3)))
    assert "[-1, -1, 2]" in send("400", wrong_features)
    for datatype, dtype in (("FP64", np.float64), ("INT32", np.int32)):
        tensor = triton.InferInput("inputs", [1, 4, 2], datatype)
        tensor.set_data_from_numpy(x[None, 4:].astype(dtype))
        message = send("400", tensor)
        assert datatype in message and "FP32" in message
    two_rows = fp32(np.stack([x[4:], x[4:]]))
    assert "batch size must be 1" in send("400", two_rows)
    wrong_name = triton.InferInput("x", [1, 4, 2], "FP32")
    wrong_name.set_data_from_numpy(x[None, 4:])
    assert "'inputs'" in send("400", wrong_name)
    not_finite = x[None, 4:].copy()
    not_finite[0, 1, 1] = np.nan
    assert "finite" in send("400", fp32(not_finite))
    assert "nope" in refused("404", client.infer, "nope", [fp32(x[None])])

    second = chunk(client, "seed-lstm", x[4:], sequence_id, sequence_end=True)
    expected = predict(native, "seed-lstm", x)
    assert np.concatenate([first, second]).tobytes() == expected.tobytes()


def test_sequence_offset_replays_a_retried_chunk(client, native):
    x = np.random.default_rng(11).normal(size=(6, 2)).astype(np.float32)
    sequence_id = str_id()
    chunk(client, "seed-lstm", x[:3], sequence_id, sequence_start=True)

    def retry():
        return client.infer(
            "seed-lstm",
            [fp32(x[None, 3:])],
            sequence_id=sequence_id,
            parameters={"sequence_offset": 3},
        )

    first, again = retry(), retry()
    assert first.get_response()["parameters"]["sequence_replayed"] is False
    assert again.get_response()["parameters"]["sequence_replayed"] is True
    assert again.as_numpy("outputs").tobytes() == first.as_numpy("outputs").tobytes()
    assert first.as_numpy("outputs")[0].tobytes() == predict(native, "seed-lstm", x)[3:].tobytes()
    stale = fp32(x[None, :1])
    message = refused(
        "409",
        client.infer,
        "seed-lstm",
        [stale],
        sequence_id=sequence_id,
        parameters={"sequence_offset": 1},
    )
    assert "at step 6" in message


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests(client, native, algorithm):
    x = np.random.default_rng(12).normal(size=(2, 9, 3)).astype(np.float32)
    result = client.infer("simplernn-layernorm", [fp32(x)], request_compression_algorithm=algorithm)
    for row in range(2):
        expected = predict(native, "simplernn-layernorm", x[row])
        assert result.as_numpy("outputs")[row].tobytes() == expected.tobytes()


def test_docs_example_streams_a_sequence(service, native):
    source = (DOCS / "v2_stream.py").read_text()
    assert source.strip() in (DOCS / "v2.md").read_text(), "docs/v2.md must show docs/v2_stream.py"
    spec = importlib.util.spec_from_file_location("v2_stream", DOCS / "v2_stream.py")
    assert spec and spec.loader
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)

    x = np.random.default_rng(0).normal(size=(100, 16)).astype(np.float32)
    url = service.url.removeprefix("http://")
    y = example.stream_sequence(url, "sensor-lstm", x, chunk_steps=25, sequence_id=int_id())
    assert y.tobytes() == predict(native, "sensor-lstm", x).tobytes()
