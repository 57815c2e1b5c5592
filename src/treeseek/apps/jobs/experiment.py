"""``run_experiment``: features -> grid search -> every baseline of paper §4.1 -> robustness -> report.

Rows of the study (paper §4.1), each scored with the same harness on the same split:
Euclidean, cosine, hierarchy only, flat and ours on the backbone features; ours with a Ward and with
the taxonomy hierarchy; Barz & Denzler's semantic embeddings, and ours applied to them; and, beyond
the paper, ours with soft leaves and with an average-linkage visual tree. The robustness
study (§4.2) re-extracts the test images' features under each perturbation and scores every row again.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from treeseek.apps.jobs.config import ImageJob
from treeseek.apps.jobs.experiment_report import write_html_report
from treeseek.apps.plots import image_grid, plot_hierarchy, plot_map_curves, plot_robustness
from treeseek.data.perturbations import PERTURBATIONS, perturbed
from treeseek.embed.extraction import extract_features
from treeseek.errors import TreeseekError
from treeseek.evaluation import evaluate_retrieval
from treeseek.evaluation.conventions import get_convention
from treeseek.evaluation.tuning import select_parameters
from treeseek.hierarchy import load_taxonomy
from treeseek.io.features import FeatureSet
from treeseek.io.files import atomic_write_json
from treeseek.model import TreeseekModel
from treeseek.search import full_sort_search, ranking_keys
from treeseek.training.semantic_embedding import SemanticEmbeddingHead

logger = logging.getLogger(__name__)

KS = (1, 5, 10, 50, 100)
# (row, model, harness method, feature space)
STUDY_ROWS = (
    ("Euclidean", "visual", "euclidean", "features"),
    ("cosine", "visual", "cosine", "features"),
    ("hierarchy only", "visual", "hierarchy", "features"),
    ("flat (predicted class only)", "visual", "flat", "features"),
    ("ours (visual hierarchy)", "visual", "combined", "features"),
    ("ours, Ward hierarchy", "ward", "combined", "features"),
    ("ours, taxonomy hierarchy", "taxonomy", "combined", "features"),
    ("semantic embeddings (Barz & Denzler)", "semantic", "cosine", "semantic"),
    ("ours on semantic embeddings", "semantic", "combined", "semantic"),
    # beyond the paper: soft leaves and a full (average-linkage) visual tree
    ("ours, soft leaves", "visual", "soft", "features"),
    ("conditional-risk class (CRM, Karthik et al.)", "visual", "crm", "features"),
    ("ours, average-linkage tree", "average", "combined", "features"),
    ("ours, average-linkage tree, soft leaves", "average", "soft", "features"),
)


def run_experiment(job: ImageJob, out: str | Path, *, taxonomy: str | Path,
                   perturbations: Sequence[str] = PERTURBATIONS, grid: dict | None = None, examples: int = 4,
                   full_ranking: bool = True, cache_dir: str | Path | None = None,
                   convention: str = "treeseek") -> dict:
    """Run the study; writes report.html (self-contained), report.json, selection.json and the pictures.

    Parameters
    ----------
    job : ImageJob
        The collection and the network that embeds it.
    out : str or Path
        The output directory.
    taxonomy : str or Path
        The classes' taxonomy: the semantic baselines and mAHP use it.
    perturbations : sequence of str
        Robustness conditions (blur, saturation, occlusion).
    grid : dict, optional
        The validation grid of t and alpha (default: the full one).
    examples : int
        Example queries shown as image grids.
    full_ranking : bool
        Also score mAP over the whole ranking.
    cache_dir : str or Path, optional
        Where features are cached (default ``out/cache``; perturbed ones in its subfolders).

    Returns
    -------
    dict
        The report (also written as report.json).
    """
    unknown = [p for p in perturbations if p not in PERTURBATIONS]
    if unknown:
        raise TreeseekError(f"unknown perturbation {unknown[0]!r}: choose from {', '.join(PERTURBATIONS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir) if cache_dir is not None else out / "cache"
    images = job.images()
    get_convention(convention)
    names = images.class_names
    tree = load_taxonomy(taxonomy, names)
    backbone = job.load_backbone()
    features, kept, _ = extract_features(backbone, images, job.batch_size, cache, job.progress)
    images = images.subset(kept)
    train, test = images.splits == "train", images.splits == "test"
    X, y, Q, yq = features[train], images.labels[train], features[test], images.labels[test]
    logger.info(f"{len(names)} classes, {len(X)} database / {len(Q)} query images; grid search of t and alpha ...")

    started = time.perf_counter()
    # the paper's study: its cosine, on the raw features
    selection = select_parameters(X, y, names, {**(grid or {}), "cosine": ["raw"]}, seed=job.seed)
    chosen = selection.params
    atomic_write_json(out / "selection.json", {"chosen": chosen, "score": selection.score,
                                               "split": selection.split, "grid": selection.grid})
    logger.info(f"chosen on validation in {time.perf_counter() - started:.0f} s: {chosen}")
    head = SemanticEmbeddingHead(seed=job.seed).fit(X, y, tree, job.progress)
    spaces = {"features": (lambda F: F), "semantic": head.transform}
    models = {"visual": TreeseekModel(**chosen).fit(X, y, names),
              "ward": TreeseekModel(**{**chosen, "hierarchy": "ward"}).fit(X, y, names),
              "taxonomy": TreeseekModel(**{**chosen, "hierarchy": str(taxonomy)}).fit(X, y, names),
              "average": TreeseekModel(**{**chosen, "hierarchy": "average"}).fit(X, y, names),
              "semantic": TreeseekModel(**chosen).fit(head.transform(X), y, names)}
    database = {space: transform(X) for space, transform in spaces.items()}

    def score(queries: np.ndarray, labels: np.ndarray, full: bool, convention: str = "treeseek"):
        metrics, curves = {}, {}
        for model_key, space in {(m, s) for _, m, _, s in STUDY_ROWS}:
            rows = [(row, method) for row, m, method, s in STUDY_ROWS if (m, s) == (model_key, space)]
            result = evaluate_retrieval(models[model_key], FeatureSet(spaces[space](queries), labels, names),
                                        FeatureSet(database[space], y, names), methods=[m for _, m in rows],
                                        ks=KS, taxonomy=tree, progress=False, full_ranking=full,
                                        convention=convention)
            for row, method in rows:
                metrics[row], curves[row] = result.metrics[method], result.curves[method]
        return {row: metrics[row] for row, *_ in STUDY_ROWS}, {row: curves[row] for row, *_ in STUDY_ROWS}

    clean, curves = score(Q, yq, full_ranking)
    # a peer's definitions are reported beside treeseek's, which the robustness study and the pictures use
    as_convention = {} if convention == "treeseek" else {convention: score(Q, yq, full_ranking, convention)[0]}
    robustness = {"clean": clean}
    for perturbation in perturbations:
        logger.info(f"robustness: {perturbation} ...")
        test_images = perturbed(images.subset(test), perturbation, job.seed)
        disturbed, kept_test, _ = extract_features(backbone, test_images, job.batch_size, cache / perturbation,
                                                   job.progress)
        robustness[perturbation] = score(disturbed, yq[kept_test], False)[0]

    pictures = {"map_at_k": out / "map_at_k.png", "robustness": out / "robustness.png",
                "hierarchy": out / "hierarchy.png", "taxonomy": out / "taxonomy.png"}
    plot_map_curves(curves, pictures["map_at_k"], "mAP@k on the test split")
    plot_robustness(robustness, "map@10", pictures["robustness"])
    plot_hierarchy(models["visual"].hierarchy_, pictures["hierarchy"],
                   f"learned visual hierarchy {models['visual'].fit_info_['tree_shape']}")
    plot_hierarchy(models["taxonomy"].hierarchy_, pictures["taxonomy"], f"taxonomy {Path(taxonomy).name}")
    example_pictures = _examples(images, train, test, X, Q, models["visual"], out, examples, job.seed)
    report = {
        "dataset": {"source": str(job.source), "kind": job.kind, "classes": len(names), "train": int(train.sum()),
                    "test": int(test.sum())},
        "backbone": backbone.describe(), "taxonomy": str(taxonomy),
        "selection": {"chosen": chosen, "score": selection.score, "split": selection.split,
                      "grid_points": len(selection.grid)},
        "tree_shapes": {key: model.fit_info_["tree_shape"] for key, model in models.items()},
        "query_leaf_accuracy": float(np.mean(models["visual"].predict(Q) == yq)),
        "metrics": clean, "metrics_by_convention": as_convention, "robustness": robustness,
        "map_curves": {row: [float(v) for v in curve] for row, curve in curves.items()},
    }
    atomic_write_json(out / "report.json", report)
    write_html_report(report, pictures, example_pictures, selection.grid, out / "report.html")
    logger.info(f"wrote {out}/report.html, report.json, selection.json and the pictures")
    return report


def _examples(images, train, test, X, Q, model, out: Path, count: int, seed: int) -> list[dict]:
    """Top-5 of a few test queries (one per class) under cosine and under ours, as image grids."""
    rng = np.random.default_rng(seed)
    test_rows, train_rows = np.flatnonzero(test), np.flatnonzero(train)
    classes = rng.permutation(np.unique(images.labels[test_rows]))[:count]
    picks = [int(rng.choice(np.flatnonzero(images.labels[test_rows] == c))) for c in classes]
    db_leaves, tree, names = model.assign(X), model.hierarchy_, images.class_names
    made = []
    for number, q in enumerate(picks):
        leaf = model.assign(Q[q : q + 1])
        entry = {"query": names[images.labels[test_rows[q]]]}
        for method in ("cosine", "combined"):
            keys = ranking_keys(method, Q[q : q + 1], X, leaf, db_leaves, tree, model.alpha)
            _, top = full_sort_search(keys, 5)
            results = [(images.image(int(train_rows[i])), f"{names[images.labels[train_rows[i]]]}\nD={keys[0, i]:.3f}")
                       for i in top[0]]
            path = out / f"example-{number}-{method}.png"
            image_grid(images.image(int(test_rows[q])), f"query: {entry['query']}", results, path)
            entry[method] = path
        made.append(entry)
    return made
