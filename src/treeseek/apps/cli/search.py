"""``treeseek search``: read the queries, open what answers them, search, present. One path for every source."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from treeseek.apps.cli.engine import (
    MILVUS_OPTION,
    MILVUS_PARAM_OPTION,
    SEARCH_COLLECTION_OPTION,
    TOKEN_OPTION,
    milvus_target,
)
from treeseek.apps.cli.index import not_an_index_output
from treeseek.errors import TreeseekError

if TYPE_CHECKING:  # imported where they are used: 'treeseek --help' loads none of what they need
    from treeseek.apps.querying import Queries, SearchTarget
    from treeseek.search import Ranking


def search(
    target: Path = typer.Argument(..., help="An index directory ('treeseek run' / 'treeseek index create'), "
                                  "or a model directory."),
    inputs: Optional[List[Path]] = typer.Argument(None, help="Query images (index) or DB.npz (model)."),
    query: Optional[Path] = typer.Option(None, "--query", help="Query features (.npz)."),
    item: Optional[List[int]] = typer.Option(None, "--item", help="A stored item's id as the query (repeatable): "
                                             "more like this item, which is left out of its own results."),
    k: int = typer.Option(10, "-k", "--k", help="Results per query."),
    alpha: Optional[float] = typer.Option(None, help="Weight of the hierarchy term (default: the model's)."),
    method: Optional[str] = typer.Option(None, help="soft (the default: expected LCA height under the class "
                                         "posteriors), combined (the paper's hard leaves), flat, hierarchy, "
                                         "cosine, or euclidean (model directory only)."),
    use_database_labels: bool = typer.Option(False, help="Place database items at their known labels."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON."),
    grid: Optional[Path] = typer.Option(None, help="Image grid file (image queries; default "
                                        "searches/QUERY.results.png beside the index)."),
    hamming: bool = typer.Option(False, help="Rank by Hamming distance between the index's binary codes."),
    rerank: int = typer.Option(0, help="With --hamming: re-rank this many nearest codes by --method's distance."),
    hamming_index: str = typer.Option("flat", help="With --hamming: flat (exact) or hnsw (sub-linear)."),
    within: Optional[str] = typer.Option(None, help="Only items under this node of the tree (a class or an "
                                         "inner node, as 'treeseek hierarchy' names them); index only."),
    milvus: Optional[str] = MILVUS_OPTION,
    collection: Optional[str] = SEARCH_COLLECTION_OPTION,
    milvus_param: Optional[List[str]] = MILVUS_PARAM_OPTION,
    token: str = TOKEN_OPTION,
) -> None:
    """Top-k for every query, with the parts of its distance and the LCA it shares
    with the query.

    treeseek search INDEX image.jpg [...]          images, against an index

    treeseek search INDEX --query Q.npz            feature files, any index

    treeseek search INDEX --item 42                more like a stored item

    treeseek search MODEL_DIR DB.npz --query Q.npz     features, no index

    treeseek search HASHER_DIR DB.npz --query Q.npz    binary codes only

    With --hamming, an index that stores binary codes ('treeseek index codes')
    is searched by Hamming distance; --rerank R re-ranks the R nearest codes
    with the hierarchy-aware distance. With --milvus the ranking runs in
    Milvus, on the collection that 'treeseek engine push' filled.
    """
    from treeseek.apps.querying import feature_queries, run_search
    from treeseek.codes.storage import is_hasher
    from treeseek.index import is_index
    from treeseek.io.features import load_features
    from treeseek.search import Ranking

    if k < 1:
        raise TreeseekError(f"-k must be at least 1, got {k}")
    codes_only = is_hasher(target)  # a hasher directory and a feature file: ranked by codes alone
    ranking = Ranking("hamming" if hamming or (codes_only and method is None) else method or "soft", alpha, rerank,
                      method or "soft", hamming_index)
    not_an_index_output(target)
    if is_index(target):
        opened = _index(target, ranking, milvus and milvus_target(target, milvus, collection, milvus_param, token))
        queries = _index_queries(opened, target, list(inputs or []), query, list(item or []))
    else:
        opened = _features(target, list(inputs or []), query, item, milvus, ranking, use_database_labels, codes_only)
        queries = feature_queries(load_features(query, require_labels=False))
    # grids land beside the index's outputs ('treeseek run' OUT/searches/), never in the current directory
    present(run_search(opened, queries, k, ranking, subtree=within), queries, json_out, grid, opened.images,
            grid_dir=target.absolute().parent / "searches")


def _index(directory: Path, ranking: Ranking, milvus) -> SearchTarget:
    from treeseek.apps.querying import engine_for, index_target
    from treeseek.index import TreeIndex
    from treeseek.index.image_index import ImageIndex

    images = ImageIndex.load(directory) if ImageIndex.holds_images(directory) else None
    index = images.index if images is not None else TreeIndex.open(directory)
    engine = engine_for(milvus.open, index.model, ranking) if milvus else None
    return index_target(index, engine=engine, images=images)


def _index_queries(target: SearchTarget, directory: Path, images: list[Path], query: Optional[Path],
                   items: list[int]) -> Queries:
    from treeseek.apps.querying import feature_queries, item_queries, picture_queries
    from treeseek.data.decoding import UnreadableImage, load_rgb
    from treeseek.io.features import load_features

    if sum((bool(images), query is not None, bool(items))) > 1:
        raise TreeseekError("give query images, --query Q.npz or --item ID: one of them")
    if items:
        return item_queries(target, items, pictures=True)
    if query is not None:
        return feature_queries(load_features(query, require_labels=False))
    if not images:
        raise TreeseekError("give one or more query images after the index directory")
    if target.images is None:
        raise TreeseekError(f"{directory} is an index of feature vectors, not of images (it has no backbone)")
    pictures = []
    for path in images:
        try:
            pictures.append(load_rgb(path))
        except UnreadableImage as exc:
            raise TreeseekError(f"cannot read query image {exc}") from None
    return picture_queries(target, pictures, [str(path) for path in images], [path.stem for path in images])


def _features(directory: Path, inputs: list[Path], query: Optional[Path], item, milvus, ranking: Ranking,
              use_database_labels: bool, codes_only: bool) -> SearchTarget:
    """A feature file searched in memory: with a model (every ranking but Hamming) or a hasher (Hamming)."""
    from treeseek.apps.querying import codes_target, features_target
    from treeseek.codes.storage import load_hasher
    from treeseek.io.features import load_features
    from treeseek.model import TreeseekModel

    if item:
        raise TreeseekError("--item names an item of an index; give the index directory")
    if milvus:
        raise TreeseekError("--milvus searches the collection pushed from an index; give the index directory")
    if len(inputs) != 1 or query is None:
        raise TreeseekError(f"with a {'hasher' if codes_only else 'model'} directory, give DB.npz and --query Q.npz")
    database = load_features(inputs[0], require_labels=use_database_labels)
    if codes_only:
        hasher, class_names, _, _ = load_hasher(directory)
        return codes_target(hasher, class_names, database, kind=ranking.hamming_index)
    if ranking.method == "hamming" or ranking.rerank:
        raise TreeseekError("--hamming and --rerank search an index that stores binary codes, or a hasher directory")
    return features_target(TreeseekModel.load(directory), database, use_database_labels=use_database_labels)


def present(report: dict, queries: Queries, json_out: Optional[Path], grid_out: Optional[Path] = None,
            images=None, grid_dir: Optional[Path] = None) -> None:
    """Print each query's hits; draw its grid when the queries and the index have pictures (into ``grid_out``,
    or ``grid_dir/<query>.results.png``); write the JSON."""
    from treeseek.apps.plots import image_grid
    from treeseek.apps.presentation import report_lines
    from treeseek.io.files import atomic_write_json

    for q, query in enumerate(report["queries"]):
        for line in report_lines(query):
            typer.echo(line)
        if images is not None and queries.pictures is not None:
            target = grid_out or Path(grid_dir or ".") / f"{queries.stems[q]}.results.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            if len(queries.stems) > 1 and grid_out is not None:
                target = grid_out.with_name(f"{grid_out.stem}-{q}{grid_out.suffix}")
            thumbs = [(images.thumbnail(e["id"], e["path"]), f"{e['class']}\nD={e['distance']:.3f}")
                      for e in query["results"]]
            # the query's own folder is its class in a collection laid out as treeseek reads it
            shown = Path(str(queries.names[q]))
            label = f"{shown.parent.name}/{shown.name}" if shown.parent.name else shown.name
            image_grid(queries.pictures[q], f"{label}\nplaced at {query['leaf']}", thumbs, target)
            typer.echo(f"  grid: {target}")
    if json_out is not None:
        atomic_write_json(json_out, report)
