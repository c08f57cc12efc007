"""The gRPC server, started and stopped with the app, on the app's own data plane."""

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from service.api.auth import ApiKeys
from service.api.deps import DEFAULT_NAMESPACE
from service.api.grpc.calls import (
    ERROR_CODE_KEY,
    Authenticator,
    CallObserver,
    CallRecord,
    request_id,
    status_of,
)
from service.api.grpc.inference import InferenceService
from service.api.grpc.stream import METHOD as STREAM_METHOD
from service.api.grpc.stream import InferStream
from service.api.grpc.triton import grpc_service_pb2 as pb
from service.core.sequences import SequenceService
from service.errors import ServiceError
from service.metrics import PrometheusMetrics
from service.settings import Settings

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
STOP_GRACE_SECONDS = 5.0

Request = TypeVar("Request", bound=Message)
Response = TypeVar("Response", bound=Message)
Context = grpc.aio.ServicerContext[Any, Any]


def _model_of(request: Message) -> str | None:
    for field in ("model_name", "name"):
        if field in request.DESCRIPTOR.fields_by_name:
            return getattr(request, field) or None
    return None


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class GrpcServer:
    """`inference.GRPCInferenceService` on `settings.grpc_host:grpc_port`. Every
    `lstm-serve` worker runs one on the same port (SO_REUSEPORT: the kernel spreads
    connections across them), as uvicorn's workers share the HTTP port."""

    def __init__(
        self,
        settings: Settings,
        sequences: SequenceService,
        api_keys: ApiKeys | None,
        metrics: PrometheusMetrics,
    ) -> None:
        self.settings = settings
        self.service = InferenceService(sequences)
        self.auth = Authenticator(api_keys)
        self.observer = CallObserver(metrics, settings.access_log)
        # Counted as HTTP requests are: heavy work hands the thread back between slices
        # while another call is in progress (`HeavyWork.call_sliced`).
        self.in_progress = sequences.sessions.heavy.request
        self.port = 0
        self._server: grpc.aio.Server | None = None

    async def start(self) -> int:
        server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 1),
                ("grpc.max_receive_message_length", self.settings.max_body_bytes),
                ("grpc.max_send_message_length", -1),
            ]
        )
        server.add_generic_rpc_handlers((self._handlers(),))
        address = _address(self.settings.grpc_host, self.settings.grpc_port)
        self.port = server.add_insecure_port(address)
        await server.start()
        self._server = server
        log.info("gRPC server listening on %s", _address(self.settings.grpc_host, self.port))
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(STOP_GRACE_SECONDS)
            self._server = None

    def _handlers(self) -> grpc.GenericRpcHandler:
        service = self.service
        unary = self._unary
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            # Open as /v2/health/* is: probes carry no key.
            "ServerLive": unary(service.server_live, pb.ServerLiveRequest, protected=False),
            "ServerReady": unary(service.server_ready, pb.ServerReadyRequest, protected=False),
            "ModelReady": unary(service.model_ready, pb.ModelReadyRequest),
            "ServerMetadata": unary(service.server_metadata, pb.ServerMetadataRequest),
            "ModelMetadata": unary(service.model_metadata, pb.ModelMetadataRequest),
            "ModelConfig": unary(service.model_config, pb.ModelConfigRequest),
            "ModelInfer": unary(service.model_infer, pb.ModelInferRequest),
            STREAM_METHOD: grpc.stream_stream_rpc_method_handler(
                self._stream,
                request_deserializer=pb.ModelInferRequest.FromString,
                response_serializer=pb.ModelStreamInferResponse.SerializeToString,
            ),
        }
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    def _unary(
        self,
        method: Callable[[Request, str], Awaitable[Response]],
        request_type: type[Request],
        protected: bool = True,
    ) -> "grpc.RpcMethodHandler[Request, Response]":
        name = request_type.DESCRIPTOR.name.removesuffix("Request")

        async def handle(request: Request, context: Context) -> Response:
            call = CallRecord(name, request_id(context), model=_model_of(request))
            try:
                call.namespace = self.auth.namespace(context) if protected else DEFAULT_NAMESPACE
                with self.in_progress():
                    return await method(request, call.namespace)
            except ServiceError as exc:
                call.status, call.error = status_of(exc), exc.code
                context.set_trailing_metadata(((ERROR_CODE_KEY, exc.code),))
                await context.abort(call.status, exc.message)
                raise  # not reached: abort raises
            except asyncio.CancelledError:
                call.status = grpc.StatusCode.CANCELLED
                raise
            except Exception:
                log.exception("unhandled error on %s", name)
                call.status, call.error = grpc.StatusCode.INTERNAL, "internal_error"
                await context.abort(call.status, "internal server error")
                raise
            finally:
                self.observer.done(call)

        return grpc.unary_unary_rpc_method_handler(
            handle,
            request_deserializer=request_type.FromString,
            response_serializer=lambda response: response.SerializeToString(),
        )

    async def _stream(
        self, requests: AsyncIterator[pb.ModelInferRequest], context: Context
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        call = CallRecord(STREAM_METHOD, request_id(context))
        try:
            namespace = self.auth.namespace(context)
        except ServiceError as exc:
            call.status, call.error = status_of(exc), exc.code
            self.observer.done(call)
            context.set_trailing_metadata(((ERROR_CODE_KEY, exc.code),))
            await context.abort(call.status, exc.message)
        stream = InferStream(self.service.model_infer, self.observer, namespace, call.request_id)
        with self.in_progress():
            async for answer in stream.run(requests):
                yield answer
