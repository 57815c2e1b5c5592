"""The main job: an image collection in; features, a tuned model, an index and a report out."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from treeseek.apps.jobs.config import ImageJob
from treeseek.apps.plots import plot_hierarchy, plot_map_curves
from treeseek.embed.extraction import extract_features
from treeseek.errors import TreeseekError
from treeseek.evaluation import evaluate_retrieval
from treeseek.evaluation.tuning import select_parameters, select_subclasses
from treeseek.hierarchy import Hierarchy, load_taxonomy, save_hierarchy
from treeseek.hierarchy.wordnet_names import wordnet_words
from treeseek.index.image_index import ImageIndex
from treeseek.io.features import FeatureSet, save_features
from treeseek.io.files import atomic_write_bytes, atomic_write_json
from treeseek.model import DEFAULT_HIERARCHY, TreeseekModel
from treeseek.search import METHODS

logger = logging.getLogger(__name__)

REPORT_KS = (1, 5, 10, 20, 50, 100)
MIN_IMAGES = 3  # of a class: one to index, one to tune the settings on, one to test
METHOD_MEANINGS = {
    "euclidean": "the Euclidean distance between the features, no tree.",
    "cosine": "D_cos alone: what the picture looks like, no tree.",
    "flat": "D_cos + alpha if the item is placed in another class than the query: the predicted class, no tree.",
    "hierarchy": "the height of the node where query and item meet first, then D_cos: the tree before the looks.",
    "combined": "D_cos + alpha * height(meeting node) / H: the paper's ranking, each picture at its nearest class.",
    "soft": "D_cos + alpha * the expected height / H over how likely each class is for query and item: treeseek's "
            "default.",
}
SOFT_GRID = {"alpha": [1.0, 2.0, 4.0, 8.0, 16.0]}


def run_main_job(job: ImageJob, out: str | Path, *, taxonomy: str | None = None, grid: dict | None = None,
                 hierarchy: str = DEFAULT_HIERARCHY, subclasses: int | str = "auto") -> dict:
    """Features, a model tuned on a validation split, an index, a report and pictures, written to ``out``.

    Parameters
    ----------
    job : ImageJob
        The collection and the network that embeds it.
    out : str or Path
        The output directory (its ``cache/`` keeps the features for the next run).
    taxonomy : str, optional
        An evaluation taxonomy of the classes, for mAHP, nDCG and mistake severity.
    grid : dict, optional
        The validation grid (default: the full one).
    hierarchy : str
        The tree builder, as in 'treeseek fit'.
    subclasses : int or "auto"
        The most sub-class Gaussians per class (1: none); ``auto`` splits classes only when the validation
        split gains (``select_subclasses``).

    Returns
    -------
    dict
        The report (also written as report.json and report.md).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images = job.images()
    names = images.class_names
    counts = np.bincount(images.labels, minlength=len(names))
    present = [name for name, count in zip(names, counts) if count]
    if len(present) < 2:
        raise TreeseekError(f"{job.source} holds {'one class' if present else 'no images'}"
                            f"{' (' + present[0] + ')' if present else ''}: ranking by class needs at least two "
                            f"classes, one subfolder each")
    _check_enough_images(images, counts)
    tax = load_taxonomy(taxonomy, names) if taxonomy else None
    backbone = job.load_backbone()
    logger.info(f"{len(images)} images, {len(names)} classes; backbone {backbone.name} ({backbone.feature_dim}-d)")

    features, kept, stats = extract_features(backbone, images, job.batch_size, out / "cache", job.progress)
    unreadable = [str(item) if isinstance(item, str) else f"item {i}"
                  for i, item in enumerate(images.items) if not kept[i]]
    images = images.subset(kept)
    images.skipped = [*images.skipped, *unreadable]  # the report lists both kinds of skipped file
    train, test = images.splits == "train", images.splits == "test"
    ids = images.ids()
    for split, mask in (("train", train), ("test", test)):
        save_features(out / "features" / f"{split}.npz", features[mask], images.labels[mask], names, ids[mask])
    logger.info(f"features: {stats['computed']} computed, {stats['from_cache']} from cache, {stats['skipped']} skipped")

    started = time.perf_counter()
    # soft leaves gain from larger alphas than the paper's range (benchmarks/bench_trees.py)
    selection = select_parameters(features[train], images.labels[train], names, {**SOFT_GRID, **(grid or {})},
                                  seed=job.seed, hierarchy=hierarchy, method="soft")
    chosen = selection.params
    if subclasses == "auto":
        split_choice = select_subclasses(features[train], images.labels[train], names, chosen, seed=job.seed)
        chosen = split_choice.params
        selection.grid.extend({"step": "subclasses", **row} for row in split_choice.grid)
    else:
        chosen = {**chosen, "subclasses": int(subclasses)}
    logger.info(f"validation search ({len(selection.grid)} points, {time.perf_counter() - started:.0f} s): {chosen} "
                f"-> {selection.split['metric']} {selection.score:.4f}")
    for note in selection.notes:
        logger.info("validation search: %s", note)
    atomic_write_json(out / "selection.json", {"chosen": chosen, "score": selection.score, "notes": selection.notes,
                                               "split": selection.split, "grid": selection.grid})

    model = TreeseekModel(**chosen).fit(features[train], images.labels[train], names)
    model.save(out / "model")
    save_hierarchy(model.hierarchy_, out / "hierarchy.nwk")
    words = wordnet_words(names)  # ImageNet-style wnid folders, named by their words for people
    shown = model.hierarchy_ if words == names else Hierarchy(
        model.hierarchy_.parent, [*words, *model.hierarchy_.names[len(words):]], model.hierarchy_.n_leaves)
    plot_hierarchy(shown, out / "hierarchy.png", f"learned hierarchy {model.fit_info_['tree_shape']}")
    in_files = bool(images.items) and isinstance(images.items[0], str)
    sources = np.array(images.items if in_files else ids, dtype=str)  # a file path, or the dataset's own key
    pixels = None if in_files else np.stack([images.items[i] for i in np.flatnonzero(train)])
    index = ImageIndex.build(model, backbone, job.weights, features[train], sources[train], images.labels[train], pixels)
    if in_files and images.root:  # the server shows files relative to it, not as paths on its disks
        index.index.extra_["image_root"] = str(Path(images.root).absolute())
    index.save(out / "index")

    result = evaluate_retrieval(model, FeatureSet(features[test], images.labels[test], names),
                                FeatureSet(features[train], images.labels[train], names),
                                methods=METHODS, ks=REPORT_KS, taxonomy=tax, progress=job.progress)  # what it serves
    plot_map_curves({m: result.curves[m] for m in METHODS}, out / "map_at_k.png", "mAP@k on the held-out split")
    report = {
        "dataset": {"source": str(job.source), "kind": job.kind, "classes": len(names), "train": int(train.sum()),
                    "test": int(test.sum()), "skipped_images": images.skipped},
        "backbone": backbone.describe(),
        "extraction": stats,
        "selection": {"chosen": chosen, "score": selection.score, "split": selection.split,
                      "notes": selection.notes},
        "model": model.fit_info_,
        **({"class_words": dict(zip(names, words))} if words != names else {}),
        "evaluation": {"info": result.info, "metrics": result.metrics},
    }
    atomic_write_json(out / "report.json", report)
    atomic_write_bytes(out / "report.md", _markdown(report, taxonomy).encode())
    logger.info(f"wrote {out}/report.md, report.json, map_at_k.png, hierarchy.png, model/, index/, features/")
    return report


def _check_enough_images(images, counts: np.ndarray) -> None:
    """Refuse a collection too small to tune and test on, naming its smallest classes; warn of small classes."""
    small = [f"{name} ({count})" for name, count in zip(images.class_names, counts) if 0 < count < MIN_IMAGES]
    train_counts = np.bincount(images.labels[images.splits == "train"], minlength=len(counts))
    if not np.any(images.splits == "test") or not np.any(train_counts >= 2):
        raise TreeseekError(f"too few images to tune and test on: each class needs at least {MIN_IMAGES} (one to "
                            f"index, one to tune the settings on, one to test); these have fewer: "
                            f"{', '.join(small[:8])}{' ...' if len(small) > 8 else ''}")
    if small:
        logger.warning("%d class(es) have fewer than %d images (%s): they are indexed, but cannot all be tested",
                       len(small), MIN_IMAGES, ", ".join(small[:8]) + (" ..." if len(small) > 8 else ""))


def _markdown(report: dict, taxonomy: str | None) -> str:
    data, metrics, model = report["dataset"], report["evaluation"]["metrics"], report["model"]
    columns = [f"map@{k}" for k in REPORT_KS] + ["map"] + (["mahp@250"] if taxonomy else [])
    lines = [
        "# treeseek report", "",
        f"- data: `{data['source']}` ({data['kind']}), {data['classes']} classes, "
        f"{data['train']} train / {data['test']} test images, {len(data['skipped_images'])} skipped",
        f"- backbone: {report['backbone']['name']} ({report['backbone']['feature_dim']}-d features)",
        f"- chosen on validation: `{json.dumps(report['selection']['chosen'])}`",
        *[f"- {note}" for note in report["selection"].get("notes", [])],
        f"- PCA {model['input_dim']} -> {model['pca_dim']} dims; tree shape {model['tree_shape']} "
        f"(height {model['tree_height']}" + ("" if model["threshold"] is None else f", t = {model['threshold']:.3g}")
        + ")",
        f"- test queries against the train split; query leaf accuracy "
        f"{report['evaluation']['info']['query_leaf_accuracy']:.1%}"
        + (f"; evaluation taxonomy `{taxonomy}`" if taxonomy else ""), "",
        "| method | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for method, values in metrics.items():
        lines.append(f"| {method} | " + " | ".join(f"{values[c]:.4f}" for c in columns) + " |")
    lines += ["", "What the rows rank by (D_cos = 1 - cosine similarity, H = the tree's height):", ""]
    lines += [f"- **{method}**: {meaning}" for method, meaning in METHOD_MEANINGS.items() if method in metrics]
    lines += ["", "map@k is the mean over test queries of the average precision of their top k (an item is relevant "
              "when it has the query's class); map is over the whole ranking"
              + ("; mahp@250 is the mean average hierarchical precision of the top 250 (Barz & Denzler): how close "
                 "to the query's class the retrieved classes are in the evaluation taxonomy, 1 when every item of "
                 "the top 250 is as close as the collection allows" if taxonomy else "") + ".", ""]
    lines += ["![mAP@k](map_at_k.png)", "", "![hierarchy](hierarchy.png)", ""]
    lines += _class_lines(report)
    return "\n".join(lines)


def _class_lines(report: dict) -> list[str]:
    """The classes by word: WordNet ids with their words, and how a name tree resolved the names in WordNet."""
    words, resolved = report.get("class_words"), report["model"].get("wordnet")
    if not words and not resolved:
        return []
    lines = ["## Classes", ""]
    if resolved:
        lines += [f"The tree's WordNet prior resolved {resolved['coverage']:.0%} of the class names, in the domain "
                  f"*{resolved['domain']}* (unresolved classes take the language model's distance, or the mean).", ""]
    lines += ["| class | words | WordNet synset |", "|---|---|---|"]
    synsets = (resolved or {}).get("synsets", {})
    for name in (words or synsets):
        lines.append(f"| {name} | {(words or {}).get(name, name)} | {synsets.get(name) or ('—' if resolved else '')} |")
    return lines + [""]
