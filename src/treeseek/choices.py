"""The names and defaults the command line shows before it imports anything heavy.

``treeseek --help`` must answer in well under a second, without numpy's friends (scikit-learn, SciPy,
matplotlib, FAISS, torch): each name and default that a command's options list is defined here, once, and the
module it belongs to re-exports it.
"""
from __future__ import annotations

#: the tree builder of ``TreeseekModel`` (``treeseek.model``)
DEFAULT_HIERARCHY = "average:8:cosine"
#: the rankings of ``ranking_keys`` (``treeseek.search.distances``), and the baselines evaluation adds
METHODS = ("euclidean", "cosine", "hierarchy", "flat", "combined", "soft")
BASELINES = ("crm",)
#: where the cosine term of every ranking is taken (``TreeseekModel.cosine``): on the raw features (the paper's),
#: centred on the training mean, or centred with the principal components PCA keeps rescaled to equal variance
COSINE_SPACES = ("raw", "centred", "whitened")
#: how a level-by-level search scans a subtree (``treeseek.search.backends``)
BACKENDS = ("exact", "faiss-flat", "faiss-ivf", "faiss-hnsw")
#: how an index stores its unit vectors (``treeseek.index.tree_index``)
DTYPES = ("float32", "float16")
#: how long a writer waits for another by default before it gives up (``treeseek.index.storage``)
DEFAULT_WAIT_SECONDS = 300.0
#: the rankings whose vectors an engine holds (``treeseek.index.engine_vectors``)
ENGINE_METHODS = ("soft", "combined")
#: Milvus's index types: build parameters, and the search parameters that tune them (``treeseek.index.milvus``)
MILVUS_INDEX_TYPES = {"FLAT": ({}, ()), "IVF_FLAT": ({"nlist": 1024}, ("nprobe",)),
                      "HNSW": ({"M": 16, "efConstruction": 200}, ("ef",))}
#: copies re-encoded at JPEG quality 40, mirrored or scaled to 75% stay within this cosine distance of their
#: original (EfficientNet-Lite0 features, 60 Caltech-101 pictures: benchmarks/bench_duplicates.py)
#: (``treeseek.index.duplicates``)
DUPLICATE_THRESHOLD = 0.15
