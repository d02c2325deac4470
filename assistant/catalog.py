"""The index's catalog in SQLite: sources, documents, chunks, segments, tombstones and learned words.

One catalog per index generation (a full build starts a new generation). An incremental build writes its
segment files first and then commits everything else in one transaction here, so a build killed at any
point leaves the last committed state; segment folders no committed row names are removed later.

A chunk is deleted by a tombstone (`dead = 1`), not by rewriting its segment; merges drop dead rows.
WAL mode lets a serving process read while a build writes.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .chunking import Chunk
from .corpus import IndexedDocument
from .errors import IndexCorruptError

CATALOG = "catalog.sqlite"
SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sources(
    rel TEXT PRIMARY KEY, hash TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    article_id TEXT, unk_tokens INTEGER NOT NULL, tokens INTEGER NOT NULL, doc_ids TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents(
    id TEXT PRIMARY KEY, source TEXT NOT NULL, kind TEXT NOT NULL, title TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS documents_source ON documents(source);
CREATE TABLE IF NOT EXISTS segments(
    name TEXT PRIMARY KEY, seq INTEGER NOT NULL UNIQUE, rows INTEGER NOT NULL, files TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks(
    rowid INTEGER PRIMARY KEY, id TEXT NOT NULL, source TEXT NOT NULL, doc_id TEXT NOT NULL,
    segment TEXT NOT NULL, seg_row INTEGER NOT NULL, dead INTEGER NOT NULL DEFAULT 0,
    kind TEXT NOT NULL, paragraph INTEGER, start_at INTEGER NOT NULL, end_at INTEGER NOT NULL,
    citations TEXT NOT NULL, text TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_place ON chunks(segment, seg_row);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id, paragraph);
CREATE INDEX IF NOT EXISTS chunks_id ON chunks(id);
CREATE INDEX IF NOT EXISTS chunks_source ON chunks(source);
CREATE TABLE IF NOT EXISTS words(pos INTEGER PRIMARY KEY, word TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS terms(term TEXT PRIMARY KEY, df INTEGER NOT NULL);
"""
_CHUNK_COLUMNS = "rowid, id, doc_id, text, kind, paragraph, start_at, end_at, citations"


@dataclass
class SegmentRow:
    name: str
    seq: int
    rows: int
    files: dict[str, list]  # file name -> [sha256, size]


@dataclass
class SourceRow:
    rel: str
    hash: str
    size: int
    mtime_ns: int
    article_id: str | None
    unk_tokens: int
    tokens: int
    doc_ids: list[str]


class Catalog:
    """A thread-safe connection to one generation's catalog."""

    def __init__(self, path: Path, create: bool = False):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise IndexCorruptError(f"{self.path} is missing. Rebuild with `assistant index build --full`.")
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            if create:
                self._db.executescript(_SCHEMA)
                self.set_meta({"schema": SCHEMA_VERSION, "commit": 0})
            elif self.meta("schema") != SCHEMA_VERSION:
                raise IndexCorruptError(f"{self.path} is not an index catalog of schema {SCHEMA_VERSION}. "
                                        "Rebuild with `assistant index build --full`.")
        except sqlite3.DatabaseError as exc:
            raise IndexCorruptError(f"{self.path} is damaged ({exc}). "
                                    "Rebuild with `assistant index build --full`.") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic commit: everything inside happens, or nothing does."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, params: Sequence = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as exc:
                raise IndexCorruptError(f"{self.path} cannot be read ({exc}). "
                                        "Rebuild with `assistant index build --full`.") from None

    # --- meta -----------------------------------------------------------------------------------

    def meta(self, key: str):
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else None

    def set_meta(self, values: dict, db: sqlite3.Connection | None = None) -> None:
        (db or self._db).executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                                     [(k, json.dumps(v, ensure_ascii=False)) for k, v in values.items()])

    @property
    def commit(self) -> int:
        return int(self.meta("commit") or 0)

    # --- sources and documents -----------------------------------------------------------------------

    def sources(self) -> dict[str, SourceRow]:
        rows = self._query("SELECT rel, hash, size, mtime_ns, article_id, unk_tokens, tokens, doc_ids FROM sources")
        return {r[0]: SourceRow(*r[:7], json.loads(r[7])) for r in rows}

    def chunk_ids_by_source(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for source, cid in self._query("SELECT source, id FROM chunks WHERE dead = 0 ORDER BY rowid"):
            out.setdefault(source, []).append(cid)
        return out

    @staticmethod
    def put_source(db: sqlite3.Connection, row: SourceRow) -> None:
        db.execute("INSERT OR REPLACE INTO sources VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (row.rel, row.hash, row.size, row.mtime_ns, row.article_id, row.unk_tokens, row.tokens,
                    json.dumps(row.doc_ids, ensure_ascii=False)))

    @staticmethod
    def put_documents(db: sqlite3.Connection, source: str, docs: Iterable[IndexedDocument]) -> None:
        db.executemany("INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?, ?)",
                       [(d.id, source, d.kind, d.title, json.dumps(d.as_dict(), ensure_ascii=False)) for d in docs])

    @staticmethod
    def remove_source(db: sqlite3.Connection, rel: str) -> int:
        """Tombstone a source's chunks and drop its documents; the number of chunks marked dead."""
        db.execute("DELETE FROM documents WHERE source = ?", (rel,))
        db.execute("DELETE FROM sources WHERE rel = ?", (rel,))
        return db.execute("UPDATE chunks SET dead = 1 WHERE source = ? AND dead = 0", (rel,)).rowcount

    def article_rowids(self, article_ids: Sequence[str]) -> list[int]:
        """Rowids of the live chunks of the given articles and of their references' full texts."""
        marks = ",".join("?" * len(article_ids))
        return [r for (r,) in self._query("SELECT c.rowid FROM chunks c JOIN sources s ON s.rel = c.source "
                                          f"WHERE c.dead = 0 AND s.article_id IN ({marks})", list(article_ids))]

    def article_summaries(self) -> list[dict]:
        """Per article (with its references' full texts): id, file, title, size in bytes, live chunks, cited
        references and reference full texts; in file-name order."""
        chunks = dict(self._query("SELECT s.article_id, count(*) FROM chunks c JOIN sources s ON s.rel = c.source "
                                  "WHERE c.dead = 0 GROUP BY s.article_id"))
        cited = dict(self._query("SELECT source, count(*) FROM documents WHERE kind = 'reference' GROUP BY source"))
        titles = dict(self._query("SELECT source, title FROM documents WHERE kind = 'article'"))
        out: dict[str, dict] = {}
        for rel, size, article_id in self._query("SELECT rel, size, article_id FROM sources ORDER BY rel"):
            item = out.setdefault(article_id, {"id": article_id, "file": None, "title": article_id, "size": 0,
                                               "chunks": chunks.get(article_id, 0), "references": 0,
                                               "reference_texts": 0})
            item["size"] += size
            if rel in titles:
                item.update(file=rel, title=titles[rel], references=cited.get(rel, 0))
            else:
                item["reference_texts"] += 1
        return sorted(out.values(), key=lambda a: a["id"])

    def document(self, doc_id: str) -> IndexedDocument | None:
        rows = self._query("SELECT body FROM documents WHERE id = ?", (doc_id,))
        return IndexedDocument(**json.loads(rows[0][0])) if rows else None

    def document_heads(self) -> list[tuple[str, str, str, str]]:
        """(id, kind, title, source) of every document, without texts."""
        return self._query("SELECT id, kind, title, source FROM documents ORDER BY source, rowid")

    # --- chunks ------------------------------------------------------------------------------------

    @staticmethod
    def put_chunks(db: sqlite3.Connection, rows: Iterable[tuple[str, str, int, Chunk]],
                   rowids: Sequence[int] | None = None) -> None:
        """(source, segment, row in segment, chunk) for each new chunk; `rowids` when the caller chose them."""
        rows = list(rows)
        keys = list(rowids) if rowids is not None else [None] * len(rows)
        db.executemany(
            "INSERT INTO chunks(rowid, id, source, doc_id, segment, seg_row, kind, paragraph, start_at, end_at, "
            "citations, text) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(key, c.id, src, c.doc_id, seg, i, c.kind, c.paragraph, c.start, c.end, json.dumps(c.citations), c.text)
             for key, (src, seg, i, c) in zip(keys, rows, strict=True)])

    def max_rowid(self) -> int:
        return int(self._query("SELECT coalesce(max(rowid), 0) FROM chunks")[0][0])

    def live_rowids(self) -> list[int]:
        return [r for (r,) in self._query("SELECT rowid FROM chunks WHERE dead = 0 ORDER BY rowid")]

    def dead_rowids(self) -> list[int]:
        return [r for (r,) in self._query("SELECT rowid FROM chunks WHERE dead = 1")]

    def segment_texts(self, segment: str, start: int, stop: int) -> list[str]:
        """The texts of a segment's rows start..stop-1, in row order."""
        return [t for (t,) in self._query("SELECT text FROM chunks WHERE segment = ? AND seg_row >= ? AND seg_row < ? "
                                          "ORDER BY seg_row", (segment, start, stop))]

    def live_texts_of(self, sources: Sequence[str]) -> list[str]:
        out: list[str] = []
        for source in sources:
            out += [t for (t,) in self._query("SELECT text FROM chunks WHERE dead = 0 AND source = ?", (source,))]
        return out

    # --- document frequencies (kept here when the search structures live elsewhere) ---------------------

    def terms(self) -> dict[str, int]:
        return dict(self._query("SELECT term, df FROM terms"))

    @staticmethod
    def update_terms(db: sqlite3.Connection, added: Iterable[Iterable[str]], removed: Iterable[Iterable[str]]) -> None:
        """Add one to a term's document frequency per new chunk holding it, subtract one per removed chunk."""
        delta: dict[str, int] = {}
        for sign, token_lists in ((1, added), (-1, removed)):
            for tokens in token_lists:
                for term in set(tokens):
                    delta[term] = delta.get(term, 0) + sign
        db.executemany("INSERT INTO terms(term, df) VALUES (?, ?) ON CONFLICT(term) DO UPDATE SET df = df + excluded.df",
                       [(t, d) for t, d in delta.items() if d])
        db.execute("DELETE FROM terms WHERE df <= 0")

    def live_places(self) -> list[tuple[int, str, int]]:
        """(chunk rowid, segment, row in segment) of every live chunk, in segment order then row order."""
        return self._query("SELECT c.rowid, c.segment, c.seg_row FROM chunks c JOIN segments s ON s.name = c.segment "
                           "WHERE c.dead = 0 ORDER BY s.seq, c.seg_row")

    def chunks_by_rowid(self, rowids: Sequence[int]) -> dict[int, Chunk]:
        out: dict[int, Chunk] = {}
        for start in range(0, len(rowids), 500):
            part = list(rowids[start:start + 500])
            marks = ",".join("?" * len(part))
            for row in self._query(f"SELECT {_CHUNK_COLUMNS} FROM chunks WHERE rowid IN ({marks})", part):
                out[row[0]] = _chunk(row)
        return out

    def chunks_where(self, where: str, params: Sequence = ()) -> list[tuple[int, Chunk]]:
        rows = self._query(f"SELECT {_CHUNK_COLUMNS} FROM chunks WHERE dead = 0 AND {where} ORDER BY start_at, rowid",
                           params)
        return [(r[0], _chunk(r)) for r in rows]

    def places_of(self, chunk_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
        """Chunk id -> (segment, row) for live chunks."""
        out = {}
        for start in range(0, len(chunk_ids), 500):
            part = list(chunk_ids[start:start + 500])
            marks = ",".join("?" * len(part))
            for cid, seg, row in self._query(
                    f"SELECT id, segment, seg_row FROM chunks WHERE dead = 0 AND id IN ({marks})", part):
                out[cid] = (seg, row)
        return out

    def live_chunks_containing(self, words: Sequence[str]) -> list[tuple[int, str, Chunk, str, int]]:
        """(rowid, source, chunk, segment, row) of live chunks whose text holds any of the words."""
        if not words:
            return []
        test = " OR ".join("instr(text, ?) > 0" for _ in words)
        rows = self._query(f"SELECT {_CHUNK_COLUMNS}, source, segment, seg_row FROM chunks WHERE dead = 0 "
                           f"AND ({test})", list(words))
        return [(r[0], r[9], _chunk(r[:9]), r[10], r[11]) for r in rows]

    # --- segments and words ----------------------------------------------------------------------------

    def segments(self) -> list[SegmentRow]:
        return [SegmentRow(n, q, r, json.loads(f))
                for n, q, r, f in self._query("SELECT name, seq, rows, files FROM segments ORDER BY seq")]

    def dead_counts(self) -> dict[str, int]:
        return dict(self._query("SELECT segment, count(*) FROM chunks WHERE dead = 1 GROUP BY segment"))

    @staticmethod
    def put_segment(db: sqlite3.Connection, segment: SegmentRow) -> None:
        db.execute("INSERT INTO segments VALUES (?, ?, ?, ?)",
                   (segment.name, segment.seq, segment.rows, json.dumps(segment.files)))

    def next_seq(self) -> int:
        return int(self._query("SELECT coalesce(max(seq), 0) + 1 FROM segments")[0][0])

    def words(self) -> list[str]:
        return [w for (w,) in self._query("SELECT word FROM words ORDER BY pos")]

    @staticmethod
    def put_words(db: sqlite3.Connection, words: Sequence[str]) -> None:
        db.execute("DELETE FROM words")
        db.executemany("INSERT INTO words(pos, word) VALUES (?, ?)", list(enumerate(words)))

    def live_rows(self, segment: str) -> list[tuple[int, int]]:
        """(chunk rowid, row in segment) of a segment's live chunks, in row order."""
        return self._query("SELECT rowid, seg_row FROM chunks WHERE segment = ? AND dead = 0 ORDER BY seg_row",
                           (segment,))

    def counts(self) -> dict:
        (documents, unk, tokens), = self._query("SELECT count(*), coalesce(sum(unk_tokens), 0), "
                                                "coalesce(sum(tokens), 0) FROM sources")
        return {"documents": documents,
                "chunks": self._query("SELECT count(*) FROM chunks WHERE dead = 0")[0][0],
                "references": self._query("SELECT count(*) FROM documents WHERE kind = 'reference'")[0][0],
                "segments": self._query("SELECT count(*) FROM segments")[0][0],
                "words": self._query("SELECT count(*) FROM words")[0][0],
                "unknown_token_share": round(unk / tokens, 4) if tokens else 0.0}

    def consistency_problem(self) -> str | None:
        """A cheap check that a build can extend this catalog: every table reads, and every live chunk of a
        segment points inside it (the rest is checked when segments load)."""
        try:
            with self._lock:
                for table in ("meta", "sources", "documents", "segments", "chunks", "words", "terms"):
                    self._db.execute(f"SELECT * FROM {table} LIMIT 1").fetchall()
                (outside,), = self._db.execute(
                    "SELECT count(*) FROM chunks c LEFT JOIN segments s ON s.name = c.segment WHERE c.dead = 0 "
                    "AND c.segment != 'milvus' AND (s.name IS NULL OR c.seg_row < 0 OR c.seg_row >= s.rows)").fetchall()
        except sqlite3.DatabaseError as exc:
            return str(exc)
        return f"{outside} chunks point outside their segments" if outside else None

    def integrity_problem(self) -> str | None:
        rows = self._query("PRAGMA integrity_check")
        return None if rows and rows[0][0] == "ok" else "; ".join(r[0] for r in rows[:3])


def _chunk(row: tuple) -> Chunk:
    _rowid, cid, doc_id, text, kind, paragraph, start, end, citations = row
    return Chunk(cid, doc_id, text, kind, paragraph, start, end, json.loads(citations))


class ChunkTable(Sequence):
    """The live chunks in index order (row r of the dense and BM25 scores), fetched from the catalog on use."""

    def __init__(self, catalog: Catalog, rowids: Sequence[int], cache_size: int = 8192):
        self._catalog = catalog
        self._rowids = rowids
        self._cache: dict[int, Chunk] = {}
        self._cache_size = cache_size

    def __len__(self) -> int:
        return len(self._rowids)

    @property
    def rowids(self) -> Sequence[int]:
        """The catalog rowid of each global row."""
        return self._rowids

    def __getitem__(self, row):  # noqa: ANN001 - int or slice, as a Sequence
        if isinstance(row, slice):
            return [self[i] for i in range(*row.indices(len(self)))]
        rowid = int(self._rowids[row])
        chunk = self._cache.get(rowid)
        return chunk if chunk is not None else self._fetch([rowid])[rowid]

    def prefetch(self, rows: Iterable[int]) -> None:
        """Fetch many chunks in one query (the reranker's candidates)."""
        missing = [w for w in (int(self._rowids[r]) for r in rows) if w not in self._cache]
        if missing:
            self._fetch(missing)

    def _fetch(self, rowids: list[int]) -> dict[int, Chunk]:
        found = self._catalog.chunks_by_rowid(rowids)
        if len(found) != len(set(rowids)):
            raise IndexCorruptError("The index changed on disk while it was read; load it again.")
        if len(self._cache) + len(found) > self._cache_size:
            self._cache = {}  # a new dict, so a concurrent reader of the old one is not disturbed
        self._cache.update(found)
        return found

    def __iter__(self) -> Iterator[Chunk]:
        for start in range(0, len(self), 2000):
            rows = range(start, min(len(self), start + 2000))
            found = self._catalog.chunks_by_rowid([int(self._rowids[r]) for r in rows])
            for r in rows:
                yield found[int(self._rowids[r])]


class DocumentTable(Mapping):
    """Document id -> IndexedDocument, read from the catalog when asked for (texts are not kept in memory)."""

    def __init__(self, catalog: Catalog, cache_size: int = 256):
        self._catalog = catalog
        self._heads = {i: (kind, title, source) for i, kind, title, source in catalog.document_heads()}
        self._cache: dict[str, IndexedDocument] = {}
        self._cache_size = cache_size

    def __getitem__(self, doc_id: str) -> IndexedDocument:
        doc = self._cache.get(doc_id)
        if doc is None:
            if doc_id not in self._heads:
                raise KeyError(doc_id)
            doc = self._catalog.document(doc_id)
            if doc is None:
                raise IndexCorruptError("The index changed on disk while it was read; load it again.")
            if len(self._cache) >= self._cache_size:
                self._cache = {}  # a new dict: a concurrent reader of the old one is not disturbed
            self._cache[doc_id] = doc
        return doc

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._heads

    def __iter__(self) -> Iterator[str]:
        return iter(self._heads)

    def __len__(self) -> int:
        return len(self._heads)

    def heads(self, kinds: Iterable[str] | None = None) -> list[dict]:
        """id, kind, title and source of the documents (of the given kinds), without reading texts."""
        wanted = set(kinds) if kinds is not None else None
        return [{"id": i, "title": t, "kind": k, "source": s} for i, (k, t, s) in self._heads.items()
                if wanted is None or k in wanted]
