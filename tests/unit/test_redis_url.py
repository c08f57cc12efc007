import pytest

from service.store.redis_store import parse_redis_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", ("redis://127.0.0.1:6379/0", False)),
        ("rediss://cache:6380", ("rediss://cache:6380", False)),
        ("redis+cluster://10.0.0.5:7000", ("redis://10.0.0.5:7000", True)),
        ("REDIS+CLUSTER://node:7000", ("redis://node:7000", True)),
        ("rediss+cluster://user:pw@node:7000", ("rediss://user:pw@node:7000", True)),
        ("unix:///run/redis.sock", ("unix:///run/redis.sock", False)),
    ],
)
def test_a_cluster_is_named_by_its_scheme(url, expected):
    assert parse_redis_url(url) == expected
