"""The one validation layer: every entry point's question, k, history and answerer go through it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assistant import validation as validate
from assistant.config import K_RANGE
from assistant.errors import InputError, QuestionError

_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
                     lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                                  max_size=5), max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=700))
def test_any_text_is_a_clean_question_or_a_question_error(text):
    try:
        q = validate.question(text)
    except QuestionError as exc:
        assert exc.field == "question" and str(exc)
        return
    assert 1 <= len(q) <= validate.MAX_QUESTION_CHARS
    assert not any(0xD800 <= ord(c) <= 0xDFFF or 0x2066 <= ord(c) <= 0x2069 or 0x202A <= ord(c) <= 0x202E
                   or ord(c) < 32 for c in q)
    q.encode("utf-8")  # no lone surrogate survives


@settings(max_examples=300, deadline=None)
@given(_json)
def test_any_value_is_a_k_in_range_or_an_error_naming_k(value):
    try:
        k = validate.k(value, 5)
    except InputError as exc:
        assert exc.field == "k" and str(K_RANGE[1]) in str(exc)
        return
    assert isinstance(k, int) and K_RANGE[0] <= k <= K_RANGE[1]


@settings(max_examples=300, deadline=None)
@given(_json)
def test_any_value_is_a_bounded_history_or_an_error_naming_history(value):
    try:
        turns = validate.history(value)
    except InputError as exc:
        assert exc.field == "history"
        return
    assert len(turns) <= validate.MAX_HISTORY_TURNS
    assert sum(len(t.question) + len(t.answer or "") for t in turns) <= validate.MAX_HISTORY_CHARS
    assert all(isinstance(t.question, str) and t.question for t in turns)


def test_history_is_trimmed_not_refused():
    long = [{"question": "问" * 5000, "answer": "答" * 5000}] * 1000
    turns = validate.history(long)
    assert 1 <= len(turns) <= validate.MAX_HISTORY_TURNS
    assert all(len(t.question) <= validate.MAX_TURN_CHARS for t in turns)
    recent = validate.history([f"问题{i}" for i in range(50)])
    assert [t.question for t in recent] == [f"问题{i}" for i in range(42, 50)]  # the newest turns are kept


@pytest.mark.parametrize("question, history, k, answerer, field", [
    (None, None, None, None, "question"),
    ("   ", None, None, None, "question"),
    ("?!。", None, None, None, "question"),
    ("问" * 501, None, None, None, "question"),
    ("英伟达是谁创立的?", "text", None, None, "history"),
    ("英伟达是谁创立的?", [{"question": "q", "answer": 5}], None, None, "history"),
    ("英伟达是谁创立的?", None, "abc", None, "k"),
    ("英伟达是谁创立的?", None, 0, None, "k"),
    ("英伟达是谁创立的?", None, 21, None, "k"),
    ("英伟达是谁创立的?", None, None, "oracle", "answerer"),
    ("英伟达是谁创立的?", None, None, 7, "answerer"),
])
def test_the_python_api_names_the_bad_field(assistant, question, history, k, answerer, field):
    with pytest.raises(InputError) as info:
        assistant.ask(question, history, k=k, answerer=answerer)
    assert info.value.field == field


def test_surrogates_and_bidi_controls_are_dropped(assistant):
    answer = assistant.ask("\ud800英伟达\u2066是谁\u2069创立的?\u202e")
    assert not answer.refused and "黄仁勋" in answer.plain_answer and answer.question == "英伟达是谁创立的?"


def test_a_huge_history_is_read_as_its_capped_last_turns(assistant):
    """Through `ask`: ~1.6M characters of history answer as the last turns alone do (the caps themselves are
    tested above); the older turns are about another company, so reading them instead would show."""
    older = [{"question": "沐曦是谁创立的?" * 50, "answer": "陈维良" * 500}] * 1990
    recent = [{"question": "英伟达是谁创立的?" * 50, "answer": "黄仁勋" * 500}] * 10
    answer = assistant.ask("他在哪一年创立了英伟达?", older + recent)
    capped = assistant.ask("他在哪一年创立了英伟达?", recent[-validate.MAX_HISTORY_TURNS:])
    assert (answer.rewritten_question, answer.answer) == (capped.rewritten_question, capped.answer)
    assert "陈维良" not in answer.rewritten_question
    assert not answer.refused and "1993" in answer.plain_answer, answer.answer


def test_invalid_utf8_in_argv_is_a_clean_error(built):
    result = subprocess.run([sys.executable, "-m", "assistant", "ask", b"\xff\xfe\xe8\x8b",
                             "--index", str(built.index_dir)], capture_output=True)
    err = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 2 and "Traceback" not in err and "question" in err
