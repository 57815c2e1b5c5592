"""Searches by uploaded images and by feature vectors."""
from __future__ import annotations

import io
from typing import Annotated, List

import numpy as np
from fastapi import APIRouter, Depends, File, Query, UploadFile
from starlette.exceptions import HTTPException

from treeseek.apps.querying import Queries
from treeseek.apps.server.answers import ranking_of, search_answer
from treeseek.apps.server.dependencies import ServerSettings, current_index, settings
from treeseek.apps.server.live_index import LiveIndex
from treeseek.apps.server.schemas import (
    ERRORS,
    Alpha,
    FeatureQuery,
    Hamming,
    HammingIndex,
    Method,
    Rerank,
    SearchReport,
    Subtree,
)
from treeseek.data.decoding import UnreadableImage, load_rgb
from treeseek.errors import TreeseekError

MAX_IMAGES = 64  # per request: the images are embedded as one batch
K = Annotated[int, Query(ge=1, le=10_000, description="Results per query.")]

router = APIRouter(prefix="/api", responses=ERRORS)


@router.post("/search", response_model=SearchReport)
def search_images(
    images: Annotated[List[UploadFile], File(description="One or more query images.")],
    k: K = 10, method: Method = "soft", alpha: Alpha = None, hamming: Hamming = False, rerank: Rerank = 0,
    hamming_index: HammingIndex = "flat", subtree: Subtree = None,
    live: LiveIndex = Depends(current_index), server: ServerSettings = Depends(settings),
) -> dict:
    """Top-k for each uploaded image, embedded by the network that embedded the collection."""
    if len(images) > MAX_IMAGES:
        raise TreeseekError(f"at most {MAX_IMAGES} images per request, got {len(images)}")
    ranking = ranking_of(method, alpha, hamming, rerank, hamming_index)
    names = [upload.filename or f"image {i}" for i, upload in enumerate(images)]
    if live.images is None:
        raise TreeseekError("this index holds feature vectors, not images: POST them to /api/search/features")
    queries = live.images.embed([_decoded(upload, server) for upload in images])
    return search_answer(live, Queries(queries, names), k, ranking, server, subtree)


@router.post("/search/features", response_model=SearchReport)
def search_features(query: FeatureQuery, live: LiveIndex = Depends(current_index),
                    server: ServerSettings = Depends(settings)) -> dict:
    """Top-k for each feature vector (rows of ``features``, in the index's input dimensions)."""
    try:
        features = np.asarray(query.features, dtype=np.float64)
    except ValueError:
        raise TreeseekError("features must be a list of rows of equal length") from None
    if features.ndim != 2 or features.shape[0] == 0:
        raise TreeseekError("features must be a non-empty list of rows")
    names = query.names if query.names is not None else list(range(len(features)))
    if len(names) != len(features):
        raise TreeseekError(f"{len(names)} names for {len(features)} feature rows")
    ranking = ranking_of(query.method, query.alpha, query.hamming, query.rerank, query.hamming_index)
    return search_answer(live, Queries(features, names), query.k, ranking, server, query.subtree)


def _decoded(upload: UploadFile, server: ServerSettings):
    name = upload.filename or "the uploaded image"
    data = upload.file.read(server.max_upload_bytes + 1)
    if len(data) > server.max_upload_bytes:
        raise HTTPException(413, f"{name} is larger than {server.max_upload_mb:g} MB")
    try:
        return load_rgb(io.BytesIO(data), name, server.max_pixels)
    except UnreadableImage as exc:
        raise TreeseekError(f"cannot read query image {exc}") from None
