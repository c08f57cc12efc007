"""Triton's gRPC protocol with the real `tritonclient.grpc` (sync and aio): unary and
streamed sequences bit-identical to `POST /v1/models/{model}/predict`, one session
namespace with `/v2` over HTTP, errors as status codes and on the stream, API keys."""

import asyncio
import contextlib
import json
import logging
import queue
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from pydantic import SecretStr
from tritonclient.utils import InferenceServerException

from service.api.grpc.triton import grpc_service_pb2 as pb
from service.store.embedded import free_port
from tests.apps import app_with
from tests.metrics import value
from tests.streaming import predict, random_chunking

MODEL = "sensor-lstm"  # 16 features


@pytest.fixture(scope="module")
def served(client, settings) -> Iterator[tuple[Any, str]]:
    """The app with its gRPC server on a free port: (HTTP test client, gRPC address)."""
    port = free_port()
    with app_with(client, settings, grpc_port=port) as app:
        yield app, f"127.0.0.1:{port}"


@pytest.fixture
def triton(served) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(served[1]) as triton_client:
        yield triton_client


def inputs_of(x: np.ndarray) -> list[grpcclient.InferInput]:
    tensor = grpcclient.InferInput("inputs", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return [tensor]


def chunks(x: np.ndarray, sizes: list[int]) -> Iterator[tuple[int, np.ndarray]]:
    start = 0
    for size in sizes:
        yield start, x[start : start + size]
        start += size


def test_health_metadata_and_config_describe_a_sequence_model(served, triton):
    app, _ = served
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready(MODEL) and not triton.is_model_ready("no-such-model")
    with pytest.raises(InferenceServerException) as raised:
        triton.get_inference_statistics(MODEL)  # one of the Triton RPCs not served
    assert raised.value.status() == "StatusCode.UNIMPLEMENTED"
    extensions = triton.get_server_metadata().extensions
    assert {"sequence", "sequence(string_id)"} <= set(extensions)

    http = app.get(f"/v2/models/{MODEL}").json()
    metadata = triton.get_model_metadata(MODEL, as_json=True)
    assert metadata["versions"] == http["versions"]
    assert [
        (t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in metadata["inputs"]
    ] == [(t["name"], t["datatype"], t["shape"]) for t in http["inputs"]]
    config = triton.get_model_config(MODEL).config
    assert config.HasField("sequence_batching")
    assert list(config.input[0].dims) == [-1, 16]


def test_stateless_infer_equals_native_predict(served, triton):
    app, _ = served
    x = np.random.default_rng(3).normal(size=(2, 9, 16)).astype(np.float32)
    result = triton.infer(MODEL, inputs_of(x), request_id="r-1")

    assert result.get_response().id == "r-1"
    outputs = result.as_numpy("outputs")
    for row in range(2):
        assert outputs[row].tobytes() == predict(app, MODEL, x[row]).tobytes()


def test_a_sequence_moves_between_grpc_and_http_and_back(served, triton):
    """One session namespace: chunks over gRPC, then `/v2` HTTP, then gRPC again."""
    app, _ = served
    x = np.random.default_rng(4).normal(size=(12, 16)).astype(np.float32)
    sequence_id = int(uuid.uuid4().int % 2**62) + 1
    first = triton.infer(
        MODEL, inputs_of(x[None, :5]), sequence_id=sequence_id, sequence_start=True
    ).as_numpy("outputs")
    body = {
        "parameters": {"sequence_id": sequence_id, "sequence_offset": 5},
        "inputs": [
            {
                "name": "inputs",
                "datatype": "FP32",
                "shape": [1, 4, 16],
                "data": x[5:9].ravel().tolist(),
            }
        ],
    }
    over_http = app.post(f"/v2/models/{MODEL}/infer", content=json.dumps(body))
    assert over_http.status_code == 200, over_http.text
    second = np.array(over_http.json()["outputs"][0]["data"], dtype=np.float32).reshape(1, 4, -1)
    last = triton.infer(
        MODEL,
        inputs_of(x[None, 9:]),
        sequence_id=sequence_id,
        sequence_end=True,
        parameters={"sequence_offset": 9},
    )

    assert last.get_response().parameters["sequence_steps"].int64_param == 12
    joined = np.concatenate([first[0], second[0], last.as_numpy("outputs")[0]])
    assert joined.tobytes() == predict(app, MODEL, x).tobytes()


def test_a_stream_of_interleaved_sequences_in_random_chunkings_is_bit_exact(served, triton):
    """Several sequences (integer and string ids) sent on one stream without waiting:
    each comes back in order, and equals one full-sequence predict."""
    app, _ = served
    rng = np.random.default_rng(5)
    tag = uuid.uuid4().hex[:8]
    sequences = {
        sequence_id: rng.normal(size=(int(rng.integers(20, 60)), 16)).astype(np.float32)
        for sequence_id in (int(rng.integers(1, 2**62)), f"s-{tag}", f"t-{tag}")
    }
    plans = {
        sequence_id: list(chunks(x, random_chunking(len(x), rng, largest=9)))
        for sequence_id, x in sequences.items()
    }
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    triton.start_stream(callback=lambda result, error: answers.put((result, error)))
    sent = 0
    for index in range(max(len(plan) for plan in plans.values())):
        for sequence_id, plan in plans.items():
            if index < len(plan):
                start, chunk = plan[index]
                triton.async_stream_infer(
                    MODEL,
                    inputs_of(chunk[None]),
                    request_id=f"{sequence_id}/{start}",
                    sequence_id=sequence_id,
                    sequence_start=index == 0,
                    sequence_end=index == len(plan) - 1,
                )
                sent += 1
    received: dict[str, list[np.ndarray]] = {str(s): [] for s in sequences}
    for _ in range(sent):
        result, error = answers.get(timeout=60)
        assert error is None, error
        sequence_id, start = result.get_response().id.rsplit("/", 1)
        assert int(start) == sum(len(o) for o in received[sequence_id])  # in order
        received[sequence_id].append(result.as_numpy("outputs")[0])
    triton.stop_stream()

    for sequence_id, x in sequences.items():
        streamed = np.concatenate(received[str(sequence_id)])
        assert streamed.tobytes() == predict(app, MODEL, x).tobytes()


def test_errors_on_the_stream_leave_it_open(served, triton):
    x = np.random.default_rng(6).normal(size=(1, 3, 16)).astype(np.float32)
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    triton.start_stream(callback=lambda result, error: answers.put((result, error)))
    never = f"never-{uuid.uuid4().hex}"
    triton.async_stream_infer(MODEL, inputs_of(x), request_id="a", sequence_id=never)
    _, error = answers.get(timeout=30)
    assert "never started" in error.message()
    triton.async_stream_infer(MODEL, inputs_of(x[:, :, :4]), request_id="b")
    _, error = answers.get(timeout=30)
    assert "16" in error.message()  # the feature count the model takes
    triton.async_stream_infer(MODEL, inputs_of(x), request_id="c")
    result, error = answers.get(timeout=30)
    triton.stop_stream()
    assert error is None and result.get_response().id == "c"


@pytest.mark.parametrize(
    ("call", "status"),
    [
        ({"model_name": "no-such-model"}, "NOT_FOUND"),
        ({"sequence_id": "never-started"}, "NOT_FOUND"),
        ({"features": 3}, "INVALID_ARGUMENT"),
        ({"sequence_id": -4}, "INVALID_ARGUMENT"),
        ({"parameters": {"sequence_offset": 7}}, "INVALID_ARGUMENT"),  # needs a sequence_id
    ],
)
def test_unary_errors_are_grpc_status_codes(triton, call, status):
    x = np.ones((1, 2, call.pop("features", 16)), dtype=np.float32)
    with pytest.raises(InferenceServerException) as raised:
        triton.infer(call.pop("model_name", MODEL), inputs_of(x), **call)
    assert raised.value.status() == f"StatusCode.{status}"


def test_a_stale_offset_is_failed_precondition_and_a_resent_chunk_is_replayed(triton):
    x = np.random.default_rng(7).normal(size=(1, 4, 16)).astype(np.float32)
    sequence_id = f"o-{uuid.uuid4().hex}"
    start = {"sequence_id": sequence_id, "sequence_start": True}
    triton.infer(MODEL, inputs_of(x), **start)
    chunk = {"sequence_id": sequence_id, "parameters": {"sequence_offset": 4}}
    first = triton.infer(MODEL, inputs_of(x), **chunk)
    again = triton.infer(MODEL, inputs_of(x), **chunk)

    assert again.get_response().parameters["sequence_replayed"].bool_param
    assert again.as_numpy("outputs").tobytes() == first.as_numpy("outputs").tobytes()
    with pytest.raises(InferenceServerException) as raised:
        triton.infer(
            MODEL, inputs_of(x), sequence_id=sequence_id, parameters={"sequence_offset": 2}
        )
    assert raised.value.status() == "StatusCode.FAILED_PRECONDITION"
    assert "at step 8" in raised.value.message()


def test_the_stable_error_code_rides_in_trailing_metadata(served):
    request = pb.ModelInferRequest(model_name="no-such-model")
    with grpc.insecure_channel(served[1]) as channel:
        model_infer = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as raised:
            model_infer(request)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert ("lstm-error-code", "model_not_found") in raised.value.trailing_metadata()


def test_aio_stream_resends_by_offset_and_gets_the_same_answer(served):
    app, address = served
    x = np.random.default_rng(8).normal(size=(10, 16)).astype(np.float32)
    sequence_id = f"aio-{uuid.uuid4().hex}"

    def request(start: int, stop: int, **flags: Any) -> dict[str, Any]:
        return {
            "model_name": MODEL,
            "inputs": inputs_of(x[None, start:stop]),
            "sequence_id": sequence_id,
            "parameters": {"sequence_offset": start},
            **flags,
        }

    async def scenario() -> list[Any]:
        async with aioclient.InferenceServerClient(address) as triton_client:

            async def requests():
                yield request(0, 6, sequence_start=True)
                yield request(0, 6)  # a resend: answered again, not applied again
                yield request(6, 10, sequence_end=True)

            return [answer async for answer in triton_client.stream_infer(requests())]

    answers = asyncio.run(scenario())
    assert [error for _, error in answers] == [None, None, None]
    results = [result for result, _ in answers]
    replayed = [r.get_response().parameters["sequence_replayed"].bool_param for r in results]
    assert replayed == [False, True, False]
    outputs = [r.as_numpy("outputs")[0] for r in results]
    assert outputs[1].tobytes() == outputs[0].tobytes()
    joined = np.concatenate([outputs[0], outputs[2]])
    assert joined.tobytes() == predict(app, MODEL, x).tobytes()


def test_aio_unary_sequence_equals_native_predict(served):
    app, address = served
    x = np.random.default_rng(9).normal(size=(1, 11, 16)).astype(np.float32)
    sequence_id = int(uuid.uuid4().int % 2**62) + 1

    async def scenario() -> list[np.ndarray]:
        async with aioclient.InferenceServerClient(address) as triton_client:
            first = await triton_client.infer(
                MODEL, inputs_of(x[:, :4]), sequence_id=sequence_id, sequence_start=True
            )
            second = await triton_client.infer(
                MODEL, inputs_of(x[:, 4:]), sequence_id=sequence_id, sequence_end=True
            )
            return [first.as_numpy("outputs")[0], second.as_numpy("outputs")[0]]

    outputs = asyncio.run(scenario())
    assert np.concatenate(outputs).tobytes() == predict(app, MODEL, x[0]).tobytes()


FRESH_KEY = f"k3-{uuid.uuid4().hex}"  # holds no session from an earlier run


@pytest.fixture(scope="module")
def keyed(client, settings) -> Iterator[str]:
    """The app with API keys "k1", "k2" and a fresh one ("k3" below), a 64 KiB message
    limit, 3 sessions per key, and gRPC."""
    port = free_port()
    with app_with(
        client,
        settings,
        grpc_port=port,
        api_keys=SecretStr(f"k1,k2,{FRESH_KEY}"),
        max_body_bytes=65536,
        max_sessions_per_key=3,
    ):
        yield f"127.0.0.1:{port}"


def test_api_keys_from_metadata_isolate_sequences(keyed):
    x = np.ones((1, 2, 16), dtype=np.float32)
    one, two = {"authorization": "Bearer k1"}, {"authorization": "Bearer k2"}
    with grpcclient.InferenceServerClient(keyed) as triton_client:
        assert triton_client.is_server_live()  # probes carry no key
        for headers in ({}, {"authorization": "Bearer nope"}):
            with pytest.raises(InferenceServerException) as raised:
                triton_client.infer(MODEL, inputs_of(x), headers=headers)
            assert raised.value.status() == "StatusCode.UNAUTHENTICATED"
        sequence_id = f"k-{uuid.uuid4().hex}"
        triton_client.infer(
            MODEL, inputs_of(x), sequence_id=sequence_id, sequence_start=True, headers=one
        )
        with pytest.raises(InferenceServerException) as raised:
            triton_client.infer(MODEL, inputs_of(x), sequence_id=sequence_id, headers=two)
        assert raised.value.status() == "StatusCode.NOT_FOUND"
        following = triton_client.infer(MODEL, inputs_of(x), sequence_id=sequence_id, headers=one)
        assert following.get_response().parameters["sequence_steps"].int64_param == 4

        errors: queue.Queue[Any] = queue.Queue()
        triton_client.start_stream(callback=lambda result, error: errors.put(error))
        # The stream may be refused before this request is queued; the callback says why.
        with contextlib.suppress(InferenceServerException):
            triton_client.async_stream_infer(MODEL, inputs_of(x))
        error = errors.get(timeout=30)
        triton_client.stop_stream()
        assert error is not None and "UNAUTHENTICATED" in str(error.status())


def test_sessions_beyond_the_keys_limit_are_resource_exhausted(keyed):
    x = np.ones((1, 1, 16), dtype=np.float32)
    key = {"authorization": f"Bearer {FRESH_KEY}"}
    with grpcclient.InferenceServerClient(keyed) as triton_client:
        for sequence_id in (1, 2, 3):
            triton_client.infer(
                MODEL, inputs_of(x), sequence_id=sequence_id, sequence_start=True, headers=key
            )
        with pytest.raises(InferenceServerException) as raised:
            triton_client.infer(
                MODEL, inputs_of(x), sequence_id=4, sequence_start=True, headers=key
            )
    assert raised.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert "3 live sessions" in raised.value.message()


def test_a_message_over_the_size_limit_is_resource_exhausted(keyed):
    x = np.ones((1, 2000, 16), dtype=np.float32)  # 128 KB, over the 64 KiB limit
    with (
        grpcclient.InferenceServerClient(keyed) as triton_client,
        pytest.raises(InferenceServerException) as raised,
    ):
        triton_client.infer(MODEL, inputs_of(x), headers={"authorization": "Bearer k1"})
    assert raised.value.status() == "StatusCode.RESOURCE_EXHAUSTED"


def test_calls_are_counted_and_logged(served, triton, caplog):
    caplog.set_level(logging.INFO, logger="lstm.access")
    before = value(
        served[0].get("/metrics").text,
        "lstm_grpc_requests_total",
        code="NOT_FOUND",
        method="ModelInfer",
    )
    with pytest.raises(InferenceServerException):
        triton.infer("no-such-model", inputs_of(np.ones((1, 1, 16), dtype=np.float32)))

    def logged() -> bool:
        return any(
            line["route"] == "ModelInfer"
            and line["status"] == "NOT_FOUND"
            and line["error"] == "model_not_found"
            and line["model"] == "no-such-model"
            for line in (
                json.loads(r.getMessage()) for r in caplog.records if r.name == "lstm.access"
            )
        )

    # The server writes its line just after the status reaches the client: wait, bounded.
    deadline = time.monotonic() + 10
    while not logged() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert logged(), caplog.records
    metrics = served[0].get("/metrics").text
    after = value(metrics, "lstm_grpc_requests_total", code="NOT_FOUND", method="ModelInfer")
    assert after == before + 1
    assert value(metrics, "lstm_errors_total", code="model_not_found") >= 1


def readme_grpc_example() -> str:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index("## gRPC") :]
    return section[section.index("```python\n") + 10 : section.index("```\n", 10)]


def test_the_readme_grpc_example_streams_bit_exact(served):
    app, address = served
    source = readme_grpc_example()
    assert source.count('"localhost:8001"') == 1 and source.count("sequence_id=42") == 1
    sequence_id = int(uuid.uuid4().int % 2**62) + 1
    source = source.replace('"localhost:8001"', repr(address))
    namespace: dict[str, Any] = {}
    exec(
        compile(source.replace("sequence_id=42", f"sequence_id={sequence_id}"), "README", "exec"),
        namespace,
    )

    streamed = np.concatenate(namespace["outputs"])
    assert streamed.tobytes() == predict(app, MODEL, namespace["inputs"]).tobytes()


def test_an_open_stream_counts_as_a_request_in_progress(served):
    # Heavy work hands its thread back between slices only while another request is in
    # progress: a gRPC stream must count as an open WebSocket does.
    app, address = served
    heavy = app.app.state.sessions.heavy
    before = heavy.requests_in_progress
    seen: list[int] = []
    x = np.random.default_rng(10).normal(size=(1, 3, 16)).astype(np.float32)

    async def scenario() -> None:
        async with aioclient.InferenceServerClient(address) as triton_client:
            answered = asyncio.Event()

            async def requests():
                yield {"model_name": MODEL, "inputs": inputs_of(x)}
                await answered.wait()

            async for _, error in triton_client.stream_infer(requests()):
                assert error is None
                seen.append(heavy.requests_in_progress)
                answered.set()

    asyncio.run(scenario())
    assert seen == [before + 1]
    deadline = time.monotonic() + 5
    while heavy.requests_in_progress != before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert heavy.requests_in_progress == before
