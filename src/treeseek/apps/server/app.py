"""The HTTP API and web page over one index: search by image or by feature vector, see items and the tree.

Every error is a JSON body ``{"error": "<one line>"}`` with a 4xx status; nothing the server does writes
to the index, so any number of servers can read an index that one writer keeps updating.
"""
from __future__ import annotations

import io
import secrets
from importlib import resources
from pathlib import Path
from typing import Annotated, List, Optional, Sequence

import numpy as np
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi import Path as PathParameter
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from treeseek import __version__
from treeseek.apps.plots import hierarchy_picture
from treeseek.apps.querying import Queries, SearchTarget, index_target, item_queries, run_search
from treeseek.apps.server.limits import BodyLimit, SignInThrottle, shown_source
from treeseek.apps.server.live_index import LiveIndex
from treeseek.data.decoding import UnreadableImage, load_rgb
from treeseek.errors import TreeseekError
from treeseek.index import INDEX_METHODS
from treeseek.index.engine_vectors import ENGINE_METHODS
from treeseek.search import Ranking

THUMBNAIL_PIXELS = 256
TOKEN_COOKIE = "treeseek_token"
MAX_IMAGES = 64  # per request: the images are embedded as one batch
MAX_FEATURE_ROWS = 1000  # per request to /api/search/features
MAX_JSON_MB = 32.0  # the largest JSON body: 1,000 rows of 1,280 numbers fit
DEFAULT_MAX_MEGAPIXELS = 40.0  # a 40-megapixel phone photo passes; a decompression bomb does not
ItemId = Annotated[int, PathParameter(ge=0, le=2**62, description="An item id of the index.")]


class SignIn(BaseModel):
    token: str


class FeatureQuery(BaseModel):
    """Query vectors in the index's feature space, and how to rank."""

    features: List[List[float]] = Field(max_length=MAX_FEATURE_ROWS)
    names: Optional[List[str]] = None
    k: int = Field(10, ge=1, le=10_000)
    method: str = "soft"
    alpha: Optional[float] = None
    hamming: bool = False
    rerank: int = Field(0, ge=0)
    hamming_index: str = "flat"


def create_app(directory: str | Path, max_upload_mb: float = 20.0, cors_origins: Sequence[str] = (),
               milvus=None, access_token: str | None = None, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
               show_paths: bool = False) -> FastAPI:
    """A FastAPI application serving the index in ``directory`` (opened now: a bad index fails here).

    ``max_upload_mb``: the largest body of an image search (all its images together), enforced while it is
    read; ``max_megapixels``: the largest image accepted, checked from its header before it is decoded.
    ``show_paths``: report items' files as paths on the server (by default, relative to the collection).

    ``cors_origins``: web origins (``https://host:port``, or ``*``) whose pages may call the API; none by default.
    ``milvus``: a ``MilvusTarget`` whose collection ('treeseek engine push') ranks instead of the index.
    ``access_token``: every /api request must then carry it, as ``Authorization: Bearer TOKEN`` or in the
    cookie that signing in on the page (``POST /api/session``) sets."""
    live = LiveIndex(directory, milvus)
    if milvus is not None:
        live.engine(live.index.model, "soft").connect()  # an unreachable engine or a missing collection fails here
    max_bytes = round(max_upload_mb * 2**20)
    max_pixels = int(max_megapixels * 1e6)
    json_bytes = int(max(MAX_JSON_MB, max_upload_mb) * 2**20)
    # /docs loads its scripts from a package, not from a CDN, so it works where the server has no internet;
    # ReDoc is left out: its page fetches a logo from its CDN all the same
    app = FastAPIOffline(redoc_url=None, title="treeseek", version=__version__,
                         description="Hierarchy-aware image retrieval: results right visually and semantically.")
    tree_pictures: dict[int, bytes] = {}
    app.add_middleware(BodyLimit, limit_for=lambda path: max_bytes if path == "/api/search" else json_bytes)
    if access_token:  # added before CORS, so that CORS wraps it and answers preflights without a token
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

    if cors_origins:  # browsers block other sites' pages from reading the answers unless they are named here
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["content-type", "authorization"])

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

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return resources.files("treeseek.apps.server").joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/api/info")
    def info() -> dict:
        """What the index holds: items, classes, tree, ranking defaults, and whether it takes images."""
        with live.lock:
            live.refresh()
            index, model = live.index, live.index.model
            tree = model.hierarchy_
            return {
                "treeseek": __version__, "items": len(index), "segments": len(index.segments_),
                "dimensions": model.input_dim_, "classes": list(model.class_names_),
                "tree": {"leaves": tree.n_leaves, "height": tree.max_height, "shape": tree.shape()},
                "alpha": model.alpha, "temperature": model.temperature,
                "methods": list(INDEX_METHODS if live.milvus is None else ENGINE_METHODS),
                "backend": index.backend["name"] if live.milvus is None else f"milvus {live.milvus.collection}",
                "code_bits": index.hasher.bits if index.hasher is not None else None,
                "backbone": live.images.backbone_spec["name"] if live.images is not None else None,
            }

    @app.post("/api/search")
    def search_images(
        images: Annotated[List[UploadFile], File(description="One or more query images.")],
        k: Annotated[int, Query(ge=1, le=10_000)] = 10,
        method: str = "soft", alpha: Optional[float] = None, hamming: bool = False,
        rerank: Annotated[int, Query(ge=0)] = 0, hamming_index: str = "flat",
    ) -> dict:
        """Top-k for each uploaded image, embedded by the network that embedded the collection."""
        if len(images) > MAX_IMAGES:
            raise TreeseekError(f"at most {MAX_IMAGES} images per request, got {len(images)}")
        ranking = _ranking(method, alpha, hamming, rerank, hamming_index)
        names = [upload.filename or f"image {i}" for i, upload in enumerate(images)]
        with live.lock:
            live.refresh()
            if live.images is None:
                raise TreeseekError("this index holds feature vectors, not images: POST them to /api/search/features")
            queries = live.images.embed([_decoded(upload, max_bytes, max_pixels) for upload in images])
            return _search(live, Queries(queries, names), k, ranking, show_paths)

    @app.post("/api/search/features")
    def search_features(query: FeatureQuery) -> dict:
        """Top-k for each feature vector (rows of ``features``, in the index's input dimensions)."""
        try:
            queries = np.asarray(query.features, dtype=np.float64)
        except ValueError:
            raise TreeseekError("features must be a list of rows of equal length") from None
        if queries.ndim != 2 or queries.shape[0] == 0:
            raise TreeseekError("features must be a non-empty list of rows")
        names = query.names if query.names is not None else list(range(len(queries)))
        if len(names) != len(queries):
            raise TreeseekError(f"{len(names)} names for {len(queries)} feature rows")
        ranking = _ranking(query.method, query.alpha, query.hamming, query.rerank, query.hamming_index)
        with live.lock:
            live.refresh()
            return _search(live, Queries(queries, names), query.k, ranking, show_paths)

    @app.get("/api/items/{item_id}")
    def item(item_id: ItemId) -> dict:
        """An item's class (when labelled), leaf and source."""
        with live.lock:
            live.refresh()
            _require(live, item_id)
            found = live.index.items([item_id])
            names = live.index.model.class_names_
            label = int(found["labels"][0])
            return {"id": item_id, "class": names[label] if label >= 0 else None,
                    "leaf": names[int(found["leaves"][0])],
                    "source": _shown(live, found["sources"][0], show_paths),
                    "image_url": _image_url(live, item_id)}

    @app.get("/api/items/{item_id}/similar")
    def similar_items(
        item_id: ItemId, k: Annotated[int, Query(ge=1, le=10_000)] = 10, method: str = "soft",
        alpha: Optional[float] = None, hamming: bool = False, rerank: Annotated[int, Query(ge=0)] = 0,
        hamming_index: str = "flat",
    ) -> dict:
        """Top-k for a stored item ("more like this"), the item itself left out."""
        ranking = _ranking(method, alpha, hamming, rerank, hamming_index)
        with live.lock:
            live.refresh()
            _require(live, item_id)
            return _search(live, item_queries(_target(live, ranking), [item_id]), k, ranking, show_paths)

    @app.get("/api/items/{item_id}/image", responses={200: {"content": {"image/png": {}}}})
    def item_image(item_id: ItemId) -> Response:
        """The item's picture as a PNG thumbnail (at most 256 pixels a side)."""
        with live.lock:
            live.refresh()
            _require(live, item_id)
            if live.images is None:
                raise HTTPException(404, "this index holds feature vectors, not images")
            picture = live.images.thumbnail(item_id, live.index.items([item_id])["sources"][0])
        if picture is None:
            raise HTTPException(404, f"the image of item {item_id} is no longer readable")
        picture.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        return Response(buffer.getvalue(), media_type="image/png")

    @app.get("/api/hierarchy.png", responses={200: {"content": {"image/png": {}}}})
    def tree_picture() -> Response:
        """The index's class tree as a dendrogram."""
        with live.lock:
            live.refresh()
            if live.version not in tree_pictures:
                tree_pictures.clear()
                tree_pictures[live.version] = hierarchy_picture(live.index.model.hierarchy_)
            return Response(tree_pictures[live.version], media_type="image/png")

    return app


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


def _ranking(method: str, alpha, hamming: bool, rerank: int, hamming_index: str) -> Ranking:
    """The request's ranking, named as on the command line: --hamming ranks by codes, re-ranked by ``method``."""
    return Ranking("hamming" if hamming else method, alpha, rerank, method, hamming_index)


def _target(live: LiveIndex, ranking: Ranking) -> SearchTarget:
    engine = None
    if live.milvus is not None:
        if ranking.method == "hamming":
            raise TreeseekError("an engine ranks the stored vectors; --hamming and --rerank search the index itself")
        engine = live.engine(live.index.model, ranking.method)
    return index_target(live.index, engine=engine, images=live.images)


def _search(live: LiveIndex, queries: Queries, k: int, ranking: Ranking, show_paths: bool) -> dict:
    """The report of ``treeseek search --json``, each hit with the address of its picture (None without)."""
    report = run_search(_target(live, ranking), queries, k, ranking)
    for query in report["queries"]:
        for entry in query["results"]:
            entry["image_url"] = _image_url(live, entry["id"])
            if "path" in entry:
                entry["path"] = _shown(live, entry["path"], show_paths)
    return report


def _shown(live: LiveIndex, source: str, show_paths: bool) -> str:
    return source if show_paths else shown_source(source, live.index.extra_.get("image_root"))


def _image_url(live: LiveIndex, item_id) -> str | None:
    return f"/api/items/{item_id}/image" if live.images is not None else None


def _require(live: LiveIndex, item_id: int) -> None:
    if not live.index.contains([item_id])[0]:
        raise HTTPException(404, f"item {item_id} is not in the index")


def _decoded(upload: UploadFile, max_bytes: int, max_pixels: int):
    name = upload.filename or "the uploaded image"
    data = upload.file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise HTTPException(413, f"{name} is larger than {max_bytes / 2**20:g} MB")
    try:
        return load_rgb(io.BytesIO(data), name, max_pixels)
    except UnreadableImage as exc:
        raise TreeseekError(f"cannot read query image {exc}") from None

