"""The server's access log: one line per request (``all``), per refused or failed request (``errors``, the
default), or none (``off``), on the ``treeseek.server.access`` logger."""
from __future__ import annotations

import logging
import sys
import time

from fastapi import FastAPI, Request

ACCESS_LOGS = ("errors", "all", "off")
logger = logging.getLogger("treeseek.server.access")


def configure_access_log() -> None:
    """Give the access logger a handler on stderr when nothing else has (a server process of its own)."""
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def log_requests(app: FastAPI, mode: str) -> None:
    """Log each request as ``METHOD PATH STATUS TIME``, as ``mode`` says."""
    if mode not in ACCESS_LOGS:
        raise ValueError(f"access log is one of {', '.join(ACCESS_LOGS)}, got {mode!r}")
    if mode == "off":
        return

    @app.middleware("http")
    async def access(request: Request, call_next):
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:
            logger.error("%s %s 500 %.0f ms (failed)", request.method, request.url.path,
                         1000 * (time.perf_counter() - started))
            raise
        if mode == "all" or response.status_code >= 400:
            logger.info("%s %s %d %.0f ms", request.method, request.url.path, response.status_code,
                        1000 * (time.perf_counter() - started))
        return response
