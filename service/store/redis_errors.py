"""Redis failures become `StoreUnavailable` (503 with Retry-After) for every Redis adapter."""

from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.errors import StoreUnavailable

P = ParamSpec("P")
R = TypeVar("R")


def unavailable_on_redis_errors(
    fn: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    @wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StoreUnavailable(f"the session store is unreachable: {exc}") from exc
        except (RedisError, RedisClusterException) as exc:
            raise StoreUnavailable(f"the session store failed: {exc}") from exc

    return wrapper
