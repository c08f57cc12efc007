"""Logging for `lstm-serve`: JSON lines, and the access log as the only per-request line."""

import json
import logging
from datetime import UTC, datetime
from typing import Any

ACCESS_LOGGER = "lstm.access"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and a traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def logging_config(level: str) -> dict[str, Any]:
    """A `dictConfig` for uvicorn's `log_config`, so every worker process applies it.

    The access log (already a JSON line per request) goes to stdout at INFO whatever
    `level` is; uvicorn's own access log is off (`access_log=False`) so requests are not
    logged twice; everything else is JSON on stderr at `level`.
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {"()": JsonFormatter},
            "line": {"format": "%(message)s"},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            },
            "access": {
                "class": "logging.StreamHandler",
                "formatter": "line",
                "stream": "ext://sys.stdout",
            },
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            "uvicorn.access": {"handlers": [], "propagate": False},
            ACCESS_LOGGER: {"handlers": ["access"], "level": "INFO", "propagate": False},
        },
    }
