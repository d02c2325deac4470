"""The default answerer: the trained reader, and the rule-based extractor where the reader refuses.

Measured on every set, the sets nobody here wrote first (docs/evaluation.md, "Choosing the answerer"): the
reader first is ahead of the rules first on CMRC 2018 trial (passage given F1 56.4 -> 69.4, open corpus 51.3 ->
62.2), DuReader-robust (24.3 -> 44.5) and DuReader-checklist (35.0 -> 39.7), within one question on the
independent natural questions (0.694 -> 0.667), and behind on the project's own seed sets, whose answers the
rules were written around. The rules stay as the second try: where the reader is not confident enough to
answer, but not sure that nothing answers either (`rules_from`), they still find a year, a number, a person or
the page's metadata (the reader alone: natural questions 0.639, CMRC open 61.9). The reader also writes the
extractive summary for "what is this article about".
"""

from __future__ import annotations

from ..language import answer_form
from ..retrieval import Source
from .base import Answerer, Draft
from .extractive import ExtractiveAnswerer
from .reader import ReaderAnswerer


class CombinedAnswerer(Answerer):
    name = "combined"
    # The rules are tried after the reader refuses only where the reader's calibrated probability that the sources
    # answer is at least this: below it, a year or a name the rules find is a near miss more often than not.
    # Chosen on DuReader-checklist dev (unanswerable refused 0.470 -> 0.503, answerable refused 0.132 -> 0.134,
    # SQuAD 2.0 F1 46.3 -> 48.0): the seed sets and CMRC trial answer for answer the same, DuReader-robust -0.3 F1;
    # at 0.15 the project's questions lost 0.036 and the natural ones a question (docs/design.md, "The rules
    # after a refusal").
    rules_from = 0.1

    def __init__(self, rules: ExtractiveAnswerer, reader: ReaderAnswerer):
        self.rules = rules
        self.reader = reader

    def answer(self, question: str, sources: list[Source]) -> Draft:
        draft = self.reader.answer(question, sources)
        form = answer_form(question)
        # a refusal without a confidence (no span read at all) still tries the rules
        sure_of_nothing = draft.confidence is not None and draft.confidence < self.rules_from
        if not draft.refused or form == "summary" or sure_of_nothing:
            return draft
        rules = self.rules.answer(question, sources)
        if rules.refused:
            return draft  # the reader's refusal, with its confidence
        rules.kind = form
        return rules
