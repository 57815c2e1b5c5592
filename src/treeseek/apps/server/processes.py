"""Serving from several processes: each worker opens the index itself, so that requests run in parallel.

A worker's search structures are not thread-safe, so one process answers one request at a time. uvicorn's
workers are separate processes that share the port; each builds its own application from the settings the
parent leaves in the environment (an import string is all uvicorn hands a worker).
"""
from __future__ import annotations

import json
import os

from threadpoolctl import threadpool_limits

from treeseek.apps.server.app import create_app
from treeseek.index.milvus import MilvusTarget

SETTINGS_VARIABLE = "TREESEEK_SERVE_SETTINGS"


def run_workers(settings: dict, host: str, port: int, workers: int) -> None:
    """Serve ``create_app(**settings)`` from ``workers`` processes (``settings``: plain JSON values, ``milvus``
    as the fields of a ``MilvusTarget`` or None)."""
    import uvicorn

    os.environ[SETTINGS_VARIABLE] = json.dumps({**settings, "workers": workers})
    uvicorn.run(f"{__name__}:app_from_environment", factory=True, host=host, port=port, workers=workers,
                log_level="warning")


def app_from_environment():
    """The application of one worker (uvicorn calls it in every worker process)."""
    settings = json.loads(os.environ[SETTINGS_VARIABLE])
    # the workers share the cores: each keeps its BLAS and OpenMP pools to its share, or they oversubscribe
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threadpool_limits(max(1, cores // settings.pop("workers")))
    milvus = settings.pop("milvus", None)
    return create_app(**settings, milvus=MilvusTarget(**milvus) if milvus else None)
