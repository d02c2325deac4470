"""Adding, replacing and removing articles: the corpus folder and the index changed together, in one journaled
commit (a failure or a kill before the commit puts the corpus back). The CLI calls these directly, the page and the
HTTP API through `Assistant.add_files` / `Assistant.remove_articles`; they import no retrieval or answering code,
so `assistant index add` starts in what loading the embedder takes."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

from .chunking import ChunkerSettings
from .config import Settings
from .corpus import ARTICLES, REFERENCES, SourceFile, begin_add, begin_remove, copy_in, end_add, process, scan, undo_add
from .embeddings import Embedder
from .errors import AssistantError, CorpusError, CorpusWriteError, FileError, UnknownNameError
from .indexing import BuildReport, build_index, build_lock, committed_sources, load_index
from .loaders import check_type, read_file
from .names import article_name, place, printable, resolve_articles


def add_files(paths: Sequence[str | Path], settings: Settings, embeddings: Embedder, replace: bool = False,
              progress: bool = False, names: Sequence[str] | None = None) -> BuildReport:
    """Copy articles into the corpus and update the index; the corpus is restored if the build fails.

    Args:
        paths: the files to add.
        names: the names they were given (uploads), when not their own; `names.article_name` makes each an id.
        replace: update an article of the same name with other content (otherwise that file is refused).

    Returns:
        The build's report; `refused` lists the given files not added, with the reason (the others are added),
        `renamed` those stored under another name than given. CorpusError when none can be added.
    """
    if not paths:
        raise CorpusError("No files given. Name one or more .txt, .md or .html articles.")
    given = [str(n) for n in names] if names is not None else [str(p) for p in paths]
    refused: list[dict] = []
    candidates: list[tuple[Path, str]] = []
    for path, name in zip((Path(p) for p in paths), given, strict=True):
        try:
            check_type(name)
            data = read_file(path)
            process(SourceFile(path, article_name(name), article_name(name)), ChunkerSettings(), data)
        except FileError as exc:
            refused.append({"file": printable(name), "reason": exc.reason})
            continue
        candidates.append((path, name))
    corpus_dir = Path(settings.corpus_dir)
    target_dir = corpus_dir / ARTICLES
    index_dir = Path(settings.index_dir)
    with build_lock(index_dir):
        undo_add(corpus_dir, committed_sources(index_dir))  # an earlier add that was killed
        placements, clashes = place(candidates, target_dir, replace)  # under the lock: no add renames meanwhile
        refused += [{"file": printable(c.given), "reason": c.reason} for c in clashes]
        if not placements:
            raise CorpusError(_nothing_added(refused))
        copies = [(p.source, p.target) for p in placements if not p.in_place]
        try:
            target_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CorpusWriteError(f"Cannot create {printable(str(target_dir))}: {exc.strerror or exc}. Make the "
                                   "folder writable, then add the files again.") from None
        begin_add(corpus_dir, copies)  # a journal first: a kill from here on is rolled back at the next start
        try:
            for source, target in copies:
                copy_in(source, target)
            report = build_index(corpus_dir, settings.index_dir, embeddings, progress=progress,
                                 user_words=settings.user_words, locked=True, backend=settings.index_backend)
        except BaseException:
            undo_add(corpus_dir, committed_sources(index_dir), earlier=False)
            raise
        end_add(corpus_dir)
    copied = {f"{ARTICLES}/{p.target.name}": p.given for p in placements}
    report.refused = refused + [{"file": printable(copied[s["file"]]), "reason": s["reason"]} for s in report.skipped
                                if s["file"] in copied]  # read well before the copy, not after: changed meanwhile?
    report.renamed = [{"file": printable(p.given), "stored": printable(p.target.name)} for p in placements
                      if p.target.name != Path(p.given).name]
    return report


def remove_articles(names: Sequence[str], settings: Settings, embeddings: Embedder) -> BuildReport:
    """Take articles out of the corpus and the index in one commit: each article file and its references' full
    texts are journaled, deleted and the index updated; a failure (or a kill) before the commit puts them back.

    Args:
        names: article ids (file names), ids without extension, or titles.

    Returns:
        The build's report; `removed` lists the corpus paths taken out. Removing the last article leaves a valid
        empty index. UnknownNameError (nothing removed) when a name means no article.
    """
    if isinstance(names, str):
        names = [names]
    if not names:
        raise CorpusError("No article given. Name one or more articles (`assistant index status` lists them).")
    corpus_dir, index_dir = Path(settings.corpus_dir), Path(settings.index_dir)
    with build_lock(index_dir):
        undo_add(corpus_dir, committed_sources(index_dir))  # an earlier add or removal that was killed
        sources, skipped = scan(corpus_dir, allow_empty=True)
        on_disk = {s.article_id for s in sources if s.ref_number is None}
        on_disk |= {Path(s.file).name for s in skipped if Path(s.file).parent.name == ARTICLES}
        indexed = set(committed_sources(index_dir))
        known = sorted(on_disk | {Path(rel).name for rel in indexed if rel.startswith(f"{ARTICLES}/")})
        titles = {}
        with contextlib.suppress(AssistantError):  # no index yet, or one of another model: names are enough
            titles = {a["id"]: a["title"] for a in load_index(index_dir, embeddings, check_model=False).articles()}
        ids, unknown = resolve_articles(names, [{"id": i, "title": titles.get(i)} for i in known])
        if unknown:
            raise UnknownNameError(_sentence("; ".join(unknown)) + ". Nothing was removed; `assistant index "
                                   "status` lists the articles.")
        files = [corpus_dir / ARTICLES / i for i in ids if i in on_disk]
        files += [s.path for s in sources if s.ref_number is not None and s.article_id in ids]
        begin_remove(corpus_dir, files)  # a journal first: a kill from here on is rolled back at the next start
        try:
            for path in files:
                path.unlink(missing_ok=True)
            report = build_index(corpus_dir, index_dir, embeddings, user_words=settings.user_words, locked=True,
                                 backend=settings.index_backend, allow_empty=True)
        except BaseException:
            undo_add(corpus_dir, committed_sources(index_dir), earlier=False)
            raise
        end_add(corpus_dir)
        for folder in {p.parent for p in files if p.parent.parent.name == REFERENCES}:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty: files of other kinds stay
    return report


def _nothing_added(refused: list[dict]) -> str:
    if len(refused) == 1:
        return f"{refused[0]['file']}: {refused[0]['reason']}"
    listed = "; ".join(f"{r['file']}: {r['reason']}" for r in refused[:5])
    more = f" (and {len(refused) - 5} more)" if len(refused) > 5 else ""
    return f"None of the {len(refused)} files could be added. {listed}{more}"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]
