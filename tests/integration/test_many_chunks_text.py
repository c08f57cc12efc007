"""`POST /v1/chunks`'s answer byte for byte: each item's text is the single route's answer
text for the same chunk sent in the same order to a twin session (its error body after the
item's `session_id`), whichever way the body was decoded (chunks of one shape, of many
shapes, or a body with a malformed chunk) and whichever way the answer was built (every
item applied, or some failed)."""

import json
from typing import Any

import msgspec
import numpy as np

from tests.streaming import new_session

SENSOR, GRU, LAST = "sensor-lstm", "gru-lstm-dense", "lstm-last-step"
FEATURES = {SENSOR: 16, GRU: 5, LAST: 4}


class Twins:
    """Sessions of one model: one fed by `/v1/chunks`, its twin by the single route."""

    def __init__(self, client: Any, model: str) -> None:
        self.model = model
        self.batched = new_session(client, model)
        self.single = new_session(client, model)
        self.steps = 0
        self.last: dict[str, Any] | None = None  # the last chunk sent with an offset


def expected_item(single: Any, batched_id: str, single_id: str) -> bytes:
    """The single route's answer text as an item of `/v1/chunks`'s answer."""
    text: bytes = single.content
    if single.status_code == 200:
        # The single route's text is these fields in this order, as msgspec writes a dict.
        answer = single.json()
        fields = ("session_id", "offset", "steps", "replayed", "outputs")
        assert text == msgspec.json.encode({name: answer[name] for name in fields})
        return text.replace(single_id.encode(), batched_id.encode())
    assert single.headers["content-type"] == "application/json"
    session = json.dumps(batched_id).encode()
    return (
        b'{"session_id":'
        + session
        + b","
        + text[1:].replace(single_id.encode(), batched_id.encode())
    )


def send_both(client: Any, sent: list[tuple[Twins | str, dict[str, Any]]], text: str) -> None:
    """`sent` as one `/v1/chunks` request (its body `text`), and chunk by chunk on the single
    route, in order; the answers' texts compared."""
    answer = client.post("/v1/chunks", content=text, headers={"content-type": "application/json"})
    assert answer.status_code == 200, answer.text
    parts = []
    for twins, fields in sent:
        if isinstance(twins, str):  # no such session: the same id on both routes
            single = client.post(f"/v1/sessions/{twins}/predict", json=fields)
            parts.append(expected_item(single, twins, twins))
            continue
        single = client.post(f"/v1/sessions/{twins.single}/predict", json=fields)
        parts.append(expected_item(single, twins.batched, twins.single))
    assert answer.content == b'{"results":[' + b",".join(parts) + b"]}"


def body_of(sent: list[tuple[Twins | str, dict[str, Any]]], **dumps: Any) -> str:
    return json.dumps(
        {
            "chunks": [
                {"session_id": twins if isinstance(twins, str) else twins.batched, **fields}
                for twins, fields in sent
            ]
        },
        **dumps,
    )


def fresh(twins: Twins, rng: np.random.Generator, steps: int, offset: bool) -> dict[str, Any]:
    inputs = rng.normal(size=(steps, FEATURES[twins.model])).astype(np.float32).tolist()
    fields: dict[str, Any] = {"inputs": inputs}
    if offset:
        fields["offset"] = twins.steps
        twins.last = fields
    else:
        twins.last = None
    twins.steps += steps
    return fields


def test_chunks_of_one_shape_every_one_applied(client):
    rng = np.random.default_rng(30)
    sensors = [Twins(client, SENSOR) for _ in range(8)]
    for round_ in range(3):
        sent: list[tuple[Twins | str, dict[str, Any]]] = [
            (twins, fresh(twins, rng, 1, offset=bool(i % 2))) for i, twins in enumerate(sensors)
        ]
        # Compact and spaced text: both decoded at once, as one shape.
        dumps = {"separators": (",", ":")} if round_ == 1 else {}
        send_both(client, sent, body_of(sent, **dumps))


def test_mixed_shapes_replays_conflicts_and_errors(client, settings):
    rng = np.random.default_rng(31)
    twins = [Twins(client, model) for model in (SENSOR, SENSOR, GRU, LAST, GRU)]
    for _ in range(4):
        sent: list[tuple[Twins | str, dict[str, Any]]] = []
        for pair in twins:
            steps = int(rng.choice([1, 1, 3]))
            sent.append((pair, fresh(pair, rng, steps, offset=bool(rng.random() < 0.6))))
        sent.append((twins[1], fresh(twins[1], rng, 2, offset=True)))  # one session twice
        sent.append((twins[0], {"inputs": [[0.5] * 16], "offset": 0}))  # stale: a conflict
        sent.append(("no-such-session", {"inputs": [[0.5] * 16]}))
        sent.append((twins[2], {"inputs": [[0.5] * 4]}))  # 4 features for a 5-feature model
        sent.append((twins[3], {"inputs": [[1e39, 0.0, 0.0, 0.0]]}))  # beyond float32
        sent.append((twins[4], {"inputs": [[0.0] * 5] * (settings.max_chunk_steps + 1)}))
        if twins[1].last is not None:  # a retry of the chunk just applied: replayed
            sent.append((twins[1], dict(twins[1].last)))
        send_both(client, sent, body_of(sent))


def test_a_body_with_a_malformed_chunk_is_answered_item_by_item(client):
    """A ragged or an empty chunk: the body is decoded the ordinary way,
    that chunk refused and the others applied."""
    rng = np.random.default_rng(32)
    twins = [Twins(client, SENSOR), Twins(client, GRU)]
    for malformed in ([[0.0] * 16, [0.0] * 15], []):
        sent: list[tuple[Twins | str, dict[str, Any]]] = [
            (twins[0], fresh(twins[0], rng, 1, offset=True)),
            (twins[1], {"inputs": [[0.0] * 5, [0.0] * 4]}),  # ragged
            (twins[1], fresh(twins[1], rng, 2, offset=False)),
            (twins[0], {"inputs": malformed}),
            (twins[0], fresh(twins[0], rng, 1, offset=False)),
        ]
        send_both(client, sent, body_of(sent))
