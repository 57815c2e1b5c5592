"""What the API takes and answers, as pydantic models: /openapi.json describes every request and answer."""
from __future__ import annotations

from typing import Annotated, List, Optional, Union

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field

MAX_FEATURE_ROWS = 1000  # per request to /api/search/features

# the query parameters of the GET and multipart searches, described as the JSON body's fields are
Method = Annotated[str, Query(description="soft (default: expected LCA height under the class posteriors), "
                                          "combined (the paper's hard leaves), flat, hierarchy or cosine.")]
Alpha = Annotated[Optional[float], Query(description="Weight of the hierarchy term (default: the model's).")]
Hamming = Annotated[bool, Query(description="Rank by Hamming distance between the stored binary codes.")]
Rerank = Annotated[int, Query(ge=0, description="With hamming: re-rank this many nearest codes by the method.")]
HammingIndex = Annotated[str, Query(description="With hamming: flat (exact) or hnsw.")]
Subtree = Annotated[Optional[str], Query(description="Only items under this node of the tree (its name, as "
                                                     "GET /api/tree lists it).")]


class SignIn(BaseModel):
    token: str


class FeatureQuery(BaseModel):
    """Query vectors in the index's feature space, and how to rank."""

    features: List[List[float]] = Field(max_length=MAX_FEATURE_ROWS, description="One row per query.")
    names: Optional[List[str]] = Field(None, description="What to call each query in the answer (default: 0, 1...).")
    k: int = Field(10, ge=1, le=10_000, description="Results per query.")
    method: str = Field("soft", description="soft, combined, flat, hierarchy or cosine.")
    alpha: Optional[float] = Field(None, description="Weight of the hierarchy term (default: the model's).")
    hamming: bool = Field(False, description="Rank by Hamming distance between the stored binary codes.")
    rerank: int = Field(0, ge=0, description="With hamming: re-rank this many nearest codes by the method.")
    hamming_index: str = Field("flat", description="With hamming: flat (exact) or hnsw.")
    subtree: Optional[str] = Field(None, description="Only items under this node of the tree (its name).")


class Hit(BaseModel):
    """One result: its place, what it is, and its distance in parts."""

    model_config = ConfigDict(populate_by_name=True)

    rank: int
    id: Union[int, str]
    class_: Optional[str] = Field(alias="class", description="Its label, when the item has one.")
    leaf: str = Field(description="The leaf (class) the model places it at.")
    distance: float = Field(description="cosine + alpha * hierarchy (or the Hamming distance).")
    cosine: float = Field(description="1 - cosine similarity to the query.")
    hierarchy: Optional[float] = Field(description="Normalised LCA height (soft: its expectation); None at alpha 0.")
    lca: str = Field(description="The lowest common ancestor of the query's leaf and the item's.")
    relation: str = Field(description="In words: same class, related: both are <node>, or unrelated.")
    similarity: float = Field(description="Cosine similarity to the query, clipped to [0, 1].")
    path: Optional[str] = Field(None, description="Its file, relative to the collection unless --show-paths.")
    image_url: Optional[str] = Field(None, description="Its picture, when the index holds images.")


class Novelty(BaseModel):
    """How far the query is from every known class."""

    score: float = Field(description="Smallest squared Mahalanobis distance to a known class (or sub-class), plus "
                         "the distance from the PCA subspace in units of the training residual variance.")
    p_value: Optional[float] = Field(description="Share of held-out images of known classes scoring at least as "
                                     "much (None: the model has no calibration).")
    flagged: bool = Field(description="No known class is close: the hierarchy term is not trusted.")


class QueryResults(BaseModel):
    query: Union[int, str]
    leaf: str = Field(description="The leaf the model places the query at.")
    confidence: float = Field(description="Posterior probability of the class of that leaf: how sure the placement "
                              "is.")
    novelty: Optional[Novelty] = None
    method: Optional[str] = Field(None, description="What ranked this query, when not the report's method "
                                  "(a flagged query: the visual distance alone).")
    note: Optional[str] = Field(None, description="Why this query was ranked differently.")
    results: List[Hit]


class SearchReport(BaseModel):
    """The answer of every search, the same as ``treeseek search --json`` (with picture addresses)."""

    method: str = Field(description="What ranked: the method, or the Hamming search and its re-ranking.")
    alpha: float
    within: Optional[str] = Field(None, description="The node of the tree the search was restricted to.")
    queries: List[QueryResults]


class TreeShape(BaseModel):
    leaves: int
    height: int
    shape: List[int]


class Info(BaseModel):
    """What the index holds: items, classes, tree, ranking defaults, and whether it takes images."""

    treeseek: str
    items: int
    segments: int
    dimensions: int
    classes: List[str]
    tree: TreeShape
    alpha: float
    temperature: float
    methods: List[str]
    backend: str
    code_bits: Optional[int]
    backbone: Optional[str]


class Item(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: int
    class_: Optional[str] = Field(alias="class")
    leaf: str
    source: str
    image_url: Optional[str]


class TreeNode(BaseModel):
    id: int
    name: str
    parent: int = Field(description="-1 for the root.")
    children: List[int]
    height: int = Field(description="0 for a leaf; 1 + the tallest child's otherwise.")
    items: int = Field(description="Items of the index under this node.")
    class_: Optional[str] = Field(None, alias="class", description="A leaf's class (a sub-class's: its class).")

    model_config = ConfigDict(populate_by_name=True)


class TreeNodes(BaseModel):
    """The tree of the index, node by node."""

    root: int
    nodes: List[TreeNode]


class NodeItem(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: int
    class_: Optional[str] = Field(alias="class")
    file: str
    image_url: Optional[str]


class NodeItems(BaseModel):
    """A page of the items under a node."""

    node: int
    name: str
    total: int
    offset: int
    items: List[NodeItem]


class DuplicateItem(NodeItem):
    distance: float = Field(description="Cosine distance to the group's first picture.")


class DuplicateGroups(BaseModel):
    """Groups of near-identical pictures, largest first."""

    threshold: float
    groups: List[List[DuplicateItem]]


class Error(BaseModel):
    """Every refusal: one line."""

    error: str


ERRORS = {status: {"model": Error} for status in (400, 401, 404, 413, 422, 429)}
