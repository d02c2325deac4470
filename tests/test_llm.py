import pytest

from assistant import Assistant
from assistant.answerers.base import REFUSAL_ZH
from assistant.config import Settings
from assistant.errors import UnknownNameError

from .fake_llm import FakeLLM


@pytest.fixture
def llm():
    with FakeLLM() as server:
        yield server


@pytest.fixture
def llm_assistant(built, llm):
    settings = Settings.load(index_dir=built.index_dir, corpus_dir=built.corpus_dir,
                             llm_base_url=llm.base_url, llm_model="fake-model", llm_timeout=1.0)
    return Assistant.load(settings=settings)


def test_llm_answer_with_valid_citations(llm_assistant, llm):
    llm.reply = "英伟达由黄仁勋在1993年创立[1]。"
    answer = llm_assistant.ask("英伟达是谁创立的?", answerer="llm")
    assert answer.answerer == "llm" and not answer.refused and answer.notice is None
    assert answer.answer == "英伟达由黄仁勋在1993年创立[1]。"
    assert [c.source for c in answer.citations] == [1]
    prompt = llm.requests[-1]["messages"][-1]["content"]
    assert "[1] " in prompt and "黄仁勋" in prompt and "英伟达是谁创立的" in prompt
    assert llm.requests[-1]["stream"] is True


def test_citations_to_missing_passages_are_removed(llm_assistant, llm):
    llm.reply = "黄仁勋[1][9]"
    answer = llm_assistant.ask("英伟达是谁创立的?", answerer="llm")
    assert answer.answer == "黄仁勋[1]"


def test_no_valid_citation_falls_back_to_the_reader(llm_assistant, llm):
    llm.reply = "我觉得是黄仁勋[7]"
    answer = llm_assistant.ask("英伟达是谁创立的?", answerer="llm")
    assert answer.plain_answer == "黄仁勋" and "没有引用" in answer.notice


def test_timeout_falls_back_with_a_notice(llm_assistant, llm):
    llm.delay = 3.0
    answer = llm_assistant.ask("英伟达是谁创立的?", answerer="llm")
    assert answer.plain_answer == "黄仁勋" and "出错" in answer.notice


def test_endpoint_error_falls_back(llm_assistant, llm):
    llm.status = 500
    answer = llm_assistant.ask("英伟达是谁创立的?", answerer="llm")
    assert answer.plain_answer == "黄仁勋" and answer.notice


def test_streaming_yields_pieces_then_the_answer(llm_assistant, llm):
    llm.reply = "英伟达的创始人是黄仁勋[1]"
    items = list(llm_assistant.stream("英伟达是谁创立的?", answerer="llm"))
    pieces, final = items[:-1], items[-1]
    assert len(pieces) > 2 and "".join(pieces) == llm.reply
    assert final.answer == llm.reply


def test_llm_refusal_is_passed_on(llm_assistant, llm):
    llm.reply = "文章中没有提到。"
    answer = llm_assistant.ask("壁仞科技的创始人是谁?", answerer="llm")
    assert answer.refused and answer.answer == REFUSAL_ZH


def test_llm_not_configured_is_a_clear_error(assistant):
    with pytest.raises(UnknownNameError, match="ASSISTANT_LLM_BASE_URL"):
        assistant.ask("英伟达是谁创立的?", answerer="llm")
