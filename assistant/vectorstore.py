"""Vector search over the index's FAISS segments, with tombstoned rows filtered out; a LangChain VectorStore
on demand (`as_langchain()`).

The store is a plain class: LangChain's VectorStore module imports its retriever and tracing machinery
(langsmith), 0.25-0.6 s of a cold `assistant ask` that answering never uses.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

import faiss
import numpy as np
from langchain_core.embeddings import Embeddings

from .milvus import scope_filter
from .segments import Segment

# A scope of at most this many rows of a segment is searched exactly (a scan of just those vectors); a larger one
# walks the HNSW graph with the filter, which finds k of them when they are a large share of the rows.
EXACT_SCOPE_ROWS = 20_000


class SegmentedVectorStore:
    """Inner-product search over unit vectors (cosine) across segments; results are global rows.

    `parts` pairs each segment with `rows`: the global row of each of its rows, -1 for a dead (tombstoned) one.
    `chunks` is the index's chunk table (global row -> Chunk) and `places` maps chunk ids to (segment, row).
    """

    def __init__(self, embedding: Embeddings, dimension: int, parts: list[tuple[Segment, np.ndarray]],
                 chunks: Sequence, places=None):  # noqa: ANN001 - a callable: ids -> {id: (segment, row)}
        self._embedding = embedding
        self.dimension = dimension
        self.parts = parts
        self.chunks = chunks
        self._places = places
        self._segment = {segment.name: segment for segment, _ in parts}
        self._live = [_live_selector(rows) for _, rows in parts]

    @property
    def embeddings(self) -> Embeddings:
        return self._embedding

    def __len__(self) -> int:
        return len(self.chunks)

    def search_by_vector(self, vector: np.ndarray, k: int, scope=None) -> list[tuple[int, float]]:  # noqa: ANN001
        """(global row, cosine) pairs, best first; with a `scope` (indexing.Scope) only its rows, filtered inside
        the FAISS search (a selector), so a scoped question still gets k of them."""
        query = np.asarray(vector, dtype="float32").reshape(1, -1)
        found: list[tuple[int, float]] = []
        for (segment, rows), live in zip(self.parts, self._live, strict=True):
            if not segment.rows:
                continue
            exact = False
            if scope is not None:
                allowed = (rows >= 0) & scope.mask[np.maximum(rows, 0)]
                count = int(allowed.sum())
                if not count:
                    continue
                live = _selector(allowed)
                exact = count <= EXACT_SCOPE_ROWS
            scores, local = segment.search(query, k, live, exact)
            for r, s in zip(local[0], scores[0], strict=True):
                if r >= 0:  # -1 pads a segment with fewer than k live rows
                    found.append((int(rows[r]), float(s)))
        found.sort(key=lambda rs: -rs[1])
        return found[:k]

    def vectors_for(self, ids: Sequence[str]) -> np.ndarray:
        """The stored vectors of the given live chunk ids, in order."""
        places = self._places(list(ids))
        if not ids:
            return np.zeros((0, self.dimension), dtype="float32")
        return np.vstack([self._segment[places[i][0]].vectors([places[i][1]]) for i in ids])

    def chunks_by_ids(self, ids: Sequence[str]) -> list:
        """The live chunks of the given ids, in order; unknown or removed ids are left out."""
        places = self._places(list(ids))
        chunks = [self._chunk_at(*places[cid]) for cid in ids if cid in places]
        return [c for c in chunks if c is not None]

    def _chunk_at(self, segment: str, row: int):  # noqa: ANN202
        for part, rows in self.parts:
            if part.name == segment and rows[row] >= 0:
                return self.chunks[int(rows[row])]
        return None

    def as_langchain(self):  # noqa: ANN201 - a langchain_core.vectorstores.VectorStore, imported on demand
        """This store as a LangChain VectorStore (similarity_search, get_by_ids, as_retriever, ...)."""
        return _langchain_store_class()(self)


@functools.cache
def _langchain_store_class() -> type:
    from langchain_core.documents import Document
    from langchain_core.vectorstores import VectorStore

    def document(chunk) -> Document:  # noqa: ANN001 - a Chunk
        meta = chunk.as_dict()
        del meta["id"], meta["text"]
        return Document(page_content=chunk.text, metadata=meta, id=chunk.id)

    class LangChainVectorStore(VectorStore):
        """A SegmentedVectorStore behind LangChain's interface; read-only (builds write the index)."""

        def __init__(self, store: SegmentedVectorStore) -> None:
            self.store = store

        @property
        def embeddings(self) -> Embeddings:
            return self.store.embeddings

        def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
            return [document(c) for c in self.store.chunks_by_ids(ids)]

        def _scored(self, vector: Sequence[float], k: int) -> list[tuple[Document, float]]:
            found = self.store.search_by_vector(np.asarray(vector, dtype="float32"), k)
            return [(document(self.store.chunks[r]), s) for r, s in found]

        def similarity_search_with_score(self, query: str, k: int = 4, **kwargs: Any) -> list[tuple[Document, float]]:
            return self._scored(self.store.embeddings.embed_query(query), k)

        def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
            return [doc for doc, _ in self.similarity_search_with_score(query, k, **kwargs)]

        def similarity_search_by_vector(self, embedding: list[float], k: int = 4, **kwargs: Any) -> list[Document]:
            return [doc for doc, _ in self._scored(embedding, k)]

        def _select_relevance_score_fn(self):  # noqa: ANN202
            return lambda score: (score + 1.0) / 2.0

        def add_texts(self, texts: Iterable[str], metadatas: list[dict] | None = None, **kwargs: Any) -> list[str]:
            raise NotImplementedError("The index is written by builds: add articles with `assistant index add`.")

        @classmethod
        def from_texts(cls, texts: list[str], embedding: Embeddings, metadatas: list[dict] | None = None,
                       **kwargs: Any) -> VectorStore:
            raise NotImplementedError("Build an index with `assistant index build`.")

    return LangChainVectorStore


class MilvusVectorStore(SegmentedVectorStore):
    """The same store over a Milvus collection (ids are the catalog's chunk rowids)."""

    def __init__(self, embedding: Embeddings, dimension: int, collection, row_of: dict[int, int],  # noqa: ANN001
                 chunks: Sequence, places=None):  # noqa: ANN001
        super().__init__(embedding, dimension, [], chunks, places)
        self.collection, self.row_of = collection, row_of

    def search_by_vector(self, vector: np.ndarray, k: int, scope=None) -> list[tuple[int, float]]:  # noqa: ANN001
        hits = self.collection.dense(vector, k + 10, scope_filter(scope))
        return [(self.row_of[i], s) for i, s in hits if i in self.row_of][:k]

    def vectors_for(self, ids: Sequence[str]) -> np.ndarray:
        places = self._places(list(ids))
        if not ids:
            return np.zeros((0, self.dimension), dtype="float32")
        found = self.collection.vectors([places[i][1] for i in ids])
        return np.vstack([found[places[i][1]] for i in ids])

    def _chunk_at(self, segment: str, row: int):  # noqa: ANN202 - row is the rowid here
        return self.chunks[self.row_of[row]] if row in self.row_of else None


def _live_selector(rows: np.ndarray) -> faiss.IDSelector | None:
    """A FAISS filter passing a segment's live rows (None when all are live)."""
    alive = rows >= 0
    if alive.all():
        return None
    return _selector(alive)


def _selector(alive: np.ndarray) -> faiss.IDSelector:
    """A FAISS filter passing the rows marked True."""
    bitmap = np.packbits(alive, bitorder="little")  # bit i & 7 of byte i >> 3, as IDSelectorBitmap reads it
    selector = faiss.IDSelectorBitmap(len(alive), faiss.swig_ptr(bitmap))
    selector.referenced_objects = [bitmap]  # faiss's own idiom: the selector reads the array, Python must keep it
    return selector
