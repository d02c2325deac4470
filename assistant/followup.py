"""Rewrite a follow-up question into a standalone one, from the turns before it.

Rules, not a model: a personal pronoun (他/她) becomes the person the previous turn asked for
(its answer) or named; 它/其/该公司 becomes the company the previous turn asked for or was about;
a bare 那/这 ("那是哪一年?") carries over the previous question's subject and words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .retrieval import QuestionProfile

_PERSON_PRONOUN = re.compile(r"他们|她们|他|她")
_THING_PRONOUN = re.compile(r"该公司|这家公司|那家公司|该企业|这家企业|那家企业|这家|那家|该机构|它们|它|其")
_ELLIPSIS = re.compile(r"^(?:那么|那时候?|当时|那|这|此外|还有)(?=是|在|呢|的|有|为|又|，|,|[\u4e00-\u9fff])")  # noqa: RUF001
_SUBJECT_END = re.compile(
    r"是|在|于|被|的|有|为|把|从|哪|谁|什么|多少|几|怎么|如何|创立|成立|登陆|上市|提供|打造|建设|参与|位于|拥有|具备|获得|完成|"
    r"属于|来自|推出|设立|叫|称|主打|主做|专注|深耕|依靠|给|向|对|用了|还|也|已|曾|将|会|能|可以|要"
)
_INTERROGATIVE = re.compile(r"哪一年|哪年|什么时候|何时|多少|哪些|哪家|哪个|哪位|哪里|什么|谁|几[家个款年]?|吗|呢")
_TRAILING = re.compile(r"[?？!！。.\s]+$")  # noqa: RUF001
_LEADING = re.compile(r"^(?:关于|根据|文章|本文|在|为|把|对|从|给|向|据)+")


@dataclass
class Turn:
    question: str
    answer: str | None = None  # the answer text without citation markers, when known
    refused: bool = False


def needs_rewrite(question: str, history: list[Turn]) -> bool:
    if not history:
        return False
    q = question.strip()
    return bool(_PERSON_PRONOUN.search(q) or _THING_PRONOUN.search(q) or _ELLIPSIS.match(q) or len(q) <= 5)


def subject_of(question: str) -> str | None:
    """The leading noun phrase of a question: 某公司是谁创立的? -> 某公司."""
    q = _LEADING.sub("", _TRAILING.sub("", question.strip()))
    m = _SUBJECT_END.search(q, 2) if len(q) > 2 else None
    subject = q[: m.start()] if m else None
    if (subject and 2 <= len(subject) <= 16 and not _THING_PRONOUN.search(subject)
            and not _PERSON_PRONOUN.search(subject) and not _INTERROGATIVE.search(subject)):
        return subject
    return None


def rewrite(question: str, history: list[Turn]) -> str:
    """The standalone form of a follow-up; the question itself when it needs no context."""
    if not needs_rewrite(question, history):
        return question
    prev = history[-1]
    q = question.strip()
    short_answer = prev.answer if (prev.answer and not prev.refused and len(prev.answer) <= 16) else None
    prev_kind = QuestionProfile(prev.question).kind
    subject = subject_of(prev.question)
    if _PERSON_PRONOUN.search(q):
        referent = short_answer if prev_kind == "person" and short_answer else subject
        if referent:
            return _PERSON_PRONOUN.sub(referent, q, count=1)
    if _THING_PRONOUN.search(q):
        referent = short_answer if prev_kind in ("org", "other") and short_answer and not subject else subject
        referent = referent or short_answer
        if referent:
            return _THING_PRONOUN.sub(referent, q, count=1)
    core = _INTERROGATIVE.sub("", _TRAILING.sub("", prev.question)).strip(",,")  # noqa: RUF001
    rest = _ELLIPSIS.sub("", q)
    return f"{core},{rest}" if core else q  # noqa: RUF001


# "<description>的那家<noun>": an entity named only by what it did ("拿到X投资的那家公司在哪上市").
_DESCRIBED = re.compile(
    r"(?P<desc>[^,，。;；?？!！]{4,60}?)的(?:那|这)(?P<cl>家|个|位|款|所|座|只|支|名|条|项)"  # noqa: RUF001
    r"(?P<head>[A-Za-z0-9\u4e00-\u9fff]{0,8}?)(?=[,，、]|(?:" + _SUBJECT_END.pattern + r")|$)"  # noqa: RUF001
)
_ONLY_WHICH = re.compile(r"^(?:是|为|叫)?(?:谁|什么|哪[家个位款所座只支名条项]?)?$")


def described_entity(question: str) -> tuple[str, str] | None:
    """(the described phrase as it stands in the question, a question asking which entity it is), or None."""
    m = _DESCRIBED.search(question)
    if not m:
        return None
    desc = _LEADING.sub("", m["desc"].strip())
    if len(desc) < 4:
        return None
    head = m["head"]
    return m.group(0).lstrip(), f"{desc}的{head}是哪{m['cl']}?"


def resolve_description(question: str, answer_of) -> str:
    """The question with a described entity replaced by its name, found by asking `answer_of` (a function from a
    question to a short answer or None) which entity the description fits; the question itself otherwise."""
    found = described_entity(question)
    if not found:
        return question
    phrase, sub_question = found
    if not _ONLY_WHICH.sub("", _TRAILING.sub("", question.replace(phrase, "")).strip(",，")):  # noqa: RUF001
        return question  # the question only asks which entity it is: the reader answers it as it stands
    name = answer_of(sub_question)
    if not name or len(name) > 16 or name in phrase:
        return question
    return question.replace(phrase, name, 1)
