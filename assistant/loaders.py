"""Read corpus files (.txt, .md, .html) into text, whatever their encoding."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG

from .errors import FileError

SUPPORTED_EXTENSIONS = (".txt", ".md", ".markdown", ".html", ".htm")
MAX_FILE_BYTES = 5 * 1024 * 1024

_BOMS = (
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)


@dataclass(frozen=True)
class LoadedFile:
    path: Path
    text: str
    format: str  # "text", "markdown" or "html"
    encoding: str
    title: str | None = None  # from <title>, a leading "# " heading or front matter
    author: str | None = None  # from Markdown front matter


def check_type(name: str | Path) -> None:
    """Raise FileError unless the file name has a supported extension."""
    suffix = Path(name).suffix
    if suffix.lower() not in SUPPORTED_EXTENSIONS:
        raise FileError(name, f"unsupported file type {suffix or '(none)'!r}. "
                              f"Supported: {', '.join(SUPPORTED_EXTENSIONS)}; convert the file to one of them.")


def check_file(path: Path) -> None:
    """Raise FileError unless path is an existing, non-empty file of a supported type within the size limit."""
    check_type(path)
    try:
        stat = path.stat()
    except OSError as exc:
        raise FileError(path, os_reason(exc)) from None
    if not S_ISREG(stat.st_mode):
        raise FileError(path, "not a file. Give .txt, .md or .html files.")
    if stat.st_size == 0:
        raise FileError(path, "the file is empty. Add the article's text and try again.")
    if stat.st_size > MAX_FILE_BYTES:
        raise FileError(path, f"{stat.st_size / 1e6:.1f} MB is over the {MAX_FILE_BYTES // 1024 // 1024} MB limit for "
                              "one article; split it into several files.")


def read_file(path: Path) -> bytes:
    """The bytes of a file that passes check_file; FileError (naming the file and the fix) if it cannot be read."""
    path = Path(path)
    check_file(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FileError(path, os_reason(exc)) from None
    if len(data) > MAX_FILE_BYTES:  # grew since the check
        raise FileError(path, f"over the {MAX_FILE_BYTES // 1024 // 1024} MB limit for one article; split it into "
                              "several files.")
    return data


def os_reason(exc: OSError) -> str:
    """Why a file could not be read, and what to do, for a user (never the bare exception)."""
    if isinstance(exc, FileNotFoundError):
        return "no such file (moved or deleted?). Check the path and try again."
    if isinstance(exc, PermissionError):
        return "cannot be read: permission denied. Make it readable (chmod a+r FILE) and try again."
    if isinstance(exc, IsADirectoryError):
        return "not a file. Give .txt, .md or .html files."
    return f"cannot be read ({exc.strerror or exc}). Check the file and try again."


def decode(data: bytes, name: str = "input") -> tuple[str, str]:
    """Decode bytes as UTF-8 (with or without BOM), UTF-16 with BOM, GB18030/GBK or Big5; return (text, encoding).

    Legacy encodings are told apart by charset-normalizer; Japanese, Korean and other encodings are refused.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding), encoding
            except UnicodeDecodeError:
                break
    if not data.strip(b" \t\r\n\x0b\x0c"):
        raise FileError(name, "the file is empty. Add the article's text and try again.")
    if b"\x00" in data[:8192]:
        raise FileError(name, "looks like a binary file (it contains NUL bytes). Give a text, Markdown or HTML file.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        if _looks_like_text(text):
            return text, "utf-8"
    other = _japanese_or_korean(data)
    best = max(((_chinese_score(text), encoding, text) for encoding in ("gb18030", "big5")
                for text in [_try_decode(data, encoding)] if text is not None), default=None)
    if other is None and best is not None and best[0] >= MIN_CHINESE_SCORE and _looks_like_text(best[2]):
        return best[2], best[1]
    # A wrong guess would index mojibake as if it were the article: anything else is refused.
    encoding = other or _detect(data)
    found = f" (it looks like {encoding})" if encoding else ""
    raise FileError(name, f"cannot decode the file as UTF-8, GBK/GB18030 or Big5{found}. Re-save it as UTF-8 and try "
                          "again.")


MIN_CHINESE_SCORE = 0.9  # share of common Chinese characters a GB or Big5 decoding must reach
_FORMS = re.compile(r"[\x00-\x7f\u3000-\u303f\uff01-\uff5e\u2010-\u2027\u00b7\s]")


def _try_decode(data: bytes, encoding: str) -> str | None:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        return None


def _chinese_score(text: str) -> float:
    """Share of the non-ASCII characters that are common Chinese ones (a wrong decoding yields rare ones).

    Short texts defeat statistical detectors (a GBK line reads as Shift-JIS to charset-normalizer), so the
    choice between GB and Big5 rests on the character frequencies of jieba's dictionary instead.
    """
    from .language import simplified
    from .lexicon import pristine_dictionary

    sample = _FORMS.sub("", text[:20_000])
    if not sample:
        return 0.0
    freq = pristine_dictionary()[0]
    return sum(freq.get(ch, 0) >= 10 for ch in simplified(sample)) / len(sample)


def _japanese_or_korean(data: bytes) -> str | None:
    """'Korean (EUC-KR)' or 'Japanese (Shift-JIS/EUC-JP)' when the bytes read as that language, else None.

    EUC-KR hangul falls on common GB2312 characters, so a frequency score alone would accept it as Chinese.
    """
    korean = _try_decode(data, "cp949")
    if korean is not None:
        letters = _FORMS.sub("", korean)
        hangul = sum("\uac00" <= ch <= "\ud7a3" for ch in letters)
        # Korean is nearly all hangul with spaces between words; GB text read as EUC-KR mixes in hanja
        if letters and hangul / len(letters) >= 0.9 and korean.count(" ") >= 0.1 * hangul:
            return "Korean (EUC-KR)"
    for encoding in ("cp932", "euc_jp"):
        japanese = _try_decode(data, encoding)
        if japanese is None:
            continue
        letters = _FORMS.sub("", japanese)
        kana = sum("\u3040" <= ch <= "\u30ff" for ch in letters)
        half = sum("\uff61" <= ch <= "\uff9f" for ch in letters)
        if letters and kana / len(letters) >= 0.2 and half / len(letters) < 0.05:
            return "Japanese (Shift-JIS/EUC-JP)"
    return None


def _detect(data: bytes) -> str | None:
    """What charset-normalizer takes the bytes for, to name it when a file is refused."""
    from charset_normalizer import from_bytes

    best = from_bytes(data[:200_000]).best()
    return best.encoding if best is not None else None


def _looks_like_text(text: str) -> bool:
    if not text.strip():
        return False
    control = sum(1 for ch in text if ord(ch) < 32 and ch not in "\n\r\t\f")
    return control / len(text) < 0.01


def load_file(path: Path, data: bytes | None = None) -> LoadedFile:
    """Load one corpus file (its bytes, when already read); raise FileError with the fix when it cannot be used."""
    path = Path(path)
    text, encoding = decode(read_file(path) if data is None else data, str(path))
    suffix = path.suffix.lower()
    if suffix in (".html", ".htm"):
        body, title = _html_main_text(text, path)
        return LoadedFile(path, body, "html", encoding, title)
    if suffix in (".md", ".markdown"):
        meta, text = _front_matter(text)
        body, heading = _markdown_text(text)
        if not body.strip() and heading:
            body = heading  # a file of one heading: the heading is the article's title and its text
        return LoadedFile(path, _require_text(body, path), "markdown", encoding, meta.get("title") or heading,
                          meta.get("author"))
    return LoadedFile(path, _require_text(text, path), "text", encoding)


def _require_text(text: str, path: Path) -> str:
    if not text.strip():
        raise FileError(path, "the file has no text. Add the article's text and try again.")
    return text


def _html_main_text(html: str, path: Path) -> tuple[str, str | None]:
    """The page's main text and title (trafilatura); a page nested past libxml2's default depth limit of
    256 is parsed again without the limit, since trafilatura's own parse gives up on it and finds no text."""
    import lxml.etree
    import lxml.html
    import trafilatura

    def extract(page):  # noqa: ANN001, ANN202 - the markup or its parsed tree
        try:
            return trafilatura.bare_extraction(page, include_comments=False, include_tables=True, with_metadata=True)
        except RecursionError:
            raise FileError(path, "the HTML page is nested too deeply to read. Save the article's text as .txt or .md "
                                  "instead.") from None

    doc = extract(html)
    too_deep = False
    if not (getattr(doc, "text", None) or "").strip():
        parser = lxml.html.HTMLParser(huge_tree=True, encoding="utf-8")
        try:
            tree = lxml.html.fromstring(html.encode("utf-8"), parser=parser)
        except (ValueError, lxml.etree.ParserError):
            tree = None
        too_deep = any(e.type_name == "ERR_RESOURCE_LIMIT" for e in parser.error_log)
        if tree is not None:
            doc = extract(tree)
    text = getattr(doc, "text", None) if doc is not None else None
    if not text or not text.strip():
        if too_deep:
            raise FileError(path, "the HTML page's tags are nested more than 2,048 levels deep, past what the HTML "
                                  "parser reads. Save the article's text as .txt or .md instead.")
        raise FileError(path, "no main text found in the HTML page. Save the article's text as .txt or .md instead.")
    return text, getattr(doc, "title", None)


def _front_matter(text: str) -> tuple[dict[str, str], str]:
    """YAML front matter (between "---" lines at the top) as title/author, and the text after it.

    Anything else at the top (a rule, a YAML that is not a mapping or does not parse) is left as text.
    """
    from frontmatter.default_handlers import YAMLHandler
    from yaml import YAMLError

    handler = YAMLHandler()
    if not handler.detect(text):
        return {}, text
    try:
        raw, body = handler.split(text)
        meta = handler.load(raw)
    except (ValueError, YAMLError, RecursionError):
        return {}, text
    if not isinstance(meta, dict) or not meta:
        return {}, text
    return {key: value for key in ("title", "author") if (value := _meta_text(meta.get(key)))}, body


def _meta_text(value: object) -> str | None:
    """A front-matter field as one short line: a string or number, or a list of them (authors)."""
    if isinstance(value, list):
        value = "、".join(str(v) for v in value[:20] if isinstance(v, str | int | float))
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        return None
    text = " ".join(str(value).split())[:200]
    return text or None


_MD_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_MD_LINK = re.compile(r"\[([^\]]+)\]\((?:[^)]*)\)")
_MD_EMPHASIS = re.compile(r"(\*\*|__|\*|`)(.+?)\1")


def _markdown_text(text: str) -> tuple[str, str | None]:
    """Plain text from Markdown: headings become lines, images their alt text (captions), links their text."""
    title = None
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        heading = re.match(r"^(#{1,6})\s+(.*)$", stripped)
        if heading:
            if title is None and len(heading.group(1)) == 1:
                title = heading.group(2).strip()
                continue
            stripped = heading.group(2).strip()
        stripped = re.sub(r"^[-*+]\s+|^>\s?", "", stripped)
        stripped = _MD_IMAGE.sub(r"\1", stripped)
        stripped = _MD_LINK.sub(r"\1", stripped)
        stripped = _MD_EMPHASIS.sub(r"\2", stripped)
        lines.append(stripped)
    return "\n".join(lines), title
