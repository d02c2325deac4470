"""The corpus on disk: which files there are, and what documents and chunks each one yields.

Layout:
    corpus/articles/<name>.{txt,md,html}          an article; its file name (extension included) is its id
    corpus/references/<name>/<n>.{txt,md,html}    the full text of reference [n] of that article
                                                  (the folder may omit the extension when that is unambiguous)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .chunking import Chunk, ChunkerSettings, chunk_document, chunk_whole
from .cleaning import clean_article
from .errors import CorpusError
from .loaders import SUPPORTED_EXTENSIONS, load_file

log = logging.getLogger(__name__)
ARTICLES = "articles"
REFERENCES = "references"


@dataclass(frozen=True)
class SourceFile:
    path: Path
    rel: str  # path relative to the corpus directory, the key in the manifest
    article_id: str
    ref_number: int | None = None  # set for the full text of a reference

    def content_hash(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


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
    """Every usable file of the corpus, sorted; unsupported files are skipped with a warning."""
    corpus_dir = Path(corpus_dir)
    if not corpus_dir.is_dir():
        raise CorpusError(
            f"Corpus directory {corpus_dir} does not exist. Create it with articles in {corpus_dir / ARTICLES}/ "
            "or pass --corpus DIR."
        )
    sources = []
    root = corpus_dir.resolve()
    for path in sorted((corpus_dir / ARTICLES).glob("*")):
        if _usable(path, root):
            sources.append(SourceFile(path, path.relative_to(corpus_dir).as_posix(), path.name))
    names = {s.article_id for s in sources}
    stems: dict[str, list[str]] = {}
    for name in names:
        stems.setdefault(Path(name).stem, []).append(name)
    for path in sorted((corpus_dir / REFERENCES).glob("*/*")):
        if _usable(path, root):
            if not path.stem.isdigit():
                log.warning("skipping %s: reference files are named by number, e.g. 1.md", path)
                continue
            folder = path.parent.name
            parent = folder if folder in names else (stems.get(folder, [None])[0] if len(stems.get(folder, [])) == 1
                                                     else None)
            if parent is None:
                log.warning("skipping %s: no single article named %s in %s/", path, folder, ARTICLES)
                continue
            sources.append(SourceFile(path, path.relative_to(corpus_dir).as_posix(), parent, int(path.stem)))
    if not any(s.ref_number is None for s in sources):
        raise CorpusError(
            f"No articles in {corpus_dir / ARTICLES}/. Add .txt, .md or .html files there "
            "(or with `assistant index add FILE`)."
        )
    return sources


def _usable(path: Path, root: Path) -> bool:
    """A supported, visible file that resolves inside the corpus folder `root` (already resolved)."""
    if path.name.startswith(".") or not path.is_file():
        return False
    if path.is_symlink() and not path.resolve().is_relative_to(root) or not path.parent.resolve().is_relative_to(root):
        log.warning("skipping %s: it links to %s, outside the corpus folder", path, path.resolve())
        return False
    if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
        log.warning("skipping %s: unsupported file type (use %s)", path, ", ".join(SUPPORTED_EXTENSIONS))
        return False
    return True


def process(source: SourceFile, chunker: ChunkerSettings) -> tuple[list[IndexedDocument], list[Chunk]]:
    """Load, clean and chunk one source file into its documents and chunks."""
    loaded = load_file(source.path)
    if source.ref_number is not None:
        doc_id = f"{source.article_id}#ref-{source.ref_number}-text"
        clean = clean_article(loaded.text, doc_id, loaded.title)
        if not clean.paragraphs:
            raise CorpusError(f"{source.path}: no text left after cleaning. Check the file's content.")
        chunks = chunk_document(clean, chunker)
        for chunk in chunks:
            chunk.citations = [source.ref_number]
        doc = IndexedDocument(doc_id, "reference_text", clean.title, clean.text, source.rel,
                              parent=source.article_id, ref_number=source.ref_number)
        return [doc], chunks

    clean = clean_article(loaded.text, source.article_id, loaded.title)
    if not clean.paragraphs:
        raise CorpusError(f"{source.path}: no article text left after removing boilerplate. Check the file.")
    refs = [{"number": r.number, "title": r.title, "publisher": r.publisher} for r in clean.references]
    article = IndexedDocument(clean.doc_id, "article", clean.title, clean.text, source.rel,
                              author=clean.author, editor=clean.editor, source_url=clean.source_url,
                              references=refs)
    meta_id = f"{clean.doc_id}#meta"
    docs = [article, IndexedDocument(meta_id, "metadata", clean.title, clean.metadata_text, source.rel,
                                     parent=clean.doc_id)]
    chunks = chunk_document(clean, chunker)
    chunks.append(chunk_whole(meta_id, clean.metadata_text, "metadata"))
    for ref in clean.references:
        ref_id = f"{clean.doc_id}#ref-{ref.number}"
        text = f"参考资料{ref.text}"
        docs.append(IndexedDocument(ref_id, "reference", f"参考资料[{ref.number}] {ref.title}", text,
                                    source.rel, parent=clean.doc_id, ref_number=ref.number))
        chunks.append(chunk_whole(ref_id, text, "reference", [ref.number]))
    return docs, chunks


# --- adding files: a journal so that a killed `index add` leaves the corpus as it was -------------

PENDING = ".pending-add"  # in the corpus folder: the files an unfinished add copied, and what they replaced


def begin_add(corpus_dir: Path, plans: list[tuple[Path, Path]]) -> None:
    """Record (before copying) which corpus files an add will write and keep what they held."""
    journal = Path(corpus_dir) / PENDING
    shutil.rmtree(journal, ignore_errors=True)
    journal.mkdir(parents=True)
    entries = []
    for n, (source, target) in enumerate(plans):
        backup = None
        if target.exists():
            backup = f"{n}.bak"
            shutil.copyfile(target, journal / backup)
        entries.append({"target": target.relative_to(corpus_dir).as_posix(), "backup": backup,
                        "hash": hashlib.sha256(source.read_bytes()).hexdigest()})
    tmp = journal / "journal.json.tmp"
    tmp.write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, journal / "journal.json")


def end_add(corpus_dir: Path) -> None:
    shutil.rmtree(Path(corpus_dir) / PENDING, ignore_errors=True)


def undo_add(corpus_dir: Path, committed: dict[str, str]) -> list[str]:
    """Roll back the files of an add that did not commit; `committed` maps index sources to their hashes.

    Files the live index already holds with the copied content stay (that add did commit). Returns the
    corpus paths restored or removed.
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
        if committed.get(entry["target"]) == entry["hash"]:
            continue
        if entry["backup"]:
            shutil.copyfile(journal / entry["backup"], target)
        else:
            target.unlink(missing_ok=True)
        undone.append(entry["target"])
    end_add(corpus_dir)
    if undone:
        log.warning("an earlier `index add` did not finish; restored %s", ", ".join(undone))
    return undone
