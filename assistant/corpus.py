"""The corpus on disk: which files there are, and what documents and chunks each one yields.

Layout:
    corpus/articles/<name>.{txt,md,html}          an article; its file name (extension included) is its id
    corpus/references/<name>/<n>.{txt,md,html}    the full text of reference [n] of that article
                                                  (the folder may omit the extension when that is unambiguous)
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import logging
import os
import secrets
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .chunking import Chunk, ChunkerSettings, chunk_document, chunk_whole
from .cleaning import clean_article
from .errors import CorpusError, CorpusWriteError, FileError
from .loaders import SUPPORTED_EXTENSIONS, load_file, read_file
from .names import key, printable

log = logging.getLogger(__name__)
ARTICLES = "articles"
REFERENCES = "references"
# What one file may cost. The largest real article measured has 12,121 characters and 331 chunks (a DRCD Wikipedia
# article, all its paragraphs; the seed has 4,787 and 88): the caps are 8-9 times that. Embedding costs about the
# same per character whatever the chunk shape (sentences or 400-character pieces: ~440 characters/s each on a
# 2-core machine under load; the audit's 4.9 MB file, ~1.6 million characters in 545 s, ~3,000), so a file at the
# caps holds the build lock for about half a minute on the audit's machine instead of nine.
MAX_FILE_CHARS = 100_000  # of cleaned text
MAX_FILE_CHUNKS = 3_000  # a file of many short lines (each a paragraph) reaches this before the characters


@dataclass(frozen=True)
class SourceFile:
    path: Path
    rel: str  # path relative to the corpus directory, the key in the manifest
    article_id: str
    ref_number: int | None = None  # set for the full text of a reference

    def read(self) -> bytes:
        """The file's bytes; FileError (naming it, with the fix) when it is too big, unreadable or gone."""
        return read_file(self.path)

    def content_hash(self) -> str:
        return hashlib.sha256(self.read()).hexdigest()


@dataclass(frozen=True)
class Skipped:
    """A corpus file a build could not index: `file` its corpus path (or the name it was given), `reason` what is
    wrong and what to do."""

    file: str
    reason: str

    def as_dict(self) -> dict:
        return {"file": self.file, "reason": self.reason}


@dataclass
class IndexedDocument:
    id: str
    kind: str  # article, metadata, reference, reference_text
    title: str
    text: str
    source: str
    parent: str | None = None
    author: str | None = None
    editor: str | None = None
    source_url: str | None = None
    references: list[dict] = field(default_factory=list)  # for articles: number, title, publisher
    ref_number: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def scan_corpus(corpus_dir: Path) -> list[SourceFile]:
    """Every usable file of the corpus, sorted; unsupported files and clashing names are skipped with a warning."""
    sources, skipped = scan(corpus_dir)
    for item in skipped:
        log.warning("skipping %s: %s", printable(item.file), item.reason)
    return sources


def scan(corpus_dir: Path, allow_empty: bool = False) -> tuple[list[SourceFile], list[Skipped]]:
    """Every usable file of the corpus, sorted, and the article files skipped for their names.

    A name that is not valid UTF-8, or that differs from an earlier one only in case or Unicode form (two articles
    that would look the same), is skipped; CorpusError when no article is left (unless `allow_empty`: a removal
    of the last article).
    """
    corpus_dir = Path(corpus_dir)
    if not corpus_dir.is_dir():
        raise CorpusError(
            f"Corpus directory {printable(str(corpus_dir))} does not exist. Create it with articles in "
            f"{printable(str(corpus_dir / ARTICLES))}/ or pass --corpus DIR."
        )
    sources, skipped, seen = [], [], {}
    root = corpus_dir.resolve()
    for path in sorted((corpus_dir / ARTICLES).glob("*")):
        if _usable(path, root):
            rel = path.relative_to(corpus_dir).as_posix()
            if _undecodable(path.name):
                skipped.append(Skipped(rel, "the file name is not valid UTF-8. Rename the file."))
            elif key(path.name) in seen:
                skipped.append(Skipped(rel, f"looks the same as {printable(seen[key(path.name)])} (the names differ "
                                            "only in case or Unicode form). Rename or remove one of them."))
            else:
                seen[key(path.name)] = path.name
                sources.append(SourceFile(path, rel, path.name))
    names = {s.article_id for s in sources}
    stems: dict[str, list[str]] = {}
    for name in names:
        stems.setdefault(Path(name).stem, []).append(name)
    for path in sorted((corpus_dir / REFERENCES).glob("*/*")):
        if _usable(path, root):
            if not path.stem.isdigit():
                log.warning("skipping %s: reference files are named by number, e.g. 1.md", printable(str(path)))
                continue
            folder = path.parent.name
            parent = folder if folder in names else (stems.get(folder, [None])[0] if len(stems.get(folder, [])) == 1
                                                     else None)
            if parent is None:
                log.warning("skipping %s: no single article named %s in %s/", printable(str(path)), printable(folder),
                            ARTICLES)
                continue
            sources.append(SourceFile(path, path.relative_to(corpus_dir).as_posix(), parent, int(path.stem)))
    if not allow_empty and not any(s.ref_number is None for s in sources):
        listed = "".join(f" {printable(s.file)}: {s.reason}" for s in skipped[:5])
        raise CorpusError(
            f"No articles in {printable(str(corpus_dir / ARTICLES))}/. Add .txt, .md or .html files there "
            f"(or with `assistant index add FILE`).{listed}"
        )
    return sources, skipped


def _undecodable(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _usable(path: Path, root: Path) -> bool:
    """A supported, visible file that resolves inside the corpus folder `root` (already resolved)."""
    if path.name.startswith(".") or not path.is_file():
        return False
    if path.is_symlink() and not path.resolve().is_relative_to(root) or not path.parent.resolve().is_relative_to(root):
        log.warning("skipping %s: it links to %s, outside the corpus folder", printable(str(path)),
                    printable(str(path.resolve())))
        return False
    if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
        log.warning("skipping %s: unsupported file type (use %s)", printable(str(path)), ", ".join(SUPPORTED_EXTENSIONS))
        return False
    return True


def process(source: SourceFile, chunker: ChunkerSettings,
            data: bytes | None = None) -> tuple[list[IndexedDocument], list[Chunk]]:
    """Load, clean and chunk one source file (its bytes, when already read) into its documents and chunks.

    Raises FileError, naming the file and the fix, for anything wrong with this one file.
    """
    loaded = load_file(source.path, data)
    if source.ref_number is not None:
        doc_id = f"{source.article_id}#ref-{source.ref_number}-text"
        clean = clean_article(loaded.text, doc_id, loaded.title, loaded.author)
        if not clean.paragraphs:
            raise FileError(source.path, "no text left after cleaning. Check the file's content.")
        chunks = _bounded(source, clean.text, chunk_document(clean, chunker))
        for chunk in chunks:
            chunk.citations = [source.ref_number]
        doc = IndexedDocument(doc_id, "reference_text", clean.title, clean.text, source.rel,
                              parent=source.article_id, ref_number=source.ref_number)
        return [doc], chunks

    clean = clean_article(loaded.text, source.article_id, loaded.title, loaded.author)
    if not clean.paragraphs:
        raise FileError(source.path, "no article text left after removing boilerplate (comment lists, site notices, "
                                     "editor lines). Check that the file holds the article itself.")
    chunks = _bounded(source, clean.text, chunk_document(clean, chunker))
    refs = [{"number": r.number, "title": r.title, "publisher": r.publisher} for r in clean.references]
    article = IndexedDocument(clean.doc_id, "article", clean.title, clean.text, source.rel,
                              author=clean.author, editor=clean.editor, source_url=clean.source_url,
                              references=refs)
    meta_id = f"{clean.doc_id}#meta"
    docs = [article, IndexedDocument(meta_id, "metadata", clean.title, clean.metadata_text, source.rel,
                                     parent=clean.doc_id)]
    chunks.append(chunk_whole(meta_id, clean.metadata_text, "metadata"))
    for ref in clean.references:
        ref_id = f"{clean.doc_id}#ref-{ref.number}"
        text = f"参考资料{ref.text}"
        docs.append(IndexedDocument(ref_id, "reference", f"参考资料[{ref.number}] {ref.title}", text,
                                    source.rel, parent=clean.doc_id, ref_number=ref.number))
        chunks.append(chunk_whole(ref_id, text, "reference", [ref.number]))
    return docs, chunks


def _bounded(source: SourceFile, text: str, chunks: list[Chunk]) -> list[Chunk]:
    """The chunks, unless the file is past what one article costs (then FileError: embedding it would hold the
    build lock for minutes)."""
    if len(text) > MAX_FILE_CHARS or len(chunks) > MAX_FILE_CHUNKS:
        raise FileError(source.path, f"{len(text):,} characters in {len(chunks):,} passages is more than one article "
                                     f"(the limit is {MAX_FILE_CHARS:,} characters and {MAX_FILE_CHUNKS:,} passages "
                                     "a file). Split it into several files, e.g. one a chapter.")
    return chunks


# --- adding files: a journal so that a killed `index add` leaves the corpus as it was -------------

PENDING = ".pending-add"  # in the corpus folder: the files an unfinished add copied (or removal deleted), and what they held


def begin_add(corpus_dir: Path, plans: list[tuple[Path, Path]]) -> None:
    """Record (before copying) which corpus files an add will write and keep what they held.

    What a file held is kept as a hard link (no disk space needed), since a copy replaces the file rather than
    writing into it. A failure (a full disk) removes the journal and raises CorpusWriteError.
    """
    journal = Path(corpus_dir) / PENDING
    shutil.rmtree(journal, ignore_errors=True)
    try:
        journal.mkdir(parents=True)
        entries = []
        for n, (source, target) in enumerate(plans):
            backup = None
            if target.exists():
                backup = f"{n}.bak"
                try:
                    os.link(target, journal / backup)
                except OSError:  # a file system without hard links
                    shutil.copyfile(target, journal / backup)
            entries.append({"target": target.relative_to(corpus_dir).as_posix(), "backup": backup,
                            "hash": hashlib.sha256(source.read_bytes()).hexdigest()})
        tmp = journal / "journal.json.tmp"
        tmp.write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, journal / "journal.json")
    except OSError as exc:
        shutil.rmtree(journal, ignore_errors=True)
        raise _write_error(corpus_dir, exc) from None


def begin_remove(corpus_dir: Path, targets: list[Path]) -> None:
    """Record (before deleting) which corpus files a removal deletes, each kept as a hard link in the journal, so that
    a removal killed before its index commit puts them back (`undo_add`); CorpusWriteError when that cannot be
    written."""
    journal = Path(corpus_dir) / PENDING
    shutil.rmtree(journal, ignore_errors=True)
    try:
        journal.mkdir(parents=True)
        entries = []
        for n, target in enumerate(targets):
            backup = f"{n}.bak"
            try:
                os.link(target, journal / backup)
            except OSError:  # a file system without hard links
                shutil.copyfile(target, journal / backup)
            entries.append({"target": target.relative_to(corpus_dir).as_posix(), "backup": backup, "remove": True})
        tmp = journal / "journal.json.tmp"
        tmp.write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, journal / "journal.json")
    except OSError as exc:
        shutil.rmtree(journal, ignore_errors=True)
        raise CorpusWriteError(f"Cannot remove articles from {printable(str(corpus_dir))}: {exc.strerror or exc}. "
                               "Make the folder writable, then remove them again. Nothing was removed.") from None


def copy_in(source: Path, target: Path) -> None:
    """Copy an added file to its place in the corpus: written beside it and renamed over it, so that a failure
    (a full disk) leaves the old file whole and no partial one; CorpusWriteError then."""
    tmp = target.with_name(f".{secrets.token_hex(4)}.adding")
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise _write_error(target.parent.parent, exc) from None


def _write_error(corpus_dir: Path, exc: OSError) -> CorpusWriteError:
    if exc.errno == errno.ENOSPC:
        why = "the disk is full. Free some space"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        why = f"{exc.strerror.lower()}. Make the folder writable"
    else:
        why = f"{exc.strerror or exc}. Check the folder"
    return CorpusWriteError(f"Cannot copy the files into {printable(str(corpus_dir))}: {why}, then add them again. "
                            "Nothing was added; the corpus and the index are unchanged.")


def end_add(corpus_dir: Path) -> None:
    shutil.rmtree(Path(corpus_dir) / PENDING, ignore_errors=True)
    for stale in (Path(corpus_dir) / ARTICLES).glob(".*.adding"):  # a copy killed half-way
        with contextlib.suppress(OSError):
            stale.unlink()


def undo_add(corpus_dir: Path, committed: dict[str, str], earlier: bool = True) -> list[str]:
    """Roll back the files of an add that did not commit; `committed` maps index sources to their hashes.

    Files the live index already holds with the copied content stay (that add did commit). Returns the
    corpus paths restored or removed; `earlier`: an add killed before this process started (it is logged).
    """
    journal = Path(corpus_dir) / PENDING
    try:
        entries = json.loads((journal / "journal.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        end_add(corpus_dir)  # killed before the journal was complete: nothing was copied yet
        return []
    undone = []
    for entry in entries:
        target = Path(corpus_dir) / entry["target"]
        if entry.get("remove"):  # a removal: done once the live index no longer holds the file
            if entry["target"] not in committed:
                continue
        elif committed.get(entry["target"]) == entry["hash"]:
            continue
        if entry["backup"]:
            os.replace(journal / entry["backup"], target)  # a rename: needs no space on a full disk
        else:
            target.unlink(missing_ok=True)
        undone.append(entry["target"])
    end_add(corpus_dir)
    if undone and earlier:
        log.warning("an earlier `index add` or `index remove` did not finish; restored %s", ", ".join(printable(u) for u in undone))
    return undone


def learn_words_from_files(sources: Sequence[SourceFile], chunker: ChunkerSettings) -> list[str]:
    """The words `learn_words` finds in an even sample of the files' chunk texts: every k-th chunk, with k such
    that about MAX_LEARN_CHARS characters remain. The files are read twice (a first pass counts characters), so
    the corpus's texts are never all held; a full build runs this in a child process for a large corpus."""
    from .lexicon import MAX_LEARN_CHARS, learn_words

    def texts() -> Iterator[str]:
        for source in sources:
            try:
                chunks = process(source, chunker)[1]
            except FileError:  # the build lists it as skipped when it reads it again
                continue
            for chunk in chunks:
                yield chunk.text

    total = sum(len(t) for t in texts())
    step = 1 if total <= MAX_LEARN_CHARS else -(-total // MAX_LEARN_CHARS)
    return learn_words(itertools.islice(texts(), 0, None, step))
