"""A trained hasher as a directory: ``hasher.json`` (kind, parameters, class names, tree) + plain arrays."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from treeseek.codes.baselines import ITQHasher, SignPCAHasher
from treeseek.codes.hpdh import HPDHHasher
from treeseek.errors import TreeseekError
from treeseek.hierarchy import Hierarchy
from treeseek.io.files import atomic_write_json, drop_other_arrays, load_named_arrays, read_json, save_named_arrays

HASHER_FORMAT, HASHER_VERSION = "treeseek-hasher", 1
KINDS = {"hpdh": HPDHHasher, "itq": ITQHasher, "pca": SignPCAHasher}
PARAMS = {"hpdh": ("bits", "scales", "epochs", "lr", "momentum", "weight_decay", "milestones", "batch_size", "seed",
                   "initial_centres", "hidden", "coarse_loss"),
          "itq": ("bits", "n_iter", "seed"), "pca": ("bits",)}


def save_hasher(hasher, directory: str | Path, class_names: list[str], tree: Hierarchy | None, info: dict) -> None:
    directory = Path(directory)
    kind = next(name for name, cls in KINDS.items() if type(hasher) is cls)
    if kind == "hpdh":
        arrays = {"mean": hasher.mean_, "weight": hasher.weight_, "bias": hasher.bias_,
                  "std": np.array(hasher.std_), **{f"centres_{i}": c for i, c in enumerate(hasher.centres_)}}
        if hasher.hidden:
            arrays.update(hidden_weight=hasher.hidden_weight_, hidden_bias=hasher.hidden_bias_)
    else:
        arrays = {"mean": hasher.mean_, "components": hasher.components_, "rotation": hasher.rotation_}
    name = save_named_arrays(directory, arrays)
    params = {key: getattr(hasher, key) for key in PARAMS[kind]}
    params = {key: list(value) if isinstance(value, tuple) else value for key, value in params.items()}
    atomic_write_json(directory / "hasher.json", {
        "format": HASHER_FORMAT, "version": HASHER_VERSION, "kind": kind, "params": params, "arrays": name,
        "class_names": list(class_names), "hierarchy": tree.to_dict() if tree is not None else None, "info": info})
    drop_other_arrays(directory, name)


def is_hasher(directory: str | Path) -> bool:
    """Whether ``directory`` holds a saved hasher ('treeseek hash train')."""
    return (Path(directory) / "hasher.json").is_file()


def load_hasher(directory: str | Path):
    """(hasher, class names, tree or None, info)."""
    directory = Path(directory)
    meta = read_json(directory / "hasher.json", "hasher file")
    if not isinstance(meta, dict) or meta.get("format") != HASHER_FORMAT:
        raise TreeseekError(f"{directory} is not a treeseek hasher directory")
    if meta.get("version") != HASHER_VERSION:
        raise TreeseekError(f"{directory} has hasher format {meta.get('version')}; this treeseek reads {HASHER_VERSION}")
    try:
        arrays = load_named_arrays(directory, meta["arrays"], "hasher arrays")
        hasher = KINDS[meta["kind"]](**meta["params"])
        hasher.mean_ = arrays["mean"]
        if meta["kind"] == "hpdh":
            hasher.weight_, hasher.bias_, hasher.std_ = arrays["weight"], arrays["bias"], float(arrays["std"])
            if hasher.hidden:
                hasher.hidden_weight_, hasher.hidden_bias_ = arrays["hidden_weight"], arrays["hidden_bias"]
            hasher.centres_ = [arrays[f"centres_{i}"] for i in range(sum(k.startswith("centres_") for k in arrays))]
        else:
            hasher.components_, hasher.rotation_ = arrays["components"], arrays["rotation"]
        tree = Hierarchy.from_dict(meta["hierarchy"]) if meta.get("hierarchy") else None
        return hasher, [str(n) for n in meta["class_names"]], tree, meta.get("info", {})
    except (KeyError, TypeError) as exc:
        raise TreeseekError(f"{directory}/hasher.json is incomplete: missing {exc}") from None
