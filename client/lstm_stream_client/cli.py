"""`lstm-stream`: stream a file through a model (resumable), list models, manage sessions."""

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from lstm_stream_client.client import Client, Session
from lstm_stream_client.errors import LstmStreamError, SessionNotFound
from lstm_stream_client.files import read_sequence, write_outputs
from lstm_stream_client.partial import PartialOutput
from lstm_stream_client.wire import Floats, ModelInfo

DEFAULT_URL = "http://127.0.0.1:8000"
INTERRUPTED = 130


class StepsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} steps/s" if speed else "… steps/s", style="cyan")


def _connection_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--url",
        default=os.environ.get("LSTM_STREAM_URL", DEFAULT_URL),
        help=f"server URL (env LSTM_STREAM_URL, default {DEFAULT_URL})",
    )
    options.add_argument(
        "--api-key",
        default=os.environ.get("LSTM_STREAM_API_KEY"),
        help="API key, sent as a bearer token (env LSTM_STREAM_API_KEY)",
    )
    return options


def parser() -> argparse.ArgumentParser:
    connection = _connection_options()
    root = argparse.ArgumentParser(prog="lstm-stream", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    predict = commands.add_parser(
        "predict",
        parents=[connection],
        help="stream INPUT through MODEL in chunks, exactly once, into OUTPUT",
        description="Interrupted (Ctrl-C, crash), the same command continues where it "
        "stopped; the OUTPUT is the same, bit for bit, as an uninterrupted run's.",
    )
    predict.add_argument("model")
    predict.add_argument("input", type=Path, help=".npy or .csv, T rows by F columns")
    predict.add_argument("--out", type=Path, required=True, help=".npy or .csv")
    predict.add_argument("--chunk-steps", type=int, default=100, help="timesteps per chunk")
    predict.add_argument(
        "--session",
        help="session id: continue it, or create it under this id (default: a new one)",
    )

    commands.add_parser("models", parents=[connection], help="list the served models")

    session = commands.add_parser("session", parents=[connection], help="manage a session")
    session.add_argument("action", choices=["show", "reset", "delete"])
    session.add_argument("session_id")
    return root


def _open_session(client: Client, model: str, session_id: str | None) -> Session:
    if session_id is None:
        return client.create_session(model)
    try:
        session = client.session(session_id)
    except SessionNotFound:
        return client.create_session(model, session_id)
    if session.model != model:
        raise LstmStreamError(f"session '{session_id}' streams {session.model!r}, not {model!r}")
    if session.steps:
        raise LstmStreamError(
            f"session '{session_id}' is at step {session.steps} but this directory holds no "
            "outputs of its earlier chunks; reset it or use another session"
        )
    return session


def _resume(client: Client, partial: PartialOutput, args: argparse.Namespace) -> Session:
    meta = partial.meta
    if args.session is not None and args.session != meta["session_id"]:
        raise LstmStreamError(
            f"{partial.meta_path} belongs to session '{meta['session_id']}', not "
            f"'{args.session}'; remove it to start over"
        )
    if meta["model"] != args.model or meta["input"] != str(args.input):
        raise LstmStreamError(
            f"{partial.meta_path} belongs to a run of {meta['model']} on {meta['input']}; "
            "remove it to start over"
        )
    partial.truncate()
    return client.session(meta["session_id"])


def _catch_up(session: Session, partial: PartialOutput, inputs: Floats) -> None:
    """The server may have applied one chunk whose outputs never reached the file:
    resending it at its offset replays the stored answer."""
    server_steps, done = session.steps, partial.steps
    if server_steps < done:
        raise LstmStreamError(
            f"session '{session.id}' is at step {server_steps}, behind the {done} steps "
            "already written (was it reset?); remove the partial output to start over"
        )
    session.steps = done
    if server_steps > done:
        partial.append(session.predict(inputs[done:server_steps]), server_steps)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps"),
        StepsPerSecond(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not sys.stderr.isatty(),
    )


def predict(args: argparse.Namespace) -> None:
    if args.chunk_steps < 1:
        raise LstmStreamError("--chunk-steps must be at least 1")
    inputs = read_sequence(args.input)
    total = inputs.shape[0]
    partial = PartialOutput(args.out)
    with Client(args.url, args.api_key) as client:
        model: ModelInfo = client.model(args.model)
        if partial.load() is not None:
            session = _resume(client, partial, args)
        else:
            session = _open_session(client, args.model, args.session)
            partial.begin(
                session_id=session.id,
                model=args.model,
                input=str(args.input),
                columns=model.output_features,
            )
        _say(f"session {session.id}; if interrupted, continue with --session {session.id}")
        _catch_up(session, partial, inputs)
        try:
            with _progress() as progress:
                task = progress.add_task(args.model, total=total, completed=session.steps)
                for start in range(session.steps, total, args.chunk_steps):
                    outputs = session.predict(inputs[start : start + args.chunk_steps])
                    partial.append(outputs, session.steps)
                    progress.update(task, completed=session.steps)
        except KeyboardInterrupt:
            again = [*sys.argv[:1], *_without_session(sys.argv[1:]), "--session", session.id]
            command = shlex.join(again)
            _say(f"interrupted at step {session.steps} of {total}; continue with: {command}")
            raise
    write_outputs(args.out, partial.outputs())
    partial.remove()
    _say(f"{total} steps -> {args.out} (session {session.id} at step {session.steps})")


def _without_session(argv: list[str]) -> list[str]:
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--session":
            skip = True
        elif not arg.startswith("--session="):
            kept.append(arg)
    return kept


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def models(args: argparse.Namespace) -> None:
    with Client(args.url, args.api_key) as client:
        listed = client.models()
    print(f"{'model':<24} {'version':<18} {'inputs':>6} {'outputs':>7}  per step")
    for info in listed:
        print(
            f"{info.name:<24} {info.version:<18} {info.input_features:>6} "
            f"{info.output_features:>7}  {'yes' if info.per_step else 'no (last only)'}"
        )


def session(args: argparse.Namespace) -> None:
    with Client(args.url, args.api_key) as client:
        handle = client.session(args.session_id)
        if args.action == "show":
            print(json.dumps(asdict(handle.info()), indent=2))
        elif args.action == "reset":
            print(json.dumps(asdict(handle.reset()), indent=2))
        else:
            handle.delete()
            _say(f"session {args.session_id} deleted")


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    command = {"predict": predict, "models": models, "session": session}[args.command]
    try:
        command(args)
    except KeyboardInterrupt:
        return INTERRUPTED
    except (LstmStreamError, OSError, ValueError) as exc:
        _say(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
