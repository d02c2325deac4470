"""The id an added file gets in the corpus: one rule for `index add`, the page's uploads and the HTTP API.

An article's id is its file name in corpus/articles/. A given name is NFC-normalised, stripped of characters that
are awkward in a file name or a shell (they become "-"), and shortened to fit any file system; two files of one
request never get one id, and a name that differs from a corpus article's only in case or Unicode form is refused
rather than made into a second article that looks the same.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# eCryptfs (encrypted home folders) allows 143 bytes a file name, other Linux file systems 255: a stem of at most
# 120 bytes (40 Chinese characters) leaves room for a "-NN" suffix and the longest extension, ".markdown".
MAX_STEM_BYTES = 120
_UNSAFE = re.compile(r"[^\w\u3400-\u9fff.-]+")
_HIDDEN = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}  # controls, format marks (bidi overrides), lone surrogates


def printable(text: str) -> str:
    """`text` with control characters, terminal escapes, bidi overrides and lone surrogates shown as escapes."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch == " " or unicodedata.category(ch) not in _HIDDEN and ch.isprintable():
            out.append(ch)
        else:
            out.append(ascii(ch)[1:-1])  # '\x1b', '\n', '\u202e', '\udcff'
    return "".join(out)


def key(name: str) -> str:
    """What two names share when they look the same: NFC-normalised and case-folded."""
    return unicodedata.normalize("NFC", name).casefold()


def article_name(given: str) -> str:
    """The corpus file name for a file given as `given` (any path, any characters), extension kept in lower case.

    Deterministic, so adding the same name again (with --replace) finds the same article: a name with nothing
    usable left (only emoji) becomes article-<hash>, a long one its first 120 bytes and a hash of the whole.
    """
    name = unicodedata.normalize("NFC", given.replace("\\", "/").rsplit("/", 1)[-1])
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    safe = _UNSAFE.sub("-", stem).strip("-.")
    if not safe:
        safe = f"article-{digest}"
    elif len(safe.encode("utf-8")) > MAX_STEM_BYTES:
        cut = safe.encode("utf-8")[: MAX_STEM_BYTES - len(digest) - 1].decode("utf-8", "ignore").rstrip("-.")
        safe = f"{cut}-{digest}"
    ext = _UNSAFE.sub("", ext).lower()
    return f"{safe}.{ext}" if ext else safe


@dataclass(frozen=True)
class Placement:
    """Where one given file goes: `target` in corpus/articles (the file itself when it is already there)."""

    source: Path
    given: str
    target: Path

    @property
    def in_place(self) -> bool:
        return self.source.resolve() == self.target.resolve()


@dataclass(frozen=True)
class Refusal:
    """A given file that is not added: `reason` says why and what to do (without the file's name)."""

    given: str
    reason: str


def place(files: Sequence[tuple[Path, str]], articles: Path, replace: bool = False) -> tuple[list[Placement], list[Refusal]]:
    """Where each (path, given name) goes in the `articles` folder, and the files refused with the clash named.

    A file already in the folder is indexed where it is. Two files of the request that would get one id: the same
    content is added once, other content gets a "-2", "-3" suffix. A name held in the folder by other content is
    refused unless `replace`; one that differs from a folder name only in case or Unicode form is always refused.
    """
    articles = Path(articles)
    existing: dict[str, str] = {}
    if articles.is_dir():
        for path in articles.iterdir():
            existing.setdefault(key(path.name), path.name)
    placed: list[Placement] = []
    refused: list[Refusal] = []
    taken: dict[str, Placement] = {}  # key -> placement of this request
    home = articles.resolve()
    for source, given in files:
        if source.resolve().parent == home:  # `index add corpus/articles/x.txt`: index it again where it is
            placement = Placement(source, given, source)
            if key(source.name) not in taken:
                taken[key(source.name)] = placement
                placed.append(placement)
            continue
        name = article_name(given)
        if key(name) in taken:
            first = taken[key(name)]
            if _same_content(first.source, source):
                continue  # the same file twice: one article
            name = _free_name(name, existing, taken)
        elif key(name) in existing:
            held = existing[key(name)]
            stored = "" if name == Path(given).name else f"it would be stored as {printable(name)}, but "
            if held != name:
                refused.append(Refusal(given, f"{stored}the corpus already has {printable(held)}, a name that differs "
                                              "only in case or Unicode form. Rename the file, or give it the name "
                                              f"{printable(held)} (with --replace) to update that article."))
                continue
            if not replace and not _same_content(articles / held, source):
                refused.append(Refusal(given, f"{stored}{printable(held)} is already in the corpus with other "
                                              "content. Use --replace to update that article, or rename the file "
                                              "to add it as a new one."))
                continue
        placement = Placement(source, given, articles / name)
        taken[key(name)] = placement
        placed.append(placement)
    return placed, refused


def _free_name(name: str, existing: dict[str, str], taken: dict[str, Placement]) -> str:
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    n = 2
    while True:
        candidate = f"{stem}-{n}.{ext}" if dot else f"{stem}-{n}"
        if key(candidate) not in existing and key(candidate) not in taken:
            return candidate
        n += 1


def _same_content(a: Path, b: Path) -> bool:
    try:
        return a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()
    except OSError:
        return False


def resolve_articles(names: Sequence[str], articles: Sequence[dict]) -> tuple[list[str], list[str]]:
    """The article ids that `names` mean, and the messages for names that mean none.

    A name may be an article's id (its file name), the id without its extension, or its exact title; case and
    Unicode form do not matter. An unknown name's message lists the closest ids and titles.
    """
    import difflib

    by_key: dict[str, set[str]] = {}
    for article in articles:
        for label in (article["id"], Path(article["id"]).stem, article.get("title") or ""):
            if label:
                by_key.setdefault(key(label), set()).add(article["id"])
    found, unknown = [], []
    for name in names:
        ids = by_key.get(key(str(name).strip()), set())
        if len(ids) == 1:
            found.extend(i for i in ids if i not in found)
            continue
        if ids:
            unknown.append(f"{printable(str(name))} names more than one article ({', '.join(sorted(ids))}); "
                           "give the file name")
            continue
        close = difflib.get_close_matches(key(str(name)), list(by_key), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(sorted({i for c in close for i in by_key[c]}))}?" if close else ""
        unknown.append(f"no article named {printable(str(name))}{hint}")
    return found, unknown
