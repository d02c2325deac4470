"""The Milvus backend: chunks, dense vectors and BM25 sparse vectors in one collection, hybrid search server-side.

`ASSISTANT_BACKEND=milvus` with `ASSISTANT_MILVUS_URI`: a local file path runs Milvus Lite embedded (the
`milvus-lite` package); `http://host:19530` talks to a Milvus Standalone or Distributed cluster. The SQLite
catalog keeps documents, chunk offsets and citations, sources and tombstones as in the embedded backend; the
collection is what is searched. Milvus computes BM25 itself (global statistics, k1 1.5, b 0.75) from a sparse
vector its BM25 function derives from a text field, analysed one of two ways (`ASSISTANT_MILVUS_ANALYZER`):

* `ours` (default): the index's own tokens (jieba search mode with the learned words, over the matching form
  of the text, stopwords removed), each written as a hex word that Milvus's `standard` tokenizer keeps whole,
  so both backends see exactly the same tokens;
* `jieba`: the chunk's text through Milvus's own jieba analyzer in search mode, with the words learned at the
  collection's creation as its extra dictionary.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import ConfigError, IndexCorruptError

ANALYZERS = ("ours", "jieba")
BM25_PARAMS = {"bm25_k1": 1.5, "bm25_b": 0.75}
MAX_TEXT = 60_000  # bytes; chunks are at most 400 characters, tokens at most a few times that
_log = logging.getLogger(__name__)


def _client(uri: str):  # noqa: ANN202 - a pymilvus MilvusClient
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise ConfigError("ASSISTANT_BACKEND=milvus needs pymilvus and milvus-lite: "
                          "pip install 'pymilvus>=3' 'milvus-lite>=3' (make test installs them).") from None
    if "://" not in uri:
        Path(uri).expanduser().parent.mkdir(parents=True, exist_ok=True)
    try:
        return MilvusClient(uri=str(Path(uri).expanduser()) if "://" not in uri else uri)
    except Exception as exc:  # noqa: BLE001 - connection errors come in many types
        raise ConfigError(f"Cannot open Milvus at {uri}: {str(exc)[:200]}. Check ASSISTANT_MILVUS_URI "
                          "(a file path for Milvus Lite, http://host:19530 for a server).") from None


@functools.cache
def client_for(uri: str):  # noqa: ANN201 - one client per URI and process (Milvus Lite runs one server per file)
    return _client(uri)


def hex_words(tokens: Sequence[str]) -> str:
    """Tokens as words Milvus's standard tokenizer keeps whole (it would split Chinese into characters)."""
    return " ".join(t.encode("utf-8").hex() for t in tokens)


class MilvusCollection:
    """One generation's collection: id (the catalog's chunk rowid), text, dense vector, BM25 sparse vector."""

    def __init__(self, uri: str, name: str, analyzer: str):
        if analyzer not in ANALYZERS:
            raise ConfigError(f"ASSISTANT_MILVUS_ANALYZER must be one of {', '.join(ANALYZERS)}, got {analyzer!r}.")
        self.uri, self.name, self.analyzer = uri, name, analyzer
        self.client = client_for(uri)

    def create(self, dimension: int, words: Sequence[str]) -> None:
        from pymilvus import DataType, Function, FunctionType

        if self.client.has_collection(self.name):
            self.client.drop_collection(self.name)
        if self.analyzer == "ours":
            params: dict = {"tokenizer": "standard"}
        else:
            params = {"tokenizer": {"type": "jieba", "dict": ["_default_", *words], "mode": "search"}}
        schema = self.client.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("text", DataType.VARCHAR, max_length=MAX_TEXT, enable_analyzer=True, analyzer_params=params)
        schema.add_field("dense", DataType.FLOAT_VECTOR, dim=dimension)
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(Function(name="bm25", function_type=FunctionType.BM25, input_field_names=["text"],
                                     output_field_names=["sparse"]))
        index = self.client.prepare_index_params()
        index.add_index("dense", index_type="FLAT", metric_type="IP")
        index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25", params=BM25_PARAMS)
        self.client.create_collection(self.name, schema=schema, index_params=index)

    def check(self) -> None:
        if not self.client.has_collection(self.name):
            raise IndexCorruptError(f"Milvus at {self.uri} has no collection {self.name}. "
                                    "Rebuild with `assistant index build --full`.")
        self.client.load_collection(self.name)

    def field_text(self, text: str, tokens: Sequence[str]) -> str:
        return hex_words(tokens) if self.analyzer == "ours" else text[:MAX_TEXT // 4]

    def insert(self, ids: Sequence[int], texts: Sequence[str], vectors: np.ndarray) -> None:
        for start in range(0, len(ids), 2000):
            rows = [{"id": int(i), "text": t or "-", "dense": v.tolist()}
                    for i, t, v in zip(ids[start:start + 2000], texts[start:start + 2000],
                                       vectors[start:start + 2000], strict=True)]
            self.client.insert(self.name, rows)

    def delete(self, ids: Sequence[int]) -> None:
        for start in range(0, len(ids), 2000):
            self.client.delete(self.name, ids=[int(i) for i in ids[start:start + 2000]])

    def vectors(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        out = {}
        for start in range(0, len(ids), 1000):
            for row in self.client.get(self.name, ids=[int(i) for i in ids[start:start + 1000]],
                                       output_fields=["dense"]):
                out[int(row["id"])] = np.asarray(row["dense"], dtype="float32")
        return out

    def dense(self, vector: np.ndarray, k: int, where: str | None = None) -> list[tuple[int, float]]:
        hits = self.client.search(self.name, data=[np.asarray(vector, dtype="float32").tolist()], anns_field="dense",
                                  limit=k, output_fields=["id"], search_params={"metric_type": "IP"},
                                  filter=where or "")
        return [(int(h["id"]), float(h["distance"])) for h in hits[0]]

    def bm25(self, query: str, k: int, where: str | None = None) -> list[tuple[int, float]]:
        if not query.strip():
            return []
        hits = self.client.search(self.name, data=[query], anns_field="sparse", limit=k, output_fields=["id"],
                                  search_params={"metric_type": "BM25"}, filter=where or "")
        return [(int(h["id"]), abs(float(h["distance"]))) for h in hits[0]]

    def hybrid(self, vector: np.ndarray, query: str, k: int, rrf_k: int = 60,
               where: str | None = None) -> list[tuple[int, float]]:
        """Dense and BM25 fused by reciprocal rank on the server; `where` filters both searches."""
        from pymilvus import AnnSearchRequest, RRFRanker

        requests = [AnnSearchRequest(data=[np.asarray(vector, dtype="float32").tolist()], anns_field="dense",
                                     param={"metric_type": "IP"}, limit=k, expr=where)]
        if query.strip():
            requests.append(AnnSearchRequest(data=[query], anns_field="sparse", param={"metric_type": "BM25"},
                                             limit=k, expr=where))
        hits = self.client.hybrid_search(self.name, requests, ranker=RRFRanker(rrf_k), limit=k, output_fields=["id"])
        return [(int(h["id"]), float(h["distance"])) for h in hits[0]]

    def drop(self) -> None:
        with contextlib.suppress(Exception):  # best effort: a stale collection only costs space
            self.client.drop_collection(self.name)

    def count(self) -> int:
        return int(self.client.query(self.name, filter="", output_fields=["count(*)"])[0]["count(*)"])


def collection_name(generation: str) -> str:
    """A collection per index generation: v-20261124T204235-5e9dc7 -> chunks_20261124T204235_5e9dc7."""
    return "chunks_" + generation.removeprefix("v-").replace("-", "_")


def scope_filter(scope) -> str | None:  # noqa: ANN001 - an indexing.Scope or None
    """A filter expression limiting a search to the scope's chunks (by catalog rowid), inside Milvus."""
    return None if scope is None else f"id in [{','.join(str(int(r)) for r in scope.rowids)}]"


class MilvusBM25:
    """The BM25 side of a loaded Milvus index: results as the snapshot's rows, document frequencies from the
    catalog (the reranker and the rules weigh question words by them)."""

    def __init__(self, collection: MilvusCollection, row_of: dict[int, int], df: dict[str, int]):
        self.collection, self.row_of, self._df = collection, row_of, df

    def _query(self, tokens: Sequence[str]) -> str:
        return hex_words(tokens) if self.collection.analyzer == "ours" else " ".join(tokens)

    def _rows(self, hits: list[tuple[int, float]], k: int) -> list[tuple[int, float]]:
        # ids the snapshot does not know (committed after it was loaded, or an add killed before its commit)
        return [(self.row_of[i], s) for i, s in hits if i in self.row_of][:k]

    def document_frequencies(self) -> dict[str, int]:
        return dict(self._df)

    def top(self, query_tokens: list[str], k: int, scope=None) -> list[tuple[int, float]]:  # noqa: ANN001
        return self._rows(self.collection.bm25(self._query(query_tokens), k + 10, scope_filter(scope)), k)

    def hybrid(self, vector: np.ndarray, query_tokens: list[str], k: int,
               scope=None) -> list[tuple[int, float]]:  # noqa: ANN001
        return self._rows(self.collection.hybrid(vector, self._query(query_tokens), k + 10,
                                                 where=scope_filter(scope)), k)

    def scores(self, query_tokens: list[str]) -> np.ndarray:
        raise NotImplementedError("Milvus returns the best chunks (top), not a score for every chunk.")
