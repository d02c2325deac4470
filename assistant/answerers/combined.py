"""The default answerer: the trained reader, and the rule-based extractor where the reader refuses.

Measured on every set, the sets nobody here wrote first (docs/evaluation.md, "Choosing the answerer"): the
reader first is ahead of the rules first on CMRC 2018 trial (passage given F1 56.4 -> 69.4, open corpus 51.3 ->
62.2), DuReader-robust (24.3 -> 44.5) and DuReader-checklist (35.0 -> 39.7), within one question on the
independent natural questions (0.694 -> 0.667), and behind on the project's own seed sets, whose answers the
rules were written around. The rules stay as the second try: where the reader is not confident enough to answer,
they still find a year, a number, a person or the page's metadata (the reader alone: natural questions 0.639,
CMRC open 61.9). The reader also writes the extractive summary for "what is this article about".
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
        draft = self.reader.answer(question, sources)
        form = answer_form(question)
        if not draft.refused or form == "summary":
            return draft
        rules = self.rules.answer(question, sources)
        if rules.refused:
            return draft  # the reader's refusal, with its confidence
        rules.kind = form
        return rules
