"""Malformed /v2 requests a hostile client sends: 400 in the V2 shape, never a 500."""

import gzip
import json

import numpy as np
import pytest

from tests.api.test_v2 import binary_request, error_of, infer, json_outputs, json_request
from tests.streaming import predict

DEEP = b"[" * 100_000 + b"]" * 100_000
DEEP_IN_DATA = json.dumps(json_request(np.zeros((1, 1, 2), np.float32))).replace(
    "[0.0, 0.0]", "[" * 5000 + "0" + "]" * 5000
)


def test_deeply_nested_json_is_400(client):
    assert "nested" in error_of(infer(client, DEEP), 400)
    assert "nested" in error_of(infer(client, b'{"inputs": ' + DEEP + b"}"), 400)


def test_deeply_nested_gzipped_json_is_400(client):
    response = infer(client, gzip.compress(DEEP), headers={"Content-Encoding": "gzip"})
    assert "nested" in error_of(response, 400)


def test_deeply_nested_tensor_data_is_400(client):
    error_of(infer(client, DEEP_IN_DATA.encode()), 400)


@pytest.mark.parametrize(
    "length",
    ["\u00b2", "\u00b9", "1" * 4301, "-1", " ", "+5", "0x10"],
    ids=["superscript two", "superscript one", "4301 digits", "negative", "blank", "plus", "hex"],
)
def test_a_header_length_that_is_not_plain_digits_is_400(client, length):
    body, _ = binary_request(json_request(np.zeros((1, 1, 2), np.float32)), b"")
    # Header bytes reach the server as Latin-1: b"\xb2" is read as "\u00b2", a digit to isdigit().
    header = length.encode("latin-1")
    response = infer(client, body, headers={"Inference-Header-Content-Length": header})
    assert "Inference-Header-Content-Length" in error_of(response, 400)


def gzipped_request() -> tuple[bytes, np.ndarray]:
    x = np.random.default_rng(4).normal(size=(1, 3, 2)).astype(np.float32)
    return gzip.compress(json.dumps(json_request(x)).encode()), x


def test_a_whole_gzip_stream_is_accepted(client):
    packed, x = gzipped_request()
    outputs = json_outputs(infer(client, packed, headers={"Content-Encoding": "gzip"}))
    assert outputs[0].tobytes() == predict(client, "seed-lstm", x[0]).tobytes()


def test_a_gzip_stream_without_its_crc_trailer_is_400(client):
    packed, _ = gzipped_request()
    response = infer(client, packed[:-8], headers={"Content-Encoding": "gzip"})
    assert "gzip" in error_of(response, 400)


def test_bytes_after_the_gzip_stream_are_400(client):
    packed, _ = gzipped_request()
    response = infer(client, packed + b"garbage", headers={"Content-Encoding": "gzip"})
    assert "gzip" in error_of(response, 400)


def test_a_gzip_stream_with_a_wrong_crc_is_400(client):
    packed, _ = gzipped_request()
    broken = packed[:-8] + bytes([packed[-8] ^ 1]) + packed[-7:]
    error_of(infer(client, broken, headers={"Content-Encoding": "gzip"}), 400)
