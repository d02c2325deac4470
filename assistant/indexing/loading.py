"""Loading the live index as one snapshot (`load_index` -> `LoadedIndex`), and scoping questions to articles."""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..catalog import CATALOG, Catalog, ChunkTable, DocumentTable
from ..chunking import Chunk
from ..embeddings import Embedder
from ..errors import IndexCorruptError, IndexNotFoundError, ModelMismatchError
from ..language import MATCHING_NORMALIZATION
from ..lexical import BM25Index, bm25_idf
from ..lexicon import Segmenter, default_segmenter
from ..milvus import MilvusBM25, MilvusCollection
from ..segments import Segment, check_segment_files, load_segment
from .generations import FORMAT_VERSION, MANIFEST, current_version, no_index, static_manifest, with_catalog

if TYPE_CHECKING:  # imported where used (faiss and the store), which `index status` never needs
    from ..vectorstore import SegmentedVectorStore


@dataclass(frozen=True)
class Scope:
    """A question limited to some articles: `mask` marks the global rows it may use, `rowids` their catalog rowids
    (what a Milvus filter names)."""

    articles: tuple[str, ...]
    mask: np.ndarray
    rowids: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.mask.sum())


@dataclass
class LoadedIndex:
    """The live index as one snapshot: global row r is the r-th live chunk in segment order."""

    path: Path  # the generation folder
    manifest: dict
    catalog: Catalog
    parts: list[tuple[Segment, np.ndarray]]  # each segment with the global row of its rows (-1: tombstoned)
    chunks: ChunkTable
    documents: DocumentTable
    store: SegmentedVectorStore
    bm25: BM25Index
    commit: int
    segmenter: Segmenter = field(default_factory=default_segmenter)
    _scopes: dict = field(default_factory=dict, repr=False)
    _scope_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @functools.cached_property
    def idf(self) -> dict[str, float]:
        """BM25-style IDF of every token of the index, from the live chunks' document frequencies."""
        n = max(1, len(self.chunks))
        return {t: bm25_idf(c, n) for t, c in self.bm25.document_frequencies().items()}

    @property
    def version(self) -> str:
        """The generation and its commit number, e.g. v-20261124T101500-1a2b3c#12."""
        return f"{self.path.name}#{self.commit}"

    @property
    def chunk_by_id(self) -> _ChunksById:
        return _ChunksById(self.catalog)

    def document_chunks(self, doc_id: str) -> list[Chunk]:
        """The chunks of one document, in reading order."""
        return [c for _, c in self.catalog.chunks_where("doc_id = ?", (doc_id,))]

    def paragraph_chunks(self, chunk: Chunk) -> list[Chunk]:
        """The chunks of the chunk's paragraph, in reading order."""
        return [c for _, c in self.catalog.chunks_where("doc_id = ? AND paragraph IS ?", (chunk.doc_id, chunk.paragraph))]

    @property
    def unknown_token_share(self) -> float:
        return float(self.manifest["embedding"]["unknown_token_share"])

    def articles(self) -> list[dict]:
        """Every article of the index: id, file, title, size, chunks, references (cited), reference_texts and
        added_at (when its current content was indexed)."""
        return _articles(self.catalog, self.manifest)

    def status(self) -> dict:
        """What `index status`, GET /api/status and the page report: counts, model, build time and every article.
        From the manifest and the catalog of the loaded snapshot (no model, no jieba dictionary)."""
        return _status(self.path, self.version, self.manifest, self.catalog, self.documents)

    def scope(self, article_ids: Sequence[str] | None) -> Scope | None:
        """The chunks a question limited to these articles may use (None: all). Cached per set of articles."""
        if not article_ids:
            return None
        key = tuple(sorted(set(article_ids)))
        with self._scope_lock:
            found = self._scopes.get(key)
            if found is None:
                rowids = np.asarray(self.catalog.article_rowids(key), dtype=np.int64)
                found = Scope(key, np.isin(np.asarray(self.chunks.rowids), rowids), rowids)
                if len(self._scopes) >= 64:
                    self._scopes.pop(next(iter(self._scopes)))
                self._scopes[key] = found
            return found

    def changed_on_disk(self) -> bool:
        """Whether a build committed since this snapshot was loaded (then it should be loaded again)."""
        try:
            return current_version(self.path.parent) != self.path or self.catalog.commit != self.commit
        except (IndexCorruptError, OSError):
            return False  # keep serving what is loaded; the next build repairs the pointer


def read_status(index_dir: Path) -> dict:
    """`LoadedIndex.status()` without loading the index: the manifest, the catalog and a stat of every segment
    file (what `assistant index status` prints; its cost does not grow with the vectors). `assistant index verify`
    checks the files' contents."""
    index_dir = Path(index_dir)
    version = current_version(index_dir) if index_dir.is_dir() else None
    if version is None:
        raise IndexNotFoundError(no_index(index_dir))
    manifest = static_manifest(version)
    catalog = Catalog(version / CATALOG)
    try:
        for seg in catalog.segments():
            check_segment_files(version, seg.name, seg.files)
        manifest = with_catalog(manifest, catalog)
        return _status(version, f"{version.name}#{catalog.commit}", manifest, catalog, DocumentTable(catalog))
    finally:
        catalog.close()


def _articles(catalog: Catalog, manifest: dict) -> list[dict]:
    added = catalog.meta("added_at") or {}
    fallback = manifest.get("built_at")
    return [{**a, "added_at": added.get(a["file"], fallback)} for a in catalog.article_summaries()]


def _status(path: Path, version: str, manifest: dict, catalog: Catalog, documents: DocumentTable) -> dict:
    m = manifest
    return {
        "index": str(path.parent),
        "version": version,
        "segments": int(m["counts"]["segments"]),
        "documents": int(m["counts"]["documents"]),
        "chunks": int(m["counts"]["chunks"]),
        "references": int(m["counts"]["references"]),
        "model": m["embedding"]["model"],
        "dimension": m["embedding"]["dimension"],
        "unknown_token_share": m["embedding"]["unknown_token_share"],
        "chunker": m["chunker"],
        "built_at": m["built_at"],
        "titles": documents.heads(["article", "reference_text"]),
        "articles": _articles(catalog, m),
        "skipped": m.get("skipped", []),
    }


class _ChunksById:
    def __init__(self, catalog: Catalog):
        self._catalog = catalog

    def __getitem__(self, chunk_id: str) -> Chunk:
        found = self._catalog.chunks_where("id = ?", (chunk_id,))
        if not found:
            raise KeyError(chunk_id)
        return found[0][1]


def load_index(index_dir: Path, embeddings: Embedder, verify: bool = False,
               check_model: bool = True) -> LoadedIndex:
    """Load the live snapshot and check (unless told not to) that the configured model built it.

    Segment vectors are read into memory (one read per file); chunk and document texts stay in the catalog
    until asked for, so a load reads the row map, the vectors and the postings, not the corpus. Every segment
    file must have the size the catalog records (a stat); `verify` also re-hashes them and checks the catalog
    (`assistant index verify`).
    """
    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        raise IndexNotFoundError(no_index(index_dir))
    version = current_version(index_dir)
    if version is None:
        raise IndexNotFoundError(no_index(index_dir))
    manifest = static_manifest(version)
    if manifest.get("format") != FORMAT_VERSION:
        raise IndexCorruptError(
            f"{version / MANIFEST} has format {manifest.get('format')!r}; this version reads {FORMAT_VERSION}. "
            "Rebuild with `assistant index build --full`."
        )
    _check_model(index_dir, manifest, embeddings, check_model)
    catalog = Catalog(version / CATALOG)
    if verify and (problem := catalog.integrity_problem()):
        raise IndexCorruptError(f"{catalog.path} is damaged ({problem}). Rebuild with `assistant index build --full`.")
    commit = catalog.commit
    manifest = with_catalog(manifest, catalog)
    words = catalog.words()
    segmenter = Segmenter(words) if words else default_segmenter()
    if manifest.get("backend", {}).get("name") == "milvus":
        return _load_milvus(version, manifest, catalog, embeddings, commit, segmenter)
    segments = {row.name: load_segment(version, row.name, row.files, verify) for row in catalog.segments()}
    places = catalog.live_places()
    rowids = np.fromiter((p[0] for p in places), dtype=np.int64, count=len(places))
    global_rows = {name: np.full(seg.rows, -1, dtype=np.int64) for name, seg in segments.items()}
    for row, (_rowid, seg, seg_row) in enumerate(places):
        if seg not in global_rows or not 0 <= seg_row < len(global_rows[seg]):
            raise IndexCorruptError(f"{catalog.path} names row {seg_row} of segment {seg}, which does not hold it. "
                                    "Rebuild with `assistant index build --full`.")
        global_rows[seg][seg_row] = row
    parts = [(segments[name], global_rows[name]) for name in segments]
    chunks = ChunkTable(catalog, rowids)
    documents = DocumentTable(catalog)
    from ..vectorstore import SegmentedVectorStore

    store = SegmentedVectorStore(embeddings, int(manifest["embedding"]["dimension"]), parts, chunks,
                                 catalog.places_of)
    return LoadedIndex(version, manifest, catalog, parts, chunks, documents, store, BM25Index(parts), commit,
                       segmenter)


def _load_milvus(version: Path, manifest: dict, catalog: Catalog, embeddings: Embedder, commit: int,
                 segmenter: Segmenter) -> LoadedIndex:
    backend = manifest["backend"]
    collection = MilvusCollection(backend["uri"], backend["collection"], backend["analyzer"])
    collection.check()
    rowids = np.asarray(catalog.live_rowids(), dtype=np.int64)
    row_of = {int(r): i for i, r in enumerate(rowids)}
    chunks = ChunkTable(catalog, rowids)
    from ..vectorstore import MilvusVectorStore

    store = MilvusVectorStore(embeddings, int(manifest["embedding"]["dimension"]), collection, row_of, chunks,
                              catalog.places_of)
    return LoadedIndex(version, manifest, catalog, [], chunks, DocumentTable(catalog), store,
                       MilvusBM25(collection, row_of, catalog.terms()), commit, segmenter)


def _check_model(index_dir: Path, manifest: dict, embeddings: Embedder, check_model: bool) -> None:
    built_with = manifest["embedding"]["model"]
    if check_model and built_with != embeddings.model_name:
        raise ModelMismatchError(
            f"The index in {index_dir} was built with embedding model {built_with!r} but {embeddings.model_name!r} "
            f"is configured. Set ASSISTANT_EMBED_MODEL={built_with} or rebuild with `assistant index build --full`."
        )
    if check_model and manifest["embedding"].get("prompts", {}) != embeddings.prompts:
        raise ModelMismatchError(
            f"The index in {index_dir} was embedded with prefixes {manifest['embedding'].get('prompts', {})} but the "
            f"model now uses {embeddings.prompts}. Rebuild with `assistant index build --full`."
        )
    if manifest.get("matching") != MATCHING_NORMALIZATION:
        raise ModelMismatchError(
            f"The index in {index_dir} was built with text matching {manifest.get('matching', 'nfkc+lower')!r}, this "
            f"version uses {MATCHING_NORMALIZATION!r}. Rebuild it with `assistant index build`."
        )
