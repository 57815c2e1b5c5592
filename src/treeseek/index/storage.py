"""On-disk layout of an index directory, written so that a crash at any moment loses nothing.

    manifest.json            the commit point: format, version, model, segments, removed ids
    model-<token>/           the fitted TreeseekModel
    segments/<token>/        one segment: vectors.npy (unit rows, float32 or float16, memory-mapped),
                             ids.npy, leaves.npy, labels.npy, norms.npy, sources.bin + source_offsets.npy,
                             and ann.faiss when the backend is approximate
    removed-<token>.npy      ids removed since their segment was written
    attachment-<name>-<token>.npy

Every file is new: nothing that the current manifest names is ever rewritten.
A save writes its new files (fsynced), then atomically replaces
``manifest.json``, then deletes what the new manifest no longer names. A kill
before the replace leaves the old manifest and all of its files intact;
leftovers are swept by the next save. The manifest records each file's size
and SHA-256: sizes are checked when an index is opened, checksums of
everything but the vectors and the FAISS structure too (those two are checked
when they are read in full, or by ``verify``).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
from pathlib import Path

import numpy as np

from treeseek import choices
from treeseek.errors import TreeseekError
from treeseek.io.files import _fsync_directory, current_umask, read_json

logger = logging.getLogger(__name__)

INDEX_FORMAT = "treeseek-index"
INDEX_VERSION = 2
SMALL_ARRAYS = ("ids", "leaves", "labels", "norms", "source_offsets")


def new_token() -> str:
    return secrets.token_hex(6)


class _HashingWriter:
    """A binary file that hashes and counts what passes through it."""

    def __init__(self, handle):
        self.handle, self.digest, self.size = handle, hashlib.sha256(), 0

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self.digest.update(view)
        self.size += len(view)
        return self.handle.write(view)

    def flush(self) -> None:
        self.handle.flush()


def write_file(path: Path, writer) -> dict:
    """Create ``path`` with ``writer(handle)``, fsync it, and return its size and checksum."""
    with open(path, "xb") as raw:
        hashing = _HashingWriter(raw)
        writer(hashing)
        raw.flush()
        os.fsync(raw.fileno())
    os.chmod(path, 0o666 & ~current_umask())
    return {"bytes": hashing.size, "sha256": hashing.digest.hexdigest()}


def save_array(path: Path, array: np.ndarray, chunk_rows: int = 1 << 16) -> dict:
    """``.npy`` written in row chunks, so a memory-mapped source is never loaded whole."""
    array = np.asarray(array) if not isinstance(array, np.memmap) else array

    def write(handle):
        header = {"descr": np.lib.format.dtype_to_descr(array.dtype), "fortran_order": False,
                  "shape": tuple(array.shape)}
        np.lib.format.write_array_header_1_0(handle, header)
        for first in range(0, max(1, len(array)), chunk_rows):
            handle.write(np.ascontiguousarray(array[first : first + chunk_rows]).tobytes())

    return write_file(path, write)


def write_directory(parent: Path, name: str, files: dict) -> dict:
    """Write ``files`` (name -> array, bytes or None) into ``parent/name`` through a staging directory."""
    staging = parent / f".tmp-{name}"
    staging.mkdir(parents=True)
    os.chmod(staging, 0o777 & ~current_umask())
    info = {}
    for file_name, content in files.items():
        if content is None:
            continue
        if isinstance(content, (bytes, bytearray)):
            info[file_name] = write_file(staging / file_name, lambda handle, data=content: handle.write(data))
        else:
            info[file_name] = save_array(staging / file_name, content)
    _fsync_directory(staging)
    os.rename(staging, parent / name)
    _fsync_directory(parent)
    return info


def check_size(path: Path, expected: dict) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise TreeseekError(f"index file missing: {path}") from None
    if size != expected["bytes"]:
        raise TreeseekError(f"index file {path} is truncated or corrupt ({size} bytes, the manifest says "
                            f"{expected['bytes']})")


def read_checked(path: Path, expected: dict) -> bytes:
    """The whole file, after checking its size and SHA-256 against the manifest."""
    check_size(path, expected)
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != expected["sha256"]:
        raise TreeseekError(f"index file {path} is corrupt (checksum mismatch)")
    return data


def load_checked_array(path: Path, expected: dict) -> np.ndarray:
    data = read_checked(path, expected)
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        raise TreeseekError(f"index file {path} is not a plain array: {exc}") from None


def map_array(path: Path, expected: dict, shape: tuple, dtype) -> np.ndarray:
    """Memory-map a large array after checking its size, header, shape and dtype."""
    check_size(path, expected)
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise TreeseekError(f"index file {path} is corrupt: {exc}") from None
    if array.shape != tuple(shape) or array.dtype != np.dtype(dtype):
        raise TreeseekError(f"index file {path} holds {array.dtype} {array.shape}, the manifest says "
                            f"{np.dtype(dtype)} {tuple(shape)}")
    # a plain view of the same mapped pages: np.memmap re-wraps every slice and every result it takes part
    # in, which a search that touches thousands of small blocks pays for on each
    return array.view(np.ndarray)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


OWN_PATTERNS = ("model-*", "hasher-*", "removed-*", "attachment-*", ".tmp-*", "segments/*", "segments/.tmp-*",
                "model", "vectors.npy", "items.npz", "pixels.npy")  # the last four: format 1, replaced in place


def sweep(directory: Path, keep: set[str]) -> None:
    """Delete what the manifest no longer names: old generations and the leftovers of killed saves.

    Only names that treeseek itself creates are considered, so a stray file of the user's survives.
    """
    for path in {p for pattern in OWN_PATTERNS for p in directory.glob(pattern)}:
        if path.relative_to(directory).as_posix() in keep:
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def read_manifest(directory: Path) -> dict:
    return read_manifest_and_digest(directory)[0]


def read_manifest_and_digest(directory: Path) -> tuple[dict, str]:
    """The manifest, and the SHA-256 of the very bytes it was parsed from (what a writer compares at commit)."""
    if not directory.is_dir():
        raise TreeseekError(f"index directory not found: {directory}")
    path = directory / "manifest.json"
    try:
        data = path.read_bytes()
        meta = json.loads(data)
    except FileNotFoundError:
        raise TreeseekError(f"index manifest not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TreeseekError(f"index manifest {path} is corrupt: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") not in (INDEX_FORMAT, "treeseek-image-index"):
        raise TreeseekError(f"{directory} is not a treeseek index")
    if meta.get("format") != INDEX_FORMAT or meta.get("version") != INDEX_VERSION:
        raise TreeseekError(f"{directory} was written in index format {meta.get('version')} by treeseek "
                            f"{meta.get('treeseek_version', '0.1')}; this treeseek reads format {INDEX_VERSION}. "
                            f"Build it again (treeseek run, or treeseek index create)")
    return meta, hashlib.sha256(data).hexdigest()


def manifest_digest(directory: Path) -> str | None:
    """SHA-256 of the manifest now on disk (None when there is none)."""
    try:
        return hashlib.sha256((directory / "manifest.json").read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


_OWN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def own_name(value, what: str) -> str:
    """A file or folder name taken from a manifest: one plain path component, never '..', '/...' or empty.

    Names are joined to the index directory, so an edited manifest must not point outside it."""
    if not isinstance(value, str) or not _OWN_NAME.fullmatch(value) or ".." in value:
        raise TreeseekError(f"index manifest names {what} {value!r}, which is not a file of the index")
    return value


def is_index(directory: str | Path) -> bool:
    try:
        read_json(Path(directory) / "manifest.json", "index manifest")["format"]
    except (TreeseekError, KeyError, TypeError, OSError):
        return False
    return True


def check_target(directory: Path) -> None:
    """Refuse to write into a directory that holds something other than a treeseek index."""
    if not directory.exists():
        return
    if not (directory / "manifest.json").is_file():
        # what a killed first save leaves behind is ours to sweep; anything else is the user's
        foreign = [p.name for p in directory.iterdir() if not any(p.match(pattern) for pattern in OWN_PATTERNS)
                   and p.name not in (".lock", "segments")]
        if foreign:
            raise TreeseekError(f"{directory} exists and is not a treeseek index; choose an empty or new directory")
    else:
        meta = read_json(directory / "manifest.json", "index manifest")
        if not isinstance(meta, dict) or meta.get("format") not in (INDEX_FORMAT, "treeseek-image-index"):
            raise TreeseekError(f"{directory} holds a manifest.json that is not a treeseek index's; refusing to "
                                f"overwrite it")


DEFAULT_WAIT_SECONDS = choices.DEFAULT_WAIT_SECONDS
_POLL_SECONDS = 0.05
_held_locks: dict[tuple, int] = {}  # (thread, index directory) whose writer lock is held -> nesting depth


@contextlib.contextmanager
def writer_lock(directory: Path, wait: float = 0.0):
    """Hold the index's writer lock: one writer at a time, from the moment it reads until it commits.

    A writer opens the index, changes it and saves it inside one ``writer_lock``; a second writer
    waits up to ``wait`` seconds (0: not at all) and then fails with one line, so that it never saves
    over a state it did not read. The lock is re-entrant within a process: ``save`` takes it again
    without blocking on itself. Readers never take it.
    """
    key = (threading.get_ident(), os.path.realpath(directory))
    if _held_locks.get(key):
        _held_locks[key] += 1
        try:
            yield
        finally:
            _held_locks[key] -= 1
        return
    with open(directory / ".lock", "a") as handle:
        _acquire(handle, directory, wait)
        _held_locks[key] = 1
        try:
            yield
        finally:
            del _held_locks[key]
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _acquire(handle, directory: Path, wait: float) -> None:
    deadline = time.monotonic() + max(0.0, wait)
    announced = False
    while True:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                waited = f" after waiting {wait:g} s" if wait > 0 else ""
                raise TreeseekError(f"another process is writing {directory}{waited}; try again when it has "
                                    f"finished (--wait SECONDS waits longer)") from None
            if not announced:
                logger.warning("waiting for another process that is writing %s (up to %g s)", directory, wait)
                announced = True
            time.sleep(_POLL_SECONDS)

