"""Chunking made for Chinese: sentences, packed within a paragraph up to a size."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .cleaning import CleanDocument

CHUNKER_VERSION = 3  # 3: sentences over MAX_SENTENCE_CHARS are cut into pieces
DEFAULT_MAX_CHARS = 0  # 0: one sentence per chunk (measured best on the eval set; see docs/design.md)
MAX_SENTENCE_CHARS = 400  # hard cap on a chunk: a line without punctuation must not become one huge chunk
_SOFT_BREAK = re.compile(r"[,，、:：\s]")  # noqa: RUF001

# A sentence ends at Chinese or ASCII terminal punctuation, with any closing quotes and
# citation markers that follow it ("……助力。”[1]").
_SENTENCE_END = re.compile(r"(?:(?:[。?！？;；]|!(?!\[[^\d]))+|…+|\.(?=\s|$))[”’」』)）》]*(?:\[\d{1,3}\])*")  # noqa: RUF001
_CITATION = re.compile(r"\[(\d{1,3})\]")


@dataclass(frozen=True)
class ChunkerSettings:
    max_chars: int = DEFAULT_MAX_CHARS
    version: int = CHUNKER_VERSION

    def as_dict(self) -> dict:
        return {"max_chars": self.max_chars, "version": self.version}


@dataclass
class Chunk:
    id: str
    doc_id: str
    text: str
    kind: str  # body, heading, caption, metadata, reference
    paragraph: int | None  # 1-based paragraph number in the document
    start: int  # character offsets into the document's cleaned text
    end: int
    citations: list[int] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "doc_id": self.doc_id,
            "text": self.text,
            "kind": self.kind,
            "paragraph": self.paragraph,
            "start": self.start,
            "end": self.end,
            "citations": self.citations,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Chunk:
        return cls(**{k: d[k] for k in ("id", "doc_id", "text", "kind", "paragraph", "start", "end", "citations")})


def split_sentences(text: str, start: int = 0) -> list[tuple[int, int]]:
    """(start, end) spans of the sentences of one paragraph, offsets relative to the document."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for match in _SENTENCE_END.finditer(text):
        end = match.end()
        if text[pos:end].strip():
            spans.append((start + pos, start + end))
        pos = end
    if text[pos:].strip():
        spans.append((start + pos, start + len(text)))
    return [_strip_span(text, s, e, start) for s, e in spans]


def _strip_span(text: str, s: int, e: int, base: int) -> tuple[int, int]:
    piece = text[s - base : e - base]
    lead = len(piece) - len(piece.lstrip())
    trail = len(piece) - len(piece.rstrip())
    return s + lead, e - trail


def chunk_document(doc: CleanDocument, settings: ChunkerSettings = ChunkerSettings()) -> list[Chunk]:
    """Chunks of the body, never crossing a paragraph; each knows the references it cites."""
    known = {ref.number for ref in doc.references}
    chunks: list[Chunk] = []
    for number, para in enumerate(doc.paragraphs, start=1):
        spans = [(para.start, para.end)] if para.kind != "body" else split_sentences(para.text, para.start)
        for s, e in _pack(_bounded(spans, doc.text), settings.max_chars):
            text = doc.text[s:e]
            cites = sorted({int(n) for n in _CITATION.findall(text) if int(n) in known})
            chunks.append(Chunk(f"{doc.doc_id}:{len(chunks)}", doc.doc_id, text, para.kind, number, s, e, cites))
    return chunks


def chunk_whole(doc_id: str, text: str, kind: str, citations: list[int] | None = None) -> Chunk:
    """A small document (metadata, a reference record) as a single chunk."""
    return Chunk(f"{doc_id}:0", doc_id, text, kind, 1, 0, len(text), citations or [])


def _bounded(spans: list[tuple[int, int]], text: str) -> list[tuple[int, int]]:
    """Spans no longer than MAX_SENTENCE_CHARS: a longer one is cut, after a comma or space when one is near."""
    out: list[tuple[int, int]] = []
    for s, e in spans:
        while e - s > MAX_SENTENCE_CHARS:
            window = text[s + MAX_SENTENCE_CHARS // 2 : s + MAX_SENTENCE_CHARS]
            breaks = [m.end() for m in _SOFT_BREAK.finditer(window)]
            cut = s + MAX_SENTENCE_CHARS // 2 + breaks[-1] if breaks else s + MAX_SENTENCE_CHARS
            out.append((s, cut))
            s = cut
        if text[s:e].strip():
            out.append((s, e))
    return out


def _pack(spans: list[tuple[int, int]], max_chars: int) -> list[tuple[int, int]]:
    if max_chars <= 0:
        return spans
    packed: list[tuple[int, int]] = []
    for s, e in spans:
        if packed and e - packed[-1][0] <= max_chars:
            packed[-1] = (packed[-1][0], e)
        else:
            packed.append((s, e))
    return packed
