"""What the index holds: its summary, its items and their pictures, more like an item, and its tree."""
from __future__ import annotations

import io
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParameter
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from treeseek import __version__
from treeseek.apps.plots import hierarchy_picture
from treeseek.apps.querying import item_queries
from treeseek.apps.server.answers import image_url, ranking_of, require_item, search_answer, shown, target_of
from treeseek.apps.server.dependencies import ServerSettings, current_index, settings
from treeseek.apps.server.live_index import LiveIndex
from treeseek.apps.server.schemas import (
    ERRORS,
    Alpha,
    Hamming,
    HammingIndex,
    Info,
    Item,
    Method,
    Rerank,
    SearchReport,
    Subtree,
)
from treeseek.index import INDEX_METHODS
from treeseek.index.engine_vectors import ENGINE_METHODS

THUMBNAIL_PIXELS = 256
ItemId = Annotated[int, PathParameter(ge=0, le=2**62, description="An item id of the index.")]
PNG = {200: {"content": {"image/png": {}}}}

router = APIRouter(prefix="/api", responses=ERRORS)


@router.get("/info", response_model=Info)
def info(live: LiveIndex = Depends(current_index)) -> dict:
    """What the index holds: items, classes, tree, ranking defaults, and whether it takes images."""
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


@router.get("/items/{item_id}", response_model=Item)
def item(item_id: ItemId, live: LiveIndex = Depends(current_index), server: ServerSettings = Depends(settings)):
    """An item's class (when labelled), leaf and source."""
    require_item(live, item_id)
    found = live.index.items([item_id])
    model = live.index.model
    label = int(found["labels"][0])
    return {"id": item_id, "class": model.class_names_[label] if label >= 0 else None,
            "leaf": model.leaf_names_[int(found["leaves"][0])],
            "source": shown(live, found["sources"][0], server), "image_url": image_url(live, item_id)}


@router.get("/items/{item_id}/similar", response_model=SearchReport)
def similar_items(
    item_id: ItemId, k: Annotated[int, Query(ge=1, le=10_000, description="Results.")] = 10,
    method: Method = "soft", alpha: Alpha = None, hamming: Hamming = False, rerank: Rerank = 0,
    hamming_index: HammingIndex = "flat", subtree: Subtree = None,
    live: LiveIndex = Depends(current_index), server: ServerSettings = Depends(settings),
) -> dict:
    """Top-k for a stored item ("more like this"), the item itself left out."""
    ranking = ranking_of(method, alpha, hamming, rerank, hamming_index)
    require_item(live, item_id)
    return search_answer(live, item_queries(target_of(live, ranking), [item_id]), k, ranking, server, subtree)


@router.get("/items/{item_id}/image", responses=PNG, response_class=Response)
def item_image(item_id: ItemId, live: LiveIndex = Depends(current_index)) -> Response:
    """The item's picture as a PNG thumbnail (at most 256 pixels a side)."""
    require_item(live, item_id)
    if live.images is None:
        raise HTTPException(404, "this index holds feature vectors, not images")
    picture = live.images.thumbnail(item_id, live.index.items([item_id])["sources"][0])
    if picture is None:
        raise HTTPException(404, f"the image of item {item_id} is no longer readable")
    picture.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return Response(buffer.getvalue(), media_type="image/png")


@router.get("/hierarchy.png", responses=PNG, response_class=Response)
def tree_picture(request: Request, live: LiveIndex = Depends(current_index)) -> Response:
    """The index's class tree as a dendrogram."""
    pictures: dict = request.app.state.tree_pictures
    if live.version not in pictures:
        pictures.clear()
        pictures[live.version] = hierarchy_picture(live.index.model.hierarchy_)
    return Response(pictures[live.version], media_type="image/png")
