"""HEAD answers as GET without a body; a 405 names the allowed methods, in each API's shape."""

import pytest

GET_ROUTES = ["/v1/models", "/v1/models/seed-lstm", "/healthz", "/readyz", "/v2",
              "/v2/models/seed-lstm", "/v2/health/live", "/v1/models/nope"]  # fmt: skip


@pytest.mark.parametrize("path", GET_ROUTES)
def test_head_is_the_get_without_its_body(client, path):
    got, head = client.get(path), client.head(path)
    assert head.status_code == got.status_code
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]


def test_a_405_under_v2_is_in_the_v2_shape_and_names_what_is_allowed(client):
    response = client.request("OPTIONS", "/v2/models/seed-lstm")
    assert response.status_code == 405
    assert {"GET", "HEAD"} <= set(response.headers["allow"].replace(" ", "").split(","))
    assert isinstance(response.json()["error"], str)
    native = client.put("/v1/models")
    assert native.status_code == 405 and native.json()["error"]["code"] == "method_not_allowed"
