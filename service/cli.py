"""`lstm-serve`: run the API with uvicorn, starting an embedded Redis when none is configured."""

import argparse
import logging
import os

import uvicorn

from service.settings import Settings
from service.store.embedded import EmbeddedRedis


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="lstm-serve", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")

    settings = Settings()
    embedded = None
    if settings.redis_url is None:
        # Started here, not per worker, so every worker shares the one Redis.
        embedded = EmbeddedRedis(settings.data_dir).start()
        os.environ["LSTM_REDIS_URL"] = embedded.url
        logging.getLogger("lstm-serve").warning(
            "LSTM_REDIS_URL is unset: embedded redis-server at %s, data in %s",
            embedded.url,
            embedded.data_dir,
        )
    try:
        uvicorn.run(
            "service.main:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=args.log_level,
        )
    finally:
        if embedded:
            embedded.stop()


if __name__ == "__main__":
    main()
