"""Another key's short chunks while one key floods the service with long work.

    python -m bench.fairness [--flooders 6] [--steps 100000] [--samples 300]

Starts Redis and one `lstm-serve` with two API keys. Key B streams 1-step (and 40-step)
sensor-lstm chunks one after another: first alone (idle), then while key A keeps
`--flooders` stateless predicts of `--steps` timesteps in flight (a 429 is counted and the
flooder tries again after its Retry-After). The flood's client runs in a process of its
own (`--flood-nice` lowers its CPU priority), so that its work does not delay the measuring
client's event loop. Prints p50/p99 of B's chunks in both phases and
their ratio, A's answers by status, the worker's peak RSS, and the event loop's lag in both
phases (`lag`: `lstm_event_loop_lag_seconds`, probed every 2 ms here; `own_lag`: the same
less the loop thread's wait for a CPU, `lstm_event_loop_own_lag_seconds`): p99 interpolated
in the buckets, max as the bucket bound it stays under. `own_lag` depends on what the
service does, little on what else the machine runs: it is the one to compare on a shared
machine.
Extra `LSTM_*` settings are taken from the environment (e.g. `LSTM_MAX_HEAVY_PER_KEY=6` to
see the service without its per-key bound).
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from bench.systems import Server, service
from service.store.embedded import EmbeddedRedis

KEY_A, KEY_B = "flooding-key-a", "patient-key-b"
MODEL, FEATURES = "sensor-lstm", 16
LOOP_LAG = "lstm_event_loop_lag_seconds"
OWN_LAG = "lstm_event_loop_own_lag_seconds"  # less the loop thread's wait for a CPU
LAG_PROBE_MS = 2


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.array(samples) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


Buckets = dict[str, dict[float, float]]


async def lag_buckets(client: httpx.AsyncClient) -> Buckets:
    """The loop-lag histograms now: cumulative count per bucket bound, by name."""
    text = (await client.get("/metrics")).text
    return {
        family.name: {
            float(sample.labels["le"]): sample.value
            for sample in family.samples
            if sample.name == family.name + "_bucket"
        }
        for family in text_string_to_metric_families(text)
        if family.name in (LOOP_LAG, OWN_LAG)
    }


def lag_summaries(before: Buckets, after: Buckets) -> dict[str, dict[str, float]]:
    names = {LOOP_LAG: "lag", OWN_LAG: "own_lag"}
    return {names[name]: lag_summary(before[name], after[name]) for name in after}


def lag_summary(before: dict[float, float], after: dict[float, float]) -> dict[str, float]:
    """p99 (linear within its bucket, as Prometheus' histogram_quantile) and the bound the
    largest lag stays under, of the lags probed between two scrapes."""
    bounds = sorted(after)
    cumulative = [after[bound] - before.get(bound, 0.0) for bound in bounds]
    total = cumulative[-1]
    if not total:
        return {"probes": 0}
    rank = 0.99 * total
    index = next(i for i, count in enumerate(cumulative) if count >= rank)
    lower = bounds[index - 1] if index else 0.0
    below = cumulative[index - 1] if index else 0.0
    upper = bounds[index] if bounds[index] != float("inf") else lower
    within = cumulative[index] - below
    p99 = lower + (upper - lower) * ((rank - below) / within if within else 1.0)
    largest = next(bound for bound, count in zip(bounds, cumulative, strict=True) if count >= total)
    return {"probes": int(total), "p99_ms": p99 * 1000, "max_under_ms": largest * 1000}


async def short_chunks(client: httpx.AsyncClient, steps: int, count: int) -> list[float]:
    created = await client.post(f"/v1/models/{MODEL}/sessions", headers=bearer(KEY_B))
    session_id = created.json()["session_id"]
    body = json.dumps({"inputs": np.full((steps, FEATURES), 0.1).tolist()})
    headers = {**bearer(KEY_B), "content-type": "application/json"}
    took = []
    for _ in range(count):
        began = time.perf_counter()
        answer = await client.post(
            f"/v1/sessions/{session_id}/predict", content=body, headers=headers
        )
        took.append(time.perf_counter() - began)
        if answer.status_code != 200:
            raise RuntimeError(f"a short chunk got {answer.status_code}: {answer.text[:200]}")
    return took


def v2_binary(steps: int) -> tuple[bytes, dict[str, str]]:
    """A V2 request with binary tensor data: no JSON to parse, only timesteps to run."""
    tensor = {
        "name": "inputs",
        "datatype": "FP32",
        "shape": [1, steps, FEATURES],
        "parameters": {"binary_data_size": steps * FEATURES * 4},
    }
    header = json.dumps({"inputs": [tensor]}).encode()
    raw = np.full((steps, FEATURES), 0.1, np.float32).tobytes()
    return header + raw, {"Inference-Header-Content-Length": str(len(header))}


async def flood(
    client: httpx.AsyncClient,
    steps: int,
    statuses: Counter[int],
    stop: asyncio.Event,
    binary: bool,
) -> None:
    if binary:
        body, extra = v2_binary(steps)
        path = f"/v2/models/{MODEL}/infer"
    else:
        body = json.dumps({"inputs": np.full((steps, FEATURES), 0.1).tolist()}).encode()
        extra, path = {}, f"/v1/models/{MODEL}/predict"
    headers = {**bearer(KEY_A), "content-type": "application/json", **extra}
    while not stop.is_set():
        answer = await client.post(path, content=body, headers=headers)
        statuses[answer.status_code] += 1
        if answer.status_code == 429:
            await asyncio.sleep(float(answer.headers.get("retry-after", "1")))


def flood_process(
    url: str, flooders: int, steps: int, binary: bool, nice: int, stop: Any, out: Any
) -> None:
    """The flood, in a process of its own: its client's work (sending megabytes, reading the
    answers) must not delay the measuring client's loop, as a client on another machine
    would not."""
    if nice:
        os.nice(nice)

    async def run() -> Counter[int]:
        statuses: Counter[int] = Counter()
        done = asyncio.Event()
        limits = httpx.Limits(max_connections=None)
        async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
            tasks = [
                asyncio.create_task(flood(client, steps, statuses, done, binary))
                for _ in range(flooders)
            ]
            while not stop.is_set():
                await asyncio.sleep(0.05)
            done.set()
            await asyncio.gather(*tasks)
        return statuses

    out.put(dict(asyncio.run(run())))


async def measure(
    url: str, flooders: int, steps: int, samples: int, binary: bool, nice: int
) -> dict[str, object]:
    context = multiprocessing.get_context("spawn")
    stop, out = context.Event(), context.Queue()
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        await short_chunks(client, 1, 20)  # warm up
        lags = [await lag_buckets(client)]
        idle = {n: percentiles(await short_chunks(client, n, samples)) for n in (1, 40)}
        lags.append(await lag_buckets(client))
        flooding = context.Process(
            target=flood_process, args=(url, flooders, steps, binary, nice, stop, out)
        )
        flooding.start()
        await asyncio.sleep(5)  # the child started and the flood under way
        lags.append(await lag_buckets(client))
        loaded = {n: percentiles(await short_chunks(client, n, samples)) for n in (1, 40)}
        lags.append(await lag_buckets(client))
        stop.set()
        statuses = await asyncio.to_thread(out.get)
        flooding.join()
    return {
        "idle": idle,
        "flood": loaded,
        "p99_ratio_1_step": loaded[1]["p99_ms"] / idle[1]["p99_ms"],
        "loop_lag": {"idle": lag_summaries(*lags[:2]), "flood": lag_summaries(*lags[2:])},
        "flood_statuses": statuses,
        "flood_client_nice": nice,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flooders", type=int, default=6)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--log", type=Path, help="keep the server's log here")
    parser.add_argument(
        "--flood-nice",
        type=int,
        default=0,
        help="niceness of the flooding client's process (it shares this machine's CPUs)",
    )
    parser.add_argument(
        "--binary-v2", action="store_true", help="flood with V2 binary tensors, not JSON"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        redis = EmbeddedRedis(Path(tmp) / "redis").start()
        system = service(micro_batch=True)
        system.env["LSTM_API_KEYS"] = f"{KEY_A},{KEY_B}"
        system.env["LSTM_LOOP_LAG_PROBE_MS"] = os.environ.get(
            "LSTM_LOOP_LAG_PROBE_MS", str(LAG_PROBE_MS)
        )
        try:
            with Server(system, redis.url, 1, args.log or Path(tmp) / "server.log") as server:
                result = asyncio.run(
                    measure(
                        server.url,
                        args.flooders,
                        args.steps,
                        args.samples,
                        args.binary_v2,
                        args.flood_nice,
                    )
                )
                result["memory"] = server.memory_mb()
        finally:
            redis.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
