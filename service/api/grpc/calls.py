"""What every gRPC call shares with HTTP: API keys, error codes, metrics, the access log."""

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

import grpc

from service.api.auth import ApiKeys, bearer_token
from service.api.deps import DEFAULT_NAMESPACE
from service.api.observe import log_timestamp
from service.errors import ServiceError, Unauthorized
from service.logs import ACCESS_LOGGER
from service.metrics import PrometheusMetrics

access_log = logging.getLogger(ACCESS_LOGGER)

ERROR_CODE_KEY = "lstm-error-code"  # trailing metadata: the stable code HTTP puts in its body
REQUEST_ID_KEY = "x-request-id"
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")

_BY_HTTP_STATUS = {
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}
# Where a 409 means something more precise than "not in the state the call needs".
_BY_CODE = {
    "session_exists": grpc.StatusCode.ALREADY_EXISTS,
    "session_busy": grpc.StatusCode.ABORTED,
}


def status_of(error: ServiceError) -> grpc.StatusCode:
    return _BY_CODE.get(error.code) or _BY_HTTP_STATUS.get(error.status, grpc.StatusCode.INTERNAL)


def metadata_value(context: grpc.aio.ServicerContext[Any, Any], key: str) -> str | None:
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


def request_id(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The client's `x-request-id` when short and plain, as on HTTP; otherwise a new one."""
    given = metadata_value(context, REQUEST_ID_KEY)
    if given is not None and _CLIENT_REQUEST_ID.match(given):
        return given
    return os.urandom(16).hex()


class Authenticator:
    """The caller's session namespace from `authorization: Bearer <key>` metadata."""

    def __init__(self, keys: ApiKeys | None) -> None:
        self.keys = keys

    def namespace(self, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        if self.keys is None:
            return DEFAULT_NAMESPACE
        header = metadata_value(context, "authorization")
        token = bearer_token(header.encode("latin-1")) if header is not None else None
        namespace = self.keys.namespace_for(token) if token is not None else None
        if namespace is None:
            raise Unauthorized()
        return namespace


@dataclass
class CallRecord:
    """One answered call or stream message, as the access log and the metrics see it."""

    method: str
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    model: str | None = None
    namespace: str | None = None
    infer_id: str | None = None
    error: str | None = None
    status: grpc.StatusCode = grpc.StatusCode.OK


class CallObserver:
    def __init__(self, metrics: PrometheusMetrics, log_requests: bool) -> None:
        self.metrics = metrics
        self.log_requests = log_requests

    def done(self, call: CallRecord) -> None:
        seconds = time.perf_counter() - call.started
        status = call.status.name
        self.metrics.grpc_done(call.method, status, seconds)
        if call.error is not None:
            self.metrics.error(call.error)
        if not (self.log_requests and access_log.isEnabledFor(logging.INFO)):
            return
        line: dict[str, Any] = {
            "ts": log_timestamp(time.time()),
            "method": "GRPC",
            "route": call.method,
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "request_id": call.request_id,
        }
        if call.infer_id is not None:
            line["id"] = call.infer_id
        if call.model is not None:
            line["model"] = call.model
        if call.namespace is not None and call.namespace != DEFAULT_NAMESPACE:
            line["key_id"] = call.namespace
        if call.error is not None:
            line["error"] = call.error
        access_log.info(json.dumps(line, ensure_ascii=False))
