"""What every benchmark script shares: data, timing, memory, tables and JSON. No script imports another.

Data: the real datasets unpacked from ../shared (``dataset_features``, ``train_test_features``) and the planted
synthetic split (``synthetic_split``, ``synthetic_setup``). Measurement: ``timed`` and ``rss_mb``. Output:
``markdown_table`` (the one table writer; the README quotes its tables) and ``write_json``. Serving:
``serve_process``, ``post`` and ``result_ids`` for the scripts that measure ``treeseek serve``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import resource
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from treeseek.data.collections import load_images
from treeseek.embed.backbones import load_backbone
from treeseek.embed.extraction import extract_features
from treeseek.hierarchy import load_taxonomy
from treeseek.hierarchy.synthetic import planted_hierarchy
from treeseek.io.files import atomic_write_json
from treeseek.model import TreeseekModel

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
OUTPUT = ROOT / "bench-output"
DATASETS = {
    "caltech101": {"archive": "caltech101.tar", "folder": "caltech101/101_ObjectCategories",
                   "backbone": "efficientnet_lite0", "weights": None, "taxonomy": "caltech101.paths.tsv"},
    "cifar10": {"archive": "cifar10.tar.gz", "folder": "cifar10", "backbone": "resnet56",
                "weights": SHARED / "models" / "cifar10-resnet56.safetensors", "taxonomy": "cifar10.paths.tsv"},
    # Debian's dataset-fashion-mnist; the CIFAR-10 ResNet-56 as a transfer network (no Fashion-MNIST network is
    # in ../shared, and EfficientNet-Lite0 at 224 x 224 would take 70,000 upscaled 28 x 28 pictures)
    "fashion-mnist": {"kind": "fashion-mnist", "folder": "/usr/share/datasets/fashion-mnist", "backbone": "resnet56",
                      "weights": SHARED / "models" / "cifar10-resnet56.safetensors",
                      "taxonomy": "fashion-mnist.paths.tsv"},
}
# the model settings the real-data benchmarks start from: PCA to at most 128 dimensions, one shared covariance
BASE = {"max_components": 128, "covariance": "tied"}


# ------------------------------------------------------------------ data
def dataset_features(dataset: str, batch_size: int = 64, device: str = "cpu"):
    """Unpack a ../shared archive into bench-output/ once, then features through the extraction cache:
    ``(images, features, kept rows, extraction stats, backbone)``."""
    spec = DATASETS[dataset]
    work = OUTPUT / dataset
    folder = work / spec["folder"]
    if "archive" in spec and not folder.is_dir():
        print(f"unpacking {spec['archive']} ...", flush=True)
        with tarfile.open(SHARED / "data" / spec["archive"]) as tar:
            tar.extractall(work, filter="data")
    images = load_images(folder, spec.get("kind", "folder"))
    backbone = load_backbone(spec["backbone"], spec["weights"])
    features, kept, stats = extract_features(backbone, images, batch_size, work / "cache", device=device)
    return images.subset(kept), features, kept, stats, backbone


def train_test_features(dataset: str):
    """(class names, train features, train labels, test features, test labels, WordNet taxonomy)."""
    images, features, _, _, _ = dataset_features(dataset)
    names = images.class_names
    train, test = images.splits == "train", images.splits == "test"
    taxonomy = load_taxonomy(SHARED / "hierarchies" / DATASETS[dataset]["taxonomy"], names)
    return names, features[train], images.labels[train], features[test], images.labels[test], taxonomy


def real_data_arguments(description: str):
    """The command line of a real-data benchmark (DATASET, --json) and the dataset's ``train_test_features``:
    ``(args, (class names, train x, train y, test x, test y, taxonomy))``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    return args, train_test_features(args.dataset)


def synthetic_split(per_class: int):
    """Planted 100-class data in 128 dims: (database X, queries Q, their labels y and yq, rows of X to fit on,
    class names). 10 queries per class (1,000 in all); the model is fitted on 100 items per class."""
    data = planted_hierarchy((10, 10), 128, per_class + 10, scale=4.0, noise=0.5, seed=12)
    is_query = np.arange(len(data.labels)) % (per_class + 10) < 10
    X, Q = data.features[~is_query], data.features[is_query]
    fit_rows = np.flatnonzero(np.arange(len(X)) % max(1, per_class // 100) == 0)
    return X, Q, data.labels[~is_query], data.labels[is_query], fit_rows, data.class_names


def synthetic_setup(description: str):
    """Arguments --items and --json, and ``synthetic_split`` at that size with the model fitted on it (PCA 128):
    ``(args, X, Q, y, model)``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--items", type=int, default=100_000, help="database size (a multiple of 100)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    X, Q, y, _, fit_rows, class_names = synthetic_split(args.items // 100)
    return args, X, Q, y, TreeseekModel(max_components=128).fit(X[fit_rows], y[fit_rows], class_names)


# ----------------------------------------------------------- measurement
def timed(function, *args, **kwargs):
    """``(function(*args, **kwargs), seconds it took)``."""
    started = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - started


def rss_mb() -> float:
    """This process's resident memory now, in MB (NaN where /proc is missing)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return float("nan")
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_gb() -> float:
    """The largest resident memory this process has had, in GB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


# ---------------------------------------------------------------- output
def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: str | Path | None, results: dict) -> None:
    """Write the results atomically when a path was given (``--json``)."""
    if path:
        atomic_write_json(path, results)


# --------------------------------------------------------------- serving
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as answer:
        return json.load(answer)


def _wait_until_up(url: str, server: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start: {server.stderr.read().decode()}")
            time.sleep(0.2)


@contextlib.contextmanager
def serve_process(directory: Path, *options: str):
    """A real `treeseek serve DIRECTORY OPTIONS` on a free port, once it answers: yields the port."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "treeseek", "serve", str(directory), "--port", str(port),
                               *options], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_until_up(f"http://127.0.0.1:{port}/api/info", server)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=60)


def result_ids(report: dict) -> np.ndarray:
    return np.array([[hit["id"] for hit in query["results"]] for query in report["queries"]])
