"""What a browser shows of the collection: the tree with every node's item count, the items under a node page by
page, and the groups of near-identical pictures."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi import Path as PathParameter
from starlette.exceptions import HTTPException

from treeseek.apps.server.answers import image_url, shown
from treeseek.apps.server.dependencies import ServerSettings, current_index, settings
from treeseek.apps.server.live_index import LiveIndex
from treeseek.apps.server.schemas import ERRORS, DuplicateGroups, NodeItems, TreeNodes
from treeseek.index.duplicates import DEFAULT_THRESHOLD, group_members, near_duplicates
from treeseek.index.subtree_search import ids_under, node_counts

router = APIRouter(prefix="/api", responses=ERRORS)
NodeId = Annotated[int, PathParameter(ge=0, description="A node of the tree, as GET /api/tree numbers it.")]


@router.get("/tree", response_model=TreeNodes)
def tree(live: LiveIndex = Depends(current_index)) -> dict:
    """Every node of the tree: its name, parent, children, height and how many items lie under it."""
    model = live.index.model
    hierarchy = model.hierarchy_
    counts = node_counts(live.index.stored_segments(), hierarchy)
    nodes = []
    for node in range(hierarchy.n_nodes):
        leaf = node < hierarchy.n_leaves
        nodes.append({"id": node, "name": hierarchy.names[node], "parent": int(hierarchy.parent[node]),
                      "children": [int(c) for c in hierarchy.children[node]], "height": int(hierarchy.height[node]),
                      "items": int(counts[node]),
                      "class": model.class_names_[int(model.leaf_class_[node])] if leaf else None})
    return {"root": hierarchy.root, "nodes": nodes}


@router.get("/tree/{node}/items", response_model=NodeItems)
def node_items(node: NodeId, offset: Annotated[int, Query(ge=0, description="Items skipped.")] = 0,
               limit: Annotated[int, Query(ge=1, le=500, description="Items returned.")] = 24,
               live: LiveIndex = Depends(current_index), server: ServerSettings = Depends(settings)) -> dict:
    """The items under a node, by id, ``limit`` at a time from ``offset``."""
    hierarchy = live.index.model.hierarchy_
    if node >= hierarchy.n_nodes:
        raise HTTPException(404, f"the tree has no node {node} (it has {hierarchy.n_nodes})")
    ids = ids_under(live.index.stored_segments(), hierarchy, node)
    shown_ids = ids[offset : offset + limit]
    found = live.index.items(shown_ids) if len(shown_ids) else {"labels": [], "sources": []}
    names = live.index.model.class_names_
    items = [{"id": int(i), "class": names[int(label)] if label >= 0 else None, "file": shown(live, source, server),
              "image_url": image_url(live, int(i))}
             for i, label, source in zip(shown_ids, found["labels"], found["sources"])]
    return {"node": node, "name": hierarchy.names[node], "total": int(len(ids)), "offset": offset, "items": items}


@router.get("/duplicates", response_model=DuplicateGroups)
def duplicate_groups(threshold: Annotated[float, Query(ge=0, lt=2, description="Largest cosine distance between "
                                                       "near-identical pictures.")] = DEFAULT_THRESHOLD,
                     live: LiveIndex = Depends(current_index), server: ServerSettings = Depends(settings)) -> dict:
    """Groups of near-identical pictures (copies, re-encodings, resized or mirrored versions), largest first."""
    groups = group_members(live.index, near_duplicates(live.index, threshold))
    return {"threshold": threshold, "groups": [
        [{"id": item["id"], "class": item["class"], "file": shown(live, item["source"], server),
          "image_url": image_url(live, item["id"]), "distance": item["distance"]} for item in group]
        for group in groups]}
