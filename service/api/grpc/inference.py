"""Triton's `inference.GRPCInferenceService` on the same data plane as `/v2` over HTTP."""

from service import __version__
from service.api.grpc.codec import decode_infer, encode_infer
from service.api.grpc.triton import grpc_service_pb2 as pb
from service.api.grpc.triton import model_config_pb2 as config_pb
from service.api.routes.v2 import EXTENSIONS, input_spec, metadata, output_spec
from service.core.sequences import SequenceService
from service.errors import ModelNotFound

INT32_MAX = 2**31 - 1
GRPC_EXTENSIONS = [*EXTENSIONS, "sequence(string_id)"]


class InferenceService:
    """Each RPC translates its message and calls `SequenceService`; no logic of its own."""

    def __init__(self, sequences: SequenceService) -> None:
        self.sequences = sequences
        self.sessions = sequences.sessions

    async def server_live(
        self, request: pb.ServerLiveRequest, namespace: str
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(
        self, request: pb.ServerReadyRequest, namespace: str
    ) -> pb.ServerReadyResponse:
        readiness = await self.sessions.readiness()
        return pb.ServerReadyResponse(ready=readiness.ready)

    async def model_ready(
        self, request: pb.ModelReadyRequest, namespace: str
    ) -> pb.ModelReadyResponse:
        try:
            self.sessions.model(request.name, request.version or None)
        except ModelNotFound:
            return pb.ModelReadyResponse(ready=False)  # as Triton: not ready, not an error
        return pb.ModelReadyResponse(ready=True)

    async def server_metadata(
        self, request: pb.ServerMetadataRequest, namespace: str
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name="lstm-stream", version=__version__, extensions=GRPC_EXTENSIONS
        )

    async def model_metadata(
        self, request: pb.ModelMetadataRequest, namespace: str
    ) -> pb.ModelMetadataResponse:
        model = self.sessions.model(request.name, request.version or None)
        return pb.ModelMetadataResponse(**metadata(model, self.sessions.models))

    async def model_config(
        self, request: pb.ModelConfigRequest, namespace: str
    ) -> pb.ModelConfigResponse:
        model = self.sessions.model(request.name, request.version or None)
        limits = self.sessions.limits
        inputs, outputs = input_spec(model), output_spec(model)
        fp32 = config_pb.DataType.TYPE_FP32
        config = config_pb.ModelConfig(
            name=model.name,
            platform="keras",
            backend="lstm-stream",
            # The batch dimension is implicit in `dims`, as Triton's; sequences take batch 1.
            max_batch_size=min(limits.max_predict_steps, INT32_MAX),
            input=[config_pb.ModelInput(name=inputs.name, data_type=fp32, dims=inputs.shape[1:])],
            output=[
                config_pb.ModelOutput(name=outputs.name, data_type=fp32, dims=outputs.shape[1:])
            ],
            sequence_batching=config_pb.ModelSequenceBatching(
                max_sequence_idle_microseconds=limits.default_ttl_seconds * 1_000_000
            ),
        )
        return pb.ModelConfigResponse(config=config)

    async def model_infer(
        self, request: pb.ModelInferRequest, namespace: str
    ) -> pb.ModelInferResponse:
        model = self.sessions.model(request.model_name, request.model_version or None)
        spec = output_spec(model)
        call = decode_infer(request, input_spec(model), spec)
        inference = await self.sequences.run(namespace, model, call)
        return encode_infer(model, call.id, spec, inference.outputs, inference.chunk)
