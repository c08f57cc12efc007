"""A client that stops half-way through a request loses its connection; it holds nothing.

Without nginx in front, uvicorn alone waits forever for the rest of a request's headers or
body: 200 such connections were held 40 s, and as many as a client opens would be.
"""

import http.client
import socket
import time

import pytest

from service.api.read_timeouts import http_protocol
from service.api.read_timeouts_httptools import TimedHttpToolsProtocol
from tests.processes import ServiceProcess

TIMEOUTS = {"LSTM_HEADER_TIMEOUT_SECONDS": "1", "LSTM_BODY_TIMEOUT_SECONDS": "3"}
# Far longer than either timeout: a connection still open then was never going to be closed.
PATIENCE_SECONDS = 20
BODY = b'{"inputs": [[0, 0], [0, 1]]}'
HEAD = (
    b"POST /v1/models/seed-lstm/predict HTTP/1.1\r\nHost: t\r\n"
    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(BODY)
)


# Both of lstm-serve's HTTP implementations: its default (httptools, installed with
# uvicorn[standard]) and h11.
@pytest.fixture(scope="module", params=["auto", "h11"])
def server(request, redis_server, model_dir):
    with ServiceProcess(redis_server.url, model_dir, env=TIMEOUTS, http=request.param) as process:
        yield process


def connect(server: ServiceProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.settimeout(PATIENCE_SECONDS)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    try:
        leftover = sock.recv(65536)
        while leftover:  # an error answer may come first; then the end of the stream
            if not leftover.startswith(b"HTTP/1.1 4"):
                return False
            leftover = sock.recv(65536)
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    finally:
        sock.close()


@pytest.mark.parametrize(
    "sent",
    [b"", b"POST /v1/models/seed-lstm/predict HTTP/1.1\r\nHost: t\r\n", HEAD, HEAD + BODY[:5]],
    ids=["nothing", "half the headers", "headers, no body", "half the body"],
)
def test_a_request_left_half_sent_is_closed(server, sent):
    sock = connect(server)
    sock.sendall(sent)
    assert closed_by_server(sock)


def test_a_body_sent_slowly_but_steadily_is_answered(server):
    sock = connect(server)
    sock.sendall(HEAD)
    for byte in BODY:  # longer in total than the body timeout, never a long pause
        sock.sendall(bytes([byte]))
        time.sleep(0.15)
    answer = sock.recv(65536)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


def test_a_kept_alive_connection_serves_a_second_request(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=PATIENCE_SECONDS)
    headers = {"Content-Type": "application/json"}
    try:
        for _ in range(2):
            connection.request("POST", "/v1/models/seed-lstm/predict", BODY, headers)
            answer = connection.getresponse()
            assert answer.status == 200 and b"outputs" in answer.read()
    finally:
        connection.close()


def test_the_default_http_implementation_is_httptools_with_deadlines():
    assert http_protocol("auto") is TimedHttpToolsProtocol


def test_a_header_block_over_16_kib_is_refused(server):
    if server.http == "h11":
        pytest.skip("h11 limits only a header block still incomplete after a read")
    padded = HEAD.replace(b"Host: t\r\n", b"Host: t\r\nX-Padding: " + b"a" * 20_000 + b"\r\n")
    sock = connect(server)
    sock.sendall(padded + BODY)  # a whole request: answered 200 were it not refused
    assert sock.recv(65536).startswith(b"HTTP/1.1 400")
    assert closed_by_server(sock)
