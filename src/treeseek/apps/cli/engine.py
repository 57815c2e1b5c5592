"""``treeseek engine ...``: hand an index's ranking to Milvus, for collections that outgrow one machine."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional

import typer

from treeseek.apps.cli.index import parse_params
from treeseek.choices import ENGINE_METHODS
from treeseek.choices import MILVUS_INDEX_TYPES as INDEX_TYPES

engine_app = typer.Typer(no_args_is_help=True, help="Serve an index's ranking from Milvus (any inner-product engine "
                                                    "can: see treeseek.index.engine_vectors).")

URI_HELP = "Milvus URI: http://HOST:19530 (a server or cluster), or a local FILE.db (Milvus Lite)."
# the options of 'engine push' and 'engine status'
INDEX_ARGUMENT = typer.Argument(..., help="Index directory.")
URI_OPTION = typer.Option(..., "--uri", help=URI_HELP)
COLLECTION_OPTION = typer.Option(None, "--collection", help="Collection name (default: treeseek_ and the index "
                                                            "directory's name).")
TOKEN_OPTION = typer.Option("", envvar="TREESEEK_MILVUS_TOKEN", help="Milvus token (USER:PASSWORD or an API key).")
# the options of the commands that search a pushed collection ('search', 'serve')
MILVUS_OPTION = typer.Option(None, "--milvus", help="Rank in Milvus ('treeseek engine push'): " + URI_HELP)
SEARCH_COLLECTION_OPTION = typer.Option(None, "--collection", help="With --milvus: the collection (default as for "
                                                                   "push).")
MILVUS_PARAM_OPTION = typer.Option(None, "--milvus-param", help="With --milvus: search parameter NAME=VALUE "
                                                                "(nprobe for IVF_FLAT, ef for HNSW).")


def milvus_target(index_dir: Path, uri: str, collection: Optional[str], search_param: Optional[List[str]],
                  token: str):
    """The Milvus collection of ``--milvus``: a ``MilvusTarget``."""
    from treeseek.index.milvus import MilvusTarget, default_collection

    _quiet_pymilvus()
    return MilvusTarget(uri, collection or default_collection(index_dir), parse_params(search_param), token)


def _quiet_pymilvus() -> None:
    """pymilvus logs every failed call with its traceback, and Milvus Lite's missing timestamps as warnings;
    the commands print a failure as one line themselves."""
    try:
        import pymilvus  # noqa: F401  (importing it installs the log handlers quieted here)
    except ImportError:
        return  # MilvusIndex says how to install it
    for name in ("pymilvus", "pymilvus.milvus_client"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


@engine_app.command("push")
def push(
    directory: Path = INDEX_ARGUMENT,
    uri: str = URI_OPTION,
    collection: Optional[str] = COLLECTION_OPTION,
    method: str = typer.Option("soft", help=f"Ranking the vectors are made for: {' or '.join(ENGINE_METHODS)}."),
    index_type: str = typer.Option("FLAT", help=f"Milvus index: {', '.join(INDEX_TYPES)} (FLAT is exact)."),
    param: Optional[List[str]] = typer.Option(None, help="Build parameter NAME=VALUE (repeatable): nlist "
                                              "(IVF_FLAT); M, efConstruction (HNSW)."),
    replace: bool = typer.Option(False, help="Drop the collection and push every item anew."),
    token: str = TOKEN_OPTION,
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Make a Milvus collection hold the index's live items: add what it lacks, delete what was removed.

    Then 'treeseek search DIRECTORY ... --milvus URI' ranks in Milvus and describes the hits from the index.
    """
    from treeseek.index import TreeIndex

    index = TreeIndex.open(directory)
    target = milvus_target(directory, uri, collection, None, token)
    engine = target.open(index.model, method, index_type=index_type, index_params=parse_params(param))
    counts = engine.sync(index, replace, progress)
    typer.echo(f"{target.collection} at {uri}: {counts['total']} items ({counts['added']} added, "
               f"{counts['deleted']} deleted), {method} ranking, {index_type}")


@engine_app.command("status")
def status(
    directory: Path = INDEX_ARGUMENT,
    uri: str = URI_OPTION,
    collection: Optional[str] = COLLECTION_OPTION,
    method: str = typer.Option("soft", help=f"Ranking the collection was pushed for: {' or '.join(ENGINE_METHODS)}."),
    token: str = TOKEN_OPTION,
) -> None:
    """Whether a collection is in step with the index: what a push would add and delete (nothing changes)."""
    from treeseek.index import TreeIndex

    index = TreeIndex.open(directory)
    target = milvus_target(directory, uri, collection, None, token)
    found = target.open(index.model, method).status(index)
    typer.echo(f"{target.collection} at {uri}: {found['stored']} items, {method} ranking, {found['index_type']}; "
               f"the index has {found['total']}: a push would add {found['to_add']} and delete {found['to_delete']}")
