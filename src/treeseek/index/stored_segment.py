"""A segment with everything an index keeps per item, and its files."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from treeseek.errors import TreeseekError
from treeseek.hierarchy import Hierarchy
from treeseek.index.storage import SMALL_ARRAYS, load_checked_array, map_array, own_name, read_checked, write_directory
from treeseek.search import Segment, make_backend
from treeseek.search.soft_groups import SoftPosteriors

ANN_FILE = "ann.faiss"
CODES_FILE = "codes.npy"
SOFT_FILES = {name: f"soft_{name}.npy" for name in SoftPosteriors.ARRAYS}
SOFT_MAPPED = ("classes", "weights")  # per item: memory-mapped like the vectors; the rest is per class


@dataclass
class StoredSegment:
    segment: Segment
    labels: np.ndarray          # class index per row, -1 when unknown
    norms: np.ndarray           # length of the original feature vector: vectors * norms restores it
    sources: list[str] | None   # path or key per row; None until first asked for (they are read lazily)
    backend: object
    codes: np.ndarray | None = None  # packed binary codes per row, when the index has a hasher
    name: str | None = None     # directory name under segments/, None until saved
    files: dict = field(default_factory=dict)
    _source_blob: bytes | None = None
    _source_offsets: np.ndarray | None = None
    _by_id: np.ndarray | None = field(default=None, repr=False)
    hamming_: dict = field(default_factory=dict, repr=False)  # kind -> (state, binary index, ids) of code_search
    soft: SoftPosteriors | None = field(default=None, repr=False)  # the items' sparse posteriors (soft ranking)
    soft_state: dict | None = None  # the model settings they were computed with (``soft_settings``)
    one_hot_: SoftPosteriors | None = field(default=None, repr=False)  # the stored leaves as posteriors

    @classmethod
    def create(cls, tree: Hierarchy, unit: np.ndarray, norms: np.ndarray, leaves, ids, labels, sources: list[str],
               backend_spec: dict, progress: bool = False, codes: np.ndarray | None = None,
               posteriors: tuple | None = None, soft_state: dict | None = None) -> "StoredSegment":
        """A segment of unit vectors (already in the storage dtype) and the lengths they had; ``posteriors``
        are the items' sparse posteriors ``(classes, weights)``, computed with the model settings ``soft_state``."""
        leaves, ids = np.asarray(leaves, dtype=np.int64), np.asarray(ids, dtype=np.int64)
        order, leaf_start = Segment.layout(tree, leaves, ids)
        leaves = leaves[order]
        # The vectors, by far the largest array, are gathered in sorted order by two more threads, half the rows
        # each, while this one sorts the rest: each gather waits on memory more than on its core. ``take`` with
        # ``out`` and mode "raise" would first gather into a buffer: the indices are valid, "clip" writes directly.
        unit = np.asarray(unit)
        vectors = np.empty(unit.shape, dtype=unit.dtype)
        with ThreadPoolExecutor(2, "sorted-vectors") as pool:
            gathers = [pool.submit(np.take, unit, order[rows], 0, vectors[rows], "clip")
                       for rows in (slice(0, len(order) // 2), slice(len(order) // 2, None))]
            soft = None if posteriors is None else \
                SoftPosteriors.of_rows(leaves, leaf_start, *(np.asarray(array)[order] for array in posteriors))
            labels, norms = np.asarray(labels, dtype=np.int32)[order], np.asarray(norms, np.float32)[order]
            codes = None if codes is None else np.asarray(codes)[order]
            for gather in gathers:
                gather.result()
            segment = Segment(tree, vectors, ids[order], leaves, leaf_start)
        stored = cls(segment, labels, norms, sources=None, backend=None, codes=codes)
        if any(sources):
            stored.sources = list(map(sources.__getitem__, order.tolist()))
        else:  # items without sources (features added as arrays): no list of n empty strings to permute
            stored._source_blob, stored._source_offsets = b"", np.zeros(len(order) + 1, dtype=np.int64)
        if soft is not None:
            stored.soft, stored.soft_state = soft, soft_state
        stored.backend = make_backend(backend_spec["name"], **backend_spec["params"]).build(segment, progress)
        return stored

    def live(self) -> dict:
        """Every per-item array of the items not removed, in row order."""
        keep = slice(None) if self.segment.alive is None else self.segment.alive
        sources = self.all_sources()
        part = {"unit": np.asarray(self.segment.vectors)[keep], "norms": self.norms[keep],
                "ids": self.segment.ids[keep], "labels": self.labels[keep], "leaves": self.segment.leaves[keep],
                "sources": sources if self.segment.alive is None else
                [src for src, kept in zip(sources, self.segment.alive) if kept]}
        if self.codes is not None:
            part["codes"] = np.asarray(self.codes)[keep]
        if self.soft is not None:
            part["soft_classes"], part["soft_weights"] = self.soft.classes[keep], self.soft.weights[keep]
            part["soft_state"] = self.soft_state
        return part

    def __len__(self) -> int:
        return len(self.segment)

    def live_rows_by_id(self) -> np.ndarray:
        """Rows not removed, in id order (how the in-memory search structures list them)."""
        alive = self.segment.alive
        rows = np.arange(len(self)) if alive is None else np.flatnonzero(alive)
        return rows[np.argsort(self.segment.ids[rows], kind="stable")]

    # ------------------------------------------------------------------ items
    def source(self, row: int) -> str:
        if self.sources is not None:
            return self.sources[row]
        start, end = self._source_offsets[row], self._source_offsets[row + 1]
        return self._source_blob[start:end].decode("utf-8")

    def all_sources(self) -> list[str]:
        if self.sources is None and not self._source_blob:
            return [""] * len(self)
        return [self.source(row) for row in range(len(self))]

    def find(self, ids: np.ndarray) -> np.ndarray:
        """Row of every id, -1 where this segment does not hold it."""
        if self._by_id is None:
            self._by_id = np.argsort(self.segment.ids, kind="stable")
        if len(self._by_id) == 0:
            return np.full(len(ids), -1, dtype=np.int64)
        sorted_ids = self.segment.ids[self._by_id]
        slot = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
        return np.where(sorted_ids[slot] == ids, self._by_id[slot], -1)

    # ------------------------------------------------------------ persistence
    def write(self, segments_dir: Path, name: str) -> dict:
        sources = self.all_sources()
        encoded = [source.encode("utf-8") for source in sources] if any(sources) else []
        offsets = np.concatenate([[0], np.cumsum([len(e) for e in encoded] or np.zeros(len(self)))]).astype(np.int64)
        backend = self.ready_backend()
        ann = backend.to_bytes() if hasattr(backend, "to_bytes") else None
        self.files = write_directory(segments_dir, name, {
            "vectors.npy": self.segment.vectors, "ids.npy": self.segment.ids,
            "leaves.npy": self.segment.leaves.astype(np.int32), "labels.npy": self.labels,
            "norms.npy": self.norms, "source_offsets.npy": offsets, "sources.bin": b"".join(encoded),
            ANN_FILE: ann, CODES_FILE: self.codes,
            **({SOFT_FILES[key]: array for key, array in self.soft.to_arrays().items()} if self.soft else {}),
        })
        self.name = name
        return {"name": name, "n": len(self), "leaf_start": self.segment.leaf_start.tolist(), "files": self.files}

    @classmethod
    def read(cls, segments_dir: Path, entry: dict, tree: Hierarchy, dim: int, dtype, backend_spec,
             code_bytes: int = 0) -> "StoredSegment":
        try:
            name, n, files = own_name(entry["name"], "a segment"), int(entry["n"]), entry["files"]
            folder = segments_dir / name
            arrays = {key: load_checked_array(folder / f"{key}.npy", files[f"{key}.npy"]) for key in SMALL_ARRAYS}
            blob = read_checked(folder / "sources.bin", files["sources.bin"])
            vectors = map_array(folder / "vectors.npy", files["vectors.npy"], (n, dim), dtype)
            leaf_start = np.asarray(entry["leaf_start"], dtype=np.int64)
        except (KeyError, TypeError) as exc:
            raise TreeseekError(f"index manifest: a segment entry is incomplete ({exc})") from None
        if any(len(arrays[key]) != n for key in ("ids", "leaves", "labels", "norms")) or \
                len(arrays["source_offsets"]) != n + 1 or len(leaf_start) != tree.n_leaves + 1 or leaf_start[-1] != n:
            raise TreeseekError(f"index segment {name} is inconsistent with the manifest")
        segment = Segment(tree, vectors, arrays["ids"].astype(np.int64), arrays["leaves"].astype(np.int64), leaf_start)
        codes = None
        if code_bytes:
            if CODES_FILE not in files:
                raise TreeseekError(f"index segment {name} has no binary codes, but the index has a hasher")
            codes = map_array(folder / CODES_FILE, files[CODES_FILE], (n, code_bytes), np.uint8)
        stored = cls(segment, arrays["labels"], arrays["norms"], None, None, codes, name, files, blob,
                     arrays["source_offsets"])
        if SOFT_FILES["classes"] in files:
            stored.soft, stored.soft_state = _read_soft(folder, files, entry, n, tree.n_leaves), entry.get("soft")
        backend = make_backend(backend_spec["name"], **backend_spec["params"])
        if ANN_FILE in files:
            backend.pending_file_ = (folder / ANN_FILE, files[ANN_FILE])  # read on first search
        stored.backend = backend
        return stored

    def ready_backend(self):
        """The backend, reading or building its structure the first time it is needed."""
        pending = getattr(self.backend, "pending_file_", None)
        if pending is not None:
            if not pending[0].exists():
                raise TreeseekError(f"{pending[0]} was removed by a later save of this index; open the index again")
            self.backend.load_bytes(self.segment, read_checked(*pending))
            self.backend.pending_file_ = None
        elif getattr(self.backend, "segment_", None) is not self.segment:
            self.backend.build(self.segment)
        return self.backend


def _read_soft(folder: Path, files: dict, entry: dict, n: int, n_classes: int) -> SoftPosteriors:
    """The segment's sparse posteriors: the per-item arrays memory-mapped, the per-class ones checked and read."""
    try:
        width = int(entry["soft"]["width"])
        arrays = {key: load_checked_array(folder / SOFT_FILES[key], files[SOFT_FILES[key]])
                  for key in SoftPosteriors.ARRAYS if key not in SOFT_MAPPED}
        arrays["classes"] = map_array(folder / SOFT_FILES["classes"], files[SOFT_FILES["classes"]], (n, width),
                                      SoftPosteriors.classes_dtype(n_classes))
        arrays["weights"] = map_array(folder / SOFT_FILES["weights"], files[SOFT_FILES["weights"]], (n, width),
                                      np.float32)
    except (KeyError, TypeError, ValueError) as exc:
        raise TreeseekError(f"index segment {folder.name}: its soft posteriors are incomplete ({exc})") from None
    if len(arrays["floors"]) != n_classes or len(arrays["union_start"]) != n_classes + 1 or \
            arrays["union_start"][-1] != len(arrays["union"]):
        raise TreeseekError(f"index segment {folder.name}: its soft posteriors disagree with the model")
    return SoftPosteriors(**arrays)
