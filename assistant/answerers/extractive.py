"""The default answerer: offline, deterministic, extractive.

It scores the sentences of the top sources against the question and answers with the shortest
text that answers: a phrase of the kind asked for (a year, a number, a person, a list) when the
best sentence holds one near the question's words, else that sentence. When no sentence covers
the question well enough, or the kind asked for is missing, it refuses and says so.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ..chunking import split_sentences
from ..lexical import _jieba, tokenize
from ..retrieval import QuestionProfile, Source
from .base import MAX_ANSWER_CHARS, Answerer, Citation, Draft

# Calibrated on the eval set's answerable and unanswerable questions (see README).
MIN_COVERAGE = 0.5
_YEAR = re.compile(r"(?:19|20)\d{2}年(?:\d{1,2}月)?(?:\d{1,2}日)?|\d{1,2}月\d{1,2}日")
_NUMBER = re.compile(
    r"(?:超过|超|近|约|逾)?\d+(?:\.\d+)?(?:万|亿|千)*(?:多|余)?"
    r"(?:亿元人民币|元人民币|亿元|万元|美元|亿美元|元|家|款|卡|公里|年|个|条|PetaFLOPS|倍|%)?"
    r"|[一二三四五六七八九十两]+(?:家|个|款|条|年|轮)"
)
_LIST = re.compile(r"[^,，。;；:：!?！？“”]*?、[^,，。;；:：!?！？“”]+")  # noqa: RUF001
_META_LINE = re.compile(r"^(标题|作者|责任编辑|来源)[::](.+)$")
_META_KEYS = {"标题": ("标题", "题目", "名字", "叫什么"), "作者": ("作者", "谁写", "撰写"),
              "责任编辑": ("编辑",), "来源": ("来源", "网址", "链接", "出处", "url", "发布在")}


@dataclass
class _Candidate:
    source: Source
    start: int  # in document
    end: int
    text: str
    coverage: float
    score: float


class ExtractiveAnswerer(Answerer):
    name = "extractive"

    def __init__(self, idf: Callable[[str], float], min_coverage: float = MIN_COVERAGE):
        self.idf = idf
        self.min_coverage = min_coverage

    def answer(self, question: str, sources: list[Source]) -> Draft:
        profile = QuestionProfile(question)
        q_tokens = set(tokenize(question))
        candidates = self._candidates(q_tokens, profile, sources)
        if not candidates:
            return refusal(question, sources)
        best = max(candidates, key=lambda c: c.score)
        cite = Citation(best.source.rank, best.source.doc_id, best.text, best.start, best.end)
        if best.coverage < self.min_coverage:
            return refusal(question, sources)
        phrase = self._phrase(question, profile, best, q_tokens)
        if phrase is None and profile.kind in ("year", "number", "person"):
            # the question asks for something this sentence does not hold
            return refusal(question, sources)
        text = phrase or _shorten(best.text, q_tokens)
        return Draft(f"{text}[{best.source.rank}]", False, [cite])

    def _candidates(self, q_tokens: set[str], profile: QuestionProfile, sources: list[Source]) -> list[_Candidate]:
        total = sum(self.idf(t) for t in q_tokens) or 1.0
        out = []
        for source in sources:
            for s, e in _sentences(source):
                text = source.text[s - source.start:e - source.start]
                tokens = set(tokenize(text))
                lowered = text.lower()
                cov = sum(self.idf(t) for t in q_tokens if t in tokens or t in lowered) / total
                bonus = 0.1 * _has_kind(profile.kind, text) + 0.02 * (len(sources) - source.rank) / len(sources)
                if source.kind == "metadata" and _meta_key(profile.question):
                    bonus += 0.3 if _meta_key(profile.question) in text else 0.0
                out.append(_Candidate(source, s, e, text, cov, cov + bonus))
        return out

    def _phrase(self, question: str, profile: QuestionProfile, best: _Candidate, q_tokens: set[str]) -> str | None:
        text = best.text
        if best.source.kind == "metadata":
            key = _meta_key(question)
            m = _META_LINE.match(text)
            if key and m and m.group(1) == key:
                return m.group(2).strip()
        if best.source.kind == "reference" and re.search(r"哪家|媒体|报道|来源|出处|发布|刊发", question):
            ref = best.source.citations[0] if best.source.citations else None
            if ref and ref.get("publisher"):
                return ref["publisher"]
        if profile.kind == "year":
            return _nearest(_YEAR.finditer(text), text, q_tokens, question)
        if profile.kind == "number":
            matches = [m for m in _NUMBER.finditer(text) if not _YEAR.fullmatch(m.group()) and
                       not re.fullmatch(r"(?:19|20)\d{2}(?:年)?", m.group())]
            return _nearest(iter(matches), text, q_tokens, question)
        if profile.kind == "person":
            return _nearest(_person_names(text), text, q_tokens, question)
        if profile.kind == "list":
            lists = [m for m in _LIST.finditer(text) if m.group().count("、") >= 1]
            phrase = _nearest(iter(lists), text, q_tokens, question)
            return phrase.strip(" 和及与") if phrase else None
        return None


def refusal(question: str, sources: list[Source]) -> Draft:
    topic = re.sub(r"[??!!。.\s]+$", "", question)[:40]  # noqa: RUF001
    return Draft(f"文章中没有提到{topic}的答案。下面是最接近的段落,供参考。", True, [])


def _sentences(source: Source) -> list[tuple[int, int]]:
    if source.kind == "metadata":
        spans, pos = [], source.start
        for line in source.text.split("\n"):
            spans.append((pos, pos + len(line)))
            pos += len(line) + 1
        return spans
    return split_sentences(source.text, source.start)


def _meta_key(question: str) -> str | None:
    if not re.search(r"文章|本文|这篇|该文", question) and not re.search(r"责任编辑", question):
        return None
    for key, cues in _META_KEYS.items():
        if any(cue in question.lower() for cue in cues):
            return key
    return None


def _has_kind(kind: str, text: str) -> float:
    if kind == "year":
        return 1.0 if _YEAR.search(text) else 0.0
    if kind == "number":
        return 1.0 if _NUMBER.search(text) else 0.0
    if kind == "list":
        return 1.0 if "、" in text else 0.0
    if kind == "person":
        return 1.0 if any(True for _ in _person_names(text)) else 0.0
    return 0.0


class _Span:
    """A found phrase with its position, like a regex match."""

    def __init__(self, text: str, start: int):
        self._text, self._start = text, start

    def group(self) -> str:
        return self._text

    def start(self) -> int:
        return self._start

    def end(self) -> int:
        return self._start + len(self._text)


def _person_names(text: str):
    """Person names by jieba's part-of-speech tags; '·' joins the parts of a transliterated name."""
    import jieba.posseg as pseg

    _jieba()
    pos, name, name_start = 0, "", 0
    for word, flag in pseg.cut(text):
        if flag in ("nr", "nrt", "nrfg") or (name and word == "·") or (name.endswith("·") and flag.startswith("n")):
            if not name:
                name_start = pos
            name += word
        else:
            if len(name.strip("·")) >= 2:
                yield _Span(name.strip("·"), name_start)
            name = ""
        pos += len(word)
    if len(name.strip("·")) >= 2:
        yield _Span(name.strip("·"), name_start)


def _nearest(matches, text: str, q_tokens: set[str], question: str) -> str | None:
    """The match closest to where the question's words occur in the sentence; never one the question names."""
    anchors = [m.start() for t in q_tokens for m in re.finditer(re.escape(t), text.lower())]
    best, best_distance = None, None
    for m in matches:
        phrase = m.group().strip()
        if not phrase or phrase in question:
            continue
        if not anchors:
            distance = m.start()
        else:
            distance = min(min(abs(a - m.start()), abs(a - m.end())) for a in anchors)
        if best_distance is None or distance < best_distance:
            best, best_distance = phrase, distance
    return best


def _shorten(sentence: str, q_tokens: set[str]) -> str:
    """The sentence, or when too long the run of its clauses that covers the question best."""
    sentence = sentence.strip()
    if len(sentence) <= MAX_ANSWER_CHARS - 5:
        return sentence
    clauses = re.split(r"(?<=[,，;；:：])", sentence)  # noqa: RUF001
    best, best_hits = clauses[0], -1
    for i in range(len(clauses)):
        piece = ""
        for j in range(i, len(clauses)):
            if len(piece) + len(clauses[j]) > MAX_ANSWER_CHARS - 5:
                break
            piece += clauses[j]
            hits = sum(1 for t in q_tokens if t in piece.lower())
            if hits > best_hits:
                best, best_hits = piece, hits
    return best.rstrip(",,;;::") + "…"  # noqa: RUF001
