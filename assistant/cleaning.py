"""Clean a published article: drop portal boilerplate, fix spacing, pull out metadata and references.

The patterns below were written against the portal that published the seed article and a few
common Chinese portal trailers; each removed line is one a reader would not call article text.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

# Lines of the portal trailer, removed wherever they stand. Named groups become metadata.
_TRAILER_PATTERNS = [
    re.compile(r"^评论列表"),
    re.compile(r"^本站\s*[\[【].*?[\]】]\s*内容"),
    re.compile(r"^本文概览[::]"),
    re.compile(r"^我是.{0,20}的签约作者"),
    re.compile(r"^希望本篇文章《(?P<title>.+?)》能对你有所帮助"),
    re.compile(r"^本文来自作者\s*[\[【](?P<author>.+?)[\]】].*?(?P<source_url>https?://\S+)?$"),
    re.compile(r"^(?:责任编辑|编辑)\s*[::]\s*(?P<editor>.+)$"),
    re.compile(r"^(?:作者)\s*[::]\s*(?P<author>.+)$"),
    re.compile(r"^(?:原文链接|原文地址|来源链接)\s*[::]\s*(?P<source_url>https?://\S+)"),
    re.compile(r"^封面图片?来[自源]"),
    re.compile(r"^(?:声明|免责声明)[::]"),
]
_REFERENCE_HEADINGS = re.compile(r"^(?:参考资料|参考文献|参考来源|References)\s*[::]?$", re.IGNORECASE)
_REFERENCE_LINE = re.compile(r"^\[(\d{1,3})\]\s*(.+)$")

_CJK = r"\u3400-\u9fff\uf900-\ufaff"
_CLOSING = "，。、；：？！）》」』”’,.;:?!)"  # noqa: RUF001 - punctuation a stray space may precede
_OPENING = "“‘《「『（("  # noqa: RUF001
_SPACE_BEFORE_PUNCT = re.compile(rf"[ \t\u3000]+(?=[{re.escape(_CLOSING)}])")
_SPACE_AFTER_OPEN = re.compile(rf"(?<=[{re.escape(_OPENING)}])[ \t\u3000]+")
_SPACE_CJK_BEFORE_OPEN = re.compile(rf"(?<=[{_CJK}])[ \t\u3000]+(?=[{re.escape(_OPENING)}])")
_SPACE_AFTER_CLOSE_QUOTE = re.compile(r"(?<=[”’》」』])[ \t\u3000]+(?=[\u3400-\u9fff])")
_TERMINAL = "。!?！？;；…”’」』.）)"  # noqa: RUF001


@dataclass(frozen=True)
class Paragraph:
    text: str
    kind: str  # "body", "heading" or "caption"
    start: int
    end: int


@dataclass(frozen=True)
class Reference:
    number: int
    title: str
    publisher: str
    text: str  # the cleaned reference line as published


@dataclass
class CleanDocument:
    doc_id: str
    title: str
    text: str  # the cleaned body: paragraphs joined by "\n"; chunk offsets point into it
    paragraphs: list[Paragraph]
    references: list[Reference] = field(default_factory=list)
    author: str | None = None
    editor: str | None = None
    source_url: str | None = None

    @property
    def metadata_text(self) -> str:
        """The document's metadata as one small text, indexed so that 作者是谁 can be answered."""
        lines = [f"标题:《{self.title}》"]
        if self.author:
            lines.append(f"作者:{self.author}")
        if self.editor:
            lines.append(f"责任编辑:{self.editor}")
        if self.source_url:
            lines.append(f"来源:{self.source_url}")
        if self.references:
            lines.append(f"参考资料:共{len(self.references)}条")
        return "\n".join(lines)


def fix_spacing(line: str) -> str:
    """Remove stray spaces around Chinese punctuation; spaces inside Latin text stay."""
    line = _SPACE_BEFORE_PUNCT.sub("", line)
    line = _SPACE_AFTER_OPEN.sub("", line)
    line = _SPACE_CJK_BEFORE_OPEN.sub("", line)
    line = _SPACE_AFTER_CLOSE_QUOTE.sub("", line)
    return line.strip()


def clean_article(raw: str, doc_id: str, title_hint: str | None = None, author_hint: str | None = None) -> CleanDocument:
    """Turn an article as published into clean paragraphs, metadata and reference records.

    The hints come from the file's own metadata (an HTML <title>, Markdown front matter) and win over the text's.
    """
    raw = raw.replace("\ufeff", "").replace("\r\n", "\n").replace("\r", "\n").replace("\u00a0", " ")
    meta: dict[str, str] = {}
    body_lines: list[str] = []
    references: list[Reference] = []
    in_references = False
    for raw_line in raw.split("\n"):
        line = fix_spacing(unicodedata.normalize("NFC", raw_line))
        if not line:
            continue
        trailer = _match_trailer(line)
        if trailer is not None:
            for key, value in trailer.items():
                if value and key not in meta:
                    meta[key] = value.strip()
            continue
        if _REFERENCE_HEADINGS.match(line):
            in_references = True
            continue
        if in_references:
            ref = _REFERENCE_LINE.match(line)
            if ref:
                references.append(_parse_reference(int(ref.group(1)), ref.group(2), line))
                continue
            in_references = False
        body_lines.append(line)

    title = meta.get("title") or title_hint or _title_from_first_line(body_lines) or doc_id
    if len(body_lines) > 1 and body_lines[0] == title:
        body_lines = body_lines[1:]  # a file of one line is an article whose title and body are that line
    paragraphs: list[Paragraph] = []
    offset = 0
    for line in body_lines:
        paragraphs.append(Paragraph(line, _paragraph_kind(line), offset, offset + len(line)))
        offset += len(line) + 1
    return CleanDocument(
        doc_id=doc_id,
        title=title,
        text="\n".join(body_lines),
        paragraphs=paragraphs,
        references=references,
        author=author_hint or meta.get("author"),
        editor=meta.get("editor"),
        source_url=meta.get("source_url"),
    )


def _match_trailer(line: str) -> dict[str, str] | None:
    for pattern in _TRAILER_PATTERNS:
        match = pattern.match(line)
        if match:
            return {k: v for k, v in match.groupdict().items() if v}
    return None


def _parse_reference(number: int, rest: str, line: str) -> Reference:
    # "title,publisher": the publisher follows the last comma.
    parts = re.split(r"[,，]\s*", rest.strip())  # noqa: RUF001
    if len(parts) >= 2 and 1 <= len(parts[-1]) <= 30:
        title, publisher = ",".join(parts[:-1]).strip(), parts[-1].strip()
    else:
        title, publisher = rest.strip(), ""
    return Reference(number, title, publisher, line)


def _title_from_first_line(lines: list[str]) -> str | None:
    if lines and len(lines[0]) <= 60 and lines[0][-1] not in "。!?！？;；":  # noqa: RUF001
        return lines[0].strip("《》")
    return None


def _paragraph_kind(line: str) -> str:
    """Headings and image captions are short lines that do not end a sentence.

    A short line ending in a question mark, or of a few characters, reads as a section heading;
    other short lines without closing punctuation read as image captions. Plain text carries no
    surer signal, so a heading written as a phrase can be marked a caption.
    """
    if len(line) > 60 or line[-1] in _TERMINAL.replace("）", "").replace(")", ""):  # noqa: RUF001
        if line[-1] in "?？" and len(line) <= 30:  # noqa: RUF001
            return "heading"
        return "body"
    if len(line) <= 8:
        return "heading"
    return "caption"
