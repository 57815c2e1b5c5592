"""What every route depends on: the index as last committed, held for the request, and the server's settings."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from fastapi import Request

from treeseek.apps.server.live_index import LiveIndex


@dataclass(frozen=True)
class ServerSettings:
    """How a server answers: the limits on what it is sent, who may ask, and what its answers show.

    ``max_upload_mb``: the largest body of an image search (all its images together), enforced while it is
    read; ``max_megapixels``: the largest image accepted, checked from its header before it is decoded.
    ``show_paths``: report items' files as paths on the server (by default relative to the collection).
    ``cors_origins``: web origins (``https://host:port``, or ``*``) whose pages may call the API.
    ``access_token``: every /api request must then carry it, as ``Authorization: Bearer TOKEN`` or in the
    cookie that signing in on the page (``POST /api/session``) sets."""

    directory: Path
    max_upload_mb: float = 20.0
    cors_origins: Sequence[str] = ()
    access_token: str | None = None
    max_megapixels: float = 40.0
    show_paths: bool = False

    @property
    def max_upload_bytes(self) -> int:
        return round(self.max_upload_mb * 2**20)

    @property
    def max_pixels(self) -> int:
        return int(self.max_megapixels * 1e6)


def settings(request: Request) -> ServerSettings:
    return request.app.state.settings


def current_index(request: Request) -> Iterator[LiveIndex]:
    """The index, opened again if a writer has committed, held for the whole request: its search structures
    are not thread-safe. (A plain lock: FastAPI may leave this dependency on another thread than it entered.)"""
    live: LiveIndex = request.app.state.live
    with live.request_lock:
        live.refresh()
        yield live
