"""The default answerer: the rule-based extractor where it answers, the trained reader where it does not.

Measured on the project's held-out sets and CMRC 2018 (docs/evaluation.md, "Choosing the answerer"): the rules are
precise on the question kinds they know (years, numbers, people, metadata of the page) and refuse the rest;
the reader answers what they refuse, reads why/how and list questions, and writes the extractive summary
for "what is this article about". Neither alone does as well.
"""

from __future__ import annotations

from ..language import answer_form
from ..retrieval import Source
from .base import Answerer, Draft
from .extractive import ExtractiveAnswerer
from .reader import ReaderAnswerer


class CombinedAnswerer(Answerer):
    name = "combined"

    def __init__(self, rules: ExtractiveAnswerer, reader: ReaderAnswerer):
        self.rules = rules
        self.reader = reader

    def answer(self, question: str, sources: list[Source]) -> Draft:
        form = answer_form(question)
        if form != "summary":
            draft = self.rules.answer(question, sources)
            if not draft.refused:
                draft.kind = form
                return draft
        return self.reader.answer(question, sources)
