"""Crash-safe writes and code-free reads.

Every file treeseek saves is written to a temporary sibling, flushed to disk
and renamed over the target, so a crash leaves either the old file or the new
one, never a torn mix. Arrays are read with ``allow_pickle=False`` so that
loading a file can never execute code.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Mapping

import numpy as np

from treeseek.errors import TreeseekError

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


def atomic_write_json(path: str | os.PathLike, payload: Any) -> bytes:
    """Write ``payload`` as indented JSON; returns the bytes written (for a caller that checksums them)."""
    data = (json.dumps(payload, indent=2) + "\n").encode()
    atomic_write_bytes(path, data)
    return data


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


def save_named_arrays(directory: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> str:
    """Write ``arrays`` as ``arrays-<checksum>.npz`` in ``directory``; returns the file name.

    Naming by content lets a JSON record point at the file and be replaced
    atomically afterwards, and lets ``load_named_arrays`` detect corruption.
    """
    buffer = io.BytesIO()
    np.savez(buffer, **{name: np.asarray(value) for name, value in arrays.items()})
    name = f"arrays-{hashlib.sha256(buffer.getvalue()).hexdigest()[:16]}.npz"
    atomic_write_bytes(Path(directory) / name, buffer.getvalue())
    return name


def drop_other_arrays(directory: str | os.PathLike, keep: str) -> None:
    """Delete the array files of earlier saves once the record no longer names them."""
    for stale in Path(directory).glob("arrays-*.npz"):
        if stale.name != keep:
            stale.unlink(missing_ok=True)


def load_named_arrays(directory: str | os.PathLike, name: str, what: str) -> dict[str, np.ndarray]:
    """The arrays of ``save_named_arrays``, after checking the content against the name."""
    path = Path(directory) / name
    if path.is_file() and not name.endswith(f"{file_digest(path)}.npz"):
        raise TreeseekError(f"{path} is corrupt (checksum mismatch)")
    return load_npz(path, what)


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
    if not _starts_like_zip(path, what):  # numpy would try to unpickle it, and say so
        raise TreeseekError(f"{what} {path} is not a .npz file (a zip archive of .npy arrays, as numpy.savez writes)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise TreeseekError(f"{what} {path} holds pickled objects, which treeseek never loads") from None
        raise TreeseekError(f"{what} {path} is not a readable .npz file: {exc}") from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise TreeseekError(f"{what} {path} is not a readable .npz file: {exc}") from None


def _starts_like_zip(path: str | os.PathLike, what: str) -> bool:
    try:
        with open(path, "rb") as handle:
            start = handle.read(4)
    except FileNotFoundError:
        raise TreeseekError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise TreeseekError(f"{what} {path} is a directory, not a .npz file") from None
    except OSError as exc:
        raise TreeseekError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    return start in (b"PK\x03\x04", b"PK\x05\x06")  # a zip archive's first entry, or an empty archive


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
