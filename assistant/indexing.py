"""Build, update and load the hybrid index (FAISS + BM25) atomically.

An index directory holds versions side by side and a CURRENT file naming the live one:

    index/CURRENT            -> "v-20261123T204500-1a2b"
    index/v-.../manifest.json, dense.faiss, chunks.jsonl, documents.json, bm25/

A build writes a new version completely, then replaces CURRENT with os.replace (atomic), then
removes older versions. A build killed at any point leaves CURRENT naming a complete version.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import functools
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from langchain_core.documents import Document

from .chunking import Chunk, ChunkerSettings
from .corpus import IndexedDocument, SourceFile, process, scan_corpus, undo_add
from .embeddings import Embedder
from .errors import IndexBusyError, IndexCorruptError, IndexNotFoundError, IndexWriteError, ModelMismatchError
from .language import MATCHING_NORMALIZATION
from .lexical import BM25Index, matching_form
from .lexicon import (
    LEXICON_VERSION,
    MAX_LEARN_CHARS,
    Segmenter,
    default_segmenter,
    learn_words,
    load_words,
    sample_texts,
    save_words,
)
from .vectorstore import FaissVectorStore

FORMAT_VERSION = 2  # 2: documents keyed by file name with extension
CURRENT = "CURRENT"
MANIFEST = "manifest.json"
DOCUMENTS = "documents.json"
LOCK = ".lock"
UNK_WARN_SHARE = 0.2
RACY_NS = 2_000_000_000  # files modified this close to a build's start are not trusted by size and time
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

    @property
    def unknown_token_warning(self) -> str | None:
        if self.unknown_token_share < UNK_WARN_SHARE:
            return None
        return (
            f"Warning: the embedding model maps {self.unknown_token_share:.0%} of the corpus tokens to its unknown "
            "token, so dense retrieval is weak on this corpus and is down-weighted in hybrid search. "
            "A multilingual model (ASSISTANT_EMBED_MODEL=/path/to/model) would help."
        )


@dataclass
class LoadedIndex:
    path: Path
    manifest: dict
    store: FaissVectorStore
    bm25: BM25Index
    documents: dict[str, IndexedDocument]
    chunks: list[Chunk]
    segmenter: Segmenter = field(default_factory=default_segmenter)

    def __post_init__(self) -> None:
        self.chunk_by_id = {c.id: c for c in self.chunks}
        self._by_paragraph: dict[tuple[str, int | None], list[Chunk]] = {}
        self._by_document: dict[str, list[Chunk]] = {}
        for chunk in self.chunks:
            self._by_paragraph.setdefault((chunk.doc_id, chunk.paragraph), []).append(chunk)
            self._by_document.setdefault(chunk.doc_id, []).append(chunk)

    @functools.cached_property
    def idf(self) -> dict[str, float]:
        """BM25-style IDF of every token of the index, from the BM25 index's own document frequencies."""
        df = self.bm25.document_frequencies()
        n = max(1, len(self.chunks))
        return {t: math.log(1 + (n - c + 0.5) / (c + 0.5)) for t, c in df.items()}

    def document_chunks(self, doc_id: str) -> list[Chunk]:
        """The chunks of one document, in reading order."""
        return list(self._by_document.get(doc_id, ()))

    def paragraph_chunks(self, chunk: Chunk) -> list[Chunk]:
        """The chunks of the chunk's paragraph, in reading order."""
        return self._by_paragraph[(chunk.doc_id, chunk.paragraph)]

    @property
    def unknown_token_share(self) -> float:
        return float(self.manifest["embedding"]["unknown_token_share"])


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


def read_manifest(index_dir: Path) -> dict:
    version = current_version(index_dir)
    if version is None:
        raise IndexNotFoundError(_no_index(index_dir))
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
    shapes = {"format": int, "embedding": dict, "chunker": dict, "counts": dict, "sources": dict, "files": dict}
    for key, kind in shapes.items():
        if not isinstance(manifest.get(key), kind):
            return f"{key!r} missing or not {kind.__name__}"
    embedding = manifest["embedding"]
    if not isinstance(embedding.get("model"), str) or not isinstance(embedding.get("prompts", {}), dict) \
            or not isinstance(embedding.get("unknown_token_share", 0), int | float):
        return "'embedding' incomplete"
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in manifest["files"].items()):
        return "'files' is not names to checksums"
    for rel, info in manifest["sources"].items():
        if not isinstance(info, dict) or not isinstance(info.get("hash"), str) \
                or not isinstance(info.get("chunk_ids"), list) or not isinstance(info.get("tokens"), int) \
                or not isinstance(info.get("unk_tokens"), int):
            return f"source {rel[:60]!r} incomplete"
    if not isinstance(manifest.get("sizes", {}), dict) or \
            not all(isinstance(v, int) for v in manifest.get("sizes", {}).values()):
        return "'sizes' is not names to byte counts"
    if not isinstance(manifest.get("lexicon", {}), dict):
        return "'lexicon' not an object"
    return None


def committed_sources(index_dir: Path) -> dict[str, str]:
    """Corpus path -> content hash of every file the live index holds ({} without a readable index)."""
    try:
        return {rel: info["hash"] for rel, info in read_manifest(index_dir)["sources"].items()}
    except (IndexNotFoundError, IndexCorruptError):
        return {}


def _no_index(index_dir: Path) -> str:
    return f"No index in {index_dir}. Build it with `assistant index build --index {index_dir}` (or `make run`)."


def load_index(index_dir: Path, embeddings: Embedder, verify: bool = False,
               check_model: bool = True) -> LoadedIndex:
    """Load the live version and check (unless told not to) that the configured model built it.

    Every file must exist with the size the manifest records (a cheap stat); `verify` also re-hashes every
    file against its sha256 (`assistant index verify`), which a normal start skips: files are checksummed when
    written, and a damaged file that keeps its size fails when it is parsed.
    """
    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        raise IndexNotFoundError(_no_index(index_dir))
    manifest = read_manifest(index_dir)
    version = current_version(index_dir)
    assert version is not None
    if manifest.get("format") != FORMAT_VERSION:
        raise IndexCorruptError(
            f"{version / MANIFEST} has format {manifest.get('format')!r}; this version reads {FORMAT_VERSION}. "
            "Rebuild with `assistant index build --full`."
        )
    sizes = manifest.get("sizes", {})
    for name, digest in manifest["files"].items():
        path = version / name
        if not path.is_file() or (name in sizes and path.stat().st_size != sizes[name]) \
                or (verify and _sha256(path) != digest):
            raise IndexCorruptError(
                f"Index file {path} is missing or damaged ({'checksum' if verify else 'size'} mismatch). "
                "Rebuild with `assistant index build --full`."
            )
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
    store = FaissVectorStore.load(version, embeddings)
    bm25 = BM25Index.load(version)
    segmenter = _load_segmenter(version, manifest)
    try:
        raw_docs = json.loads((version / DOCUMENTS).read_text(encoding="utf-8"))
        documents = {d["id"]: IndexedDocument(**d) for d in raw_docs}
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise IndexCorruptError(
            f"{version / DOCUMENTS} is damaged ({type(exc).__name__}). Rebuild with `assistant index build --full`."
        ) from exc
    chunks = [_chunk_of(doc) for doc in store.documents]
    return LoadedIndex(version, manifest, store, bm25, documents, chunks, segmenter)


def _load_segmenter(version: Path, manifest: dict) -> Segmenter:
    """jieba with the index's own user words (none for an index built without them)."""
    if not (manifest.get("lexicon") or {}).get("words"):
        return default_segmenter()
    words = load_words(version)
    if words is None:
        raise IndexCorruptError(f"The learned words in {version} are damaged. "
                                "Rebuild with `assistant index build --full`.")
    return Segmenter(words)


def _chunk_of(doc: Document) -> Chunk:
    return Chunk.from_dict({**doc.metadata, "id": doc.id, "text": doc.page_content})


def _document_of(chunk: Chunk) -> Document:
    meta = chunk.as_dict()
    del meta["id"], meta["text"]
    return Document(page_content=chunk.text, metadata=meta, id=chunk.id)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
) -> BuildReport:
    """Bring the index in line with the corpus, embedding only new or changed files.

    `locked`: the caller (an add) already holds the build lock and its journal; otherwise an add that
    was killed before it committed is rolled back first, so its copied files are not indexed silently.
    """
    started = time.perf_counter()
    started_ns = time.time_ns()
    index_dir = Path(index_dir)
    stage = on_stage or (lambda _msg: None)
    with contextlib.nullcontext() if locked else build_lock(index_dir):
        if not locked:
            undo_add(corpus_dir, committed_sources(index_dir))
        _remove_stale_versions(index_dir)
        old_manifest, old_store, full_reason = _previous(index_dir, embeddings, chunker, full, user_words)
        full = full_reason is not None
        sources = scan_corpus(corpus_dir)
        old_sources = {} if full else old_manifest.get("sources", {})
        # taken before reading: an edit saved during the build is seen by the next one
        stats = {source.rel: source.path.stat() for source in sources}
        unchanged = _unchanged_by_stat(index_dir, sources, stats, old_sources, old_store)
        stage(f"reading {len(sources) - len(unchanged)} of {len(sources)} files (the rest unchanged by size and time)")
        processed: list[tuple[SourceFile, str, list[IndexedDocument], list[Chunk]]] = []
        for source in sources:
            if source.rel in unchanged:
                processed.append((source, old_sources[source.rel]["hash"], *unchanged[source.rel]))
                continue
            docs, chunks = process(source, chunker)
            processed.append((source, source.content_hash(), docs, chunks))
        reuse = {rel for rel, info in old_sources.items()
                 if any(s.rel == rel and h == info["hash"] and info.get("article_id") == s.article_id
                        for s, h, _, _ in processed)}
        new_rels = {s.rel for s, *_ in processed}
        removed = sorted(set(old_sources) - new_rels)
        added = sorted(rel for rel in new_rels if rel not in old_sources)
        changed = sorted(rel for rel in new_rels if rel in old_sources and rel not in reuse)
        if not full and not added and not changed and not removed and old_manifest:
            return _report(old_manifest, started, full=False, embedded=0, up_to_date=True,
                           version=current_version(index_dir).name)

        to_embed = [c for s, _, _, chunks in processed if s.rel not in reuse for c in chunks]
        stage(f"embedding {len(to_embed)} chunks with {embeddings.model_name}"
              + (f" (full rebuild: {full_reason})" if full_reason else ""))
        if to_embed:
            _ = embeddings.dimension  # load the model first, so the rate below is the embedding rate
        embed_started = time.perf_counter()
        new_vectors = embeddings.encode_documents([c.text for c in to_embed], show_progress=progress)
        embed_seconds = time.perf_counter() - embed_started
        vector_of = dict(zip((c.id for c in to_embed), new_vectors, strict=True))

        store = FaissVectorStore(embeddings, new_vectors.shape[1] if len(to_embed) else old_store.index.d)
        sources_info: dict[str, dict] = {}
        all_docs: list[IndexedDocument] = []
        for source, digest, docs, chunks in processed:
            ids = [c.id for c in chunks]
            if source.rel in reuse:
                vectors = old_store.vectors_for(ids)
                unk, total = old_sources[source.rel]["unk_tokens"], old_sources[source.rel]["tokens"]
            else:
                vectors = np.vstack([vector_of[i] for i in ids]) if ids else np.zeros((0, store.index.d), "float32")
                unk, total = embeddings.unknown_token_counts([c.text for c in chunks])
            store.add_vectors(vectors, [_document_of(c) for c in chunks])
            all_docs.extend(docs)
            stat = stats[source.rel]
            racy = stat.st_mtime_ns >= started_ns - RACY_NS  # modified as the build began: read it again next time
            sources_info[source.rel] = {"hash": digest, "doc_ids": [d.id for d in docs], "chunk_ids": ids,
                                        "unk_tokens": unk, "tokens": total, "article_id": source.article_id,
                                        "size": stat.st_size, "mtime_ns": -1 if racy else stat.st_mtime_ns}
        texts = [doc.page_content for doc in store.documents]
        live = None if full or old_store is None else current_version(index_dir)
        previous = load_words(live) if live else None  # the live version's learned words
        words = _user_words(texts, [c.text for c in to_embed], user_words, previous)
        known = {} if live is None else _known_tokens(live, old_store, old_manifest, previous, words)
        stage(f"building the BM25 index ({len(words)} words learned from the corpus, "
              f"{sum(t not in known for t in texts)} chunks tokenised)")
        segmenter = Segmenter(words)
        bm25 = BM25Index.build(texts, segmenter, known)
        tokens = sum(i["tokens"] for i in sources_info.values())
        manifest = {
            "format": FORMAT_VERSION,
            "built_at": _now(),
            "embedding": {
                "model": embeddings.model_name,
                "prompts": embeddings.prompts,
                "dimension": int(store.index.d),
                "normalized": True,
                "metric": "inner_product",
                "unknown_token_share": round(sum(i["unk_tokens"] for i in sources_info.values()) / tokens, 4)
                if tokens else 0.0,
            },
            "chunker": chunker.as_dict(),
            "matching": MATCHING_NORMALIZATION,
            "lexicon": {"version": LEXICON_VERSION, "words": len(words)},
            "pipeline": pipeline_fingerprint(user_words),
            "counts": {
                "documents": len(sources),
                "chunks": len(store),
                "references": sum(1 for d in all_docs if d.kind == "reference"),
            },
            "build_seconds": round(time.perf_counter() - started, 2),
            "sources": sources_info,
        }
        stage("writing the new index version")
        version = _write_version(index_dir, store, bm25, all_docs, manifest, words)
        _remove_stale_versions(index_dir)
        return _report(manifest, started, full=full, embedded=len(to_embed), version=version.name,
                       added=added, changed=changed, removed=removed, full_reason=full_reason,
                       passages_per_second=round(len(to_embed) / embed_seconds, 1)
                       if to_embed and embed_seconds > 0 else None)


def _unchanged_by_stat(index_dir: Path, sources: list[SourceFile], stats: dict[str, os.stat_result],
                       old_sources: dict, old_store: FaissVectorStore | None,
                       ) -> dict[str, tuple[list[IndexedDocument], list[Chunk]]]:
    """The documents and chunks of files whose size and modification time match the live index: not read again."""
    if old_store is None or not old_sources:
        return {}
    try:
        raw = json.loads((current_version(index_dir) / DOCUMENTS).read_text(encoding="utf-8"))
        old_docs = {d["id"]: IndexedDocument(**d) for d in raw}
    except (OSError, ValueError, TypeError, KeyError, IndexCorruptError):
        return {}
    by_id = {doc.id: doc for doc in old_store.documents}
    out = {}
    for source in sources:
        info = old_sources.get(source.rel)
        if not info or "mtime_ns" not in info:
            continue
        stat = stats[source.rel]
        if stat.st_size != info["size"] or stat.st_mtime_ns != info["mtime_ns"] \
                or info.get("article_id") != source.article_id:
            continue
        if all(i in old_docs for i in info["doc_ids"]) and all(i in by_id for i in info["chunk_ids"]):
            out[source.rel] = ([old_docs[i] for i in info["doc_ids"]], [_chunk_of(by_id[i]) for i in info["chunk_ids"]])
    return out


def _known_tokens(live: Path, old_store: FaissVectorStore, old_manifest: dict, previous: list[str] | None,
                  words: list[str]) -> dict[str, list[str]]:
    """Text -> BM25 tokens of the live version's chunks, minus chunks a newly learned word would cut otherwise."""
    tokens = BM25Index.load_tokens(live)
    if tokens is None or len(tokens) != len(old_store.documents):
        return {}
    if (old_manifest.get("lexicon") or {}).get("words", 0) and not previous:
        return {}  # its words are unreadable: the saved tokens cannot be trusted
    before = set(previous or ())
    if before - set(words):
        return {}  # words were dropped (user words turned off): every text may cut differently
    added = [w for w in words if w not in before]
    known = {}
    for doc, toks in zip(old_store.documents, tokens, strict=True):
        text = doc.page_content
        if added and any(w in matching_form(text) for w in added):
            continue  # a new word may cut this text differently now
        known[text] = toks
    return known


def _user_words(texts: list[str], new_texts: list[str], enabled: bool, previous: list[str] | None) -> list[str]:
    """The corpus's words for jieba: the live version's words (`previous`) plus those of the new and changed
    files, so an add costs what it adds; learned from everything (a sample past MAX_LEARN_CHARS) when there
    are none yet (a full build, or they were off)."""
    if not enabled:
        return []
    if not previous:
        return learn_words(sample_texts(texts, MAX_LEARN_CHARS))
    known = set(previous)
    return previous + [w for w in (learn_words(new_texts) if new_texts else []) if w not in known]


def pipeline_fingerprint(user_words: bool) -> dict:
    """What turns text into tokens besides the chunker and the matching rule; a change re-reads everything."""
    import jieba

    from .lexical import STOPWORDS, SYNONYM_GROUPS

    words = "\n".join(sorted(STOPWORDS)) + "\n" + "\n".join(SYNONYM_GROUPS)
    return {"jieba": jieba.__version__, "lexicon": LEXICON_VERSION, "user_words": bool(user_words),
            "lexical": hashlib.sha256(words.encode("utf-8")).hexdigest()[:16]}


def _previous(index_dir: Path, embeddings, chunker: ChunkerSettings, full: bool, user_words: bool = True):
    """The live index's manifest and store, and why a full build is needed (None if it is not)."""
    try:
        manifest = read_manifest(index_dir)
    except IndexNotFoundError:
        return {}, None, "no index yet"
    except IndexCorruptError:
        return {}, None, "the previous index is damaged"
    if full:
        return manifest, None, "--full"
    if manifest.get("format") != FORMAT_VERSION:
        return manifest, None, "index format changed"
    if manifest["embedding"]["model"] != embeddings.model_name:
        return manifest, None, f"embedding model changed from {manifest['embedding']['model']} to {embeddings.model_name}"
    if manifest["embedding"].get("prompts", {}) != embeddings.prompts:
        return manifest, None, "the embedding model's query/passage prefixes changed"
    if manifest.get("chunker") != chunker.as_dict():
        return manifest, None, "chunker settings changed"
    if manifest.get("matching") != MATCHING_NORMALIZATION:
        return manifest, None, f"text matching changed to {MATCHING_NORMALIZATION}"
    if manifest.get("pipeline") != pipeline_fingerprint(user_words):
        return manifest, None, "the tokeniser, its word lists or the user-dictionary setting changed"
    try:
        store = FaissVectorStore.load(current_version(index_dir), embeddings)
    except IndexCorruptError:
        return {}, None, "the previous index is damaged"
    return manifest, store, None


def _write_version(index_dir: Path, store: FaissVectorStore, bm25: BM25Index,
                   documents: list[IndexedDocument], manifest: dict, words: list[str]) -> Path:
    name = f"v-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
    tmp = index_dir / f".tmp-{name}"
    pointer_tmp = index_dir / f".{CURRENT}.{name}"
    try:
        version = _write_files(index_dir, name, tmp, pointer_tmp, store, bm25, documents, manifest, words)
    except (OSError, RuntimeError) as exc:  # faiss reports a full disk as RuntimeError
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(index_dir / name, ignore_errors=True)
        with contextlib.suppress(OSError):
            pointer_tmp.unlink(missing_ok=True)
        reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0][:200]
        raise IndexWriteError(f"Cannot write the index in {index_dir}: {reason}. Make the folder writable or "
                              "free disk space, then build again; the previous index is unchanged.") from None
    pointer = index_dir / CURRENT
    if pointer.is_dir() and not pointer.is_symlink():
        shutil.rmtree(pointer)  # damage (a folder where the pointer belongs); under the build lock
    os.replace(pointer_tmp, pointer)  # the atomic switch: from here on the new version is live
    with contextlib.suppress(OSError):
        _fsync_dir(index_dir)
    return version


def _write_files(index_dir: Path, name: str, tmp: Path, pointer_tmp: Path, store: FaissVectorStore, bm25: BM25Index,
                 documents: list[IndexedDocument], manifest: dict, words: list[str]) -> Path:
    tmp.mkdir(parents=True)
    store.save(tmp)
    bm25.save(tmp)
    bm25.save_tokens(tmp)
    save_words(tmp, words)
    (tmp / DOCUMENTS).write_text(json.dumps([d.as_dict() for d in documents], ensure_ascii=False, indent=1),
                                 encoding="utf-8")
    written = [p for p in sorted(tmp.rglob("*")) if p.is_file()]
    manifest["files"] = {p.relative_to(tmp).as_posix(): _sha256(p) for p in written}
    manifest["sizes"] = {p.relative_to(tmp).as_posix(): p.stat().st_size for p in written}
    (tmp / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")
    _fsync_tree(tmp)
    version = index_dir / name
    os.replace(tmp, version)
    pointer_tmp.write_text(name + "\n", encoding="utf-8")
    _fsync_file(pointer_tmp)
    return version


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


def _report(manifest: dict, started: float, **kwargs) -> BuildReport:
    counts, emb = manifest["counts"], manifest["embedding"]
    embedded = kwargs.pop("embedded")
    return BuildReport(
        documents=counts["documents"], chunks=counts["chunks"], references=counts["references"],
        model=emb["model"], dimension=emb["dimension"], unknown_token_share=emb["unknown_token_share"],
        seconds=round(time.perf_counter() - started, 2), embedded=embedded,
        reused=counts["chunks"] - embedded, **kwargs,
    )
