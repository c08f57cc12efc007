"""`POST /v1/chunks`: many sessions' chunks in one request, each with the single route's
guarantees. The reference is always the single route (or the stateless predict) on the
same inputs, never the batch route itself."""

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import redis

from service.core.many_chunks import ChunkColumns, predict_many
from service.core.sessions import SessionLimits, SessionService
from service.store.keys import session_key
from service.store.redis_store import RedisStateStore
from tests.apps import app_with
from tests.metrics import value
from tests.processes import ServiceProcess
from tests.racing import Ack, ack_of, async_client, in_acknowledged_order, post_chunk, random_chunks
from tests.streaming import new_session, predict, send_chunk

SENSOR, GRU, LAST = "sensor-lstm", "gru-lstm-dense", "lstm-last-step"
FEATURES = {SENSOR: 16, GRU: 5, LAST: 4}
SHARED_SESSIONS, BATCH_CLIENTS, BATCHES_PER_CLIENT = 6, 8, 3


def chunks(client: Any, items: list[dict[str, Any]], **kwargs: Any) -> list[dict[str, Any]]:
    response = client.post("/v1/chunks", json={"chunks": items}, **kwargs)
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    assert len(results) == len(items)
    for item, result in zip(items, results, strict=True):
        assert result["session_id"] == item["session_id"]
    return results


def item(session_id: str, inputs: np.ndarray, offset: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"session_id": session_id, "inputs": inputs.tolist()}
    if offset is not None:
        body["offset"] = offset
    return body


def steps_of(client: Any, session_id: str) -> int:
    response = client.get(f"/v1/sessions/{session_id}")
    assert response.status_code == 200, response.text
    steps: int = response.json()["steps"]
    return steps


def error_of(result: dict[str, Any], code: str) -> dict[str, Any]:
    assert set(result) == {"session_id", "error"}, result
    error: dict[str, Any] = result["error"]
    assert error["code"] == code, error
    assert error["message"]
    return error


def test_answers_are_those_of_single_route_calls_bit_for_bit(client):
    """Mixed models and chunk lengths, sessions repeated within a request: every answer
    equals what the single route answers for the same chunk in the same order."""
    rng = np.random.default_rng(10)
    models = [SENSOR, SENSOR, GRU, GRU, LAST, SENSOR]
    batched = [new_session(client, model) for model in models]
    single = [new_session(client, model) for model in models]
    positions = [0] * len(models)
    for _ in range(4):
        order = [int(i) for i in rng.integers(0, len(models), size=9)]  # repeats on purpose
        items, chunk_list = [], []
        for i in order:
            steps = int(rng.choice([1, 1, 3, 40]))  # 40: longer than the inline limit
            chunk = rng.normal(size=(steps, FEATURES[models[i]])).astype(np.float32)
            offset = positions[i] if rng.random() < 0.5 else None
            items.append(item(batched[i], chunk, offset))
            chunk_list.append((i, chunk, offset))
            positions[i] += steps

        results = chunks(client, items)

        for (i, chunk, offset), result in zip(chunk_list, results, strict=True):
            extra = {} if offset is None else {"offset": offset}
            expected = send_chunk(client, single[i], chunk, **extra)
            assert result == {**expected, "session_id": batched[i]}
    for i, session_id in enumerate(batched):
        assert steps_of(client, session_id) == positions[i] == steps_of(client, single[i])


def test_one_request_reads_at_most_once_writes_in_one_round_and_runs_each_model_once(client):
    rng = np.random.default_rng(11)
    sensors = [new_session(client, SENSOR) for _ in range(5)]
    grus = [new_session(client, GRU) for _ in range(3)]
    # As if other replicas had written these: this process keeps no record of them.
    for session_id in sensors[:2] + grus[:1]:
        client.app.state.sessions.recent.forget(("_", session_id))

    def counted(items: list[dict[str, Any]]) -> Any:
        before = client.get("/metrics").text
        chunks(client, items)
        after = client.get("/metrics").text
        return lambda name, **labels: value(after, name, **labels) - value(before, name, **labels)

    for round_ in range(2):
        items = [item(s, rng.normal(size=(1, 16)).astype(np.float32)) for s in sensors]
        items += [item(s, rng.normal(size=(1, 5)).astype(np.float32)) for s in grus]
        delta = counted(items)
        # The first request reads the three unknown sessions (one round); the second knows
        # every record from the first one's writes and reads none.
        reads = 1 if round_ == 0 else 0
        assert delta("lstm_redis_duration_seconds_count", operation="get_many") == reads
        assert delta("lstm_redis_duration_seconds_count", operation="compare_and_set_many") == 1
        assert delta("lstm_redis_duration_seconds_count", operation="get") == 0
        assert delta("lstm_redis_duration_seconds_count", operation="compare_and_set") == 0
        assert delta("lstm_runner_duration_seconds_count", model=SENSOR) == 1
        assert delta("lstm_runner_duration_seconds_count", model=GRU) == 1
        assert delta("lstm_timesteps_total", model=SENSOR) == 5
    assert [steps_of(client, s) for s in sensors + grus] == [2] * 8


def test_the_same_session_twice_applies_in_request_order(client):
    inputs = np.random.default_rng(12).normal(size=(7, 16)).astype(np.float32)
    full = predict(client, SENSOR, inputs)
    session_id = new_session(client, SENSOR)
    # A session with one chunk runs beside the first chunk of the other (one runner call)
    # and is written with its group; the session of several chunks is written whole.
    alone = new_session(client, SENSOR)

    results = chunks(
        client,
        [
            item(session_id, inputs[:2], offset=0),
            item(alone, inputs[:2]),
            item(session_id, inputs[2:5]),
            item(session_id, inputs[2:5], offset=2),  # a retry of the one before: replayed
            item(session_id, inputs[5:], offset=5),
        ],
    )

    assert np.array_equal(np.array(results.pop(1)["outputs"], np.float32), full[:2])
    assert [(r["offset"], r["steps"], r["replayed"]) for r in results] == [
        (0, 2, False),
        (2, 5, False),
        (2, 5, True),
        (5, 7, False),
    ]
    assert results[2]["outputs"] == results[1]["outputs"]
    outputs = np.concatenate([np.array(results[i]["outputs"], np.float32) for i in (0, 1, 3)])
    assert np.array_equal(outputs, full)
    assert steps_of(client, session_id) == 7
    # Both records as stored (no record kept by this process) continue the sequence.
    for sid in (session_id, alone):
        client.app.state.sessions.recent.forget(("_", sid))
    later = chunks(client, [item(alone, inputs[2:5]), item(session_id, inputs[:1], offset=7)])
    assert np.array_equal(np.array(later[0]["outputs"], np.float32), full[2:5])
    longer = np.concatenate([inputs, inputs[:1]])
    assert np.array_equal(
        np.array(later[1]["outputs"], np.float32), predict(client, SENSOR, longer)[7:]
    )


def test_failed_items_change_nothing_and_the_others_apply(client, settings):
    rng = np.random.default_rng(13)
    inputs = rng.normal(size=(6, 16)).astype(np.float32)
    full = predict(client, SENSOR, inputs)
    good, other = new_session(client, SENSOR), new_session(client, SENSOR)
    send_chunk(client, other, inputs[:2], offset=0)
    too_long = np.zeros((settings.max_chunk_steps + 1, 16), np.float32)

    results = chunks(
        client,
        [
            item("no-such-session", inputs[:1]),
            item(good, inputs[:3], offset=0),
            item(other, inputs[:1, :15]),  # 15 features for a 16-feature model
            item(other, inputs[:1], offset=7),  # stale
            item(other, too_long),
            item(good, inputs[3:], offset=3),  # after the failures: still applied in order
            {"session_id": other, "inputs": [[0.0] * 16, [0.0] * 15]},  # ragged
            item(other, inputs[2:4], offset=2),
        ],
    )

    error_of(results[0], "session_not_found")
    assert error_of(results[2], "invalid_input")["expected_features"] == 16
    assert error_of(results[3], "offset_conflict")["steps"] == 2
    assert error_of(results[4], "invalid_input")["max_steps"] == settings.max_chunk_steps
    assert np.array_equal(np.array(results[1]["outputs"], np.float32), full[:3])
    assert np.array_equal(np.array(results[5]["outputs"], np.float32), full[3:])
    assert error_of(results[6], "invalid_input")["timestep"] == 1
    assert np.array_equal(np.array(results[7]["outputs"], np.float32), full[2:4])
    assert steps_of(client, good) == 6 and steps_of(client, other) == 4
    assert client.get("/v1/sessions/no-such-session").status_code == 404


def test_errors_come_in_the_single_routes_order(client):
    """Values beyond float32 are refused only once the session is found, as the single
    route does; chunks of one shape share one conversion but not their errors."""
    session_id = new_session(client, SENSOR)
    huge = {"inputs": [[1e39] + [0.0] * 15]}
    single_missing = client.post("/v1/sessions/no-such-session/predict", json=huge)
    single_found = client.post(f"/v1/sessions/{session_id}/predict", json=huge)
    fine = np.ones((1, 16), np.float32)

    results = chunks(
        client,
        [
            {"session_id": "no-such-session", **huge},
            {"session_id": session_id, **huge},
            item(session_id, fine),
        ],
    )

    assert error_of(results[0], "session_not_found") == single_missing.json()["error"]
    assert error_of(results[1], "invalid_input") == single_found.json()["error"]
    assert results[2]["steps"] == 1 and steps_of(client, session_id) == 1


def test_a_request_whose_every_chunk_is_malformed_is_answered_item_by_item(client):
    session_id = new_session(client, SENSOR)
    ragged = {"session_id": session_id, "inputs": [[0.0] * 16, [0.0] * 3]}

    results = chunks(client, [ragged, ragged])

    assert [error_of(r, "invalid_input")["timestep"] for r in results] == [1, 1]
    assert steps_of(client, session_id) == 0


def test_a_retried_request_is_answered_again_and_applied_once(client):
    rng = np.random.default_rng(14)
    sessions = [new_session(client, SENSOR) for _ in range(3)]
    items = [item(s, rng.normal(size=(2, 16)).astype(np.float32), offset=0) for s in sessions]

    first = chunks(client, items)
    retry = chunks(client, items)

    for one, again in zip(first, retry, strict=True):
        assert again == {**one, "replayed": True}
    assert [steps_of(client, s) for s in sessions] == [2, 2, 2]


def test_each_item_sees_only_the_calling_keys_sessions(client, settings):
    keys = ("key-alpha-0123456789", "key-beta-0123456789")
    headers = [{"Authorization": f"Bearer {key}"} for key in keys]
    chunk = np.ones((1, 16), np.float32)
    with app_with(client, settings, api_keys=",".join(keys)) as secured:
        for h in headers:
            created = secured.post(
                f"/v1/models/{SENSOR}/sessions", json={"session_id": "shared-id"}, headers=h
            )
            assert created.status_code == 201, created.text
        own = secured.post(f"/v1/models/{SENSOR}/sessions", json={}, headers=headers[1])
        theirs = own.json()["session_id"]

        results = chunks(
            secured, [item("shared-id", chunk), item(theirs, chunk)], headers=headers[0]
        )

        assert results[0]["steps"] == 1
        error_of(results[1], "session_not_found")
        for h, steps in zip(headers, (1, 0), strict=True):
            assert secured.get("/v1/sessions/shared-id", headers=h).json()["steps"] == steps
        assert secured.get(f"/v1/sessions/{theirs}", headers=headers[1]).json()["steps"] == 0
        refused = secured.post("/v1/chunks", json={"chunks": [item("shared-id", chunk)]})
        assert refused.status_code == 401


def test_more_chunks_than_the_limit_is_refused_whole(client, settings):
    session_id = new_session(client, SENSOR)
    chunk = np.ones((1, 16), np.float32)
    with app_with(client, settings, max_chunks_per_request=3) as limited:
        assert len(chunks(limited, [item(session_id, chunk)] * 3)) == 3

        response = limited.post("/v1/chunks", json={"chunks": [item(session_id, chunk)] * 4})

        assert response.status_code == 422
        error = response.json()["error"]
        assert (error["code"], error["max_chunks"]) == ("invalid_input", 3)
    assert steps_of(client, session_id) == 3


@pytest.mark.parametrize(
    "body",
    [
        {"chunks": []},
        {"chunks": [{"session_id": "a b", "inputs": [[0.0] * 16]}]},
        {"chunks": [{"session_id": "x\n", "inputs": [[0.0] * 16]}]},
        {"chunks": [{"session_id": "x", "inputs": [[0.0] * 16], "offset": -1}]},
        {"chunks": [{"inputs": [[0.0] * 16]}]},
        {"chunk": []},
    ],
    ids=["empty", "bad-id", "id-with-newline", "negative-offset", "no-id", "unknown-field"],
)
def test_a_body_outside_the_schema_is_422_and_applies_nothing(client, body):
    session_id = new_session(client, SENSOR)
    body = {**body}
    if body.get("chunks"):
        body["chunks"] = [*body["chunks"], item(session_id, np.ones((1, 16), np.float32))]

    response = client.post("/v1/chunks", json=body)

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_input"
    assert steps_of(client, session_id) == 0


def test_openapi_documents_the_route_with_examples(client):
    operation = client.get("/openapi.json").json()["paths"]["/v1/chunks"]["post"]
    schema = client.get("/openapi.json").json()["components"]["schemas"]["ChunksRequest"]
    assert schema["examples"][0]["chunks"]
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/ChunksResponse"}
    assert "422" in operation["responses"]


@pytest.fixture(scope="module")
def served(redis_server, model_dir) -> Iterator[ServiceProcess]:
    with ServiceProcess(redis_server.url, model_dir) as process:
        yield process


def test_racing_requests_on_shared_sessions_apply_every_chunk_once(served):
    """Batch requests and single-route appends race on the same sessions in a real server
    (the batch route takes no writer turns, so its compare-and-sets lose races and retry):
    each session's acknowledged chunks tile its steps with no gap or overlap, and their
    outputs are those of the whole sequence."""
    rng = np.random.default_rng(15)
    with httpx.Client(base_url=served.url, timeout=60) as http:
        sessions = [new_session(http, SENSOR) for _ in range(SHARED_SESSIONS)]
    requests = [
        [(s, c) for s in rng.permutation(sessions) for c in random_chunks(rng, 1, 16)]
        for _ in range(BATCH_CLIENTS * BATCHES_PER_CLIENT)
    ]
    appends = [random_chunks(rng, 3, 16) for _ in sessions]

    async def race() -> dict[str, list[Ack]]:
        acks: dict[str, list[Ack]] = {s: [] for s in sessions}

        async def batch_client(client: httpx.AsyncClient, plan: list[Any]) -> None:
            for request in plan:
                body = {"chunks": [item(s, c) for s, c in request]}
                response = await client.post(f"{served.url}/v1/chunks", json=body)
                assert response.status_code == 200, response.text
                for (s, c), result in zip(request, response.json()["results"], strict=True):
                    assert "error" not in result, result
                    acks[s].append(
                        Ack(
                            c,
                            result["offset"],
                            result["steps"],
                            result["replayed"],
                            result["outputs"],
                        )
                    )

        async def single_client(client: httpx.AsyncClient, session_id: str, plan: list) -> None:
            for chunk in plan:
                acks[session_id].append(
                    ack_of(chunk, await post_chunk(client, served.url, session_id, chunk))
                )

        async with async_client() as client:
            await asyncio.gather(
                *(batch_client(client, requests[i::BATCH_CLIENTS]) for i in range(BATCH_CLIENTS)),
                *(
                    single_client(client, s, plan)
                    for s, plan in zip(sessions, appends, strict=True)
                ),
            )
        return acks

    acks = asyncio.run(race())

    with httpx.Client(base_url=served.url, timeout=60) as http:
        for session_id, session_acks in acks.items():
            ordered = in_acknowledged_order(session_acks)
            assert len(ordered) == BATCH_CLIENTS * BATCHES_PER_CLIENT + 3
            steps = http.get(f"/v1/sessions/{session_id}").json()["steps"]
            assert steps == ordered[-1].steps
            full = predict(http, SENSOR, np.concatenate([ack.inputs for ack in ordered]))
            for ack in ordered:
                assert np.array_equal(
                    np.array(ack.outputs, np.float32), full[ack.offset : ack.steps]
                )


class InterleavingStore(RedisStateStore):
    """A real Redis store that lets another writer in between this request's read and its
    compare-and-sets, once: the race a second replica makes."""

    def __init__(self, client: Any, interloper: Any) -> None:
        super().__init__(client)
        self.interloper = interloper
        self.rounds = 0

    async def compare_and_set_many(self, namespace: str, writes: list[Any]) -> list[Any]:
        self.rounds += 1
        if self.rounds == 1:
            await self.interloper()
        return await super().compare_and_set_many(namespace, writes)


def test_a_lost_race_is_read_again_and_both_writers_apply_once(client, redis_server):
    models = client.app.state.sessions.models
    inputs = np.random.default_rng(16).normal(size=(5, 16)).astype(np.float32)
    full = predict(client, SENSOR, inputs)

    async def scenario() -> tuple[list[Any], Any, int]:
        plain = RedisStateStore.from_url(redis_server.url, 2.0)
        other = SessionService(plain, models, SessionLimits())
        session_id, _ = await other.create("_", SENSOR)
        calm, _ = await other.create("_", SENSOR)

        async def interloper() -> Any:
            return await other.predict("_", session_id, inputs[:2])

        store = InterleavingStore(plain.client, interloper)
        ours = SessionService(store, models, SessionLimits())
        chunks = ChunkColumns([session_id, calm], [inputs[2:], inputs[:1]], [None] * 2, [None] * 2)
        try:
            outcomes = await predict_many(ours, "_", chunks)
            record = await other.get("_", session_id)
        finally:
            await store.close()  # its own connections, and the client it shares with plain
        return outcomes, record, store.rounds

    outcomes, record, rounds = asyncio.run(scenario())

    assert rounds == 2  # the first round lost on one session and was done again
    raced, calm = outcomes
    assert (raced.offset, raced.record.steps) == (2, 5)
    assert np.array_equal(raced.outputs, full[2:])
    assert np.array_equal(calm.outputs, full[:1])
    assert record.steps == 5


def test_a_record_kept_from_an_earlier_request_that_went_stale_is_read_again(client, redis_server):
    """This process keeps each session's last record; another replica writes meanwhile. The
    kept record may only start a chunk, never decide one: a plain append loses its
    compare-and-set and is done again from a read; an offset, a retry or a replay the kept
    record does not know (or wrongly knows) is decided on the stored record."""
    models = client.app.state.sessions.models
    inputs = np.random.default_rng(17).normal(size=(4, 16)).astype(np.float32)
    full = predict(client, SENSOR, inputs)
    appended, positioned, retried, outrun = (new_session(client, SENSOR) for _ in range(4))
    for session_id in (appended, positioned, retried, outrun):
        chunks(client, [item(session_id, inputs[:1])])  # this process keeps steps 1
    chunks(client, [item(outrun, inputs[1:3], offset=1)])  # and steps 3 of this one

    async def other_replica() -> None:
        store = RedisStateStore.from_url(redis_server.url, 2.0)
        other = SessionService(store, models, SessionLimits())
        try:
            for session_id in (appended, positioned, retried):
                await other.predict("_", session_id, inputs[1:3], offset=1)
            await other.predict("_", outrun, inputs[3:4], offset=3)
        finally:
            await store.close()

    asyncio.run(other_replica())
    results = chunks(
        client,
        [
            item(appended, inputs[3:4]),
            item(positioned, inputs[3:4], offset=3),
            item(retried, inputs[1:3], offset=1),
            item(outrun, inputs[1:3], offset=1),  # the kept record would replay it
        ],
    )

    assert [r["offset"] for r in results[:3]] == [3, 3, 1]
    assert [r["replayed"] for r in results[:3]] == [False, False, True]
    assert np.array_equal(np.array(results[0]["outputs"], np.float32), full[3:4])
    assert np.array_equal(np.array(results[1]["outputs"], np.float32), full[3:4])
    assert np.array_equal(np.array(results[2]["outputs"], np.float32), full[1:3])
    assert error_of(results[3], "offset_conflict")["steps"] == 4
    assert [steps_of(client, s) for s in (appended, positioned, retried, outrun)] == [4, 4, 3, 4]


def test_kept_records_that_went_stale_in_a_plain_request_are_read_again(client, redis_server):
    """The usual request (every session once, plain appends or the next offset, one model
    and shape) starts from the records this process kept, all at once. Another replica
    appends to some sessions and deletes one meanwhile: those lose their compare-and-set
    and are done again from a read (or refused as gone); the others apply as kept."""
    models = client.app.state.sessions.models
    inputs = np.random.default_rng(19).normal(size=(5, 16)).astype(np.float32)
    full = predict(client, SENSOR, inputs)
    sessions = [new_session(client, SENSOR) for _ in range(6)]
    chunks(client, [item(s, inputs[:1]) for s in sessions])  # kept here at steps 1
    raced, deleted = sessions[1:4:2], sessions[4]

    async def other_replica() -> None:
        store = RedisStateStore.from_url(redis_server.url, 2.0)
        other = SessionService(store, models, SessionLimits())
        try:
            for session_id in raced:
                await other.predict("_", session_id, inputs[1:3], offset=1)
            await other.delete("_", deleted)
        finally:
            await store.close()

    asyncio.run(other_replica())
    results = chunks(
        client, [item(s, inputs[3:4] if s in raced else inputs[1:2]) for s in sessions]
    )

    for session_id, result in zip(sessions, results, strict=True):
        if session_id == deleted:
            error_of(result, "session_not_found")
            continue
        at = 3 if session_id in raced else 1
        assert (result["offset"], result["steps"], result["replayed"]) == (at, at + 1, False)
        assert np.array_equal(np.array(result["outputs"], np.float32), full[at : at + 1])
    # The records kept now are those stored: a plain append continues each one.
    later = chunks(client, [item(s, inputs[4:5]) for s in sessions if s != deleted])
    for session_id, result in zip([s for s in sessions if s != deleted], later, strict=True):
        at = 4 if session_id in raced else 2
        assert result["offset"] == at
        if session_id in raced:
            assert np.array_equal(np.array(result["outputs"], np.float32), full[4:5])


def test_the_stored_records_are_whole_and_replay_from_the_store(client, redis_server):
    """A chunk's write sends its record without the state before the chunk, which the
    replaced record holds (the store appends it): the stored bytes are still the whole
    record, and a retry decided on them (no kept record) gets its first answer again."""
    inputs = np.random.default_rng(18).normal(size=(3, 16)).astype(np.float32)
    once, twice = new_session(client, SENSOR), new_session(client, SENSOR)
    chunks(client, [item(once, inputs[:1]), item(twice, inputs[:1])])
    # `twice` twice in one request: its record is written whole, as before.
    first = chunks(
        client, [item(once, inputs[1:3]), item(twice, inputs[1:2]), item(twice, inputs[2:3])]
    )
    stored = redis.Redis.from_url(redis_server.url)
    recent = client.app.state.sessions.recent
    for session_id in (once, twice):
        kept = recent.get(("_", session_id))
        assert stored.get(session_key("_", session_id)) == kept.encode()
        recent.forget(("_", session_id))

    again = chunks(client, [item(once, inputs[1:3], offset=1), item(twice, inputs[2:3], offset=2)])

    assert [r["replayed"] for r in again] == [True, True]
    assert again[0]["outputs"] == first[0]["outputs"]
    assert again[1]["outputs"] == first[2]["outputs"]
