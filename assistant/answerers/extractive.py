"""The default answerer: offline, deterministic, extractive.

It scores the sentences of the top sources against the question and answers with the shortest
text that answers: a phrase of the kind asked for (a year, a number, a person, a list) when the
best sentence holds one near the question's words, else that sentence. When no sentence covers
the question well enough, or the kind asked for is missing, it refuses and says so.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import marshal
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..chunking import split_sentences
from ..followup import subject_of
from ..language import data
from ..lexical import synonyms, terms
from ..lexicon import Segmenter, load_jieba, pristine_tokenizer
from ..retrieval import QuestionProfile, Source, coverage, type_match
from .base import MAX_ANSWER_CHARS, Answerer, Citation, Draft, clip_answer, refusal

# Calibrated on the eval set's answerable and unanswerable questions (see docs/evaluation.md).
MIN_COVERAGE = 0.5  # share of the question's IDF mass the answering sentence must hold
SUBJECT_SHARE = 0.6  # share of a specific subject's characters the sentence must contain
SPECIFIC_IDF = 3.0  # a subject this rare (or rarer) in the corpus is specific enough to check
# Any year of three or four digits (618年, 1888年, 2024年3月5日), not the tail of a longer number.
_YEAR = re.compile(r"(?<![\d.])[1-9]\d{2,3}年(?:\d{1,2}月)?(?:\d{1,2}日)?|\d{1,2}月\d{1,2}日")
# What a number question never asks for: a four-digit year or a date ("经营了150年" stays a number).
_DATE = re.compile(r"(?<![\d.])[1-9]\d{3}年(?:\d{1,2}月)?(?:\d{1,2}日)?|\d{1,2}月\d{1,2}日")
_NUMBER = re.compile(
    r"(?:超过|超|近|约|逾)?(?<![A-Za-z\d.])\d+(?:\.\d+)?(?:万|亿|千)*(?:多|余)?"  # not the digits of H100 or 2.5.1
    r"(?:亿元人民币|元人民币|亿元|万元|美元|亿美元|元|家|款|公里|年|个|条|倍|%|[A-Za-z]+(?![A-Za-z\d]))?"
    r"|(?:千|百|万)亿(?:美元|元)"
    r"|[一二三四五六七八九十百千万亿]+[个人台卡套]?级"  # 千卡级, 万人级; not 一超级 of 第一超级计算机
    r"|(?:[二三四五六七八九十两]|一[十百千万])[一二三四五六七八九十两百千万]*(?:家|个|款|条|年|轮)"
)
_MARKER = re.compile(r"\[\d{1,3}\]")
_MONEY = re.compile(r"市值|金额|募资|融资|投资|多少钱|资金|估值")
_ORG = re.compile(r"(?:[A-Za-z][A-Za-z0-9]+|[\u4e00-\u9fff]{2,4}?)(?:" + "|".join(data()["organisation_suffixes"]) + ")")
_TWO_ASKS = re.compile(r"[,,;;]")  # noqa: RUF001
_ASK_WORDS = re.compile(r"哪一年|哪年|何时|多少|哪些|哪家|哪个|哪位|哪里|什么|谁|几")
_NEEDS_PERSON = re.compile(r"创始人|创立|创办|创建|作者|编辑|谁说|谁写")
_REFERENCE_CUES = re.compile(r"参考|媒体|报道|来源|出处|发布|刊发|哪家报")
_LIST = re.compile(r"[^,，。;；:：!?！？“”]*?、[^,，。;；:：!?！？“”]+")  # noqa: RUF001
_META_LINE = re.compile(r"^(标题|作者|责任编辑|来源|参考资料)[::](.+)$")
_META_KEYS = {"标题": ("标题", "题目", "名字", "叫什么"), "作者": ("作者", "谁写", "撰写"),
              "责任编辑": ("编辑",), "来源": ("来源", "网址", "链接", "出处", "url", "发布在"), "参考资料": ("参考资料", "参考文献")}


@dataclass
class _Candidate:
    source: Source
    start: int  # in document
    end: int
    text: str
    coverage: float
    bonuses: tuple[float, ...]  # what the sentence's place and source add, beside the kind asked for
    holds_kind: float | None = None  # 0-1: whether it holds a phrase of the kind asked; None: not yet tagged

    def score(self, holds_kind: float | None = None) -> float:
        bonus = 0.1 * (self.holds_kind if holds_kind is None else holds_kind)
        for b in self.bonuses:
            bonus += b
        return self.coverage + bonus


class ExtractiveAnswerer(Answerer):
    name = "extractive"

    def __init__(self, idf: Callable[[str], float], segmenter: Segmenter | None = None,
                 min_coverage: float = MIN_COVERAGE):
        self.idf = idf
        self.segmenter = segmenter  # the index's jieba words: the question is cut as its articles are
        self.min_coverage = min_coverage

    def warm(self) -> None:
        _tagger()  # jieba's part-of-speech tables: ~1.5-3 s on the first "who" question otherwise

    def answer(self, question: str, sources: list[Source]) -> Draft:
        parts = _split_asks(question)
        if len(parts) > 1:
            drafts = [self._answer_one(part, sources) for part in parts]
            text = ";".join(d.answer for d in drafts)  # noqa: RUF001
            if all(not d.refused for d in drafts) and len(text) <= MAX_ANSWER_CHARS:
                return Draft(text, False, [c for d in drafts for c in d.citations])
        return self._answer_one(question, sources)

    def _answer_one(self, question: str, sources: list[Source]) -> Draft:
        profile = QuestionProfile(question)
        q_terms = terms(question, self.segmenter)
        subject = self._specific_subject(question)
        candidates = self._candidates(q_terms, subject, profile, sources)
        if not candidates:
            return refusal(question)
        best = _best(candidates, profile.kind)
        cite = Citation(best.source.rank, best.source.doc_id, best.text, best.start, best.end)
        if best.coverage < self.min_coverage:
            return refusal(question)
        if subject and best.source.kind not in ("metadata", "reference") and not _mentions(best.text, subject):
            return refusal(question)  # the best evidence is about something else
        phrase = self._phrase(question, profile, best, set(q_terms))
        if phrase is None and not _asks_two_things(question) and (
                profile.kind in ("year", "number") or (profile.kind == "person" and _NEEDS_PERSON.search(question))):
            return refusal(question)  # the question asks for what this sentence does not hold
        marker = f"[{best.source.rank}]"
        text = clip_answer(phrase or _shorten(_MARKER.sub("", best.text), set(q_terms)), reserve=len(marker))
        return Draft(text + marker, False, [cite])

    def _specific_subject(self, question: str) -> str:
        """The question's subject when it names something specific (rare in the corpus), else "".

        A subject the whole article is about (its city, its company) says nothing about which sentence answers.
        """
        subject = subject_of(question) or ""
        weights = [self.idf(t) for t in terms(subject, self.segmenter)]
        return subject if weights and max(weights) >= SPECIFIC_IDF else ""

    def _candidates(self, q_terms: list[str], subject: str, profile: QuestionProfile,
                    sources: list[Source]) -> list[_Candidate]:
        total = sum(self.idf(t) for t in q_terms) or 1.0
        meta_key = _meta_key(profile.question)
        about_refs = bool(_REFERENCE_CUES.search(profile.question))
        out = []
        for source in sources:
            for s, e in _sentences(source):
                text = source.text[s - source.start:e - source.start]
                cov = coverage(text, q_terms, self.idf) / total
                bonuses = [0.02 * (len(sources) - source.rank) / len(sources)]
                if subject and _mentions(text, subject):
                    bonuses.append(0.2)
                if source.kind == "metadata":
                    bonuses.append(0.3 if meta_key and meta_key in text else -0.5)
                if source.kind == "reference" and not about_refs:
                    bonuses.append(-0.5)
                # person names need jieba's tagger (~2 ms a sentence): tagged in _best only where they decide
                holds = None if profile.kind == "person" else _has_kind(profile.kind, _MARKER.sub("", text))
                out.append(_Candidate(source, s, e, text, cov, tuple(bonuses), holds))
        return out

    def _phrase(self, question: str, profile: QuestionProfile, best: _Candidate, q_tokens: set[str]) -> str | None:
        text = _MARKER.sub(lambda m: " " * len(m.group()), best.text)  # keep offsets, drop [n]
        if best.source.kind == "metadata":
            key = _meta_key(question)
            m = _META_LINE.match(text)
            if key and m and m.group(1) == key:
                return m.group(2).strip()
        if (best.source.kind == "reference" and profile.kind in ("org", "person", "other")
                and re.search(r"哪家|媒体|来源|出处|谁|发布者|发布的|刊发", question)):
            ref = best.source.citations[0] if best.source.citations else None
            if ref and ref.get("publisher"):
                return ref["publisher"]
        if _asks_two_things(question):
            return None  # two things asked in one breath: the sentence answers both
        slot = _slot(question, text)
        if slot and _fits(profile.kind, slot):
            inner = {"year": _YEAR, "number": _NUMBER}.get(profile.kind)
            found = inner.search(slot) if inner else None
            if found:
                return found.group()
            slot = re.sub(r"^(?:的|了|是)|(?:的|了)$", "", slot) or slot
            noun = re.match(r"什么([\u4e00-\u9fff]{1,2})", question[question.find("什么"):]) if "什么" in question else None
            if noun and _slot_noun_follows(question, noun.group(1)) and not slot.endswith(noun.group(1)):
                slot += noun.group(1)  # 一家什么公司 -> 显卡 + 公司
            return slot
        if profile.kind == "year" and re.search(r"相继|分别|先后", text):
            # "A、B相继于X、Y": the one date asked for, else the sentence that pairs them
            return _respectively(text, question) or _shorten(_MARKER.sub("", best.text), q_tokens)
        if profile.kind == "year":
            return _nearest(_YEAR.finditer(text), text, q_tokens, question, self.idf)
        if profile.kind == "number":
            dates = [m.span() for m in _DATE.finditer(text)]
            matches = [m for m in _NUMBER.finditer(text)
                       if not any(a <= m.start() < b for a, b in dates)]
            if _MONEY.search(question):
                matches = [m for m in matches if "元" in m.group()] or matches
            return _nearest(iter(matches), text, q_tokens, question, self.idf)
        if profile.kind == "person":
            return _nearest(_person_names(text), text, q_tokens, question, self.idf)
        if profile.kind == "org":
            found = _nearest(_ORG.finditer(text), text, q_tokens, question, self.idf)
            return re.sub(r"^.*[的了在和与及到]|^(?:企业|公司|机构)+", "", found) if found else None
        if profile.kind == "list":
            lists = [m for m in _LIST.finditer(text) if m.group().count("、") >= 1]
            phrase = _nearest(iter(lists), text, q_tokens, question, self.idf, kernel=False)
            return phrase.strip(" 和及与") if phrase else None
        return None


_SLOT_ASK = re.compile(r"哪一年|哪年|哪一天|哪天|哪家\w{0,2}?(?=[设成创的与和在是])|哪家|哪个\w{0,2}?(?=[的是在])|哪个|哪位|哪些|多少\w?|什么|谁|几[家个款年条]?")
_CLAUSE_END = re.compile(r"[。;;!?!?]")  # noqa: RUF001


def _slot(question: str, sentence: str) -> str | None:
    """Fill the question's blank from a sentence that mirrors it.

    甲与【哪家机构】设立了某基金 against 乙称,甲与丙设立的某基金 gives 丙: the text between
    the question's words just before and just after its interrogative, found in that order.
    """
    q = re.sub(r"[??。!!\s]+$", "", question)  # noqa: RUF001
    m = _SLOT_ASK.search(q)
    if not m:
        return None
    before, after = q[: m.start()], q[m.end():]
    for left_len in (3, 2):
        left = before[-left_len:]
        if len(left) < left_len or not left.strip():
            continue
        for right_len in (3, 2):
            right = after[:right_len]
            if len(right) < right_len:
                continue
            i = sentence.find(left)
            while i >= 0:
                j = sentence.find(right, i + len(left))
                span = sentence[i + len(left): j] if j >= 0 else ""
                if 1 <= len(span) <= 20 and not _CLAUSE_END.search(span) and span not in question:
                    return span.strip("“”\"'《》 ")
                i = sentence.find(left, i + 1)
    return None


def _slot_noun_follows(question: str, noun: str) -> bool:
    """Whether the question's 什么 directly modifies `noun` (什么公司), so the answer should name it too."""
    return f"什么{noun}" in question and noun not in ("时候", "地方", "意思", "样的")


def _fits(kind: str, phrase: str) -> bool:
    """Whether a phrase is the kind of thing the question asks for."""
    if not phrase:
        return False
    if kind == "year":
        return bool(_YEAR.search(phrase))
    if kind == "number":
        return bool(re.search(r"\d|[一二三四五六七八九十两百千万亿]", phrase))
    if kind == "list":
        return "、" in phrase
    return True


def _split_asks(question: str) -> list[str]:
    """A question that asks two things ("…哪一年,如今市值多少?") as two questions, subject carried over."""
    parts = [p for p in _TWO_ASKS.split(question) if p.strip()]
    if len(parts) != 2 or not all(_ASK_WORDS.search(p) for p in parts):
        return [question]
    subject = subject_of(parts[0]) or ""
    second = parts[1] if not subject or subject in parts[1] else subject + parts[1]
    return [parts[0], second]


def _asks_two_things(question: str) -> bool:
    return len(set(_ASK_WORDS.findall(question))) >= 2


def _mentions(text: str, subject: str) -> bool:
    """Whether the text is about the question's subject: most of its characters (and Latin words) occur."""
    units = re.findall(r"[a-z0-9]+|[\u3400-\u9fff]", subject.lower())
    if not units:
        return True
    lowered = text.lower()
    return sum(u in lowered for u in units) / len(units) >= SUBJECT_SHARE


def _respectively(text: str, question: str) -> str | None:
    """In "A、B相继于X、Y…", the date of the entity the question names; None when unclear."""
    dates = [m.group() for m in _YEAR.finditer(text)]
    names = [n for n in re.split(r"[、,,]", text.split("相继")[0].split("分别")[0]) if n.strip()]  # noqa: RUF001
    hits = [i for i, n in enumerate(names[-len(dates):]) if any(t in n for t in terms(question) if len(t) >= 2)]
    if len(dates) >= 2 and len(hits) == 1 and hits[0] < len(dates):
        return dates[hits[0]]
    return None




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


def _best(candidates: list[_Candidate], kind: str) -> _Candidate:
    """The highest-scoring candidate, the first of equals (as max() picks), its kind tagged where still unknown.

    Candidates are visited by the most they could score; once that is below the best final score found (or
    equal to it from a later candidate) none after can win, so their sentences are never tagged.
    """
    def most(c: _Candidate) -> float:
        return c.score(1.0) if c.holds_kind is None else c.score()

    order = sorted(range(len(candidates)), key=lambda i: (-most(candidates[i]), i))
    best, best_i = None, -1
    for i in order:
        c = candidates[i]
        if best is not None:
            upper, top = most(c), best.score()
            if upper < top or (upper == top and i > best_i):
                break
        if c.holds_kind is None:
            c.holds_kind = _has_kind(kind, _MARKER.sub("", c.text))
        if best is None or c.score() > best.score() or (c.score() == best.score() and i < best_i):
            best, best_i = c, i
    assert best is not None
    return best


def _has_kind(kind: str, text: str) -> float:
    if kind == "person":
        return 1.0 if any(True for _ in _person_names(text)) else 0.0
    return type_match(kind, text)


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


@functools.cache
def _tagger():  # noqa: ANN202 - a jieba.posseg.POSTokenizer
    """jieba's part-of-speech tagger over the pristine dictionary (see lexicon.Segmenter). Its word -> tag table
    is read from the dictionary's 349k lines on every start (0.9 s of a cold `ask`), so it is kept in the model
    cache as marshal data (0.1 s), rebuilt when the dictionary file changes."""
    load_jieba()
    import jieba.posseg

    class CachedTags(jieba.posseg.POSTokenizer):
        def load_word_tag(self, f) -> None:  # noqa: ANN001 - the open dictionary file
            cache = _tags_cache(f)
            try:
                self.word_tag_tab = marshal.loads(cache.read_bytes()) if cache else None
            except (OSError, ValueError, EOFError, TypeError):
                self.word_tag_tab = None
            if isinstance(self.word_tag_tab, dict):
                f.close()
                return
            super().load_word_tag(f)
            if cache:
                with contextlib.suppress(OSError):  # a read-only cache: parsed again next time
                    tmp = cache.with_name(f".tmp-{os.getpid()}-{cache.name}")
                    tmp.write_bytes(marshal.dumps(self.word_tag_tab))
                    os.replace(tmp, cache)

    return CachedTags(pristine_tokenizer())


def _tags_cache(f) -> Path | None:  # noqa: ANN001 - the open dictionary file
    """Where the tag table of dictionary file `f` is kept, named after the file's path, size and time."""
    from ..encoder import default_cache_dir

    name = getattr(f, "name", None)
    if not isinstance(name, str) or not os.path.isfile(name):
        return None
    stat = os.stat(name)
    key = hashlib.sha256(f"{os.path.abspath(name)}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    folder = Path(default_cache_dir())
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
    return folder / f"jieba-tags-{key}.marshal"


def _person_names(text: str):
    """Person names by jieba's part-of-speech tags; '·' joins the parts of a transliterated name."""
    pos, name, name_start = 0, "", 0
    for word, flag in _tagger().cut(text):
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


def _nearest(matches, text: str, q_tokens: set[str], question: str, idf: Callable[[str], float],
             kernel: bool = True) -> str | None:
    """The match closest to where the question's words occur in the sentence; never one the question names.

    Closeness is a kernel over the question's words found in the sentence: each adds idf / (1 +
    distance to its nearest occurrence), a synonym half as much. Rare words right beside a phrase
    count most. With kernel=False, the single nearest word decides.
    """
    lowered = text.lower()
    groups = []  # per question word: (weight, positions) of the word itself, or of each synonym found
    for t in q_tokens:
        exact = [m.start() for m in re.finditer(re.escape(t), lowered)]
        if exact:
            groups.append([(idf(t), exact)])
            continue
        similar = [(0.5 * idf(w), [m.start() for m in re.finditer(re.escape(w), lowered)])
                   for w in synonyms(t) if w != t]
        similar = [(w, p) for w, p in similar if p]
        if similar:
            groups.append(similar)
    best, best_distance = None, None
    for m in matches:
        phrase = m.group().strip()
        if not phrase or phrase in question:
            continue

        def gap(positions: list[int]) -> int:
            return min(min(abs(p - m.start()), abs(p - m.end())) for p in positions)

        if not groups:
            distance = float(m.start())
        elif kernel:
            distance = -sum(max(w / (1 + gap(p)) for w, p in group) for group in groups)
        else:
            distance = min(gap(p) for group in groups for _, p in group)
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
