"""``treeseek index ...``: create, grow, shrink, refit and check a persistent index of feature vectors."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import List, Optional

import typer

from treeseek.choices import BACKENDS, DEFAULT_WAIT_SECONDS, DTYPES
from treeseek.errors import TreeseekError

index_app = typer.Typer(no_args_is_help=True, help="Persistent indexes: create, add, add-images, prune, remove, refit, compact, backend, codes, info, verify.")

PARAM_HELP = "Backend parameter NAME=VALUE (repeatable): nlist, nprobe (faiss-ivf); m, ef_construction, ef_search " \
             "(faiss-hnsw); min_ann_items (both)."


WAIT_OPTION = typer.Option(DEFAULT_WAIT_SECONDS, "--wait", min=0, metavar="SECONDS",
                           help="How long to wait for another process that is changing the index (0: fail at once).")


def parse_params(pairs: list[str] | None) -> dict:
    params = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        try:
            if not sep:
                raise ValueError
            params[name.strip()] = int(value)
        except ValueError:
            raise TreeseekError(f"--param takes NAME=INTEGER, got {pair!r}") from None
    return params


def _labelled_items(path: Path, model):
    from treeseek.io.features import align_labels, load_features

    data = load_features(path, require_labels=False)
    labels = align_labels(data, model.class_names_)
    return data.features, labels, [str(item) for item in data.row_ids()]


@index_app.command("create")
def create(
    features: Path = typer.Argument(..., help="Database features (.npz; labels and ids are kept when present)."),
    model_dir: Path = typer.Option(..., "--model", help="Model directory from 'treeseek fit'."),
    out: Path = typer.Option(..., "--out", help="Index directory to write."),
    dtype: str = typer.Option("float32", help=f"Stored vector type: {' or '.join(DTYPES)}."),
    backend: str = typer.Option("exact", help=f"Search backend: {', '.join(BACKENDS)}."),
    param: Optional[List[str]] = typer.Option(None, help=PARAM_HELP),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Build an index from a feature file and a fitted model."""
    from treeseek.index import TreeIndex
    from treeseek.model import TreeseekModel

    model = TreeseekModel.load(model_dir)
    index = TreeIndex(model, dtype=dtype, backend=backend, **parse_params(param))
    vectors, labels, sources = _labelled_items(features, model)
    index.add(vectors, labels, sources, progress=progress)
    index.save(out, progress)
    typer.echo(f"{out}: {len(index)} items, {dtype}, backend {backend}")


@index_app.command("add")
def add(
    directory: Path = typer.Argument(..., help="Index directory."),
    features: Path = typer.Argument(..., help="Features of the new items (.npz)."),
    wait: float = WAIT_OPTION,
) -> None:
    """Add items; each is placed at its leaf by Mahalanobis distance, without rebuilding anything."""
    from treeseek.index import TreeIndex

    with TreeIndex.updating(directory, wait=wait) as index:
        vectors, labels, sources = _labelled_items(features, index.model)
        ids = index.add(vectors, labels, sources)
        index.save(directory)
    typer.echo(f"added ids {ids[0]}..{ids[-1]}; {len(index)} items")


@index_app.command("add-images")
def add_images(
    directory: Path = typer.Argument(..., help="Index directory built from images ('treeseek run')."),
    paths: List[Path] = typer.Argument(..., help="Image files, or folders searched for images at any depth."),
    class_from_folder: bool = typer.Option(False, "--class-from-folder",
                                           help="Each image's class is the name of its folder (a class of the "
                                                "model); without it, images are unlabelled and placed by the model."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    wait: float = WAIT_OPTION,
) -> None:
    """Embed new images with the index's own network and add them; images already in the index are skipped."""
    from treeseek.data.datasets import image_files
    from treeseek.index.image_index import FEATURE_CACHE, ImageIndex

    files = image_files(paths)
    if not files:
        raise TreeseekError("no image files in the given paths")
    with ImageIndex.updating(directory, wait=wait) as index:
        indexed = index.sources()
        new = [file for file in files if file not in indexed]
        if new:
            labels = [Path(file).parent.name for file in new] if class_from_folder else None
            # features are kept in the index directory as they are computed: a killed run resumes where it stopped
            cache = directory / FEATURE_CACHE
            ids, unreadable = index.add_images(new, labels, progress, cache_dir=cache)
            index.save(directory)
            shutil.rmtree(cache, ignore_errors=True)  # the index holds them now
            typer.echo(f"added {len(ids)} image(s), ids {ids[0]}..{ids[-1]}" +
                       (f"; skipped {len(unreadable)} unreadable" if unreadable else ""))
    typer.echo(f"{len(files) - len(new)} of the {len(files)} image(s) were in the index already; "
               f"{len(index.index)} items")


@index_app.command("prune")
def prune(
    directory: Path = typer.Argument(..., help="Index directory built from images ('treeseek run')."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be removed, and remove nothing."),
    wait: float = WAIT_OPTION,
) -> None:
    """Remove the items whose image file is gone (deleted or moved since it was added)."""
    from treeseek.index.image_index import ImageIndex

    with ImageIndex.updating(directory, wait=wait) as index:
        outcome = index.prune(dry_run)
        for item_id, path in outcome["removed"].items():
            typer.echo(f"  {item_id}  {path}")
        if outcome["removed"] and not dry_run:
            index.save(directory)
    typer.echo(f"{'would remove' if dry_run else 'removed'} {len(outcome['removed'])} of {outcome['checked']} "
               f"item(s) whose image file is gone; {len(index.index)} items" +
               (f" ({outcome['unchecked']} with relative paths not checked)" if outcome["unchecked"] else ""))


@index_app.command("remove")
def remove(
    directory: Path = typer.Argument(..., help="Index directory."),
    ids: List[int] = typer.Argument(..., help="Ids of the items to remove."),
    wait: float = WAIT_OPTION,
) -> None:
    """Remove items by id; they never show up in a result again."""
    from treeseek.index import TreeIndex

    with TreeIndex.updating(directory, wait=wait) as index:
        index.remove(ids)
        index.save(directory)
    typer.echo(f"removed {len(set(ids))}; {len(index)} items")


@index_app.command("refit")
def refit(
    directory: Path = typer.Argument(..., help="Index directory."),
    threshold: Optional[str] = typer.Option(None, help="New visual-builder t (default: keep)."),
    alpha: Optional[float] = typer.Option(None, help="New default alpha (default: keep)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    wait: float = WAIT_OPTION,
) -> None:
    """Fit the model again on the labelled items in the index, and re-place every item."""
    from treeseek.hierarchy.builders import parse_threshold
    from treeseek.index import TreeIndex

    params = {name: value for name, value in (("threshold", threshold), ("alpha", alpha)) if value is not None}
    if "threshold" in params:
        params["threshold"] = parse_threshold(params["threshold"])
    with TreeIndex.updating(directory, wait=wait) as index:
        index.refit(progress, **params)
        index.save(directory, progress)
    typer.echo(f"refitted: tree shape {index.model.fit_info_['tree_shape']}; {len(index)} items")


@index_app.command("compact")
def compact(directory: Path = typer.Argument(..., help="Index directory."), wait: float = WAIT_OPTION) -> None:
    """Rewrite all segments as one, dropping removed items."""
    from treeseek.index import TreeIndex

    with TreeIndex.updating(directory, wait=wait) as index:
        index.compact(progress=True)
        index.save(directory, progress=True)
    typer.echo(f"{len(index)} items in one segment")


@index_app.command("backend")
def set_backend(
    directory: Path = typer.Argument(..., help="Index directory."),
    backend: str = typer.Argument(..., help=f"One of {', '.join(BACKENDS)}."),
    param: Optional[List[str]] = typer.Option(None, help=PARAM_HELP),
    wait: float = WAIT_OPTION,
) -> None:
    """Switch the search backend (builds its structure, e.g. an HNSW graph)."""
    from treeseek.index import TreeIndex

    params = parse_params(param)
    with TreeIndex.updating(directory, wait=wait) as index:
        index.set_backend(backend, progress=True, **params)
        index.save(directory, progress=True)
    typer.echo(f"backend {backend} {index.backend['params']}")


@index_app.command("codes")
def attach_codes(
    directory: Path = typer.Argument(..., help="Index directory."),
    hasher: Optional[Path] = typer.Argument(None, help="Hasher directory from 'treeseek hash train'."),
    drop: bool = typer.Option(False, "--drop", help="Remove the stored codes instead."),
    wait: float = WAIT_OPTION,
) -> None:
    """Store every item's packed binary code from a hasher, for 'treeseek search --hamming'."""
    from treeseek.codes.storage import load_hasher
    from treeseek.index import TreeIndex

    if (hasher is None) != drop:
        raise TreeseekError("give a hasher directory, or --drop")
    loaded = None if drop else load_hasher(hasher)[0]
    with TreeIndex.updating(directory, wait=wait) as index:
        index.set_hasher(loaded, progress=True)
        index.save(directory, progress=True)
    typer.echo(f"{directory}: codes dropped" if drop else f"{directory}: {len(index)} codes of {index.hasher.bits} bits")


def not_an_index_output(directory: Path) -> None:
    """Refuse, pointing at the index, an output folder of 'treeseek run' given where its index is expected."""
    from treeseek.index import is_index

    if not is_index(directory) and is_index(directory / "index"):
        raise TreeseekError(f"{directory} is the output of 'treeseek run'; its index is {directory / 'index'}")


def open_index(directory: Path):
    """The index in ``directory``, or one line saying where it is or why it is not one."""
    from treeseek.index import TreeIndex

    not_an_index_output(directory)
    return TreeIndex.open(directory)


@index_app.command("info")
def info(directory: Path = typer.Argument(..., help="Index directory.")) -> None:
    """Items, segments, removed items, vector type, backend and tree of an index."""
    index = open_index(directory)
    tree = index.model.hierarchy_
    typer.echo(f"{directory}: {len(index)} items in {len(index.segments_)} segment(s), "
               f"{len(index.removed_)} removed awaiting compaction")
    typer.echo(f"vectors: {index.model.input_dim_}-d {index.dtype}; backend {index.backend['name']} "
               f"{index.backend['params']}")
    typer.echo(f"binary codes: {index.hasher.bits} bits" if index.hasher is not None else "binary codes: none")
    typer.echo(f"tree: {tree.n_leaves} leaves, height {tree.max_height}, shape {tree.shape()}")


@index_app.command("verify")
def verify(directory: Path = typer.Argument(..., help="Index directory.")) -> None:
    """Check every file's checksum, the vectors included."""
    index = open_index(directory)
    index.verify(progress=True)
    typer.echo(f"{directory}: every file matches its checksum")
