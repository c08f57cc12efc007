"""A run's outputs so far, kept beside OUTPUT so an interrupted run can continue."""

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from lstm_stream_client.wire import WIRE_FLOAT, Floats


class PartialOutput:
    """`OUTPUT.partial` holds the float32 output rows received so far, appended after each
    chunk; `OUTPUT.partial.json` says which session and how many steps and rows they are.
    The rows are on disk before the JSON counts them, so the JSON never claims rows that
    are missing, and the server is at most one chunk ahead of it."""

    def __init__(self, output: Path) -> None:
        self.rows_path = output.with_name(output.name + ".partial")
        self.meta_path = output.with_name(output.name + ".partial.json")
        self.meta: dict[str, Any] = {}

    def load(self) -> dict[str, Any] | None:
        if not self.meta_path.exists():
            return None
        self.meta = json.loads(self.meta_path.read_text())
        return self.meta

    def begin(self, **meta: Any) -> None:
        self.meta = {**meta, "steps": 0, "rows": 0}
        self.rows_path.write_bytes(b"")
        self._save_meta()

    @property
    def steps(self) -> int:
        return int(self.meta["steps"])

    def _row_bytes(self) -> int:
        return int(self.meta["columns"]) * WIRE_FLOAT.itemsize

    def truncate(self) -> None:
        """Drop rows written after the last counted chunk (a crash between the two writes)."""
        with self.rows_path.open("r+b") as rows:
            rows.truncate(int(self.meta["rows"]) * self._row_bytes())

    def append(self, outputs: Floats, steps: int) -> None:
        block = np.atleast_2d(outputs).astype(WIRE_FLOAT)
        with self.rows_path.open("ab") as rows:
            rows.write(block.tobytes())
            rows.flush()
            os.fsync(rows.fileno())
        self.meta["steps"] = steps
        self.meta["rows"] = int(self.meta["rows"]) + block.shape[0]
        self._save_meta()

    def outputs(self) -> Floats:
        values = np.fromfile(self.rows_path, dtype=WIRE_FLOAT).astype(np.float32)
        return values.reshape(int(self.meta["rows"]), int(self.meta["columns"]))

    def remove(self) -> None:
        self.rows_path.unlink(missing_ok=True)
        self.meta_path.unlink(missing_ok=True)

    def _save_meta(self) -> None:
        scratch = self.meta_path.with_name(self.meta_path.name + ".tmp")
        scratch.write_text(json.dumps(self.meta))
        os.replace(scratch, self.meta_path)
