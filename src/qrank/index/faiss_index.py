"""The FAISS side of the embedded store: the index kinds it builds and the searches it runs on them.

Both kinds sit in an ``IndexIDMap2`` keyed by the caller's ids (the SQLite row ids in
:class:`~qrank.index.faiss_store.FaissStore`); scores are inner products, cosine on unit vectors.

>>> import numpy as np
>>> index = build_index(2, "flat", IndexSettings())
>>> index.add_with_ids(np.eye(2, dtype=np.float32), np.array([7, 9]))
>>> flat_search(index, np.array([0.0, 1.0], dtype=np.float32), 1)[1].tolist(), index_kind(index)
([9], 'flat')
"""

from __future__ import annotations

import numpy as np

from ..errors import require
from ..settings import IndexSettings


def load_faiss():
    """The ``faiss`` module, or an error naming the extra that installs it (``pip install qrank[index]``)."""
    return require("faiss", "index")


def build_index(dim: int, kind: str, settings: IndexSettings):
    """An empty ``IndexIDMap2`` over an exact (``flat``) or ``hnsw`` inner-product index.

    >>> build_index(8, "flat", IndexSettings()).ntotal
    0
    """
    faiss = load_faiss()
    if kind == "hnsw":
        base = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        base.hnsw.efConstruction = settings.hnsw_ef_construction
        base.hnsw.efSearch = settings.hnsw_ef_search
    elif kind == "flat":
        base = faiss.IndexFlatIP(dim)
    else:
        raise ValueError(f"unknown FAISS index kind {kind!r}")
    return faiss.IndexIDMap2(base)


def faiss_ids(index) -> np.ndarray:
    """The external ids held by an ``IndexIDMap2``."""
    return load_faiss().vector_to_array(index.id_map).astype(np.int64)


def index_kind(index) -> str:
    """'hnsw' or 'flat' for an index made by :func:`build_index`."""
    faiss = load_faiss()
    return "hnsw" if isinstance(faiss.downcast_index(index.index), faiss.IndexHNSW) else "flat"


def search_params(kind: str, k: int, settings: IndexSettings, sel=None):
    """FAISS search parameters: HNSW beam width at least ``k``, and an optional id selector."""
    faiss = load_faiss()
    if kind == "hnsw":
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(settings.hnsw_ef_search, k)
    else:
        params = faiss.SearchParameters()
    if sel is not None:
        params.sel = sel
    return params


def flat_search(index, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of one query on an ID-mapped ``IndexFlatIP``: ``(scores, ids)``, best first.

    FAISS scores a single query on one thread; a matrix-vector product over the index's own vector
    storage (a view, no copy) uses the multi-threaded BLAS and is several times faster.
    """
    faiss = load_faiss()
    base = faiss.downcast_index(index.index)
    n = base.ntotal
    if n == 0 or k < 1:
        return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
    xb = faiss.rev_swig_ptr(base.get_xb(), n * base.d).reshape(n, base.d)
    scores = xb @ np.ascontiguousarray(query, dtype=np.float32)
    k = min(k, n)
    top = np.argpartition(-scores, k - 1)[:k] if k < n else np.arange(n)
    top = top[np.lexsort((top, -scores[top]))]
    ids = faiss.rev_swig_ptr(index.id_map.data(), n)
    return scores[top], np.asarray(ids[top], dtype=np.int64)
