"""``treeseek hash ...``: train binary hashers, encode features, search and evaluate by Hamming distance."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

from treeseek.errors import TreeseekError

hash_app = typer.Typer(no_args_is_help=True, help="Binary codes: HPDH, DCWH, ITQ, sign-of-PCA; Hamming search.")


@hash_app.command("train")
def train(
    source: Path = typer.Argument(..., help="Training features (.npz with labels and class_names), or an image "
                                  "folder with --end-to-end."),
    out: Path = typer.Option(..., "--out", help="Hasher directory to write."),
    method: str = typer.Option("hpdh", help="hpdh, dcwh (HPDH on the finest level only), itq or pca."),
    bits: int = typer.Option(64, help="Code length, a multiple of 8."),
    hierarchy: str = typer.Option("visual", help="Levels for hpdh: 'visual' (learned) or a taxonomy file."),
    epochs: int = typer.Option(150, help="Training epochs (hpdh, dcwh)."),
    lr: float = typer.Option(1e-3, help="SGD learning rate (hpdh, dcwh)."),
    batch_size: int = typer.Option(64, help="Training batch size (hpdh, dcwh)."),
    seed: int = typer.Option(0, help="Random seed: training is deterministic under it."),
    coarse_weight: str = typer.Option("1", help="hpdh: w in the coarse levels' scales s_l = w/(l+1) (1: the "
                                      "paper's), or 'select' to choose it from 1, 0.3, 0.1 on a validation split, or "
                                      "'select:W1,W2,...' to choose it from the weights given."),
    initial_centres: str = typer.Option("class-means", help="hpdh, dcwh: the first epoch's centres, 'class-means' "
                                        "(of the initial layer's outputs) or 'random' (the authors' code)."),
    hidden: int = typer.Option(0, help="hpdh, dcwh: 0 for the authors' linear hash layer, or N for a ReLU layer "
                               "of N units before it (better codes from frozen features)."),
    coarse_loss: str = typer.Option("centres", help="hpdh: 'centres' (the paper: a softmax over each coarse "
                                    "level's centres), 'marginal' (a group's probability is the sum of its "
                                    "classes') or 'outside' (a softmax over the own class and the classes "
                                    "outside its group: pushes groups apart, never pulls siblings together)."),
    end_to_end: bool = typer.Option(False, help="Fine-tune the backbone with the hash layer on the image folder "
                                    "SOURCE (hpdh, dcwh; a GPU is advisable)."),
    backbone: str = typer.Option("efficientnet_lite0", help="With --end-to-end: the backbone to fine-tune."),
    weights: Optional[str] = typer.Option(None, help="With --end-to-end: the backbone's weights file."),
    backbone_out: Optional[Path] = typer.Option(None, help="With --end-to-end: where the fine-tuned backbone goes "
                                                "(use it as --backbone to extract features for the hasher)."),
    device: str = typer.Option("auto", help="With --end-to-end: auto (a GPU when present), cpu or cuda."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Train a hasher on frozen features, or end to end with its backbone."""
    from treeseek.codes import hierarchy_level_labels
    from treeseek.codes.hpdh import group_counts
    from treeseek.codes.storage import KINDS, save_hasher
    from treeseek.evaluation.code_tuning import level_scales
    from treeseek.hierarchy import Hierarchy, load_taxonomy
    from treeseek.io.features import load_features

    if method not in ("hpdh", "dcwh", "itq", "pca"):
        raise TreeseekError(f"method must be hpdh, dcwh, itq or pca, got {method!r}")
    if end_to_end and (method not in ("hpdh", "dcwh") or backbone_out is None):
        raise TreeseekError("--end-to-end trains hpdh or dcwh and needs --backbone-out")
    images = None
    if end_to_end:
        from treeseek.apps.jobs.config import ImageJob
        from treeseek.embed.extraction import extract_features

        job = ImageJob(source, backbone=backbone, weights=weights, device=device, progress=progress)
        images = job.images().split("train")
        names = list(images.class_names)
        features, keep, _ = extract_features(job.load_backbone(), images, progress=progress) \
            if hierarchy == "visual" else (None, None, None)
        labels = images.labels[keep] if keep is not None else images.labels
    else:
        data = load_features(source)
        names = data.class_names or [str(i) for i in range(int(data.labels.max()) + 1)]
        features, labels = data.features, data.labels
    tree = levels = None
    if method in ("hpdh", "dcwh"):
        from treeseek.model import TreeseekModel

        tree = TreeseekModel(hierarchy="visual").fit(features, labels, names).hierarchy_ if hierarchy == "visual" \
            else load_taxonomy(hierarchy, names)
        levels = hierarchy_level_labels(tree, labels)
        levels = levels[:1] if method == "dcwh" else levels
        params = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed,
                  "initial_centres": initial_centres, "hidden": hidden, "coarse_loss": coarse_loss}
        weight = _coarse_weight(coarse_weight, features, labels, tree, bits, params, progress) \
            if method == "hpdh" else 1.0
        hasher = KINDS["hpdh"](bits, scales=level_scales(len(levels), weight), **params)
    else:
        hasher = KINDS[method](bits, seed=seed) if method == "itq" else KINDS[method](bits)
    start = time.perf_counter()
    if end_to_end:
        from treeseek.training.hashing_network import train_end_to_end

        levels_tree = Hierarchy.flat(tree.n_leaves, tree.names[: tree.n_leaves]) if method == "dcwh" else tree
        train_end_to_end(hasher, images, levels_tree, backbone, weights, backbone_out, device, progress)
    else:
        hasher.fit(features, levels, progress=progress)
    seconds = time.perf_counter() - start
    info = {"method": method, "train_seconds": seconds, "levels": group_counts(levels or [])}
    if end_to_end:
        info["backbone"] = str(backbone_out)
    save_hasher(hasher, out, names, tree, info)
    typer.echo(f"{out}: {method}, {bits} bits, trained in {seconds:.1f} s"
               + (f"; encode features of --backbone {backbone_out}" if end_to_end else ""))


def _coarse_weight(text: str, features, labels, tree, bits: int, params: dict, progress: bool) -> float:
    from treeseek.evaluation.code_tuning import COARSE_WEIGHTS, select_coarse_weight

    if text == "select" or text.startswith("select:"):
        if features is None:
            raise TreeseekError("--coarse-weight select needs frozen features: with --end-to-end give a number")
        grid = [_weight(part) for part in text[len("select:"):].split(",")] if ":" in text else COARSE_WEIGHTS
        weight, records = select_coarse_weight(features, labels, tree, bits, grid, **params)
        if progress:
            typer.echo("coarse weight on validation: " + ", ".join(f"w={r['coarse_weight']:g} mAHP@250 "
                                                                   f"{r['mahp@250']:.4f}" for r in records))
        return weight
    return _weight(text)


def _weight(text: str) -> float:
    try:
        weight = float(text)
    except ValueError:
        raise TreeseekError(f"--coarse-weight must be a number, 'select' or 'select:W1,W2,...', got {text!r}") \
            from None
    if not weight >= 0:
        raise TreeseekError(f"--coarse-weight must be >= 0, got {text}")
    return weight


@hash_app.command("encode")
def encode(
    hasher_dir: Path = typer.Argument(..., help="Hasher directory."),
    features: Path = typer.Argument(..., help="Features to encode (.npz)."),
    out: Path = typer.Option(..., "--out", help="Codes file (.npz with codes, ids and labels when known)."),
) -> None:
    """Packed binary codes of a feature file."""
    import numpy as np

    from treeseek.codes.storage import load_hasher
    from treeseek.io.features import load_features
    from treeseek.io.files import atomic_save_npz

    hasher, _, _, _ = load_hasher(hasher_dir)
    data = load_features(features, require_labels=False)
    arrays = {"codes": _encode(hasher, data), "ids": data.row_ids(), "bits": np.array(hasher.bits)}
    if data.labels is not None:
        arrays["labels"] = data.labels
    atomic_save_npz(out, arrays)
    typer.echo(f"{out}: {len(data)} codes of {hasher.bits} bits")


@hash_app.command("search")
def search(
    hasher_dir: Path = typer.Argument(..., help="Hasher directory."),
    database: Path = typer.Argument(..., help="Database features (.npz)."),
    query: Path = typer.Option(..., "--query", help="Query features (.npz)."),
    k: int = typer.Option(10, "-k", "--k", help="Results per query."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON."),
) -> None:
    """Top-k by Hamming distance (exact; ties in database order): 'treeseek search HASHER DB.npz --query Q.npz'."""
    from treeseek.apps.cli.search import present
    from treeseek.apps.querying import codes_target, feature_queries, run_search
    from treeseek.codes.storage import load_hasher
    from treeseek.io.features import load_features
    from treeseek.search import Ranking

    hasher, names, _, _ = load_hasher(hasher_dir)
    target = codes_target(hasher, names, load_features(database, require_labels=False))
    queries = feature_queries(load_features(query, require_labels=False))
    present(run_search(target, queries, k, Ranking("hamming")), queries, json_out)


@hash_app.command("evaluate")
def evaluate(
    hasher_dir: Path = typer.Argument(..., help="Hasher directory."),
    queries: Path = typer.Argument(..., help="Query features with labels (.npz): the test split."),
    database: Path = typer.Option(..., "--database", help="Database features with labels: the train split."),
    taxonomy: Optional[Path] = typer.Option(None, help="Taxonomy for mAHP and nDCG (default: the hasher's tree)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the metrics as JSON."),
    convention: str = typer.Option("treeseek", help="Whose metric definitions: treeseek, hpdh (its own code's "
                                   "mAHP and nDCG), barz, deephash, pml or bertinetto."),
) -> None:
    """HPDH's protocol: mAP over the full ranking, mAHP@250, nDCG averaged over k = 1..100, and mAHP@250's
    parts: precision@250 and the mean similarity of the other results (treeseek's definitions; --convention
    hpdh for HPDH's own code's)."""
    from treeseek.codes.storage import load_hasher
    from treeseek.evaluation.conventions import get_convention
    from treeseek.evaluation.hashing import evaluate_codes
    from treeseek.hierarchy import load_taxonomy
    from treeseek.io.features import align_labels, load_features
    from treeseek.io.files import atomic_write_json

    get_convention(convention)
    hasher, names, tree, _ = load_hasher(hasher_dir)
    tree = load_taxonomy(taxonomy, names) if taxonomy is not None else tree
    if tree is None:
        raise TreeseekError("this hasher has no hierarchy; give --taxonomy")
    q, db = load_features(queries), load_features(database)
    metrics = evaluate_codes(_encode(hasher, q), _encode(hasher, db),
                             align_labels(q, names), align_labels(db, names), tree, convention=convention)
    typer.echo(json.dumps(metrics, indent=2))
    if json_out is not None:
        atomic_write_json(json_out, metrics)


def _encode(hasher, data):
    """Packed codes of a feature set, after checking it has the dimension the hasher was trained on."""
    if data.dim != hasher.mean_.shape[0]:
        raise TreeseekError(f"{data.source}: features have {data.dim} dimensions, the hasher expects "
                            f"{hasher.mean_.shape[0]}")
    return hasher.encode(data.features)
