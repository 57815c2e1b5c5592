"""What a stranger can make the server do: bounded bodies, bounded guessing, and no server paths shown.

- ``BodyLimit`` counts a request body as it arrives and answers 413 as soon as it passes its limit (or at
  once, from its Content-Length), so an oversized upload is never spooled whole.
- ``SignInThrottle`` answers 429 to a client that keeps sending wrong access tokens, for a time that
  doubles with every further failure.
- ``shown_source`` reports an item's file relative to the collection's folder, not as a path on the server.
"""
from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from pathlib import PurePath

from fastapi.responses import JSONResponse

FREE_FAILURES = 5          # wrong tokens a client may send before it has to wait
MAX_BLOCK_SECONDS = 300.0  # the longest wait, reached after a few dozen failures
MAX_CLIENTS_TRACKED = 10_000


def _error(status: int, message: str, headers: dict | None = None):
    body = json.dumps({"error": message}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    head += [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    return ({"type": "http.response.start", "status": status, "headers": head},
            {"type": "http.response.body", "body": body})


class BodyLimit:
    """ASGI middleware: request bodies of at most ``limit_for(path)`` bytes, enforced while they are read."""

    def __init__(self, app, limit_for):
        self.app, self.limit_for = app, limit_for

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        limit = self.limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await self._refuse(send, limit)
        chunks, size = [], 0
        while True:  # read the whole body here, never more than the limit, then hand it on
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return await self._refuse(send, limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, delivered = b"".join(chunks), False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(send, limit: int):
        for message in _error(413, f"the request body is larger than the server's limit of "
                                   f"{limit / 2**20:.3g} MB", {"connection": "close"}):
            await send(message)


class SignInThrottle:
    """Wrong access tokens per client address; after ``FREE_FAILURES`` the client is refused for a while."""

    def __init__(self, free_failures: int = FREE_FAILURES, max_block: float = MAX_BLOCK_SECONDS, clock=time.monotonic):
        self.free_failures, self.max_block, self.clock = free_failures, max_block, clock
        self._clients: OrderedDict[str, tuple[int, float]] = OrderedDict()  # address -> (failures, blocked until)
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> float:
        """Seconds the client must still wait (0: it may try)."""
        with self._lock:
            _, until = self._clients.get(client, (0, 0.0))
            return max(0.0, until - self.clock())

    def failed(self, client: str) -> None:
        with self._lock:
            failures = self._clients.pop(client, (0, 0.0))[0] + 1
            excess = failures - self.free_failures
            until = self.clock() + min(self.max_block, 2.0 ** (excess - 1)) if excess > 0 else 0.0
            self._clients[client] = (failures, until)
            while len(self._clients) > MAX_CLIENTS_TRACKED:
                self._clients.popitem(last=False)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._clients.pop(client, None)

    def refusal(self, client: str):
        """The 429 answer for a client that must wait, or None."""
        wait = self.retry_after(client)
        if not wait:
            return None
        return JSONResponse({"error": f"too many wrong access tokens from this address; try again in {wait:.0f} s"},
                            status_code=429, headers={"Retry-After": str(max(1, round(wait)))})


def shown_source(source: str, root: str | None) -> str:
    """An item's source as the server shows it: relative to the collection's folder, else its last two parts.

    Dataset keys (not absolute paths) are shown as they are; absolute paths would tell a stranger how the
    server's disks are laid out."""
    if not source or not os.path.isabs(source):
        return source
    path = PurePath(source)
    if root and path.is_relative_to(root):
        return path.relative_to(root).as_posix()
    return PurePath(*path.parts[-2:]).as_posix()
