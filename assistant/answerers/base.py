"""The answerer seam: one abstract method, `answer(question, sources)`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..retrieval import Source

MAX_ANSWER_CHARS = 150


def clip_answer(text: str, reserve: int = 0) -> str:
    """The answer cut to fit MAX_ANSWER_CHARS, leaving `reserve` characters for a citation marker."""
    limit = MAX_ANSWER_CHARS - reserve
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


class Answerer(ABC):
    name: str = "base"

    @abstractmethod
    def answer(self, question: str, sources: list[Source]) -> Draft:
        """Answer from the sources only, or refuse."""

    def stream(self, question: str, sources: list[Source]) -> Iterator[str | Draft]:
        """Text pieces as they come, then the final Draft; answerers that cannot stream yield once."""
        yield self.answer(question, sources)
