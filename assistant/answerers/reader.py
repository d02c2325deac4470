"""The default answerer: a trained span reader over the retrieved passages.

The reader (assistant/reader.py) scores answer spans in every source; the best one, if its
calibrated confidence is high enough, becomes the answer in the shape the question asks for:

* factoid: the span itself (a name, a date, an amount with its unit), cited;
* list: the whole enumeration around the span (items joined by 、), cited;
* explanation (why / how): the sentence holding the span, and the next one when it is short;
* summary (这篇文章讲了什么, 总结一下): the article's key sentences in order, each cited.

Otherwise it refuses, and the sources still show the nearest passages.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..chunking import split_sentences
from ..crosslingual import with_passage_names
from ..language import answer_form, data, mostly_latin, summary_topic
from ..reader import READER_FILE, Span, SpanReader
from ..retrieval import QuestionProfile, Source
from ..summary import key_sentences
from .base import Answerer, Citation, Draft, clip_answer, refusal, strip_markers

CALIBRATION_FILE = READER_FILE.with_name("reader-calibration.json")
# Longest answer per form: a fact or a list fits a line or two, a reason or a summary a short paragraph.
CAPS = {"factoid": 150, "list": 150, "explanation": 300, "summary": 300}
_EDGE = "，,。.;；:：、 \t“”\"'‘’《》「」()（）"  # noqa: RUF001


SHAPES = ("span", "clause", "sentence", "enumeration", "explanation")
DEFAULT_SHAPES = {"factoid": "span", "list": "enumeration", "explanation": "explanation"}


@dataclass
class Calibration:
    """P(the best span is a right answer) = sigmoid(w . features + b); refuse below `threshold`.

    `shapes` says how much text around the span answers each kind of question ("form/asked-for",
    e.g. "factoid/place": "clause"); measured, not guessed (benchmarks/bench_reader.py --shapes).
    """

    weights: list[float]
    bias: float
    threshold: float
    features: tuple[str, ...] = ("margin", "score")
    shapes: dict[str, str] = field(default_factory=dict)
    english: Calibration | None = None  # the fit for questions written in a Latin script, where there is one

    @classmethod
    def load(cls, path: Path = CALIBRATION_FILE) -> Calibration:
        if not path.is_file():
            return cls([1.0, 0.0], 0.0, 0.5)  # uncalibrated: sign of the margin
        raw = json.loads(path.read_text(encoding="utf-8"))
        shapes = {k: v for k, v in raw.get("shapes", {}).items() if v in SHAPES}
        english = raw.get("english")
        english = cls(english["weights"], english["bias"], english["threshold"], tuple(raw["features"]), shapes) \
            if english else None
        return cls(raw["weights"], raw["bias"], raw["threshold"], tuple(raw["features"]), shapes, english)

    def for_question(self, question: str) -> Calibration:
        """The fit that applies to a question: the English one for a question in a Latin script."""
        return self.english if self.english is not None and mostly_latin(question) else self

    def shape(self, form: str, asked_for: str) -> str:
        return self.shapes.get(f"{form}/{asked_for}") or self.shapes.get(form) or DEFAULT_SHAPES.get(form, "span")

    def probability(self, span: Span) -> float:
        values = {"margin": span.margin, "score": span.score}
        z = self.bias + sum(w * values[f] for w, f in zip(self.weights, self.features, strict=True))
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))


class ReaderAnswerer(Answerer):
    name = "reader"
    # The reader reads the best 3 of the sources, not all 5: over the eval sets its answers from sources 4 and 5
    # were right 2 times in 39 (never refusing, 2026-12-06), and reading 3 kept or raised every set's accuracy
    # (CMRC trial open F1 48.6 -> 49.3) for 40% fewer windows (docs/design.md, "How many sources the reader reads").
    reads = 3
    # Reading stops at the first source whose span is this sure (calibrated probability): chosen on CMRC 2018
    # trial (open corpus), where 0.5-0.8 scored alike and the reader read 1.3-1.4 sources a question on average.
    stop_at = 0.7
    # A source after the second is read only when retrieval scored it at least this share of the first's (the
    # reranked scores, retrieval.py): a far weaker third source rarely holds the answer the first two missed.
    # Chosen on CMRC 2018 trial (open corpus, first 500: F1 68.8 -> 69.0), DuReader (open corpus: robust 43.4 ->
    # 43.4, checklist 38.3 -> 38.8) and questions.jsonl (0.854 -> 0.861), every other set answer for answer the
    # same; a third source is then read for 38 of questions.jsonl's 137 questions (63 before), 131 of
    # DuReader-robust's 300 (253) (docs/design.md, "A weak third source is not read").
    later_within = 0.7

    def __init__(self, reader: SpanReader | Callable[[], SpanReader], index, calibration: Calibration | None = None):
        """`reader` is the SpanReader or a function that loads it: then it loads at the first question that
        needs it (or at `warm`), so a command the rules or a refusal answer never loads the network."""
        self._reader, self._load = (reader, None) if isinstance(reader, SpanReader) else (None, reader)
        self._reader_lock = threading.Lock()
        self.index = index
        self.calibration = calibration or Calibration.load()

    @property
    def reader(self) -> SpanReader:
        if self._reader is None:
            with self._reader_lock:
                if self._reader is None:
                    self._reader = self._load()
        return self._reader

    def warm(self) -> None:
        self.reader  # noqa: B018 - loads it

    def answer(self, question: str, sources: list[Source]) -> Draft:
        form = answer_form(question)
        if form == "summary":
            return self._summary(question, sources)
        if not sources:
            return refusal(question)
        return self.from_spans(question, sources, self.read(question, sources), form)

    def read(self, question: str, sources: list[Source]) -> list[Span]:
        """The reader's spans over the best `reads` sources, the most probable right first. Sources are read in
        retrieval order, and reading stops at the first span whose calibrated probability reaches `stop_at`, or
        at a source after the second that retrieval scored below `later_within` times the first's score.

        Ranking spans by that probability rather than by their raw score (start + end logits), and trusting a
        sure span of a better-ranked source, was worth 4-5 F1 on CMRC 2018 trial with the open corpus: a raw
        score is not comparable across passages, its margin over the passage's "no answer" score is
        (docs/design.md, "Which span answers"). Each window is scored on its own, so reading sources one by
        one gives the spans reading them together would."""
        calibration = self.calibration.for_question(question)
        latin = mostly_latin(question)
        spans: list[Span] = []
        # scores with no scale (the first not above 0) gate nothing
        weakest = self.later_within * sources[0].score if sources and sources[0].score > 0 else -math.inf
        for i, source in enumerate(sources[: self.reads]):
            if i >= 2 and source.score < weakest:
                break  # sources are ranked: the rest score lower still
            # an English question's names as this source writes them (crosslingual.with_passage_names)
            asked = with_passage_names(question, source.text) if latin else question
            found = [replace(s, passage=i) for s in self.reader.read(asked, [source.text])]
            spans += found
            if any(calibration.probability(s) >= self.stop_at for s in found):
                break
        return sorted(spans, key=calibration.probability, reverse=True)

    def from_spans(self, question: str, sources: list[Source], spans: list[Span], form: str = "factoid") -> Draft:
        """The answer, in the question's form, from the reader's spans over `sources` (best first)."""
        if not spans:
            return refusal(question)
        best = spans[0]
        calibration = self.calibration.for_question(question)
        confidence = calibration.probability(best)
        if confidence < calibration.threshold:
            draft = refusal(question)
            draft.confidence, draft.kind = confidence, form
            return draft
        source = sources[best.passage]
        start, end = whole_words(source.text, best.start, best.end)
        s_start, s_end = _sentence_around(source.text, start, end)
        sentence = source.text[s_start:s_end]
        cite = Citation(source.rank, source.doc_id, sentence, source.start + s_start, source.start + s_end)
        shape = self.calibration.shape(form, QuestionProfile(question).kind)
        text = shaped(shape, source.text, start, end, s_start, s_end)
        text = strip_markers(text).strip(_EDGE) or strip_markers(sentence)
        marker = f"[{source.rank}]"
        return Draft(clip_answer(text, reserve=len(marker), limit=CAPS[form]) + marker, False, [cite],
                     kind=form, confidence=confidence)

    def _summary(self, question: str, sources: list[Source]) -> Draft:
        """The key sentences of the article the question (or its best source) is about."""
        doc_id = self._article_of(question, sources)
        if doc_id is None:
            return refusal(question)
        chunks = self.index.document_chunks(doc_id)
        picked = key_sentences(chunks, self.index.store.vectors_for([c.id for c in chunks]))
        if not picked:
            return refusal(question)
        doc = self.index.documents[doc_id]
        new_sources, citations, parts, length = [], [], [], 0
        for rank, chunk in enumerate(picked, start=1):
            part = strip_markers(chunk.text) + f"[{rank}]"
            length += len(part)
            if parts and length > CAPS["summary"]:
                break  # whole key sentences only, as many as fit
            new_sources.append(Source(rank, doc_id, doc.title, chunk.kind, chunk.paragraph, chunk.text, chunk.start,
                                      chunk.end, 1.0, [chunk.id]))
            citations.append(Citation(rank, doc_id, chunk.text, chunk.start, chunk.end))
            parts.append(part)
        text = "".join(parts)
        if len(text) > CAPS["summary"]:
            text = clip_answer(text, limit=CAPS["summary"])
        return Draft(text, False, citations, kind="summary", confidence=1.0, sources=new_sources)

    def _article_of(self, question: str, sources: list[Source]) -> str | None:
        articles = [d["id"] for d in self.index.documents.heads(["article"])]
        if len(articles) == 1:
            return articles[0]
        if sources and sources[0].doc_id not in self.index.documents:
            return None
        if summary_topic(question) and sources:
            doc = self.index.documents[sources[0].doc_id]
            return doc.parent or doc.id if doc.kind != "article" else doc.id
        return sources[0].doc_id if sources and sources[0].doc_id in articles else (articles[0] if articles else None)


# a run of Latin letters and digits: a name, a number, a version, a time, an e-mail or a URL. `. _ @ / -` join
# inside it, `://` after a scheme, `:` between digits (10:30); never at its edge (1956. stays 1956), never = or +
# (6371=40009.88 is two numbers), nor `:` after a label (URL:https://...)
_RUN = re.compile(r"[A-Za-z0-9]+(?:(?:[._@/-]|://|(?<=[0-9]):(?=[0-9]))[A-Za-z0-9]+)*")


def whole_words(text: str, start: int, end: int) -> tuple[int, int]:
    """The span widened so that it neither starts nor ends inside a run of Latin letters and digits: the reader's
    span ends on a token, and the tokenizer cuts such runs (`71291` of `71291.html`, `Mini` of `MiniMax`)."""
    for run in _RUN.finditer(text):
        if run.start() >= end:
            break  # runs come in order: none after this one reaches the span
        if run.start() < start < run.end():
            start = run.start()
        if run.start() < end < run.end():
            end = run.end()
    return start, end


def _sentence_around(text: str, start: int, end: int) -> tuple[int, int]:
    """The sentence (or sentences) of `text` that hold characters start..end."""
    spans = split_sentences(text) or [(0, len(text))]
    first = next((s for s in spans if s[1] > start), spans[-1])
    last = next((s for s in spans if s[1] >= end), spans[-1])
    return first[0], max(first[1], last[1])


def shaped(shape: str, text: str, start: int, end: int, s_start: int, s_end: int) -> str:
    """The answer text for a span at start..end in its sentence s_start..s_end, in the given shape."""
    if shape == "sentence":
        return text[s_start:s_end]
    if shape == "explanation":
        return _explanation(text, s_start, s_end)
    if shape == "enumeration":
        return _enumeration(text, start, end)
    if shape == "clause":
        return _clause(text, start, end)
    return _span(text, start, end)


def _span(text: str, start: int, end: int) -> str:
    """The span itself. The reader ends a span on a token, and a token can hold a trailing particle (年的): a span
    answer drops it."""
    span = text[start:end]
    return span[:-1] if len(span) > 1 and span[-1] in data()["span_trailing_particles"] else span


def _clause(text: str, start: int, end: int) -> str:
    """The span widened to the clause around it (between commas, semicolons or sentence ends)."""
    stops = set(data()["sentence_ends"] + ",，:：")  # noqa: RUF001
    lo, hi = start, end
    while lo > 0 and text[lo - 1] not in stops:
        lo -= 1
    while hi < len(text) and text[hi] not in stops:
        hi += 1
    return text[lo:hi]


def _explanation(text: str, s_start: int, s_end: int) -> str:
    """The answering sentence, and the one after it when it is short (a reason often takes two)."""
    if s_end - s_start < 40:
        following = [s for s in split_sentences(text) if s[0] >= s_end]
        if following:
            s_end = following[0][1]
    return text[s_start:s_end]


def _enumeration(text: str, start: int, end: int) -> str:
    """The clause around the span when it enumerates items (A、B、C), else the span."""
    clause = _clause(text, start, end)
    return clause if "、" in clause and len(clause) <= CAPS["list"] else _span(text, start, end)
