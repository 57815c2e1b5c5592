"""An index on disk as a server sees it: opened once, and opened again whenever a writer commits."""
from __future__ import annotations

import threading
from pathlib import Path

from treeseek.errors import TreeseekError
from treeseek.index import TreeIndex
from treeseek.index.image_index import ImageIndex


class LiveIndex:
    """The newest committed state of an index directory, for one reader shared by many requests.

    A writer (``treeseek index add``, ``remove``, ``compact``...) commits by atomically replacing
    ``manifest.json``, so a changed manifest (inode, size or time) is the signal to open the index
    again. Requests hold ``request_lock`` while they use the index: the search structures are not thread-safe.
    """

    def __init__(self, directory: str | Path, milvus=None):
        """``milvus``: a ``MilvusTarget`` that ranks instead of the index (see ``engine``)."""
        self.directory = Path(directory)
        self.milvus = milvus
        self._engines: dict = {}  # method -> the engine for the index now open
        self.lock = threading.RLock()  # held while the index is opened again
        self.request_lock = threading.Lock()  # held for a whole request (``dependencies.current_index``)
        self.index: TreeIndex | None = None
        self.images: ImageIndex | None = None
        self.version = 0  # increases with every reopening; lets callers cache what they derive
        self._signature = None
        self.refresh()

    def _manifest_signature(self):
        try:
            stat = (self.directory / "manifest.json").stat()
        except OSError:
            raise TreeseekError(f"{self.directory} is not a treeseek index (no manifest.json)") from None
        return stat.st_ino, stat.st_size, stat.st_mtime_ns

    def refresh(self) -> None:
        """Open the index again if a writer has committed since the last look."""
        with self.lock:
            signature = self._manifest_signature()
            if signature == self._signature:
                return
            try:
                index = TreeIndex.open(self.directory)
            except TreeseekError:  # a writer may have committed and swept files while we read: look once more
                signature = self._manifest_signature()
                index = TreeIndex.open(self.directory)
            spec = index.extra_.get("backbone")
            # a new manifest usually keeps the network: keep its loaded weights too
            reuse = self.images is not None and self.images.backbone_spec == spec
            self.images = ImageIndex(index, spec, self.images.loaded_backbone if reuse else None) if spec else None
            self.index, self._signature = index, signature
            self._engines.clear()
            self.version += 1

    def engine(self, model, method: str):
        """The Milvus engine for ``method``, opened once per state of the index (it checks the collection and
        holds a connection)."""
        if method not in self._engines:
            self._engines[method] = self.milvus.open(model, method)
        return self._engines[method]
