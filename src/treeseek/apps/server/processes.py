"""Serving from several processes: each worker opens the index itself, so that requests run in parallel.

A worker's search structures are not thread-safe, so one process answers one request at a time. uvicorn's
workers are separate processes that share the port; each builds its own application from the settings the
parent leaves in the environment (an import string is all uvicorn hands a worker).
"""
from __future__ import annotations

import json
import logging
import os

from threadpoolctl import threadpool_limits

from treeseek.apps.server.app import create_app
from treeseek.index.milvus import MilvusTarget

SETTINGS_VARIABLE = "TREESEEK_SERVE_SETTINGS"
# a worker imports numpy, FAISS and the model and opens the index before it answers uvicorn's health check;
# on a busy machine that takes far longer than uvicorn's 5 s, after which it kills the worker and starts another
WORKER_START_SECONDS = 300.0


class SupervisorEvents(logging.Filter):
    """Of uvicorn's supervisor's messages, those a person running the server needs: a worker that died or was
    restarted, and every warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return record.levelno >= logging.WARNING or "died" in message or "failed" in message


def supervisor_logging() -> dict:
    """uvicorn's log configuration: the supervisor's worker events and warnings on stderr, nothing else."""
    return {"version": 1, "disable_existing_loggers": False,
            "filters": {"events": {"()": f"{__name__}.SupervisorEvents"}},
            "formatters": {"plain": {"format": "treeseek: %(message)s"}},
            "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                                    "formatter": "plain", "filters": ["events"]}},
            "loggers": {"uvicorn.error": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
                        "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False}}}


def run_workers(settings: dict, host: str, port: int, workers: int) -> None:
    """Serve ``create_app(**settings)`` from ``workers`` processes (``settings``: plain JSON values, ``milvus``
    as the fields of a ``MilvusTarget`` or None)."""
    import uvicorn

    os.environ[SETTINGS_VARIABLE] = json.dumps({**settings, "workers": workers})
    uvicorn.run(f"{__name__}:app_from_environment", factory=True, host=host, port=port, workers=workers,
                log_config=supervisor_logging(), timeout_worker_healthcheck=WORKER_START_SECONDS)


def app_from_environment():
    """The application of one worker (uvicorn calls it in every worker process)."""
    from treeseek.apps.server.access_log import configure_access_log

    configure_access_log()  # a worker is a fresh process: its log lines need a handler of their own
    settings = json.loads(os.environ[SETTINGS_VARIABLE])
    # the workers share the cores: each keeps its BLAS and OpenMP pools to its share, or they oversubscribe
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threadpool_limits(max(1, cores // settings.pop("workers")))
    milvus = settings.pop("milvus", None)
    return create_app(**settings, milvus=MilvusTarget(**milvus) if milvus else None)
