"""How the routes answer: the request's ranking, what ranks it (the index or Milvus), and the report."""
from __future__ import annotations

from starlette.exceptions import HTTPException

from treeseek.apps.querying import Queries, SearchTarget, engine_for, index_target, run_search
from treeseek.apps.server.dependencies import ServerSettings
from treeseek.apps.server.limits import shown_source
from treeseek.apps.server.live_index import LiveIndex
from treeseek.search import Ranking


def require_item(live: LiveIndex, item_id: int) -> None:
    if not live.index.contains([item_id])[0]:
        raise HTTPException(404, f"item {item_id} is not in the index")


def image_url(live: LiveIndex, item_id) -> str | None:
    return f"/api/items/{item_id}/image" if live.images is not None else None


def shown(live: LiveIndex, source: str, server: ServerSettings) -> str:
    return source if server.show_paths else shown_source(source, live.index.extra_.get("image_root"))


def ranking_of(method: str, alpha, hamming: bool, rerank: int, hamming_index: str) -> Ranking:
    """The request's ranking, named as on the command line: hamming ranks by codes, re-ranked by ``method``."""
    return Ranking("hamming" if hamming else method, alpha, rerank, method, hamming_index)


def target_of(live: LiveIndex, ranking: Ranking) -> SearchTarget:
    engine = engine_for(live.engine, live.index.model, ranking) if live.milvus is not None else None
    return index_target(live.index, engine=engine, images=live.images)


def search_answer(live: LiveIndex, queries: Queries, k: int, ranking: Ranking, server: ServerSettings,
                  subtree: str | None = None) -> dict:
    """The report of ``treeseek search --json``, each hit with the address of its picture (None without);
    ``subtree``: only the items under that node of the tree."""
    report = run_search(target_of(live, ranking), queries, k, ranking, subtree=subtree)
    for query in report["queries"]:
        for entry in query["results"]:
            entry["image_url"] = image_url(live, entry["id"])
            if "path" in entry:
                entry["path"] = shown(live, entry["path"], server)
    return report
