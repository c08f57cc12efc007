"""`ModelStreamInfer`: many requests on one bidirectional stream, as Triton serves them."""

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial

import grpc

from service.api.grpc.calls import CallObserver, CallRecord, status_of
from service.api.grpc.codec import SequenceKey, sequence_key
from service.api.grpc.triton import grpc_service_pb2 as pb
from service.errors import ServiceError

log = logging.getLogger(__name__)

METHOD = "ModelStreamInfer"
# Requests read ahead of the answers the client has taken: beyond, the stream pushes back.
MAX_IN_FLIGHT = 256

Infer = Callable[[pb.ModelInferRequest, str], Awaitable[pb.ModelInferResponse]]


class InferStream:
    """One stream call. The requests of one sequence run one at a time in arrival order;
    other sequences and stateless requests run beside them (so concurrent sequences share
    micro-batches). Each answer leaves when ready; a failed request is answered with an
    `error_message` and the stream stays open, as Triton's does."""

    def __init__(
        self, infer: Infer, observer: CallObserver, namespace: str, request_id: str
    ) -> None:
        self.infer = infer
        self.observer = observer
        self.namespace = namespace
        self.request_id = request_id
        self.answers: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        self.window = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.tails: dict[SequenceKey, asyncio.Task[None]] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    async def run(
        self, requests: AsyncIterator[pb.ModelInferRequest]
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        reader = asyncio.create_task(self._read(requests))
        try:
            while (answer := await self.answers.get()) is not None:
                self.window.release()
                yield answer
            await reader  # a stream that broke while reading ends with its error
        finally:
            reader.cancel()
            for task in list(self.tasks):
                task.cancel()

    async def _read(self, requests: AsyncIterator[pb.ModelInferRequest]) -> None:
        try:
            async for request in requests:
                await self.window.acquire()
                call = CallRecord(
                    METHOD,
                    self.request_id,
                    model=request.model_name or None,
                    namespace=self.namespace,
                    infer_id=request.id or None,
                )
                key = sequence_key(request)
                after = self.tails.get(key) if key is not None else None
                task = asyncio.create_task(self._answer(request, call, after))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
                if key is not None:
                    self.tails[key] = task
                    task.add_done_callback(partial(self._untail, key))
            if self.tasks:
                await asyncio.wait(list(self.tasks))
        finally:
            self.answers.put_nowait(None)

    def _untail(self, key: SequenceKey, task: asyncio.Task[None]) -> None:
        if self.tails.get(key) is task:
            del self.tails[key]

    async def _answer(
        self, request: pb.ModelInferRequest, call: CallRecord, after: asyncio.Task[None] | None
    ) -> None:
        if after is not None:
            await asyncio.wait((after,))
        try:
            answer = pb.ModelStreamInferResponse(
                infer_response=await self.infer(request, self.namespace)
            )
        except ServiceError as exc:
            call.status, call.error = status_of(exc), exc.code
            answer = self._error(request, exc.message)
        except Exception:
            log.exception("unhandled error on a %s request", METHOD)
            call.status, call.error = grpc.StatusCode.INTERNAL, "internal_error"
            answer = self._error(request, "internal server error")
        self.observer.done(call)
        self.answers.put_nowait(answer)

    @staticmethod
    def _error(request: pb.ModelInferRequest, message: str) -> pb.ModelStreamInferResponse:
        # The request's id comes back with the error, so the client knows which one failed.
        return pb.ModelStreamInferResponse(
            error_message=message, infer_response=pb.ModelInferResponse(id=request.id)
        )
