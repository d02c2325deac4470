"""The answerer seam: one abstract method, `answer(question, sources)`."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..language import mostly_latin
from ..retrieval import Source

MAX_ANSWER_CHARS = 150  # a factoid's cap; longer kinds of answer have their own (answerers/reader.py)
REFUSAL_ZH = "文章没有提到这一点。最接近的段落如下:"
REFUSAL_EN = "The article does not say. The closest passages are below."


def clip_answer(text: str, reserve: int = 0, limit: int = MAX_ANSWER_CHARS) -> str:
    """The answer cut to fit `limit`, leaving `reserve` characters for a citation marker."""
    limit -= reserve
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class Citation:
    """A source (numbered as shown) and the sentence in it that supports the answer."""

    source: int
    doc_id: str
    sentence: str
    start: int  # offsets of the sentence in the document's cleaned text
    end: int

    def as_dict(self) -> dict:
        return {"source": self.source, "doc_id": self.doc_id, "sentence": self.sentence,
                "start": self.start, "end": self.end}


@dataclass
class Draft:
    answer: str
    refused: bool
    citations: list[Citation] = field(default_factory=list)
    notice: str | None = None  # shown to the user, e.g. a fallback from the LLM
    kind: str = "factoid"  # factoid, list, explanation or summary: decides the length cap
    confidence: float | None = None  # calibrated probability that the answer is right
    sources: list[Source] | None = None  # replaces the retrieved sources (a summary cites its own)


def refusal(question: str) -> Draft:
    """"The article does not say", in the question's language, without repeating the question."""
    return Draft(REFUSAL_EN if mostly_latin(question) else REFUSAL_ZH, True, [])


def strip_markers(text: str) -> str:
    return re.sub(r"\[\d{1,3}\]", "", text).strip()


class Answerer(ABC):
    name: str = "base"

    @abstractmethod
    def answer(self, question: str, sources: list[Source]) -> Draft:
        """Answer from the sources only, or refuse."""

    def warm(self) -> None:
        """Load now what the first question that needs it would otherwise wait for (a server calls this)."""

    def stream(self, question: str, sources: list[Source]) -> Iterator[str | Draft]:
        """Text pieces as they come, then the final Draft; answerers that cannot stream yield once."""
        yield self.answer(question, sources)
