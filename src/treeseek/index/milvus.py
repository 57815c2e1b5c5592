"""A treeseek ranking served by Milvus, for collections that outgrow one machine.

Milvus (standalone, distributed, Zilliz Cloud, or Milvus Lite in a local ``.db`` file) shards, replicates
and indexes the collection. treeseek only turns items and queries into the augmented vectors of
``treeseek.index.engine_vectors`` and the engine's inner products back into distances. A collection records
the fingerprint of the model and method that made its vectors, and searching it with any other is refused.
"""
from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm.auto import tqdm

from treeseek import choices
from treeseek.errors import TreeseekError
from treeseek.index import TreeIndex
from treeseek.index.engine_vectors import (
    ENGINE_METHODS,
    check_method,
    item_batches,
    live_ids,
    model_fingerprint,
    query_vectors,
    vector_dim,
)
from treeseek.model import TreeseekModel
from treeseek.search.contract import RANKING_METHODS, Capabilities, Ranking, check_request, search_excluding
from treeseek.search.inner_product import distances_from_similarities

# build parameters of each index type, and the search parameters that tune it
INDEX_TYPES = choices.MILVUS_INDEX_TYPES
FINGERPRINT, METHOD, INDEX_TYPE = "treeseek.fingerprint", "treeseek.method", "treeseek.index_type"  # properties
MAX_SOURCE_BYTES = 65535      # Milvus's longest VARCHAR
MAX_TOPK = 16384              # Milvus's largest limit per search
REQUEST_BYTES = 16 << 20      # vectors per request: Milvus refuses gRPC messages over 64 MB
ID_BATCH = 16384
COLLECTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")


class MilvusTarget(NamedTuple):
    """Where a collection lives, and how to search it (the index type's search parameters)."""

    uri: str
    collection: str
    search_params: dict | None = None
    token: str = ""

    def open(self, model: TreeseekModel, method: str = "soft", **build) -> "MilvusIndex":
        return MilvusIndex(model, self.uri, self.collection, method, search_params=self.search_params,
                           token=self.token, **build)


def default_collection(index_directory: str | Path) -> str:
    """``treeseek_`` and the index directory's name, in the letters Milvus allows in a collection name."""
    return "treeseek_" + re.sub(r"[^A-Za-z0-9_]", "_", Path(index_directory).resolve().name)[:200]


class MilvusIndex:
    """``sync(index)`` makes a collection hold exactly the live items of a ``TreeIndex`` fitted with ``model``;
    ``search(X, k, ranking=Ranking(method), exclude_ids=None)`` answers the search contract like a ``TreeIndex``.

    ``index_params`` are the index type's build parameters (``nlist``; ``M``, ``efConstruction``) and
    ``search_params`` its search parameters (``nprobe``; ``ef``)."""

    def __init__(self, model: TreeseekModel, uri: str, collection: str, method: str = "soft",
                 index_type: str = "FLAT", index_params: dict | None = None, search_params: dict | None = None,
                 token: str = "", timeout: float | None = 30.0):
        if not COLLECTION_NAME.fullmatch(collection):
            raise TreeseekError(f"a Milvus collection name is letters, digits and _, not starting with a digit; "
                                f"got {collection!r}")
        if index_type not in INDEX_TYPES:
            raise TreeseekError(f"Milvus index type must be one of {', '.join(INDEX_TYPES)}, got {index_type!r}")
        build = INDEX_TYPES[index_type][0]
        _check_names(index_params, build, f"{index_type} has no build parameter")
        self.model, self.uri, self.collection, self.method = model, uri, collection, check_method(method)
        self.index_type, self.index_params = index_type, {**build, **(index_params or {})}
        self.search_params, self.token, self.timeout = dict(search_params or {}), token, timeout
        self.fingerprint_ = model_fingerprint(model, method)
        other = [name for name in ENGINE_METHODS if name != self.method]
        self.capabilities = Capabilities((self.method,), max_k=MAX_TOPK, reasons={
            **{name: f"this Milvus collection holds vectors for the {self.method} ranking; push it again with "
                     f"--method {name} to rank by {name}" for name in other},
            **{name: f"Milvus ranks with {' or '.join(ENGINE_METHODS)}, not {name}"
               for name in RANKING_METHODS if name not in ENGINE_METHODS}})
        self.client_ = None
        self._checked = False

    # ----------------------------------------------------------------- writes
    def sync(self, index: TreeIndex, replace: bool = False, progress: bool = False) -> dict:
        """Insert the index's items that the collection lacks and delete the ones it no longer has (all of
        them, with ``replace``: the collection is made anew). Returns the counts."""
        if model_fingerprint(index.model, self.method) != self.fingerprint_:
            raise TreeseekError("the index was fitted with another model than this MilvusIndex")
        client = self._client()
        with self._engine_errors():
            if replace and client.has_collection(self.collection):
                client.drop_collection(self.collection)
            if client.has_collection(self.collection):
                existing = self._check_collection()
                if existing != self.index_type:
                    raise TreeseekError(f"Milvus collection {self.collection!r} has a {existing} index, not "
                                        f"{self.index_type}; push with that type, or replace it")
            else:
                self._create_collection()
            stale, missing, live = self._differences(index)
            for start in range(0, len(stale), ID_BATCH):
                client.delete(self.collection, ids=stale[start : start + ID_BATCH].tolist())
            rows = _rows_per_request(vector_dim(self.model))
            with tqdm(total=len(missing), desc="pushing to Milvus", disable=not progress) as bar:
                for batch in item_batches(index, self.method, rows, only=missing):
                    client.insert(self.collection, _records(batch))
                    bar.update(len(batch.ids))
            client.flush(self.collection)
            client.load_collection(self.collection)
        self._checked = True
        return {"added": int(len(missing)), "deleted": int(len(stale)), "total": int(len(live))}

    def status(self, index: TreeIndex) -> dict:
        """What ``sync`` would do, without doing it: the collection's index type and items, and how many of the
        index's items it lacks or should lose."""
        self.connect()
        with self._engine_errors():
            index_type = self._check_collection()
            stale, missing, live = self._differences(index)
        return {"index_type": index_type, "stored": int(len(live) - len(missing) + len(stale)),
                "to_add": int(len(missing)), "to_delete": int(len(stale)), "total": int(len(live))}

    def _differences(self, index: TreeIndex) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ids the collection holds and the index does not, ids the index holds and the collection does not,
        and the index's live ids."""
        self.client_.load_collection(self.collection)  # a collection that no client has loaded cannot be queried
        stored, live = self._stored_ids(), live_ids(index)
        return np.setdiff1d(stored, live), np.setdiff1d(live, stored), live

    def _create_collection(self) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, description=f"treeseek {self.method} ranking")
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=vector_dim(self.model))
        schema.add_field("label", DataType.INT64)
        schema.add_field("source", DataType.VARCHAR, max_length=MAX_SOURCE_BYTES)
        index_params = self.client_.prepare_index_params()
        index_params.add_index(field_name="vector", index_type=self.index_type, metric_type="IP",
                               params=self.index_params)
        self.client_.create_collection(self.collection, schema=schema, index_params=index_params,
                                       properties={FINGERPRINT: self.fingerprint_, METHOD: self.method,
                                                   INDEX_TYPE: self.index_type})

    def _stored_ids(self) -> np.ndarray:
        iterator = self.client_.query_iterator(self.collection, batch_size=ID_BATCH, filter="id >= 0",
                                               output_fields=["id"])
        ids = []
        try:
            while batch := iterator.next():
                ids.extend(int(row["id"]) for row in batch)
        finally:
            iterator.close()
        return np.asarray(sorted(ids), dtype=np.int64)

    # ----------------------------------------------------------------- search
    def search(self, X: np.ndarray, k: int, *, ranking: Ranking = Ranking(),
               exclude_ids=None) -> tuple[np.ndarray, np.ndarray]:
        """The search contract (``SearchIndex.search``): the ranking the collection was pushed for (its
        ``method``), at any alpha; k at most 16384, Milvus's limit."""
        check_request("this Milvus collection", self.capabilities, k, ranking)
        X = self.model.check_dim(X, "queries")
        return search_excluding(lambda queries, wanted: self._topk(queries, wanted, ranking.alpha_for(self.model)),
                                X, int(k), exclude_ids)

    def _topk(self, queries: np.ndarray, k: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        vectors = query_vectors(self.model, queries, self.method, alpha)
        distances, ids = np.full((len(vectors), k), np.inf), np.full((len(vectors), k), -1, dtype=np.int64)
        client = self._client()
        with self._engine_errors():
            if not self._checked:  # once per MilvusIndex: a server's searches make no extra round trips
                self.connect()
                self._check_collection()
                client.load_collection(self.collection)
                self._checked = True
            rows = _rows_per_request(vectors.shape[1])
            for start in range(0, len(vectors), rows):
                hits = client.search(self.collection, data=list(vectors[start : start + rows]), limit=k,
                                     search_params={"metric_type": "IP", "params": self.search_params})
                for q, row in enumerate(hits, start=start):
                    ids[q, : len(row)] = [hit["id"] for hit in row]
                    distances[q, : len(row)] = distances_from_similarities([hit["distance"] for hit in row], alpha)
        return distances, ids

    # ---------------------------------------------------------------- helpers
    def connect(self):
        """The client, once the engine answers and holds the collection (else a one-line error)."""
        client = self._client()
        with self._engine_errors():
            if not client.has_collection(self.collection):
                raise TreeseekError(f"Milvus at {self.uri} has no collection {self.collection!r}; push the index first")
        return client

    def _check_collection(self) -> str:
        """Refuse a collection made for another model or method, or search parameters its index lacks;
        returns its index type."""
        properties = self.client_.describe_collection(self.collection).get("properties") or {}
        if properties.get(FINGERPRINT) != self.fingerprint_:
            raise TreeseekError(f"Milvus collection {self.collection!r} holds vectors of another model or method "
                                f"than this {self.method} ranking; push again with replace")
        index_type = properties.get(INDEX_TYPE, "FLAT")
        _check_names(self.search_params, INDEX_TYPES.get(index_type, ({}, ()))[1],
                     f"the collection's {index_type} index has no search parameter")
        return index_type

    def _client(self):
        if self.client_ is None:
            try:
                from pymilvus import MilvusClient
            except ImportError:
                raise TreeseekError("Milvus support needs pymilvus: pip install 'treeseek[milvus]'") from None
            with self._engine_errors():
                self.client_ = MilvusClient(self.uri, token=self.token, timeout=self.timeout)
        return self.client_

    @contextlib.contextmanager
    def _engine_errors(self):
        """The engine's failures as one line that names it."""
        from pymilvus.exceptions import MilvusException

        try:
            yield
        except MilvusException as exc:
            message = str(getattr(exc, "message", "") or exc).strip().splitlines()
            raise TreeseekError(f"Milvus at {self.uri}: {message[0] if message else type(exc).__name__}") from None


def _rows_per_request(dim: int) -> int:
    """float32 vectors of ``dim`` that fit in one request of ``REQUEST_BYTES``."""
    return max(1, REQUEST_BYTES // (4 * dim))


def _check_names(params: dict | None, known, problem: str) -> None:
    unknown = sorted(set(params or {}) - set(known))
    if unknown:
        raise TreeseekError(f"{problem} {unknown[0]!r} (it has: {', '.join(known) or 'none'})")


def _records(batch) -> list[dict]:
    too_long = [source for source in batch.sources if len(source.encode("utf-8")) > MAX_SOURCE_BYTES]
    if too_long:
        raise TreeseekError(f"an item's source is longer than Milvus allows ({MAX_SOURCE_BYTES} bytes): "
                            f"{too_long[0][:80]}...")
    return [{"id": int(i), "vector": vector, "label": int(label), "source": source}
            for i, vector, label, source in zip(batch.ids, batch.vectors, batch.labels, batch.sources)]
