"""Building and updating the index: full builds (a new generation, in two passes) and incremental builds (one
small segment and one catalog transaction)."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import multiprocessing
import os
import secrets
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import memory
from ..catalog import CATALOG, Catalog, SegmentRow, SourceRow
from ..chunking import Chunk, ChunkerSettings
from ..config import Backend
from ..corpus import ARTICLES, IndexedDocument, Skipped, SourceFile, learn_words_from_files, process, scan, undo_add
from ..embeddings import Embedder
from ..errors import CorpusError, FileError, IndexCorruptError
from ..language import MATCHING_NORMALIZATION
from ..lexical import tokenize
from ..lexicon import LEXICON_VERSION, Segmenter, default_segmenter, learn_words
from ..loaders import os_reason
from ..milvus import MilvusCollection, collection_name
from ..names import printable
from ..segments import (
    SEGMENTS,
    DenseBuilder,
    PostingsBuilder,
    Segment,
    check_segment_files,
    dense_index,
    load_segment,
    postings_from_tokens,
    write_segment,
)
from . import limits
from .durability import fsync_dir, fsync_file, fsync_tree, writing
from .generations import (
    CURRENT,
    FORMAT_VERSION,
    MANIFEST,
    added_times,
    build_lock,
    committed_sources,
    current_version,
    now,
    pipeline_fingerprint,
    remove_orphan_segments,
    remove_stale_versions,
    segment_name,
    static_manifest,
)
from .merge import merge_segments
from .milvus_sync import collection_of, dropped_on_failure, milvus_purge, milvus_recover, old_collection

_log = logging.getLogger("assistant.indexing")


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
        if self.unknown_token_share < limits.UNK_WARN_SHARE:
            return None
        return (
            f"Warning: the embedding model maps {self.unknown_token_share:.0%} of the corpus tokens to its unknown "
            "token, so dense retrieval is weak on this corpus and is down-weighted in hybrid search. "
            "A multilingual model (ASSISTANT_EMBED_MODEL=/path/to/model) would help."
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
        remove_stale_versions(index_dir)
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
            return job.full(sources, stats, full_reason, old_collection(live))
        catalog = Catalog(live / CATALOG)
        try:
            remove_orphan_segments(live, catalog)
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
                with writing(self.index_dir), catalog.transaction() as db:
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
        collection = collection_of(version)
        if collection is not None:
            milvus_recover(catalog, collection)
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
            added_at.update({r.source.rel: now() for r in reads if r.source.rel not in added_at})
            catalog.set_meta({"commit": catalog.commit + 1, "built_at": now(), "skipped": skipped_meta,
                              "added_at": added_at}, db)

        merged = 0
        if collection is not None:
            before = Segmenter(previous) if previous else default_segmenter()
            gone_tokens = [tokenize(t, before, cached=False) for t in catalog.live_texts_of(gone) + [hit[2].text for hit in retoken]]
            self.commit_milvus(catalog, collection, rows, tokens, vectors, gone_tokens, record)
        else:
            self.commit_segment(version, catalog, rows, tokens, vectors, record)
            merged = merge_segments(version, catalog, self.stage)
            remove_orphan_segments(version, catalog)
        return _report(catalog, self.started, embedded, seconds, full=False, version=f"{version.name}#{catalog.commit}",
                       added=added, changed=changed, removed=removed, merged=merged, skipped=self.skipped_report())

    def commit_segment(self, version: Path, catalog: Catalog, rows: list[tuple[str, Chunk]],
                       tokens: list[list[str]], vectors: np.ndarray,
                       record: Callable[[sqlite3.Connection], None]) -> None:
        """Write the new segment's files, then commit it and `record` in one transaction."""
        seq = catalog.next_seq()
        name = segment_name(seq)
        with writing(self.index_dir, version / SEGMENTS / name):
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
        with writing(self.index_dir):
            with catalog.transaction() as db:
                catalog.set_meta({"milvus_inflight": [first, first + len(rows) - 1]}, db)
            collection.insert(ids, [collection.field_text(c.text, t) for (_, c), t in zip(rows, tokens, strict=True)],
                              vectors)
            with catalog.transaction() as db:
                record(db)  # first: it tombstones the replaced files' chunks, which must not reach the new ones
                Catalog.put_chunks(db, [(rel, "milvus", i, c) for i, (rel, c) in zip(ids, rows, strict=True)], ids)
                Catalog.update_terms(db, tokens, gone_tokens)
                catalog.set_meta({"milvus_inflight": None}, db)
            milvus_purge(catalog, collection)

    def record(self, db: sqlite3.Connection, reads: list[_Read], stats: dict[str, os.stat_result],
               unknown: dict[str, tuple[int, int]]) -> None:
        """The documents and source rows of files read by this build."""
        for read in reads:
            Catalog.put_documents(db, read.source.rel, read.docs)
            Catalog.put_source(db, self.source_row(read, stats[read.source.rel], *unknown[read.source.rel]))

    # --- full: a new generation, switched to atomically ----------------------------------------------------

    def full(self, sources: list[SourceFile], stats: dict[str, os.stat_result], reason: str,
             replaced: MilvusCollection | None = None) -> BuildReport:
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
        with writing(self.index_dir, tmp, self.index_dir / name, pointer_tmp), dropped_on_failure(collection):
            tmp.mkdir(parents=True)
            catalog = Catalog(tmp / CATALOG, create=True)
            try:
                (tmp / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")
                if collection is not None:
                    collection.create(int(self.embeddings.dimension), words)
                next_id, planned = 1, []
                # The embedded backend builds in two passes, so that the embedder's working memory and the
                # segments' structures are never in the heap together (docs/benchmarks.md): the first embeds
                # every part, writes its chunk rows and appends its vectors to a file of the new generation;
                # the second fills each segment's vectors and postings from that file and the chunk rows.
                pending = open(tmp / limits.PENDING_VECTORS, "wb") if collection is None else None  # noqa: SIM115
                try:
                    for part in _batches(reads, limits.PART_ROWS):
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
                            if rows and (not planned or planned[-1].rows + len(rows) > limits.SEGMENT_ROWS):
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
                earlier = added_times(self.index_dir)  # a rebuild keeps when each file was first added
                with catalog.transaction() as db:
                    Catalog.put_words(db, words)
                    catalog.set_meta({"commit": 1, "built_at": now(), "skipped": self.skipped_meta(),
                                      "added_at": {rel: earlier.get(rel, now()) for rel in added}}, db)
                report = _report(catalog, self.started, embedded, seconds, full=True, version=f"{name}#1",
                                 added=sorted(added), full_reason=reason, skipped=self.skipped_report())
            except CorpusError:
                catalog.close()
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            finally:
                catalog.close()
            fsync_tree(tmp)
            os.replace(tmp, self.index_dir / name)
            pointer_tmp.write_text(name + "\n", encoding="utf-8")
            fsync_file(pointer_tmp)
            pointer = self.index_dir / CURRENT
            if pointer.is_dir() and not pointer.is_symlink():
                shutil.rmtree(pointer)  # damage (a folder where the pointer belongs); under the build lock
            os.replace(pointer_tmp, pointer)  # the atomic switch: from here on the new generation is live
        with contextlib.suppress(OSError):
            fsync_dir(self.index_dir)
        remove_stale_versions(self.index_dir)
        if replaced is not None and (collection is None or replaced.name != collection.name):
            replaced.drop()
        return report

    def learn(self, sources: list[SourceFile], stats: dict[str, os.stat_result]) -> list[str]:
        """The user words of a full build, learned from an even sample of every file's chunk texts (the files
        are read here for their texts alone; the chunks are not kept); in a child process for a large corpus."""
        if sum(stats[s.rel].st_size for s in sources) > limits.LEARN_IN_CHILD_BYTES:
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
            "built_at": now(),
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
        self.name = segment_name(self.seq)


def _segments_from_pending(version: Path, catalog: Catalog, planned: list[_SegmentPlan], dimension: int,
                           segmenter: Segmenter) -> None:
    """The second pass of a full build: each planned segment filled part by part from the vectors file (in
    segment order) and its chunk rows' texts, written and committed; the vectors file is removed."""
    path = version / limits.PENDING_VECTORS
    with open(path, "rb") as pending:
        for plan in planned:
            segment = _SegmentDraft(plan.seq, plan.name, dimension)
            for start in range(0, plan.rows, limits.PART_ROWS):
                stop = min(plan.rows, start + limits.PART_ROWS)
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
        # A segment takes parts while they fit in limits.SEGMENT_ROWS; a single larger part (one huge file) gets a
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


def _previous(index_dir: Path, embeddings, chunker: ChunkerSettings, full: bool, user_words: bool = True,
              backend: Backend | None = None) -> tuple[Path | None, str | None]:
    """The live generation, and why a full build is needed (None if it is not)."""
    try:
        version = current_version(index_dir)
        if version is None:
            return None, "no index yet"
        manifest = static_manifest(version)
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


def _intact(version: Path) -> bool:
    """The catalog reads and every segment file it names exists with its recorded size."""
    try:
        catalog = Catalog(version / CATALOG)
    except IndexCorruptError:
        return False
    try:
        if catalog.consistency_problem():
            return False
        collection = collection_of(version)
        if collection is not None:
            collection.check()
        for seg in catalog.segments():
            check_segment_files(version, seg.name, seg.files)
        return True
    except IndexCorruptError:
        return False
    finally:
        catalog.close()


def _report(catalog: Catalog, started: float, embedded: int, seconds: float = 0.0, **kwargs) -> BuildReport:
    """What a build did; `seconds` spent embedding `embedded` chunks gives the rate."""
    manifest = static_manifest(catalog.path.parent)
    counts = catalog.counts()
    return BuildReport(
        documents=counts["documents"], chunks=counts["chunks"], references=counts["references"],
        model=manifest["embedding"]["model"], dimension=manifest["embedding"]["dimension"],
        unknown_token_share=counts["unknown_token_share"], seconds=round(time.perf_counter() - started, 2),
        embedded=embedded, reused=counts["chunks"] - embedded, segments=counts["segments"],
        passages_per_second=round(embedded / seconds, 1) if embedded and seconds > 0 else None, **kwargs,
    )
