"""Build, update and load the hybrid index: FAISS + BM25 segments under a SQLite catalog.

    index/CURRENT                         -> "v-20261124T101500-1a2b3c" (the live generation)
    index/v-.../manifest.json             what turns text into vectors and tokens (model, chunker, matching)
    index/v-.../catalog.sqlite            sources, documents, chunks, segments, tombstones, words (WAL)
    index/v-.../segments/<name>/          one immutable segment: dense.faiss, postings.npz, terms.json

An incremental build (an add, a change, a removal) writes one small new segment with the new and changed
files' chunks, then commits in one catalog transaction: the segment, its chunks and documents, tombstones
for the chunks of removed and replaced files, the learned words. It costs what changed, not what exists.
After the commit, segments merge when a size tier holds too many or a segment is mostly tombstones.
A full build (new model, chunker or tokeniser, `--full`, damage) writes a new generation beside the live
one and switches CURRENT to it atomically. A build killed at any point leaves the last commit loadable:
segment folders that no committed row names are removed by the next build.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import functools
import hashlib
import json
import logging
import math
import multiprocessing
import os
import re
import secrets
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import memory
from .catalog import CATALOG, Catalog, ChunkTable, DocumentTable, SegmentRow, SourceRow
from .chunking import Chunk, ChunkerSettings
from .config import Backend
from .corpus import ARTICLES, IndexedDocument, Skipped, SourceFile, process, scan, undo_add
from .embeddings import Embedder
from .errors import (
    CorpusError,
    FileError,
    IndexBusyError,
    IndexCorruptError,
    IndexNotFoundError,
    IndexWriteError,
    ModelMismatchError,
)
from .language import MATCHING_NORMALIZATION
from .lexical import BM25Index, bm25_idf, tokenize
from .lexicon import LEXICON_VERSION, Segmenter, default_segmenter, learn_words, learn_words_from_files
from .loaders import os_reason
from .milvus import MilvusBM25, MilvusCollection, collection_name
from .names import printable
from .segments import (
    GRAPH_MIN_ROWS,
    SEGMENTS,
    DenseBuilder,
    PostingsBuilder,
    Segment,
    dense_index,
    load_segment,
    postings_from_tokens,
    stack_postings,
    write_segment,
)
from .vectorstore import MilvusVectorStore, SegmentedVectorStore

FORMAT_VERSION = 3  # 3: segments under a SQLite catalog
CURRENT = "CURRENT"
MANIFEST = "manifest.json"
LOCK = ".lock"
UNK_WARN_SHARE = 0.2
SEGMENT_ROWS = 50_000  # a full build writes segments of at most this many chunks
PART_ROWS = 2_000  # ... reading, embedding and tokenising this many at a time (its memory follows a part)
MERGE_FACTOR = 8  # this many segments of one size tier (powers of 4 chunks) merge into one
# A full build over more source bytes than this learns its words in a child process. Learning from a
# 3M-character sample peaks ~0.3 GB over the process and leaves ~0.1-0.3 GB in its heap after it (millions of
# short n-gram strings; measured with benchmarks/bench_build_memory.py --fake-vectors at 8,000 articles), which
# then sits under the whole build; a child's memory goes back to the OS whole. Smaller corpora learn in-process
# (a child costs ~2 s to start).
LEARN_IN_CHILD_BYTES = 4_000_000
PENDING_VECTORS = ".vectors.f32"  # a full build's vectors between its two passes (removed before commit)
MAX_DEAD_SHARE = 0.3  # a segment with more tombstones than this is rewritten without them
_log = logging.getLogger(__name__)
_VERSION_NAME = re.compile(r"v-\d{8}T\d{6}-[0-9a-f]{6}")

@dataclass
class BuildReport:
    documents: int
    chunks: int
    references: int
    model: str
    dimension: int
    unknown_token_share: float
    seconds: float
    full: bool
    embedded: int  # chunks sent to the embedding model in this build
    reused: int
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    up_to_date: bool = False
    version: str = ""
    full_reason: str | None = None  # why everything was embedded again
    passages_per_second: float | None = None
    segments: int = 0  # segments after the build
    merged: int = 0  # segments merged away by this build
    skipped: list[dict] = field(default_factory=list)  # corpus files not indexed: {"file", "reason"}
    refused: list[dict] = field(default_factory=list)  # an add's files not added: {"file", "reason"}
    renamed: list[dict] = field(default_factory=list)  # an add's files stored under another name: {"file", "stored"}

    @property
    def unknown_token_warning(self) -> str | None:
        if self.unknown_token_share < UNK_WARN_SHARE:
            return None
        return (
            f"Warning: the embedding model maps {self.unknown_token_share:.0%} of the corpus tokens to its unknown "
            "token, so dense retrieval is weak on this corpus and is down-weighted in hybrid search. "
            "A multilingual model (ASSISTANT_EMBED_MODEL=/path/to/model) would help."
        )


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
        added = self.catalog.meta("added_at") or {}
        fallback = self.manifest.get("built_at")
        return [{**a, "added_at": added.get(a["file"], fallback)} for a in self.catalog.article_summaries()]

    def status(self) -> dict:
        """What `index status`, GET /api/index and the page report: counts, model, build time and every article.
        Reads the manifest and the catalog only (no model, no jieba dictionary)."""
        m = self.manifest
        return {
            "index": str(self.path.parent),
            "version": self.version,
            "segments": int(m["counts"]["segments"]),
            "documents": int(m["counts"]["documents"]),
            "chunks": int(m["counts"]["chunks"]),
            "references": int(m["counts"]["references"]),
            "model": m["embedding"]["model"],
            "dimension": m["embedding"]["dimension"],
            "unknown_token_share": m["embedding"]["unknown_token_share"],
            "chunker": m["chunker"],
            "built_at": m["built_at"],
            "titles": self.documents.heads(["article", "reference_text"]),
            "articles": self.articles(),
            "skipped": m.get("skipped", []),
        }

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


class _ChunksById:
    def __init__(self, catalog: Catalog):
        self._catalog = catalog

    def __getitem__(self, chunk_id: str) -> Chunk:
        found = self._catalog.chunks_where("id = ?", (chunk_id,))
        if not found:
            raise KeyError(chunk_id)
        return found[0][1]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def current_version(index_dir: Path) -> Path | None:
    """The live version directory, or None when there is no index yet."""
    pointer = Path(index_dir) / CURRENT
    if not pointer.exists() and not pointer.is_symlink():
        return None
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise IndexCorruptError(f"{pointer} cannot be read ({type(exc).__name__}). "
                                "Rebuild with `assistant index build --full`.") from None
    version = Path(index_dir) / name
    if not _VERSION_NAME.fullmatch(name) or not version.is_dir():
        raise IndexCorruptError(
            f"{pointer} names {name[:80]!r}, which is not an index version in {index_dir}. "
            "Rebuild with `assistant index build --full`."
        )
    return version



@contextlib.contextmanager
def build_lock(index_dir: Path) -> Iterator[None]:
    try:
        index_dir.mkdir(parents=True, exist_ok=True)
        handle = open(index_dir / LOCK, "a")  # noqa: SIM115 - closed below, after the build
    except OSError as exc:
        raise IndexWriteError(f"Cannot write the index in {index_dir}: {exc.strerror or exc}. Make the folder "
                              "writable (or pass --index DIR), then build again.") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IndexBusyError(f"Another build is updating {index_dir}. Wait for it to finish and retry.") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)



def _static_manifest(version: Path) -> dict:
    try:
        manifest = json.loads((version / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IndexCorruptError(
            f"{version / MANIFEST} is damaged ({type(exc).__name__}). Rebuild with `assistant index build --full`."
        ) from exc
    problem = _manifest_problem(manifest)
    if problem:
        raise IndexCorruptError(f"{version / MANIFEST} is damaged ({problem}). "
                                "Rebuild with `assistant index build --full`.")
    return manifest


def _manifest_problem(manifest: object) -> str | None:
    """What is wrong with a manifest's shape, or None; a valid JSON of the wrong shape is damage too."""
    if not isinstance(manifest, dict):
        return "not an object"
    shapes = {"format": int, "embedding": dict, "chunker": dict}
    for key, kind in shapes.items():
        if not isinstance(manifest.get(key), kind):
            return f"{key!r} missing or not {kind.__name__}"
    embedding = manifest["embedding"]
    if not isinstance(embedding.get("model"), str) or not isinstance(embedding.get("prompts", {}), dict) \
            or not isinstance(embedding.get("dimension", 0), int):
        return "'embedding' incomplete"
    if not isinstance(manifest.get("lexicon", {}), dict) or not isinstance(manifest.get("pipeline", {}), dict):
        return "'lexicon' or 'pipeline' not an object"
    return None


def read_manifest(index_dir: Path) -> dict:
    """The live index's manifest, with what the catalog holds now: sources, counts, words, segment files."""
    version = current_version(index_dir)
    if version is None:
        raise IndexNotFoundError(_no_index(index_dir))
    manifest = _static_manifest(version)
    catalog = Catalog(version / CATALOG)
    try:
        manifest = _with_catalog(manifest, catalog)
        chunk_ids = catalog.chunk_ids_by_source()
        manifest["sources"] = {rel: {"hash": s.hash, "doc_ids": s.doc_ids, "chunk_ids": chunk_ids.get(rel, []),
                                     "unk_tokens": s.unk_tokens, "tokens": s.tokens, "article_id": s.article_id,
                                     "size": s.size, "mtime_ns": s.mtime_ns} for rel, s in catalog.sources().items()}
        return manifest
    finally:
        catalog.close()


def _with_catalog(manifest: dict, catalog: Catalog) -> dict:
    """The static manifest plus the catalog's counts and segment files (aggregate queries: cheap at any size)."""
    counts = catalog.counts()
    files = {f"{SEGMENTS}/{seg.name}/{name}": info for seg in catalog.segments() for name, info in seg.files.items()}
    return {
        **manifest,
        "embedding": {**manifest["embedding"], "unknown_token_share": counts.pop("unknown_token_share")},
        "lexicon": {**manifest.get("lexicon", {}), "words": counts.pop("words")},
        "built_at": catalog.meta("built_at") or manifest.get("built_at"),
        "commit": catalog.commit,
        "skipped": [{"file": s["file"], "reason": s["reason"]} for s in catalog.meta("skipped") or []],
        "counts": counts,
        "files": {name: info[0] for name, info in files.items()},
        "sizes": {name: info[1] for name, info in files.items()},
    }


def committed_sources(index_dir: Path) -> dict[str, str]:
    """Corpus path -> content hash of every file the live index holds ({} without a readable index)."""
    try:
        version = current_version(index_dir)
        if version is None:
            return {}
        catalog = Catalog(version / CATALOG)
    except (IndexNotFoundError, IndexCorruptError):
        return {}
    try:
        return {rel: s.hash for rel, s in catalog.sources().items()}
    except IndexCorruptError:
        return {}
    finally:
        catalog.close()


def _added_at(index_dir: Path) -> dict[str, str]:
    """Corpus path -> when the live index first indexed it ({} without a readable index)."""
    try:
        version = current_version(index_dir)
        if version is None:
            return {}
        catalog = Catalog(version / CATALOG)
    except (IndexNotFoundError, IndexCorruptError):
        return {}
    try:
        return catalog.meta("added_at") or {}
    except IndexCorruptError:
        return {}
    finally:
        catalog.close()


def _no_index(index_dir: Path) -> str:
    return f"No index in {index_dir}. Build it with `assistant index build --index {index_dir}` (or `make run`)."


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
        raise IndexNotFoundError(_no_index(index_dir))
    version = current_version(index_dir)
    if version is None:
        raise IndexNotFoundError(_no_index(index_dir))
    manifest = _static_manifest(version)
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
    manifest = _with_catalog(manifest, catalog)
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


@dataclass
class _Read:
    """A new or changed file, read, cleaned and chunked."""

    source: SourceFile
    digest: str
    docs: list[IndexedDocument]
    chunks: list[Chunk]


def build_index(
    corpus_dir: Path,
    index_dir: Path,
    embeddings: Embedder,
    chunker: ChunkerSettings = ChunkerSettings(),
    full: bool = False,
    progress: bool = False,
    on_stage: Callable[[str], None] | None = None,
    user_words: bool = True,
    locked: bool = False,
    backend: Backend | None = None,
    allow_empty: bool = False,
) -> BuildReport:
    """Bring the index in line with the corpus, reading, embedding and tokenising only new or changed files.

    `locked`: the caller (an add) already holds the build lock and its journal; otherwise an add that
    was killed before it committed is rolled back first, so its copied files are not indexed silently.
    `allow_empty`: a removal may leave no article (a valid empty index); any other build without one is refused,
    so that a wrong --corpus or a folder emptied by mistake never wipes an index.
    """
    started = time.perf_counter()
    index_dir = Path(index_dir)
    stage = on_stage or (lambda _msg: None)
    with contextlib.nullcontext() if locked else build_lock(index_dir):
        if not locked:
            undo_add(corpus_dir, committed_sources(index_dir))
        _remove_stale_versions(index_dir)
        backend = backend or Backend()
        live, full_reason = _previous(index_dir, embeddings, chunker, full, user_words, backend)
        sources, skipped = scan(corpus_dir, allow_empty=allow_empty)
        # taken before reading: an edit saved during the build is seen by the next one
        stats = {}
        for source in sources:
            try:
                stats[source.rel] = source.path.stat()
            except OSError as exc:  # gone since the scan
                skipped.append(Skipped(source.rel, os_reason(exc)))
        sources = [s for s in sources if s.rel in stats]
        job = _Job(index_dir, embeddings, chunker, user_words, stage, progress, started, backend, skipped,
                   allow_empty=allow_empty)
        if full_reason is not None:
            return job.full(sources, stats, full_reason, _old_collection(live))
        catalog = Catalog(live / CATALOG)
        try:
            _remove_orphan_segments(live, catalog)
            return job.incremental(live, catalog, sources, stats)
        finally:
            catalog.close()


@dataclass
class _Job:
    index_dir: Path
    embeddings: Embedder
    chunker: ChunkerSettings
    user_words: bool
    stage: Callable[[str], None]
    progress: bool
    started: float
    backend: Backend
    skipped: list[Skipped]  # files of the corpus this build does not index, with the reason
    skipped_hashes: dict[str, str] = field(default_factory=dict)  # ... and the content they were skipped for
    allow_empty: bool = False  # a removal may leave no article

    def source_row(self, read: _Read, stat: os.stat_result, unk: int, total: int) -> SourceRow:
        return SourceRow(read.source.rel, read.digest, stat.st_size, stat.st_mtime_ns, read.source.article_id, unk,
                         total, [d.id for d in read.docs])

    def read(self, source: SourceFile, data: bytes | None = None, digest: str | None = None) -> _Read | None:
        """The file read, cleaned and chunked; None (and the file listed as skipped, with the reason) when it
        cannot be indexed: unreadable, gone, empty, undecodable, too big."""
        try:
            if data is None:
                data = source.read()
                digest = hashlib.sha256(data).hexdigest()
            return _Read(source, digest, *process(source, self.chunker, data))
        except FileError as exc:
            self.skip(source.rel, exc.reason, digest)
            return None

    def skip(self, rel: str, reason: str, digest: str | None = None) -> None:
        self.skipped.append(Skipped(rel, reason))
        if digest is not None:
            self.skipped_hashes[rel] = digest

    def skipped_meta(self) -> list[dict]:
        """What the catalog keeps of the skipped files, for `index status` and to skip them unread next time."""
        return [{**s.as_dict(), "hash": self.skipped_hashes.get(s.file)} for s in sorted(self.skipped, key=lambda s: s.file)]

    def skipped_report(self) -> list[dict]:
        return [s.as_dict() for s in sorted(self.skipped, key=lambda s: s.file)]

    def check_some_article(self, articles: int) -> None:
        """CorpusError when no article at all can be indexed: a build that skips everything is a failure."""
        if articles or (self.allow_empty and not self.skipped):
            return
        listed = "; ".join(f"{printable(s.file)}: {s.reason}" for s in self.skipped[:5])
        more = f" (and {len(self.skipped) - 5} more)" if len(self.skipped) > 5 else ""
        raise CorpusError(f"No article could be indexed. {listed}{more}. The index is unchanged.")

    def embed(self, reads: list[_Read]) -> tuple[np.ndarray, dict[str, tuple[int, int]], float]:
        """Vectors of the reads' chunks, unknown-token counts per file, and the seconds spent embedding."""
        texts = [c.text for r in reads for c in r.chunks]
        if texts:
            _ = self.embeddings.dimension  # load the model first, so the rate below is the embedding rate
        began = time.perf_counter()
        vectors = self.embeddings.encode_documents(texts, show_progress=self.progress) if texts else \
            np.zeros((0, self.embeddings.dimension), dtype="float32")
        seconds = time.perf_counter() - began
        unknown = {r.source.rel: self.embeddings.unknown_token_counts([c.text for c in r.chunks]) for r in reads}
        return np.asarray(vectors, dtype="float32"), unknown, seconds

    # --- incremental: one small segment (or collection insert) and one transaction ------------------------

    def incremental(self, version: Path, catalog: Catalog, sources: list[SourceFile],
                    stats: dict[str, os.stat_result]) -> BuildReport:
        old = catalog.sources()
        was_skipped = {s["file"]: s for s in catalog.meta("skipped") or []}
        # Every file is hashed (a restored modification time cannot hide an edit: `cp -p`, `rsync -t`); only
        # new and changed files are cleaned, chunked and embedded.
        self.stage(f"checking {len(sources)} files for changes")
        reads, touched = [], []
        for source in sources:
            try:
                data = source.read()
            except FileError as exc:
                self.skip(source.rel, exc.reason)
                continue
            digest, before, stat = hashlib.sha256(data).hexdigest(), old.get(source.rel), stats[source.rel]
            if before and before.hash == digest and before.article_id == source.article_id:
                if (before.size, before.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
                    touched.append(SourceRow(**{**before.__dict__, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}))
                continue
            if was_skipped.get(source.rel, {}).get("hash") == digest:  # refused before, unchanged since
                self.skip(source.rel, was_skipped[source.rel]["reason"], digest)
                continue
            read = self.read(source, data, digest)
            if read is not None:
                reads.append(read)
        present = {s.rel for s in sources} - {s.file for s in self.skipped}
        removed = sorted(set(old) - present - {s.file for s in self.skipped})
        dropped = sorted(set(old) & {s.file for s in self.skipped})  # indexed before, cannot be read now
        added = sorted(r.source.rel for r in reads if r.source.rel not in old)
        changed = sorted(r.source.rel for r in reads if r.source.rel in old)
        kept = sum(1 for rel, row in old.items() if rel in present and rel not in changed and
                   not _is_reference(rel))
        self.check_some_article(kept + sum(1 for r in reads if r.source.ref_number is None))
        skipped_meta = self.skipped_meta()
        if not reads and not removed and not dropped:
            if touched or skipped_meta != (catalog.meta("skipped") or []):
                with _writing(self.index_dir), catalog.transaction() as db:
                    for row in touched:
                        Catalog.put_source(db, row)
                    if skipped_meta != (catalog.meta("skipped") or []):  # servers reload to show it in the status
                        catalog.set_meta({"skipped": skipped_meta, "commit": catalog.commit + 1}, db)
            return _report(catalog, self.started, 0, full=False, up_to_date=True,
                           version=f"{version.name}#{catalog.commit}", skipped=self.skipped_report())

        previous = catalog.words()
        known = set(previous)
        fresh = [w for w in learn_words([c.text for r in reads for c in r.chunks])
                 if w not in known] if self.user_words and reads else []
        words = previous + fresh
        # live chunks a new word would cut differently: moved into the new segment, tokenised again
        gone = changed + removed + dropped
        retoken = [hit for hit in catalog.live_chunks_containing(fresh) if hit[1] not in gone]
        embedded = sum(len(r.chunks) for r in reads)
        self.stage(f"embedding {embedded} chunks with {self.embeddings.model_name}")
        vectors, unknown, seconds = self.embed(reads)
        collection = _collection(version)
        if collection is not None:
            _milvus_recover(catalog, collection)
        vectors = np.vstack([vectors, _carried_vectors(version, catalog, retoken, vectors.shape[1], collection)])
        rows = [(r.source.rel, c) for r in reads for c in r.chunks] + [(hit[1], hit[2]) for hit in retoken]
        self.stage(f"writing {len(rows)} chunks ({len(fresh)} new words learned, "
                   f"{len(retoken)} chunks tokenised again for them)")
        segmenter = Segmenter(words)
        tokens = [tokenize(c.text, segmenter, cached=False) for _, c in rows]

        def record(db: sqlite3.Connection) -> None:
            """What every incremental commit writes besides the chunk rows."""
            for rel in gone:
                Catalog.remove_source(db, rel)
            db.executemany("UPDATE chunks SET dead = 1 WHERE rowid = ?", [(hit[0],) for hit in retoken])
            self.record(db, reads, stats, unknown)
            for row in touched:
                Catalog.put_source(db, row)
            if fresh:
                Catalog.put_words(db, words)
            added_at = {rel: at for rel, at in (catalog.meta("added_at") or {}).items() if rel not in gone}
            added_at.update({r.source.rel: _now() for r in reads if r.source.rel not in added_at})
            catalog.set_meta({"commit": catalog.commit + 1, "built_at": _now(), "skipped": skipped_meta,
                              "added_at": added_at}, db)

        merged = 0
        if collection is not None:
            before = Segmenter(previous) if previous else default_segmenter()
            gone_tokens = [tokenize(t, before, cached=False) for t in catalog.live_texts_of(gone) + [hit[2].text for hit in retoken]]
            self.commit_milvus(catalog, collection, rows, tokens, vectors, gone_tokens, record)
        else:
            self.commit_segment(version, catalog, rows, tokens, vectors, record)
            merged = _merge_segments(version, catalog, self.stage)
            _remove_orphan_segments(version, catalog)
        return _report(catalog, self.started, embedded, seconds, full=False, version=f"{version.name}#{catalog.commit}",
                       added=added, changed=changed, removed=removed, merged=merged, skipped=self.skipped_report())

    def commit_segment(self, version: Path, catalog: Catalog, rows: list[tuple[str, Chunk]],
                       tokens: list[list[str]], vectors: np.ndarray,
                       record: Callable[[sqlite3.Connection], None]) -> None:
        """Write the new segment's files, then commit it and `record` in one transaction."""
        seq = catalog.next_seq()
        name = _segment_name(seq)
        with _writing(self.index_dir, version / SEGMENTS / name):
            files = write_segment(version, name, dense_index(vectors), *postings_from_tokens(tokens)) if rows else None
            with catalog.transaction() as db:
                record(db)  # first: it tombstones the replaced files' chunks, which must not reach the new ones
                if files is not None:
                    Catalog.put_segment(db, SegmentRow(name, seq, len(rows), files))
                    Catalog.put_chunks(db, [(rel, name, i, chunk) for i, (rel, chunk) in enumerate(rows)])

    def commit_milvus(self, catalog: Catalog, collection: MilvusCollection, rows: list[tuple[str, Chunk]],
                      tokens: list[list[str]], vectors: np.ndarray, gone_tokens: list[list[str]],
                      record: Callable[[sqlite3.Connection], None]) -> None:
        """Insert into the collection (ids the catalog does not know yet are ignored by searches), commit the
        catalog in one transaction, then delete what it tombstoned from the collection."""
        first = catalog.max_rowid() + 1
        ids = list(range(first, first + len(rows)))
        with _writing(self.index_dir):
            with catalog.transaction() as db:
                catalog.set_meta({"milvus_inflight": [first, first + len(rows) - 1]}, db)
            collection.insert(ids, [collection.field_text(c.text, t) for (_, c), t in zip(rows, tokens, strict=True)],
                              vectors)
            with catalog.transaction() as db:
                record(db)  # first: it tombstones the replaced files' chunks, which must not reach the new ones
                Catalog.put_chunks(db, [(rel, "milvus", i, c) for i, (rel, c) in zip(ids, rows, strict=True)], ids)
                Catalog.update_terms(db, tokens, gone_tokens)
                catalog.set_meta({"milvus_inflight": None}, db)
            _milvus_purge(catalog, collection)

    def record(self, db: sqlite3.Connection, reads: list[_Read], stats: dict[str, os.stat_result],
               unknown: dict[str, tuple[int, int]]) -> None:
        """The documents and source rows of files read by this build."""
        for read in reads:
            Catalog.put_documents(db, read.source.rel, read.docs)
            Catalog.put_source(db, self.source_row(read, stats[read.source.rel], *unknown[read.source.rel]))

    # --- full: a new generation, switched to atomically ----------------------------------------------------

    def full(self, sources: list[SourceFile], stats: dict[str, os.stat_result], reason: str,
             old_collection: MilvusCollection | None = None) -> BuildReport:
        name = f"v-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
        tmp = self.index_dir / f".tmp-{name}"
        pointer_tmp = self.index_dir / f".{CURRENT}.{name}"
        self.stage(f"reading {len(sources)} files (full rebuild: {reason})")
        words = self.learn(sources, stats) if self.user_words else []
        segmenter = Segmenter(words)
        self.stage(f"embedding the chunks of {len(sources)} files with {self.embeddings.model_name} "
                   f"(full rebuild: {reason})")
        # Files are read again batch by batch: memory follows one segment, not the corpus.
        reads = (read for s in sources if (read := self.read(s)) is not None)
        seconds, embedded, added = 0.0, 0, []
        manifest = self.static_manifest(name)
        collection = None
        if self.backend.name == "milvus":
            collection = MilvusCollection(self.backend.milvus_uri, manifest["backend"]["collection"],
                                          self.backend.milvus_analyzer)
        with _writing(self.index_dir, tmp, self.index_dir / name, pointer_tmp), _dropped_on_failure(collection):
            tmp.mkdir(parents=True)
            catalog = Catalog(tmp / CATALOG, create=True)
            try:
                (tmp / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")
                if collection is not None:
                    collection.create(int(self.embeddings.dimension), words)
                next_id, planned = 1, []
                # The embedded backend builds in two passes, so that the embedder's working memory and the
                # segments' structures are never in the heap together (README, "At scale"): the first embeds
                # every part, writes its chunk rows and appends its vectors to a file of the new generation;
                # the second fills each segment's vectors and postings from that file and the chunk rows.
                pending = open(tmp / PENDING_VECTORS, "wb") if collection is None else None  # noqa: SIM115
                try:
                    for part in _batches(reads, PART_ROWS):
                        vectors, unknown, spent = self.embed(part)
                        seconds += spent
                        rows = [(r.source.rel, c) for r in part for c in r.chunks]
                        embedded += len(rows)
                        added.extend(r.source.rel for r in part)
                        if collection is not None:
                            tokens = [tokenize(c.text, segmenter, cached=False) for _, c in rows]
                            ids = list(range(next_id, next_id + len(rows)))
                            next_id += len(rows)
                            if rows:
                                collection.insert(ids, [collection.field_text(c.text, t)
                                                        for (_, c), t in zip(rows, tokens, strict=True)], vectors)
                            with catalog.transaction() as db:
                                Catalog.put_chunks(db, [(rel, "milvus", i, c)
                                                        for i, (rel, c) in zip(ids, rows, strict=True)], ids)
                                Catalog.update_terms(db, tokens, [])
                                self.record(db, part, stats, unknown)
                        else:
                            if rows and (not planned or planned[-1].rows + len(rows) > SEGMENT_ROWS):
                                planned.append(_SegmentPlan(catalog.next_seq() + len(planned)))
                            with catalog.transaction() as db:  # not live yet: rows before their segment
                                if rows:
                                    segment = planned[-1]
                                    Catalog.put_chunks(db, [(rel, segment.name, segment.rows + i, c)
                                                            for i, (rel, c) in enumerate(rows)])
                                    segment.rows += len(rows)
                                    np.ascontiguousarray(vectors, dtype="float32").tofile(pending)
                                self.record(db, part, stats, unknown)
                        memory.release()
                finally:
                    if pending is not None:
                        pending.close()
                self.check_some_article(sum(1 for rel in added if not _is_reference(rel)))
                if collection is None:
                    self.stage(f"writing {len(planned)} segments of {embedded} chunks")
                    _segments_from_pending(tmp, catalog, planned, int(self.embeddings.dimension), segmenter)
                earlier = _added_at(self.index_dir)  # a rebuild keeps when each file was first added
                with catalog.transaction() as db:
                    Catalog.put_words(db, words)
                    catalog.set_meta({"commit": 1, "built_at": _now(), "skipped": self.skipped_meta(),
                                      "added_at": {rel: earlier.get(rel, _now()) for rel in added}}, db)
                report = _report(catalog, self.started, embedded, seconds, full=True, version=f"{name}#1",
                                 added=sorted(added), full_reason=reason, skipped=self.skipped_report())
            except CorpusError:
                catalog.close()
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            finally:
                catalog.close()
            _fsync_tree(tmp)
            os.replace(tmp, self.index_dir / name)
            pointer_tmp.write_text(name + "\n", encoding="utf-8")
            _fsync_file(pointer_tmp)
            pointer = self.index_dir / CURRENT
            if pointer.is_dir() and not pointer.is_symlink():
                shutil.rmtree(pointer)  # damage (a folder where the pointer belongs); under the build lock
            os.replace(pointer_tmp, pointer)  # the atomic switch: from here on the new generation is live
        with contextlib.suppress(OSError):
            _fsync_dir(self.index_dir)
        _remove_stale_versions(self.index_dir)
        if old_collection is not None and (collection is None or old_collection.name != collection.name):
            old_collection.drop()
        return report

    def learn(self, sources: list[SourceFile], stats: dict[str, os.stat_result]) -> list[str]:
        """The user words of a full build, learned from an even sample of every file's chunk texts (the files
        are read here for their texts alone; the chunks are not kept); in a child process for a large corpus."""
        if sum(stats[s.rel].st_size for s in sources) > LEARN_IN_CHILD_BYTES:
            try:
                with multiprocessing.get_context("spawn").Pool(1) as pool:
                    return pool.apply(learn_words_from_files, (sources, self.chunker))
            except Exception as exc:  # noqa: BLE001 - no child to be had (limits, a sandbox): learn here
                _log.warning("Learning words in a child process failed (%s); learning them in this one.", exc)
        words = learn_words_from_files(sources, self.chunker)
        memory.release()
        return words

    def static_manifest(self, generation: str) -> dict:
        backend: dict = {"name": self.backend.name}
        if self.backend.name == "milvus":
            backend.update(uri=self.backend.milvus_uri, collection=collection_name(generation),
                           analyzer=self.backend.milvus_analyzer)
        return {
            "format": FORMAT_VERSION,
            "built_at": _now(),
            "embedding": {"model": self.embeddings.model_name, "prompts": self.embeddings.prompts,
                          "dimension": int(self.embeddings.dimension), "normalized": True,
                          "metric": "inner_product"},
            "chunker": self.chunker.as_dict(),
            "matching": MATCHING_NORMALIZATION,
            "lexicon": {"version": LEXICON_VERSION},
            "pipeline": pipeline_fingerprint(self.user_words),
            "backend": backend,
        }


def _is_reference(rel: str) -> bool:
    return not rel.startswith(f"{ARTICLES}/")


@dataclass
class _SegmentPlan:
    """A segment of a full build as its first pass lays it out: its name and how many rows it has so far."""

    seq: int
    name: str = field(init=False)
    rows: int = 0

    def __post_init__(self) -> None:
        self.name = _segment_name(self.seq)


def _segments_from_pending(version: Path, catalog: Catalog, planned: list[_SegmentPlan], dimension: int,
                           segmenter: Segmenter) -> None:
    """The second pass of a full build: each planned segment filled part by part from the vectors file (in
    segment order) and its chunk rows' texts, written and committed; the vectors file is removed."""
    path = version / PENDING_VECTORS
    with open(path, "rb") as pending:
        for plan in planned:
            segment = _SegmentDraft(plan.seq, plan.name, dimension)
            for start in range(0, plan.rows, PART_ROWS):
                stop = min(plan.rows, start + PART_ROWS)
                vectors = np.fromfile(pending, dtype="float32", count=(stop - start) * dimension)
                texts = catalog.segment_texts(plan.name, start, stop)
                if len(vectors) != (stop - start) * dimension or len(texts) != stop - start:
                    raise RuntimeError(f"rows {start}-{stop} of segment {plan.name} are missing from the build's "
                                       "own files (was the disk full?)")
                segment.add(vectors.reshape(-1, dimension), (tokenize(t, segmenter, cached=False) for t in texts))
            segment.finish(version, catalog)
            del segment
            memory.release()
    path.unlink()


class _SegmentDraft:
    """A segment of a full build, filled part by part: its vectors and its postings counted as they come (the
    parts' chunks and tokens are not kept)."""

    def __init__(self, seq: int, name: str, dimension: int):
        self.seq, self.name = seq, name
        # A segment takes parts while they fit in SEGMENT_ROWS; a single larger part (one huge file) gets a
        # segment of its own size.
        self.dense = DenseBuilder(dimension)
        self.postings = PostingsBuilder()

    @property
    def rows(self) -> int:
        return self.dense.rows

    def add(self, vectors: np.ndarray, tokens: Iterable[list[str]]) -> None:
        self.dense.add(vectors)
        for toks in tokens:
            self.postings.add(toks)

    def finish(self, version: Path, catalog: Catalog) -> None:
        rows = self.rows
        files = write_segment(version, self.name, self.dense.finish(), *self.postings.build())
        with catalog.transaction() as db:
            Catalog.put_segment(db, SegmentRow(self.name, self.seq, rows, files))


def _batches(reads: Iterable[_Read], rows: int) -> Iterator[list[_Read]]:
    batch, size = [], 0
    for read in reads:
        if batch and size + len(read.chunks) > rows:
            yield batch
            batch, size = [], 0
        batch.append(read)
        size += len(read.chunks)
    yield batch


def _segment_name(seq: int) -> str:
    return f"s{seq:06d}-{secrets.token_hex(3)}"


def _carried_vectors(version: Path, catalog: Catalog, hits: list, dimension: int,
                     collection: MilvusCollection | None) -> np.ndarray:
    """The stored vectors of live chunks that move to a new segment, read from their segments (or the collection)."""
    if not hits:
        return np.zeros((0, dimension), dtype="float32")
    if collection is not None:
        found = collection.vectors([hit[0] for hit in hits])
        return np.vstack([found[hit[0]] for hit in hits])
    rows = {seg.name: seg for seg in catalog.segments()}
    loaded: dict[str, Segment] = {}
    out = []
    for _rowid, _source, _chunk, segment, row in hits:
        if segment not in loaded:
            loaded[segment] = load_segment(version, segment, rows[segment].files)
        out.append(loaded[segment].vectors([row]))
    return np.vstack(out)


def _merge_segments(version: Path, catalog: Catalog, stage: Callable[[str], None]) -> int:
    """Merge what the policy asks for, each merge its own commit; the number of segments merged away.

    Tiers are powers of 4 live chunks: MERGE_FACTOR segments of one tier become one of a higher tier, so each
    chunk is rewritten about log4(N) times over the life of an index; a segment more than MAX_DEAD_SHARE
    tombstones is rewritten without them. A merge that fails (disk full) leaves the committed index as it was.
    """
    merged = 0
    for group in _merge_plan(catalog):
        try:
            merged += _merge(version, catalog, group, stage)
        except (OSError, RuntimeError, sqlite3.Error) as exc:
            stage(f"merging segments skipped ({getattr(exc, 'strerror', None) or exc}); the index is unchanged")
            break
    return merged


def _merge_plan(catalog: Catalog) -> list[list[SegmentRow]]:
    """Groups of segments to merge: MERGE_FACTOR or more of one size tier (powers of 4 live chunks), cut so that no
    merged segment passes SEGMENT_ROWS; segments of half that size or more are final (as Lucene's tiered policy
    leaves segments near its largest merged size), so an add never rewrites a large part of a big index.
    A segment with too many tombstones is rewritten alone."""
    segments, dead = catalog.segments(), catalog.dead_counts()
    live = {seg.name: seg.rows - dead.get(seg.name, 0) for seg in segments}
    tiers: dict[int, list[SegmentRow]] = {}
    for seg in segments:
        if 2 * live[seg.name] < SEGMENT_ROWS:
            tiers.setdefault(int(math.log(max(1, live[seg.name]), 4)), []).append(seg)
    groups: list[list[SegmentRow]] = []
    for _, members in sorted(tiers.items()):
        if len(members) < MERGE_FACTOR:
            continue
        group, rows = [], 0
        for seg in sorted(members, key=lambda s: (live[s.name], s.seq)):
            if group and rows + live[seg.name] > SEGMENT_ROWS:
                groups += [group] if len(group) > 1 else []
                group, rows = [], 0
            group.append(seg)
            rows += live[seg.name]
        groups += [group] if len(group) > 1 else []
    chosen = {seg.name for group in groups for seg in group}
    groups += [[seg] for seg in segments
               if seg.name not in chosen and seg.rows and dead.get(seg.name, 0) / seg.rows > MAX_DEAD_SHARE]
    return groups


def _merge(version: Path, catalog: Catalog, group: list[SegmentRow], stage: Callable[[str], None]) -> int:
    live = {seg.name: catalog.live_rows(seg.name) for seg in group}
    total = sum(len(rows) for rows in live.values())
    stage(f"merging {len(group)} segments ({total} live chunks)")
    dense, postings, moves = None, [], []
    for seg in group:
        rows = live[seg.name]
        if not rows:
            continue
        segment = load_segment(version, seg.name, seg.files)
        local = np.asarray([r for _, r in rows], dtype=np.int64)
        dense = dense or DenseBuilder(segment.dense.d, graph=total >= GRAPH_MIN_ROWS)  # its size is known
        dense.add(segment.dense.reconstruct_n(0, segment.rows)[local])
        postings.append((segment.row_tokens(local), segment.terms))
        moves.extend(rowid for rowid, _ in rows)
        del segment
    seq = catalog.next_seq()
    name = _segment_name(seq)
    with _writing(version.parent, version / SEGMENTS / name):
        files = None
        if moves:
            matrix, terms = stack_postings(postings)
            files = write_segment(version, name, dense.finish(), matrix, terms)
        names = [seg.name for seg in group]
        marks = ",".join("?" * len(names))
        commit = catalog.commit + 1
        with catalog.transaction() as db:
            if files is not None:
                Catalog.put_segment(db, SegmentRow(name, seq, len(moves), files))
                db.executemany("UPDATE chunks SET segment = ?, seg_row = ? WHERE rowid = ?",
                               [(name, i, rowid) for i, rowid in enumerate(moves)])
            db.execute(f"DELETE FROM chunks WHERE segment IN ({marks})", names)
            db.execute(f"DELETE FROM segments WHERE name IN ({marks})", names)
            catalog.set_meta({"commit": commit}, db)
    for seg in group:
        shutil.rmtree(version / SEGMENTS / seg.name, ignore_errors=True)
    return len(group)


@contextlib.contextmanager
def _dropped_on_failure(collection: MilvusCollection | None) -> Iterator[None]:
    """A full build's new collection is dropped if the build fails before its switch."""
    try:
        yield
    except BaseException:
        if collection is not None:
            collection.drop()
        raise


@contextlib.contextmanager
def _writing(index_dir: Path, *remove_on_failure: Path) -> Iterator[None]:
    """Turn a write failure into one IndexWriteError, removing what the failed write left."""
    try:
        yield
    except (OSError, RuntimeError, sqlite3.Error) as exc:  # faiss reports a full disk as RuntimeError
        for path in remove_on_failure:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
        reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0][:200]
        raise IndexWriteError(f"Cannot write the index in {index_dir}: {reason}. Make the folder writable or "
                              "free disk space, then build again; the previous index is unchanged.") from None


def _remove_orphan_segments(version: Path, catalog: Catalog) -> None:
    """Delete segment folders no committed row names (a build or merge killed before its commit)."""
    folder = version / SEGMENTS
    if not folder.is_dir():
        return
    named = {seg.name for seg in catalog.segments()}
    for path in folder.iterdir():
        if path.name not in named:
            shutil.rmtree(path, ignore_errors=True)


def pipeline_fingerprint(user_words: bool) -> dict:
    """What turns text into tokens besides the chunker and the matching rule; a change re-reads everything."""
    import jieba

    from .lexical import STOPWORDS, SYNONYM_GROUPS

    words = "\n".join(sorted(STOPWORDS)) + "\n" + "\n".join(SYNONYM_GROUPS)
    return {"jieba": jieba.__version__, "lexicon": LEXICON_VERSION, "user_words": bool(user_words),
            "lexical": hashlib.sha256(words.encode("utf-8")).hexdigest()[:16]}



def _previous(index_dir: Path, embeddings, chunker: ChunkerSettings, full: bool, user_words: bool = True,
              backend: Backend | None = None) -> tuple[Path | None, str | None]:
    """The live generation, and why a full build is needed (None if it is not)."""
    try:
        version = current_version(index_dir)
        if version is None:
            return None, "no index yet"
        manifest = _static_manifest(version)
    except IndexCorruptError:
        return None, "the previous index is damaged"
    if full:
        return version, "--full"
    if manifest.get("format") != FORMAT_VERSION:
        return version, "index format changed"
    if manifest["embedding"]["model"] != embeddings.model_name:
        return version, f"embedding model changed from {manifest['embedding']['model']} to {embeddings.model_name}"
    if manifest["embedding"].get("prompts", {}) != embeddings.prompts:
        return version, "the embedding model's query/passage prefixes changed"
    if manifest.get("chunker") != chunker.as_dict():
        return version, "chunker settings changed"
    if manifest.get("matching") != MATCHING_NORMALIZATION:
        return version, f"text matching changed to {MATCHING_NORMALIZATION}"
    if manifest.get("pipeline") != pipeline_fingerprint(user_words):
        return version, "the tokeniser, its word lists or the user-dictionary setting changed"
    was = manifest.get("backend", {})
    backend = backend or Backend()
    if was.get("name", "embedded") != backend.name or (backend.name == "milvus" and (
            was.get("uri") != backend.milvus_uri or was.get("analyzer") != backend.milvus_analyzer)):
        return version, f"the index backend changed to {backend.name}"
    if not _intact(version):
        return version, "the previous index is damaged"
    return version, None


def _collection(version: Path) -> MilvusCollection | None:
    backend = _static_manifest(version).get("backend", {})
    if backend.get("name") != "milvus":
        return None
    return MilvusCollection(backend["uri"], backend["collection"], backend["analyzer"])


def _old_collection(version: Path | None) -> MilvusCollection | None:
    """The live generation's collection, dropped after a full build replaces it (None: not Milvus, unreadable)."""
    try:
        return _collection(version) if version is not None else None
    except (IndexCorruptError, KeyError):
        return None


def _milvus_purge(catalog: Catalog, collection: MilvusCollection) -> None:
    """Delete tombstoned chunks from the collection, then from the catalog (they are only tombstones there)."""
    dead = catalog.dead_rowids()
    if dead:
        collection.delete(dead)
        with catalog.transaction() as db:
            db.execute("DELETE FROM chunks WHERE dead = 1")


def _milvus_recover(catalog: Catalog, collection: MilvusCollection) -> None:
    """Finish what a killed build left: rows it inserted but never committed, tombstones not yet deleted."""
    inflight = catalog.meta("milvus_inflight")
    if inflight:
        live = set(catalog.live_rowids())
        collection.delete([i for i in range(inflight[0], inflight[1] + 1) if i not in live])
        with catalog.transaction() as db:
            catalog.set_meta({"milvus_inflight": None}, db)
    _milvus_purge(catalog, collection)


def _intact(version: Path) -> bool:
    """The catalog reads and every segment file it names exists with its recorded size."""
    try:
        catalog = Catalog(version / CATALOG)
    except IndexCorruptError:
        return False
    try:
        if catalog.consistency_problem():
            return False
        collection = _collection(version)
        if collection is not None:
            collection.check()
        for seg in catalog.segments():
            for file, (_digest, size) in seg.files.items():
                path = version / SEGMENTS / seg.name / file
                if not path.is_file() or path.stat().st_size != size:
                    return False
        return True
    except IndexCorruptError:
        return False
    finally:
        catalog.close()


def _remove_stale_versions(index_dir: Path) -> None:
    """Delete versions that CURRENT does not name, and leftovers of killed builds."""
    try:
        live = current_version(index_dir)
    except IndexCorruptError:
        return  # keep everything for inspection; the build that follows writes a new CURRENT
    for path in index_dir.iterdir():
        if path == live or path.name in (CURRENT, LOCK):
            continue
        if path.name.startswith(("v-", ".tmp-v-")) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.name.startswith(f".{CURRENT}."):
            path.unlink(missing_ok=True)



def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            _fsync_file(path)
    for path in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
        _fsync_dir(path)



def _report(catalog: Catalog, started: float, embedded: int, seconds: float = 0.0, **kwargs) -> BuildReport:
    """What a build did; `seconds` spent embedding `embedded` chunks gives the rate."""
    manifest = _static_manifest(catalog.path.parent)
    counts = catalog.counts()
    return BuildReport(
        documents=counts["documents"], chunks=counts["chunks"], references=counts["references"],
        model=manifest["embedding"]["model"], dimension=manifest["embedding"]["dimension"],
        unknown_token_share=counts["unknown_token_share"], seconds=round(time.perf_counter() - started, 2),
        embedded=embedded, reused=counts["chunks"] - embedded, segments=counts["segments"],
        passages_per_second=round(embedded / seconds, 1) if embedded and seconds > 0 else None, **kwargs,
    )
