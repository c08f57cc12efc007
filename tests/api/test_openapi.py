"""The OpenAPI contract: every native route documents an example request and response."""

from typing import Any

import pytest

NATIVE_PREFIXES = ("/v1/", "/healthz", "/readyz")


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return spec["components"]["schemas"][name]
    return schema


def _has_example(spec: dict[str, Any], content: dict[str, Any]) -> bool:
    media = content.get("application/json", {})
    if "example" in media or "examples" in media:
        return True
    schema = _resolve(spec, media.get("schema", {}))
    if "examples" in schema or "example" in schema:
        return True
    properties = schema.get("properties", {})
    return bool(properties) and all("examples" in p or "example" in p for p in properties.values())


def _operations(spec: dict[str, Any]):
    for path, methods in spec["paths"].items():
        if path.startswith(NATIVE_PREFIXES):
            for method, operation in methods.items():
                yield f"{method.upper()} {path}", operation


@pytest.fixture(scope="module")
def spec(client) -> dict[str, Any]:
    return client.get("/openapi.json").json()


def test_every_native_route_has_request_and_response_examples(spec):
    missing = []
    for name, operation in _operations(spec):
        body = operation.get("requestBody")
        if body and not _has_example(spec, body["content"]):
            missing.append(f"{name} request")
        for status, response in operation["responses"].items():
            success = status.startswith("2") and status != "204"
            if success and not _has_example(spec, response.get("content", {})):
                missing.append(f"{name} {status}")
    assert not missing, missing


def test_every_error_response_names_its_codes_with_examples(spec):
    for name, operation in _operations(spec):
        for response in operation["responses"].values():
            media = response.get("content", {}).get("application/json", {})
            if media.get("schema", {}).get("$ref", "").endswith("/ErrorBody"):
                examples = media["examples"]
                for code, example in examples.items():
                    assert example["value"]["error"]["code"] == code, name


def test_session_routes_are_documented(spec):
    paths = spec["paths"]
    assert set(paths["/v1/sessions/{session_id}"]) == {"get", "delete"}
    assert "post" in paths["/v1/sessions/{session_id}/predict"]
    assert "post" in paths["/v1/sessions/{session_id}/reset"]
    assert "post" in paths["/v1/models/{model}/sessions"]
