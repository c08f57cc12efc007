"""Benchmark results as ratios, markdown tables, files and a plot."""

import json
import math
import sys
from pathlib import Path
from typing import Any

SYSTEMS = ("service", "service-no-batch", "floor", "naive", "pytriton")
SHORT = {
    "service": "lstm-stream",
    "service-no-batch": "lstm-stream, no batching",
    "floor": "floor",
    "naive": "naive Keras",
    "pytriton": "PyTriton",
}
MISSING = "n/a"


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def progress(system: str, what: str, result: dict[str, Any]) -> None:
    note(
        f"  {system:17} {what:32} {result['throughput']:9.1f} req/s  "
        f"p50 {result['p50_ms']:8.2f} ms  p99 {result['p99_ms']:8.2f} ms  "
        f"cpu {1000 * result['server_cpu_ms_per_request']:7.0f} us/req  ({result['requests']} req)"
    )


def _sweep(results: dict[str, Any], system: str) -> dict[int, dict[str, Any]]:
    found = results["systems"].get(system, {}).get("sweep", [])
    return {row["concurrency"]: row for row in found}


def _ratio(a: float | None, b: float | None) -> float:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return float("nan")
    return a / b


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """Throughput ratios at each concurrency, and the issue's targets with pass/miss."""
    service, floor = _sweep(results, "service"), _sweep(results, "floor")
    naive, no_batch = _sweep(results, "naive"), _sweep(results, "service-no-batch")
    peer = _sweep(results, "pytriton")

    def throughput(rows: dict[int, dict[str, Any]], c: int) -> float | None:
        return rows[c]["throughput"] if c in rows else None

    by_concurrency = {
        str(c): {
            "vs_floor": _ratio(throughput(service, c), throughput(floor, c)),
            "vs_naive": _ratio(throughput(service, c), throughput(naive, c)),
            "vs_pytriton": _ratio(throughput(service, c), throughput(peer, c)),
            "batching_gain": _ratio(throughput(service, c), throughput(no_batch, c)),
            "no_batch_vs_floor": _ratio(throughput(no_batch, c), throughput(floor, c)),
        }
        for c in sorted(service)
    }
    c = max(results["sizes"]["concurrency"])
    top = by_concurrency.get(str(c), {})
    many = results["systems"].get("service", {}).get("many")
    many_vs_single = _ratio(many["chunks_per_second"] if many else None, throughput(service, c))
    raw = results["raw_state_bytes"]
    value_bytes = results["systems"].get("service", {}).get("redis", {}).get("value_bytes")
    tail = service.get(c, {})
    targets = [
        _target(
            f"throughput vs floor, 1-step chunks, {c} sessions", top.get("vs_floor"), ">=", 0.8
        ),
        _target(f"throughput vs naive, 1-step chunks, {c} sessions", top.get("vs_naive"), ">=", 40),
        _target(
            f"throughput vs PyTriton, 1-step chunks, {c} sessions",
            top.get("vs_pytriton"),
            ">=",
            1.0,
        ),
        _target(
            f"p99 / p50, 1-step chunks, {c} sessions",
            _ratio(tail.get("p99_ms"), tail.get("p50_ms")),
            "<=",
            3.0,
        ),
        # Issue 15: a record holds the state and the state before the last chunk (replays
        # are recomputed from it) plus a small header, whatever the chunk length.
        _target("Redis value bytes per session", value_bytes, "<=", 2 * raw + 256),
        _target(
            f"session-chunks/s, /v1/chunks vs the single route at {c} sessions",
            many_vs_single,
            ">=",
            10.0,
        ),
        *_long_chunk_targets(results),
    ]
    return {"by_concurrency": by_concurrency, "many_vs_single": many_vs_single, "targets": targets}


def _steps_per_second(entry: dict[str, Any] | None) -> float | None:
    return entry.get("steps_per_second") if entry else None


def _long_chunk_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 9: long chunks and long stateless predicts against the naive baseline."""
    systems = results["systems"]
    service, naive = systems.get("service", {}), systems.get("naive", {})
    if not results["sizes"]["chunk_steps"]:  # --sweep-only
        return []
    steps = max(results["sizes"]["chunk_steps"])

    def chunk(system: dict[str, Any]) -> dict[str, Any] | None:
        return next((r for r in system.get("chunks", []) if r["steps"] == steps), None)

    naive_chunk = _steps_per_second(chunk(naive))
    stateless_steps = results["sizes"]["stateless_steps"]
    return [
        _target(
            f"steps/s vs naive, {steps}-step JSON chunks",
            _ratio(_steps_per_second(chunk(service)), naive_chunk),
            ">=",
            15,
        ),
        _target(
            f"steps/s vs naive, {steps}-step binary chunks",
            _ratio(_steps_per_second(service.get("binary_chunks")), naive_chunk),
            ">=",
            25,
        ),
        _target(
            f"steps/s vs naive model.predict, stateless {stateless_steps} steps",
            _ratio(
                _steps_per_second(service.get("stateless")),
                _steps_per_second(naive.get("stateless")),
            ),
            ">=",
            15,
        ),
    ]


def _target(name: str, value: float | None, op: str, bound: float) -> dict[str, Any]:
    value = float("nan") if value is None else float(value)
    met = (value >= bound) if op == ">=" else (value <= bound)
    return {"name": name, "value": value, "op": op, "bound": bound, "met": bool(met)}


def _num(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def tables(results: dict[str, Any]) -> str:
    present = [s for s in SYSTEMS if s in results["systems"]]
    systems = results["systems"]
    parts = []
    by_c = results["ratios"]["by_concurrency"]

    rows = []
    for c in results["sizes"]["concurrency"]:
        row = [str(c)]
        for s in present:
            r = _sweep(results, s).get(c)
            row.append(
                MISSING
                if r is None
                else f"{_num(r['throughput'], 0)} · {_num(r['p50_ms'], 2)} / {_num(r['p99_ms'], 2)}"
            )
        ratios_c = by_c.get(str(c), {})
        row += [
            _num(ratios_c.get("vs_floor"), 2),
            _num(ratios_c.get("vs_naive"), 0),
            _num(ratios_c.get("vs_pytriton"), 2),
            _num(ratios_c.get("batching_gain"), 2),
        ]
        rows.append(row)
    ratio_names = ["vs floor", "vs naive", "vs PyTriton", "batching gain"]
    parts.append(
        "**1-step chunks** (req/s · p50 / p99 ms), one session per concurrent client\n\n"
        + _table(["sessions", *(SHORT[s] for s in present), *ratio_names], rows)
    )

    rows = []
    for c in results["sizes"]["concurrency"]:
        row = [str(c)]
        for s in present:
            r = _sweep(results, s).get(c)
            row.append(MISSING if r is None else _num(1000 * r["server_cpu_ms_per_request"], 0))
        rows.append(row)
    parts.append(
        "**Server CPU per 1-step chunk** (µs, all workers; steadier than req/s on a busy "
        "machine)\n\n" + _table(["sessions", *(SHORT[s] for s in present)], rows)
    )

    grpc = systems.get("service", {}).get("grpc_stream")
    if grpc is not None:
        http = _sweep(results, "service").get(grpc["concurrency"], {})
        rows = [
            [
                name,
                _num(r.get("throughput"), 0),
                f"{_num(r.get('p50_ms'), 2)} / {_num(r.get('p99_ms'), 2)}",
                _num(1000 * r["server_cpu_ms_per_request"], 0) if r else MISSING,
            ]
            for name, r in (("HTTP `/v1` (JSON)", http), ("gRPC stream (raw FP32)", grpc))
        ]
        rows.append(["gRPC / HTTP", _num(_ratio(grpc["throughput"], http.get("throughput")), 2)])
        rows[-1] += ["", ""]
        parts.append(
            f"**1-step chunks over HTTP and over gRPC streams**, lstm-stream, "
            f"{grpc['concurrency']} sequences, same run\n\n"
            + _table(["transport", "req/s", "p50 / p99 ms", "server CPU µs/req"], rows)
        )

    service_out = systems.get("service", {})
    sweep = service_out.get("many_sweep") or (
        [service_out["many"]] if "many" in service_out else []
    )
    if sweep:
        largest = max(results["sizes"]["concurrency"])
        single = _sweep(results, "service").get(largest, {}).get("throughput")
        rows = []
        for many in sweep:
            cpu_us = 1000 * many["server_cpu_ms_per_request"] / many["sessions_per_request"]
            rows.append(
                [
                    f"{many['concurrency']} x {many['sessions_per_request']}",
                    _num(many["chunks_per_second"], 0),
                    f"{_num(many['p50_ms'], 2)} / {_num(many['p99_ms'], 2)}",
                    _num(cpu_us, 0),
                    _num(_ratio(many["chunks_per_second"], single), 1),
                ]
            )
        parts.append(
            "**Many sessions per request** (`POST /v1/chunks`, 1-step chunks; concurrent "
            "requests x sessions per request; the target takes the best row)\n\n"
            + _table(
                [
                    "requests x sessions",
                    "session-chunks/s",
                    "p50 / p99 ms per request",
                    "CPU µs per session-chunk",
                    "vs single route",
                ],
                rows,
            )
        )

    with_chunks = [s for s in present if systems[s].get("chunks")]
    if with_chunks:
        rows = []
        for i, steps in enumerate(results["sizes"]["chunk_steps"]):
            row = [str(steps)]
            for s in with_chunks:
                r = systems[s]["chunks"][i]
                row.append(f"{_num(r['steps_per_second'], 0)} steps/s · {_num(r['p50_ms'], 2)} ms")
            rows.append(row)
        concurrency = results["sizes"]["chunk_concurrency"]
        parts.append(
            f"**Longer chunks**, {concurrency} session (steps/s · p50 latency)\n\n"
            + _table(["steps per chunk", *(SHORT[s] for s in with_chunks)], rows)
        )
        steps = results["sizes"]["stateless_steps"]
        rows = [
            [
                SHORT[s],
                _num(systems[s]["stateless"]["p50_ms"], 0),
                _num(systems[s]["stateless"]["steps_per_second"], 0),
            ]
            for s in with_chunks
            if "stateless" in systems[s]
        ]
        parts.append(
            f"**Stateless predict of {steps:,} steps**\n\n"
            + _table(["system", "latency p50 ms", "steps/s"], rows)
        )

    raw = results["raw_state_bytes"]
    rows = []
    for s in present:
        mem = systems[s].get("redis", {})
        workers = systems[s].get("workers", [])
        rss = ", ".join(_num(w["rss_mb"], 0) for w in workers)
        peak = ", ".join(_num(w["peak_rss_mb"], 0) for w in workers)
        usage = mem.get("memory_usage")
        rows.append(
            [
                SHORT[s],
                rss,
                peak,
                _num(mem.get("value_bytes"), 0),
                _num(usage, 0),
                _num(_ratio(usage, raw), 2),
            ]
        )
    parts.append(
        f"**Memory** (raw state: {raw} bytes per session)\n\n"
        + _table(
            [
                "system",
                "RSS MB per worker",
                "peak RSS MB",
                "value bytes",
                "Redis bytes/session",
                "x raw state",
            ],
            rows,
        )
    )

    rows = [
        [
            t["name"],
            _num(t["value"], 2),
            f"{t['op']} {_num(t['bound'], 1)}",
            "met" if t["met"] else "**missed**",
        ]
        for t in results["ratios"]["targets"]
    ]
    parts.append("**Targets**\n\n" + _table(["target", "measured", "bound", ""], rows))
    machine = results["machine"]
    header = (
        f"{results['date']} · {machine['cpu']}, {machine['cores']} cores · "
        f"{results['workers']} worker(s) per system · `{results['command']}` · "
        f"load average {machine['load_average_at_start']:.2f} at start, "
        f"{machine['load_average_at_end']:.2f} at end"
    )
    notes = [f"*{text}*" for text in results.get("notes", [])]
    return "\n\n".join([header, *notes, *parts]) + "\n"


def write(results: dict[str, Any], folder: Path, stem: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / f"{stem}.json"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    md_path = folder / f"{stem}.md"
    md_path.write_text("# Benchmark results\n\n" + tables(results))
    written = [json_path, md_path]
    try:
        written.append(plot(results, folder / "throughput.png"))
    except ImportError:
        note("matplotlib is missing (pip install -e '.[bench]'): no plot")
    return written


def plot(results: dict[str, Any], target: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {
        "service": ("tab:blue", "o", "-"),
        "service-no-batch": ("tab:blue", "o", "--"),
        "floor": ("tab:gray", "s", "-"),
        "naive": ("tab:red", "^", "-"),
        "pytriton": ("tab:green", "D", "-"),
    }
    for system in SYSTEMS:
        rows = sorted(_sweep(results, system).values(), key=lambda r: r["concurrency"])
        if not rows:
            continue
        color, marker, line = styles[system]
        xs = [r["concurrency"] for r in rows]
        label = SHORT[system]
        left.plot(
            xs, [r["throughput"] for r in rows], color=color, marker=marker, ls=line, label=label
        )
        right.plot(
            xs, [r["p99_ms"] for r in rows], color=color, marker=marker, ls=line, label=label
        )
    for axis, title, unit in (
        (left, "Throughput, 1-step chunks", "requests per second"),
        (right, "p99 latency, 1-step chunks", "milliseconds"),
    ):
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("concurrent sessions")
        axis.set_ylabel(unit)
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
        axis.set_xticks(results["sizes"]["concurrency"])
        axis.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    left.legend(loc="best", fontsize="small")
    machine = results["machine"]
    fig.suptitle(
        f"{results['model']}, {results['workers']} worker(s) each · {machine['cpu']}, "
        f"{machine['cores']} cores · {results['date'][:10]}",
        fontsize="medium",
    )
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target
