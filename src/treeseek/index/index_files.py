"""How a ``TreeIndex`` is written into its directory and read back (the layout and its guarantees: ``storage``).

Friends of ``TreeIndex``: they keep its record of which files in its home directory are already written.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from treeseek import __version__
from treeseek.codes.storage import load_hasher, save_hasher
from treeseek.errors import TreeseekError
from treeseek.index.storage import (
    DEFAULT_WAIT_SECONDS,
    INDEX_FORMAT,
    INDEX_VERSION,
    check_size,
    file_sha256,
    load_checked_array,
    manifest_digest,
    map_array,
    new_token,
    own_name,
    read_manifest_and_digest,
    save_array,
    sweep,
    writer_lock,
)
from treeseek.index.stored_segment import SOFT_FILES, StoredSegment
from treeseek.io.files import atomic_write_json
from treeseek.model import TreeseekModel


def write_index(index, directory: Path, progress: bool) -> None:
    """Write what the directory lacks, commit the manifest atomically, then sweep what it no longer names."""
    (directory / "segments").mkdir(parents=True, exist_ok=True)
    with writer_lock(directory, wait=DEFAULT_WAIT_SECONDS):  # a save waits for another save to commit
        same_home = index._home is not None and index._home.resolve() == directory.resolve()
        if same_home and index._manifest_digest is not None and manifest_digest(directory) != index._manifest_digest:
            # another writer committed after this index was read: saving would silently undo its change
            raise TreeseekError(f"{directory} was changed by another writer after it was opened; nothing was saved "
                                f"(open it again and repeat the change, holding the writer lock throughout)")
        if not same_home:
            index._model_name = index._hasher_name = None
            index._written = {}
        if index._model_name is None:
            name = f"model-{new_token()}"
            index.model.save(directory / name)
            index._model_name = name
        if index.hasher is not None and index._hasher_name is None:
            index._hasher_name = f"hasher-{new_token()}"
            save_hasher(index.hasher, directory / index._hasher_name, index.model.class_names_, None, {})
        entries = []
        for stored in tqdm(index.segments_, desc="writing segments", disable=not progress):
            if stored.name is None or not same_home:
                stored.write(directory / "segments", new_token())
            entry = {"name": stored.name, "n": len(stored), "leaf_start": stored.segment.leaf_start.tolist(),
                     "files": stored.files}
            if stored.soft is not None and SOFT_FILES["classes"] in stored.files:
                entry["soft"] = {**(stored.soft_state or {}), "width": int(stored.soft.classes.shape[1])}
            entries.append(entry)
        removed = _array_file(index, directory, "removed", index.removed_) if len(index.removed_) else None
        attachments = {key: _array_file(index, directory, f"attachment-{key}", array)
                       for key, array in index.attachments_.items()}
        manifest = {
            "format": INDEX_FORMAT, "version": INDEX_VERSION, "treeseek_version": __version__,
            "dim": index.model.input_dim_, "dtype": index.dtype, "backend": index.backend,
            "model": index._model_name, "hasher": index._hasher_name if index.hasher is not None else None,
            "next_id": int(index.next_id_), "n_items": len(index),
            "segments": entries, "removed": removed, "attachments": attachments, "extra": index.extra_,
        }
        data = atomic_write_json(directory / "manifest.json", manifest)
        index._home, index._manifest_digest = directory, hashlib.sha256(data).hexdigest()
        keep = {index._model_name, index._hasher_name, *(f"segments/{e['name']}" for e in entries),
                *(a["file"] for a in attachments.values())}
        if removed:
            keep.add(removed["file"])
        sweep(directory, keep)


def _array_file(index, directory: Path, stem: str, array: np.ndarray) -> dict:
    """The manifest entry of an array's file, written anew only when the array changed since the last save."""
    known = index._written.get(stem)
    unchanged = known is not None and (known[1] is array or (known[1].shape == array.shape and
                                                              np.array_equal(known[1], array)))
    if not unchanged:
        name = f"{stem}-{new_token()}.npy"
        info = {**save_array(directory / name, array), "dtype": str(array.dtype), "shape": list(array.shape)}
        known = index._written[stem] = (name, array, info)
    return {"file": known[0], **known[2]}


def read_index(cls, directory: Path):
    """An instance of ``cls`` (``TreeIndex``) over the index saved in ``directory``."""
    meta, digest = read_manifest_and_digest(directory)
    try:
        model = TreeseekModel.load(directory / own_name(meta["model"], "the model"))
        if model.input_dim_ != meta["dim"]:
            raise TreeseekError(f"{directory}: the model expects {model.input_dim_} dimensions, the index "
                                f"holds {meta['dim']}")
        index = cls(model, dtype=meta["dtype"], backend=meta["backend"]["name"], **meta["backend"]["params"])
        if meta.get("hasher"):
            hasher_name = own_name(meta["hasher"], "the hasher")
            index.hasher, index._hasher_name = load_hasher(directory / hasher_name)[0], hasher_name
        code_bytes = index.hasher.bits // 8 if index.hasher is not None else 0
        index.segments_ = [StoredSegment.read(directory / "segments", entry, model.hierarchy_, meta["dim"],
                                              np.dtype(meta["dtype"]), index.backend, code_bytes)
                           for entry in meta["segments"]]
        index.next_id_ = int(meta["next_id"])
        index.extra_ = dict(meta.get("extra") or {})
        if meta.get("removed"):
            removed = load_checked_array(directory / own_name(meta["removed"]["file"], "a file"), meta["removed"])
            index._written["removed"] = (meta["removed"]["file"], removed, meta["removed"])
            index.remove(removed)
        for key, entry in (meta.get("attachments") or {}).items():
            array = map_array(directory / own_name(entry["file"], "a file"), entry, tuple(entry["shape"]),
                              entry["dtype"])
            index.attachments_[key] = array
            index._written[f"attachment-{key}"] = (entry["file"], array, entry)
    except (KeyError, TypeError) as exc:
        raise TreeseekError(f"{directory}/manifest.json is incomplete: missing {exc}") from None
    index._home, index._model_name, index._manifest_digest = directory, meta["model"], digest
    return index


def verify_index(index, progress: bool) -> None:
    """Check the size and checksum of every file of the saved segments."""
    if index._home is None:
        raise TreeseekError("this index has not been saved")
    for stored in tqdm([s for s in index.segments_ if s.name], desc="verifying", disable=not progress):
        for file_name, expected in stored.files.items():
            path = index._home / "segments" / stored.name / file_name
            check_size(path, expected)
            if file_sha256(path) != expected["sha256"]:
                raise TreeseekError(f"index file {path} is corrupt (checksum mismatch)")

