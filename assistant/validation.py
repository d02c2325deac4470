"""One validation layer for what a request carries: question, k, history, answerer name.

The CLI, the page, the HTTP API and the eval all call `Assistant.ask`/`stream`, which validate here,
so a limit is the same at every entry point. A violation raises InputError naming the field and the
limit; history is trimmed (oldest turns dropped, long turns cut) rather than refused, so a long
conversation costs no more than a capped one.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from .config import K_RANGE
from .errors import InputError, QuestionError
from .followup import Turn

MAX_QUESTION_CHARS = 500
MAX_HISTORY_TURNS = 8        # only the most recent turns can be what a follow-up refers to
MAX_TURN_CHARS = 500         # each question or answer of the history, cut to this
MAX_HISTORY_CHARS = 4000     # all of it together; older turns dropped first

# Control characters, zero-width and bidi controls (U+202A-202E, U+2066-2069), BOM, lone surrogates.
_INVISIBLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff"
                        r"\ud800-\udfff]")
_SEARCHABLE = re.compile(r"[0-9A-Za-z\u3400-\u9fff\uf900-\ufaff]")
MARKERS = re.compile(r"\[\d{1,2}\]")


def clean_text(text: str) -> str:
    """NFC, without invisible or unpaired characters; newlines and tabs become spaces."""
    text = _INVISIBLE.sub("", text)
    return re.sub(r"[\t\r\n]+", " ", unicodedata.normalize("NFC", text)).strip()


def question(value: object) -> str:
    """The question cleaned of invisible characters; QuestionError when nothing askable is left."""
    if not isinstance(value, str):
        raise QuestionError("问题必须是文字。(question: must be text.)")
    text = clean_text(value)
    if not text:
        raise QuestionError("问题是空的,请输入一个关于文章的问题。(question: empty; type a question.)")
    if len(text) > MAX_QUESTION_CHARS:
        raise QuestionError(
            f"问题太长({len(text)}字),请缩短到{MAX_QUESTION_CHARS}字以内。"
            f"(question: {len(text)} characters; at most {MAX_QUESTION_CHARS}.)"
        )
    if not _SEARCHABLE.search(text):
        raise QuestionError("问题中没有可检索的文字(只有标点或表情),请用文字提问。(question: no words to search for.)")
    return text


def k(value: object, default: int) -> int:
    """How many sources: an integer in K_RANGE; None or absent takes the default."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit() \
                and len(value.strip()) <= 6:
            value = int(value.strip())
        else:
            raise InputError("k", f"k must be a whole number from {K_RANGE[0]} to {K_RANGE[1]}, got {value!r}.")
    if not K_RANGE[0] <= value <= K_RANGE[1]:
        raise InputError("k", f"k must be from {K_RANGE[0]} to {K_RANGE[1]}, got {value}.")
    return value


def history(value: object) -> list[Turn]:
    """The conversation so far as Turns, from a list of questions, {question, answer} dicts or chat messages.

    Anything else is an InputError naming `history`; long histories are trimmed, never refused.
    """
    if value is None:
        return []
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise InputError("history", "history must be a list of earlier questions, {question, answer} objects "
                                    f"or {{role, content}} messages, got {type(value).__name__}.")
    turns: list[Turn] = []
    for n, item in enumerate(value[-4 * MAX_HISTORY_TURNS:]):  # messages come two per turn; never walk more
        if isinstance(item, str):
            turns.append(Turn(_cut(item)))
        elif isinstance(item, dict) and "question" in item:
            q, a = item.get("question"), item.get("answer")
            if not isinstance(q, str) or not (a is None or isinstance(a, str)):
                raise InputError("history", f"history[{n}]: question and answer must be text.")
            turns.append(Turn(_cut(q), None if a is None else _cut(a), item.get("refused") is True))
        elif isinstance(item, dict) and item.get("role") in ("user", "assistant"):
            content = item.get("content", "")
            if not isinstance(content, str):
                raise InputError("history", f"history[{n}]: content must be text.")
            if item["role"] == "user":
                turns.append(Turn(_cut(content)))
            elif turns:
                turns[-1].answer = _cut(content)
        else:
            raise InputError("history", f"history[{n}] is not a question, a {{question, answer}} object "
                                        "or a {role, content} message.")
    for turn in turns:
        if turn.answer is not None:
            turn.answer = strip_markers(turn.answer)
    turns = [t for t in turns if t.question][-MAX_HISTORY_TURNS:]
    while turns and sum(len(t.question) + len(t.answer or "") for t in turns) > MAX_HISTORY_CHARS:
        turns.pop(0)
    return turns


def answerer(value: object, known: Sequence[str]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in known:
        raise InputError("answerer", f"answerer must be one of: {', '.join(known)}; got {value!r}.")
    return value


def strip_markers(answer: str) -> str:
    """An answer without its citation markers and final full stop, as a follow-up reads it."""
    return MARKERS.sub("", answer).strip().rstrip("。")


def _cut(text: str) -> str:
    return clean_text(text)[:MAX_TURN_CHARS]


MAX_SCOPE_ARTICLES = 1000


def articles(value: object) -> list[str] | None:
    """The article names a question is limited to; None (or an empty list): every article."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise InputError("articles", "articles must be a list of article ids (file names), e.g. [\"report.txt\"].")
    if len(value) > MAX_SCOPE_ARTICLES:
        raise InputError("articles", f"articles: at most {MAX_SCOPE_ARTICLES} articles, got {len(value)}.")
    names = [clean_text(v) for v in value if clean_text(v)]
    return names or None
