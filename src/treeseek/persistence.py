"""Crash-safe writes and code-free reads.

Every file treeseek saves is written to a temporary sibling, flushed to disk
and renamed over the target, so a crash leaves either the old file or the new
one, never a torn mix. Arrays are read with ``allow_pickle=False`` so that
loading a file can never execute code.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Mapping

import numpy as np

from .errors import TreeseekError

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: temporary files are created 0600, the final file follows the umask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_directory(path.parent)


def current_umask() -> int:
    return _UMASK


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_file(path) as handle:
        handle.write(data)


def atomic_write_json(path: str | os.PathLike, payload: Any) -> None:
    atomic_write_bytes(path, (json.dumps(payload, indent=2) + "\n").encode())


def atomic_save_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    with atomic_file(path) as handle:
        np.savez(handle, **{name: np.asarray(value) for name, value in arrays.items()})


def file_digest(path: str | os.PathLike) -> str:
    """First 16 hex digits of the file's SHA-256, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def read_json(path: str | os.PathLike, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise TreeseekError(f"{what} not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TreeseekError(f"{what} {path} is corrupt: {exc}") from None


def load_npz(path: str | os.PathLike, what: str) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` into memory, refusing pickled objects."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise TreeseekError(f"{what} not found: {path}") from None
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise TreeseekError(f"{what} {path} holds pickled objects, which treeseek never loads") from None
        raise TreeseekError(f"{what} {path} is not a readable .npz file: {exc}") from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise TreeseekError(f"{what} {path} is not a readable .npz file: {exc}") from None


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
