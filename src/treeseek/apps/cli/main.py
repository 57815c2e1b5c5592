"""Command-line interface. Bad input ends with one ``error:`` line and exit status 2."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperGroup

from treeseek.apps.cli.duplicates import duplicates
from treeseek.apps.cli.engine import (
    MILVUS_OPTION,
    MILVUS_PARAM_OPTION,
    SEARCH_COLLECTION_OPTION,
    TOKEN_OPTION,
    engine_app,
    milvus_target,
)
from treeseek.apps.cli.hashing import hash_app
from treeseek.apps.cli.images import SUBCLASSES_HELP, experiment, parse_subclasses, run, train
from treeseek.apps.cli.index import index_app, not_an_index_output
from treeseek.apps.cli.search import search
from treeseek.choices import BASELINES, COSINE_SPACES, DEFAULT_HIERARCHY, METHODS
from treeseek.errors import TreeseekError


class OneLineErrors(TyperGroup):
    """Bad input ends with one ``error:`` line and exit status 2 (a failing disk or memory: status 1), never a
    traceback: for every command, however it is run (the entry point, ``python -m treeseek``, a CliRunner)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except TreeseekError as exc:
            typer.echo(f"error: {exc}", err=True)
            ctx.exit(2)
        except (OSError, MemoryError) as exc:
            typer.echo(f"error: {exc}", err=True)
            ctx.exit(1)


app = typer.Typer(cls=OneLineErrors, add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Hierarchy-aware image retrieval.")


def _parse_ks(text: str) -> list[int]:
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise TreeseekError(f"--k must be a comma-separated list of integers, got {text!r}") from None
    if not ks or ks[0] < 1:
        raise TreeseekError(f"--k values must be positive, got {text!r}")
    return ks


@app.command()
def fit(
    train: Path = typer.Argument(..., help="Training features (.npz with features, labels[, class_names])."),
    out: Path = typer.Option(..., "--out", help="Model directory to write."),
    hierarchy: str = typer.Option(DEFAULT_HIERARCHY, help="LINKAGE[:LEVELS][:DISTANCE][:LEXICON[=W]] (e.g. "
                                  "average:8:cosine; :names also weighs what the class names mean, with the "
                                  "'language' extra; :wordnet the WordNet distance between them; :names+wordnet "
                                  "both), "
                                  "visual (the paper's threshold tree), ward, or a taxonomy file."),
    threshold: str = typer.Option("auto", help="Visual builder t: a number, 'auto', or a BC quantile like q0.99."),
    variance: float = typer.Option(0.95, help="Fraction of variance PCA keeps."),
    max_dim: Optional[int] = typer.Option(None, help="Cap on PCA dimensions."),
    covariance: str = typer.Option("tied", help="Gaussian covariance model: tied, full or diag."),
    alpha: float = typer.Option(1.0, help="Default weight of the hierarchy term."),
    plot: bool = typer.Option(True, help="Also write hierarchy.png and hierarchy.nwk into the model directory."),
    subclasses: str = typer.Option("off", help=SUBCLASSES_HELP),
    cosine: str = typer.Option("raw", help="Where every ranking takes its cosine: raw features (the paper's), "
                               "centred on the training mean, or whitened (centred, the kept principal components "
                               "at equal variance)."),
) -> None:
    """Fit PCA, class Gaussians and a hierarchy on training features."""
    from treeseek.apps.plots import plot_hierarchy
    from treeseek.evaluation.tuning import select_subclasses
    from treeseek.hierarchy import save_hierarchy
    from treeseek.hierarchy.builders import parse_threshold
    from treeseek.io.features import load_features
    from treeseek.model import TreeseekModel

    most = parse_subclasses(subclasses)
    data = load_features(train)
    params = {"variance": variance, "max_components": max_dim, "covariance": covariance, "hierarchy": hierarchy,
              "threshold": parse_threshold(threshold), "alpha": alpha, "cosine": cosine}
    if cosine not in COSINE_SPACES:
        raise TreeseekError(f"--cosine must be one of {', '.join(COSINE_SPACES)}, got {cosine!r}")
    if most == "auto":
        if data.labels is None:
            raise TreeseekError(f"{train}: the training features need labels")
        chosen = select_subclasses(data.features, data.labels, data.class_names or
                                   [str(i) for i in range(int(data.labels.max()) + 1)], params)
        typer.echo("sub-classes on validation: " + ", ".join(
            f"at most {row['subclasses']} per class -> {chosen.split['metric']} {row[chosen.split['metric']]:.4f}"
            for row in chosen.grid))
        most = chosen.params["subclasses"]
    model = TreeseekModel(**params, subclasses=most)
    model.fit(data.features, data.labels, data.class_names)
    model.save(out)
    info = model.fit_info_
    if plot:
        save_hierarchy(model.hierarchy_, out / "hierarchy.nwk")
        plot_hierarchy(model.hierarchy_, out / "hierarchy.png")
    typer.echo(f"fitted {model.n_classes_} classes from {info['n_train']} vectors -> {out}")
    typer.echo(f"  PCA: {info['input_dim']} -> {info['pca_dim']} dims ({info['explained_variance']:.1%} of variance)")
    threshold_text = "" if info["threshold"] is None else f", t = {info['threshold']:.3g}"
    typer.echo(f"  hierarchy ({hierarchy}{threshold_text}): groups per level {info['tree_shape']}, height {info['tree_height']}")
    typer.echo(f"  training leaf accuracy (Mahalanobis, {covariance}): {info['train_leaf_accuracy']:.1%}")
    typer.echo(f"  open set: a query scoring above {info['novelty_threshold']:.4g} (the {model.novelty_quantile:.0%} "
               f"quantile of held-out known-class images) is flagged and ranked by cosine alone")
    if cosine != "raw":
        typer.echo(f"  cosine: taken on {cosine} features, in every ranking")
    if info.get("wordnet"):
        typer.echo(f"  WordNet: {info['wordnet']['coverage']:.0%} of the class names resolved, in the domain "
                   f"{info['wordnet']['domain']} (model.json lists each class's synset)")
    if info["split_classes"]:
        typer.echo(f"  sub-classes: {len(info['split_classes'])} classes split by X-means, {info['subclasses']} leaves "
                   f"({', '.join(info['split_classes'][:5])}{', ...' if len(info['split_classes']) > 5 else ''})")
    small = info["classes_with_fewer_samples_than_dims"]
    if small and covariance != "tied":
        typer.echo(f"  note: {small} classes have fewer samples than the {info['pca_dim']} PCA dimensions; their "
                   f"{covariance} covariances rely on shrinkage (--covariance tied or --max-dim avoid this)")


@app.command()
def evaluate(
    model_dir: Path = typer.Argument(..., help="Model directory from 'treeseek fit'."),
    queries: Path = typer.Argument(..., help="Query features (.npz)."),
    database: Optional[Path] = typer.Option(None, help="Database features; without it, leave-one-out within QUERIES."),
    alpha: Optional[float] = typer.Option(None, help="Weight of the hierarchy term (default: the model's)."),
    k: str = typer.Option("1,5,10", "--k", help="Cut-offs, comma-separated."),
    taxonomy: Optional[Path] = typer.Option(None, help="Evaluation taxonomy for mAHP, nDCG and mistake severity."),
    methods: str = typer.Option(",".join((*METHODS, *BASELINES)), help="Comma-separated methods (crm: Karthik et al.'s "
                                "conditional-risk class, ranked as combined)."),
    use_database_labels: bool = typer.Option(False, help="Place database items at their known labels."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write every metric as JSON."),
    plot: Optional[Path] = typer.Option(None, help="Write the mAP@k curves (k = 1..100) as a picture."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    convention: str = typer.Option("treeseek", help="Whose metric definitions: treeseek, barz, hpdh, deephash, "
                                   "pml or bertinetto (README: Metrics and their conventions)."),
    only: Optional[str] = typer.Option(None, "--metrics", help="Only these metrics, comma-separated (e.g. ahp,map)."),
) -> None:
    """Score every ranking method on a query set."""
    from treeseek.apps.plots import plot_map_curves
    from treeseek.evaluation import evaluate_retrieval
    from treeseek.hierarchy import load_taxonomy
    from treeseek.io.features import load_features
    from treeseek.io.files import atomic_write_json
    from treeseek.model import TreeseekModel

    model = TreeseekModel.load(model_dir)
    ks = _parse_ks(k)
    query_data = load_features(queries)
    db_data = load_features(database) if database is not None else None
    tax = load_taxonomy(taxonomy, model.class_names_) if taxonomy is not None else None
    result = evaluate_retrieval(model, query_data, db_data, methods=[m.strip() for m in methods.split(",") if m.strip()],
                                alpha=alpha, ks=ks, taxonomy=tax, use_database_labels=use_database_labels,
                                progress=progress, convention=convention,
                                metrics=None if only is None else [m.strip() for m in only.split(",") if m.strip()])
    info = result.info
    typer.echo(f"{info['protocol']}: {info['n_queries']} queries, {info['n_database']} database items, "
               f"alpha = {info['alpha']:g}, query leaf accuracy {info['query_leaf_accuracy']:.1%}")
    if tax is not None:
        typer.echo(f"tree {info['tree_shape']}, agreement with the taxonomy (LCA-height correlation) "
                   f"{info['taxonomy_agreement']:.3f}")
    typer.echo(f"metrics as {convention} defines them")
    methods_shown = list(result.metrics)
    names = list(result.metrics[methods_shown[0]])
    width = max(len(name) for name in names + ["metric"])
    typer.echo(f"{'metric':<{width}}" + "".join(f"{m:>11}" for m in methods_shown))
    for name in names:
        typer.echo(f"{name:<{width}}" + "".join(f"{result.metrics[m][name]:>11.4f}" for m in methods_shown))
    if json_out is not None:
        atomic_write_json(json_out, {**result.metrics, "_info": info})
    if plot is not None:
        plot_map_curves(result.curves, plot, f"mAP@k ({info['protocol']})")


@app.command("hierarchy")
def show_hierarchy(
    source: Path = typer.Argument(..., help="A model directory or a taxonomy file."),
    newick: Optional[Path] = typer.Option(None, help="Write Newick here."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write treeseek JSON here."),
    png: Optional[Path] = typer.Option(None, help="Write a picture here."),
    compare: Optional[Path] = typer.Option(None, help="A taxonomy of the same classes: print how well the tree "
                                           "agrees with it (correlation of LCA heights over class pairs)."),
) -> None:
    """Print a tree's shape and export it."""
    from treeseek.apps.plots import plot_hierarchy
    from treeseek.hierarchy import Hierarchy, load_taxonomy, save_hierarchy
    from treeseek.hierarchy.builders import lca_agreement
    from treeseek.model import TreeseekModel

    model = TreeseekModel.load(source) if source.is_dir() else None
    tree: Hierarchy = model.hierarchy_ if model is not None else load_taxonomy(source)
    typer.echo(f"{tree.n_leaves} leaves, {tree.n_nodes - tree.n_leaves} inner nodes, height {tree.max_height}")
    typer.echo(f"groups at each height: {tree.shape()}")
    if compare is not None:  # over the classes, whatever sub-classes split them
        classes = model.class_hierarchy_ if model is not None else tree
        other = load_taxonomy(compare, classes.names[: classes.n_leaves])
        typer.echo(f"agreement with {compare.name} (LCA-height correlation): {lca_agreement(classes, other):.3f}")
    if newick is not None:
        save_hierarchy(tree, newick)
    if json_out is not None:
        save_hierarchy(tree, json_out)
    if png is not None:
        plot_hierarchy(tree, png)


@app.command()
def synthetic(
    out: Path = typer.Argument(..., help="Directory for train.npz, test.npz and taxonomy.json."),
    branching: str = typer.Option("3,3,4", help="Children per node, from the root down."),
    dim: int = typer.Option(64, help="Feature dimension."),
    train_per_class: int = typer.Option(40, help="Training vectors per class."),
    test_per_class: int = typer.Option(10, help="Test vectors per class."),
    scale: float = typer.Option(4.0, help="Offset length per level, in noise units."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Write features with a planted hierarchy (for trying treeseek without images)."""
    import numpy as np

    from treeseek.hierarchy import save_hierarchy
    from treeseek.hierarchy.synthetic import planted_hierarchy
    from treeseek.io.features import save_features

    try:
        shape = tuple(int(b) for b in branching.split(","))
    except ValueError:
        raise TreeseekError(f"--branching must be comma-separated integers, got {branching!r}") from None
    per_class = train_per_class + test_per_class
    data = planted_hierarchy(shape, dim, per_class, scale, seed=seed)
    is_test = np.tile(np.arange(per_class) >= train_per_class, len(data.class_names))
    for name, mask in (("train", ~is_test), ("test", is_test)):
        save_features(out / f"{name}.npz", data.features[mask], data.labels[mask], data.class_names,
                      np.flatnonzero(mask))
    save_hierarchy(data.hierarchy, out / "taxonomy.json")
    typer.echo(f"wrote {out}/train.npz, test.npz ({len(data.class_names)} classes, {dim} dims) and taxonomy.json")


@app.command()
def serve(
    index_dir: Path = typer.Argument(..., help="An index directory ('treeseek run' writes OUT/index)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 for every interface)."),
    port: int = typer.Option(8000, help="Port to listen on."),
    max_upload_mb: float = typer.Option(20.0, help="Largest image search accepted (all its images), in MB; "
                                        "refused while it is read."),
    max_megapixels: float = typer.Option(40.0, help="Largest query image accepted, in megapixels (checked before "
                                         "decoding)."),
    show_paths: bool = typer.Option(False, "--show-paths", help="Report items' files as paths on this machine "
                                    "(by default relative to the collection's folder)."),
    cors_origin: Optional[List[str]] = typer.Option(None, help="A web origin (https://host:port, or *) whose pages "
                                                    "may call the API (repeatable; none by default)."),
    milvus: Optional[str] = MILVUS_OPTION,
    collection: Optional[str] = SEARCH_COLLECTION_OPTION,
    milvus_param: Optional[List[str]] = MILVUS_PARAM_OPTION,
    token: str = TOKEN_OPTION,
    access_token: str = typer.Option("", envvar="TREESEEK_SERVER_TOKEN",
                                     help="Require this token of every API request; the page asks for it. Prefer "
                                          "the environment variable: a command line is visible to other users."),
    workers: int = typer.Option(1, help="Processes that answer requests in parallel (each opens the index)."),
    access_log: str = typer.Option("errors", help="Log requests on stderr: errors (refused or failed ones), all, "
                                   "or off."),
) -> None:
    """Serve an index over HTTP: a web page at /, a JSON API under /api (described at /openapi.json).

    The server only reads: it opens the index again whenever a writer ('treeseek index add', ...) commits.
    """
    import uvicorn

    from treeseek.apps.server import create_app
    from treeseek.apps.server.access_log import ACCESS_LOGS, configure_access_log

    not_an_index_output(index_dir)
    if workers < 1:
        raise TreeseekError(f"--workers must be at least 1, got {workers}")
    if access_log not in ACCESS_LOGS:
        raise TreeseekError(f"--access-log must be one of {', '.join(ACCESS_LOGS)}, got {access_log!r}")
    configure_access_log()
    target = milvus_target(index_dir, milvus, collection, milvus_param, token) if milvus else None
    if max_upload_mb <= 0 or max_megapixels <= 0:
        raise TreeseekError("--max-upload-mb and --max-megapixels must be positive")
    settings = {"directory": str(index_dir.absolute()), "max_upload_mb": max_upload_mb,
                "cors_origins": list(cors_origin or ()), "access_token": access_token or None,
                "max_megapixels": max_megapixels, "show_paths": show_paths, "access_log": access_log}
    application = create_app(**settings, milvus=target)  # a bad index or engine fails here, in one line
    _check_can_listen(host, port)
    if not access_token and host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"warning: serving on {host} without an access token: whoever reaches this port can search "
                   f"the index and see its pictures (set TREESEEK_SERVER_TOKEN)", err=True)
    typer.echo(f"treeseek: starting {workers} process(es) for {index_dir}...")
    # announced once the port answers: with several workers, each first imports and opens everything
    _announce_when_answering(host, port, f"treeseek: serving {index_dir} at http://{host}:{port}/ with {workers} "
                                         f"process(es) (Ctrl+C stops)")
    if workers == 1:
        uvicorn.run(application, host=host, port=port, log_level="warning")
    else:
        from treeseek.apps.server.processes import run_workers

        run_workers({**settings, "milvus": target._asdict() if target else None}, host, port, workers)


def _announce_when_answering(host: str, port: int, message: str, timeout: float = 600.0) -> None:
    """Print ``message`` from a background thread as soon as the server answers HTTP on the port."""
    import http.client
    import threading
    import time

    def watch() -> None:
        deadline = time.monotonic() + timeout
        address = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
        while time.monotonic() < deadline:
            connection = http.client.HTTPConnection(address, port, timeout=2)
            try:
                connection.request("GET", "/api/info")
                connection.getresponse().read()
            except OSError:
                time.sleep(0.2)
                continue
            finally:
                connection.close()
            typer.echo(message)
            return

    threading.Thread(target=watch, daemon=True, name="treeseek-announce").start()


def _check_can_listen(host: str, port: int) -> None:
    """Fail with one line before announcing a server that could not start (uvicorn would log and exit 3)."""
    import socket

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise TreeseekError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


app.command()(search)
app.command()(duplicates)
app.command()(run)
app.command()(experiment)
app.command()(train)
app.add_typer(index_app, name="index")
app.add_typer(hash_app, name="hash")
app.add_typer(engine_app, name="engine")


class _StderrHandler(logging.Handler):
    """Library log records as the command line's own lines (``warning: ...``), on whatever stderr is now."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        sys.stderr.write(f"{record.levelname.lower()}: {message}\n" if record.levelno >= logging.WARNING else
                         f"{message}\n")
        sys.stderr.flush()


def configure_logging() -> None:
    logger = logging.getLogger("treeseek")
    if not any(isinstance(handler, _StderrHandler) for handler in logger.handlers):
        logger.addHandler(_StderrHandler())
        logger.setLevel(logging.INFO)
        logger.propagate = False


def main(args: list[str] | None = None) -> None:
    """The ``treeseek`` command (``args``: the command line's words, default ``sys.argv[1:]``)."""
    configure_logging()
    app(args=args)


if __name__ == "__main__":
    main()
