from fastapi import APIRouter, Request, Response

from service.metrics import CONTENT_TYPE, PrometheusMetrics

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    summary="Prometheus metrics (text exposition format)",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def metrics(request: Request) -> Response:
    # A plain def: FastAPI runs it in a thread, as reading workers' files may block.
    registry: PrometheusMetrics = request.app.state.metrics
    return Response(registry.exposition(), media_type=CONTENT_TYPE)
