"""A LangChain VectorStore implemented directly on faiss, saved without pickle."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from .errors import IndexCorruptError

INDEX_FILE = "dense.faiss"
DOCSTORE_FILE = "chunks.jsonl"


class FaissVectorStore(VectorStore):
    """Inner-product search over unit vectors (cosine); row i of the index is document i."""

    def __init__(self, embedding: Embeddings, dimension: int, index: faiss.Index | None = None,
                 documents: list[Document] | None = None):
        self._embedding = embedding
        self.index = index if index is not None else faiss.IndexFlatIP(dimension)
        self.documents: list[Document] = documents or []
        self._row_of = {doc.id: row for row, doc in enumerate(self.documents)}

    @property
    def embeddings(self) -> Embeddings:
        return self._embedding

    def __len__(self) -> int:
        return len(self.documents)

    def add_vectors(self, vectors: np.ndarray, documents: Sequence[Document]) -> list[str]:
        """Add documents with vectors computed elsewhere (kept from an earlier build)."""
        if len(vectors) != len(documents):
            raise ValueError("one vector per document")
        if len(documents):
            self.index.add(np.ascontiguousarray(vectors, dtype="float32"))
        for doc in documents:
            self._row_of[doc.id] = len(self.documents)
            self.documents.append(doc)
        return [doc.id for doc in documents]

    def add_texts(self, texts: Iterable[str], metadatas: list[dict[str, Any]] | None = None, *,
                  ids: list[str] | None = None, **kwargs: Any) -> list[str]:
        texts = list(texts)
        metadatas = metadatas or [{} for _ in texts]
        ids = ids or [str(len(self.documents) + i) for i in range(len(texts))]
        docs = [Document(page_content=t, metadata=m, id=i) for t, m, i in zip(texts, metadatas, ids, strict=True)]
        vectors = np.asarray(self._embedding.embed_documents(texts), dtype="float32")
        return self.add_vectors(vectors, docs)

    def vectors_for(self, ids: Sequence[str]) -> np.ndarray:
        """The stored vectors of the given ids, in order."""
        rows = [self._row_of[i] for i in ids]
        if not rows:
            return np.zeros((0, self.index.d), dtype="float32")
        return np.vstack([self.index.reconstruct(r) for r in rows]).astype("float32")

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        drop = set(ids or [])
        keep = [doc for doc in self.documents if doc.id not in drop]
        vectors = self.vectors_for([doc.id for doc in keep])
        self.index = faiss.IndexFlatIP(self.index.d)
        self.documents, self._row_of = [], {}
        self.add_vectors(vectors, keep)
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        return [self.documents[self._row_of[i]] for i in ids if i in self._row_of]

    def search_by_vector(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """(row, cosine) pairs, best first."""
        if not self.documents:
            return []
        scores, rows = self.index.search(np.asarray(vector, dtype="float32").reshape(1, -1), min(k, len(self)))
        return [(int(r), float(s)) for r, s in zip(rows[0], scores[0], strict=True) if r >= 0]

    def similarity_search_with_score(self, query: str, k: int = 4, **kwargs: Any) -> list[tuple[Document, float]]:
        vector = np.asarray(self._embedding.embed_query(query), dtype="float32")
        return [(self.documents[r], s) for r, s in self.search_by_vector(vector, k)]

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score(query, k, **kwargs)]

    def _select_relevance_score_fn(self):
        return lambda score: (score + 1.0) / 2.0

    @classmethod
    def from_texts(cls, texts: list[str], embedding: Embeddings, metadatas: list[dict] | None = None, *,
                   ids: list[str] | None = None, **kwargs: Any) -> FaissVectorStore:
        dimension = len(embedding.embed_query("dimension"))
        store = cls(embedding, dimension)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    def save(self, directory: Path) -> None:
        """faiss.write_index for the vectors, JSON lines for the documents."""
        directory = Path(directory)
        faiss.write_index(self.index, str(directory / INDEX_FILE))
        with open(directory / DOCSTORE_FILE, "w", encoding="utf-8") as f:
            for doc in self.documents:
                f.write(json.dumps({"id": doc.id, "text": doc.page_content, "metadata": doc.metadata},
                                   ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, directory: Path, embedding: Embeddings) -> FaissVectorStore:
        directory = Path(directory)
        try:
            index = faiss.read_index(str(directory / INDEX_FILE))
        except Exception as exc:
            raise IndexCorruptError(_corrupt(directory / INDEX_FILE, exc)) from exc
        documents = []
        try:
            with open(directory / DOCSTORE_FILE, encoding="utf-8") as f:
                for line in f:
                    row = json.loads(line)
                    documents.append(Document(page_content=row["text"], metadata=row["metadata"], id=row["id"]))
        except (OSError, ValueError, KeyError) as exc:
            raise IndexCorruptError(_corrupt(directory / DOCSTORE_FILE, exc)) from exc
        if index.ntotal != len(documents):
            raise IndexCorruptError(
                f"{directory / INDEX_FILE} holds {index.ntotal} vectors but {DOCSTORE_FILE} {len(documents)} chunks. "
                "Rebuild with `assistant index build --full`."
            )
        return cls(embedding, index.d, index, documents)


def _corrupt(path: Path, exc: Exception) -> str:
    return f"Index file {path} is damaged ({type(exc).__name__}). Rebuild it with `assistant index build --full`."
