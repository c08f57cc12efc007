"""The gRPC load generator: each client streams one sequence over its own `ModelStreamInfer`
stream, closed-loop (one chunk in flight per sequence), as `bench.load` does over HTTP.

Run in its own process (`python -m bench.grpc_load SPEC_JSON`); same spec and answer as
`bench.load`. It sends prebuilt protobuf messages with grpcio directly (tritonclient would
add its own per-message work to the client's side of the measurement); all streams share
one channel (one HTTP/2 connection), as one `tritonclient.grpc` client's would.
"""

import asyncio
import json
import random
import struct
import sys
import time
from typing import Any

import grpc

from bench.load import Spec, Tally, Window, summary
from service.api.grpc.triton import grpc_service_pb2 as pb

STREAM = "/inference.GRPCInferenceService/ModelStreamInfer"


def chunk_requests(
    spec: Spec, sequence_id: str, count: int, seed: int
) -> list[pb.ModelInferRequest]:
    """`count` chunks of `spec.steps` random timesteps as raw little-endian float32."""
    rng = random.Random(seed)
    requests = []
    for _ in range(count):
        values = [rng.gauss(0.0, 1.0) for _ in range(spec.steps * spec.features)]
        request = pb.ModelInferRequest(model_name=spec.model)
        request.parameters["sequence_id"].string_param = sequence_id
        tensor = request.inputs.add(name="inputs", datatype="FP32")
        tensor.shape.extend([1, spec.steps, spec.features])
        request.raw_input_contents.append(struct.pack(f"<{len(values)}f", *values))
        requests.append(request)
    return requests


async def _client(
    spec: Spec, index: int, window: Window, tally: Tally, channel: grpc.aio.Channel
) -> None:
    open_stream = channel.stream_stream(
        STREAM,
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelStreamInferResponse.FromString,
    )
    call = open_stream()
    sequence_id = f"{spec.session_prefix}-{spec.seed}-{index}"
    requests = chunk_requests(spec, sequence_id, 16, spec.seed * 1000 + index)
    start = pb.ModelInferRequest()
    start.CopyFrom(requests[0])
    start.parameters["sequence_start"].bool_param = True
    try:
        await call.write(start)  # starts the sequence, as creating the session does
        answer = await call.read()
        if answer.error_message:
            raise RuntimeError(f"starting a sequence: {answer.error_message}")
        tally.session_ids.append(sequence_id)
        window.client_ready()
        await window.ready.wait()
        sent = 0
        while not window.stop.is_set():
            began = time.perf_counter_ns()
            await call.write(requests[sent % len(requests)])
            answer = await call.read()
            ended = time.perf_counter_ns()
            sent += 1
            if answer.error_message:
                tally.errors.append(answer.error_message[:200])
                if len(tally.errors) > 20:
                    window._close(ended)
                continue
            window.answered(index, began, ended)
        await call.done_writing()
    finally:
        call.cancel()


async def run(spec: Spec) -> dict[str, Any]:
    tally = Tally()
    window = Window(spec, tally)
    async with grpc.aio.insecure_channel(f"{spec.host}:{spec.port}") as channel:
        await asyncio.gather(
            *(_client(spec, i, window, tally, channel) for i in range(spec.concurrency))
        )
    return summary(spec, window, tally)


def main() -> None:
    spec = Spec(**json.loads(sys.argv[1]))
    print(json.dumps(asyncio.run(run(spec))))


if __name__ == "__main__":
    main()
