"""The HTTP API and web page over one index: search by image or by feature vector, see items and the tree.

Every error is a JSON body ``{"error": "<one line>"}`` with a 4xx status; nothing the server does writes
to the index, so any number of servers can read an index that one writer keeps updating. The routes live
in routers (``search_routes``, ``items_routes``); each request holds the index through ``current_index``.
"""
from __future__ import annotations

import secrets
from importlib import resources
from pathlib import Path
from typing import Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException

from treeseek import __version__
from treeseek.apps.server import items_routes, search_routes, tree_routes
from treeseek.apps.server.access_log import log_requests
from treeseek.apps.server.dependencies import ServerSettings
from treeseek.apps.server.limits import BodyLimit, SignInThrottle
from treeseek.apps.server.live_index import LiveIndex
from treeseek.apps.server.schemas import SignIn
from treeseek.errors import TreeseekError

TOKEN_COOKIE = "treeseek_token"
MAX_JSON_MB = 32.0  # the largest JSON body: 1,000 rows of 1,280 numbers fit
DEFAULT_MAX_MEGAPIXELS = 40.0  # a 40-megapixel phone photo passes; a decompression bomb does not


def create_app(directory: str | Path, max_upload_mb: float = 20.0, cors_origins: Sequence[str] = (),
               milvus=None, access_token: str | None = None, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
               show_paths: bool = False, access_log: str = "errors") -> FastAPI:
    """A FastAPI application serving the index in ``directory`` (opened now: a bad index fails here).

    Parameters
    ----------
    directory : str or Path
        The index directory.
    max_upload_mb, max_megapixels, show_paths, cors_origins, access_token
        The limits and choices of ``ServerSettings``.
    access_log : str
        ``errors`` (refused and failed requests), ``all`` or ``off`` (``access_log.log_requests``).
    milvus : MilvusTarget, optional
        A collection ('treeseek engine push') that ranks instead of the index.

    Returns
    -------
    FastAPI
        The application: the page at /, the API under /api, described at /openapi.json and /docs.
    """
    settings = ServerSettings(Path(directory), max_upload_mb, tuple(cors_origins), access_token, max_megapixels,
                              show_paths)
    live = LiveIndex(directory, milvus)
    if milvus is not None:
        live.engine(live.index.model, "soft").connect()  # an unreachable engine or a missing collection fails here
    json_bytes = int(max(MAX_JSON_MB, max_upload_mb) * 2**20)
    # /docs loads its scripts from a package, not from a CDN, so it works where the server has no internet;
    # ReDoc is left out: its page fetches a logo from its CDN all the same
    app = FastAPIOffline(redoc_url=None, title="treeseek", version=__version__,
                         description="Hierarchy-aware image retrieval: results right visually and semantically.")
    app.state.settings, app.state.live, app.state.tree_pictures = settings, live, {}
    app.add_middleware(BodyLimit, limit_for=lambda path: settings.max_upload_bytes if path == "/api/search"
                       else json_bytes)
    if access_token:  # added before CORS, so that CORS wraps it and answers preflights without a token
        _require_token(app, access_token)
    if cors_origins:  # browsers block other sites' pages from reading the answers unless they are named here
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["content-type", "authorization"])
    _answer_errors_in_one_line(app)
    log_requests(app, access_log)  # outermost: it sees the status every other layer gave

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return resources.files("treeseek.apps.server").joinpath("page.html").read_text(encoding="utf-8")

    app.include_router(search_routes.router)
    app.include_router(items_routes.router)
    app.include_router(tree_routes.router)
    return app


def _answer_errors_in_one_line(app: FastAPI) -> None:
    @app.exception_handler(TreeseekError)
    async def bad_input(request, exc: TreeseekError):
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request, exc: RequestValidationError):
        problems = [f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()]
        return JSONResponse({"error": "; ".join(problems)}, status_code=422)


def _require_token(app: FastAPI, access_token: str) -> None:
    """Every /api request must carry the token (but signing in); a client that keeps guessing waits."""
    throttle = SignInThrottle()
    app.middleware("http")(_token_guard(access_token, throttle))

    @app.post("/api/session", status_code=204, response_class=Response)
    def sign_in(body: SignIn, request: Request) -> Response:
        """Check the access token and keep it in an HTTP-only cookie, for the page and its pictures."""
        if not secrets.compare_digest(body.token.encode(), access_token.encode()):
            throttle.failed(_client(request))
            raise HTTPException(401, "wrong access token")
        throttle.succeeded(_client(request))
        signed_in = Response(status_code=204)
        signed_in.set_cookie(TOKEN_COOKIE, body.token, httponly=True, samesite="strict")
        return signed_in


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _token_guard(token: str, throttle: SignInThrottle):
    """A middleware that answers 401 to every /api request without the token (but signing in), and 429 to a
    client that has sent too many wrong ones."""
    expected = token.encode()

    async def guard(request, call_next):
        path = request.url.path
        if not path.startswith("/api/") or request.method == "OPTIONS":
            return await call_next(request)
        refusal = throttle.refusal(_client(request))
        if refusal is not None:
            return refusal
        if path != "/api/session":
            header = request.headers.get("authorization", "")
            offered = header[7:] if header[:7].lower() == "bearer " else request.cookies.get(TOKEN_COOKIE, "")
            if not secrets.compare_digest(offered.encode(), expected):
                if offered:  # a page that has not signed in yet is no guess
                    throttle.failed(_client(request))
                return JSONResponse({"error": "this server needs its access token: send 'Authorization: Bearer "
                                              "TOKEN', or sign in on the page"}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    return guard
