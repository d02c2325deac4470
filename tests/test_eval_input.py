"""Eval input that is malformed, duplicated, deeply nested or long-running: skipped and reported, never a
traceback; each question scored against its own passage; progress shown and results kept on interruption."""

from __future__ import annotations

import json
import os
import signal

import pytest

from assistant.cli import main
from assistant.errors import EvalError
from assistant.evaluation import load_questions
from assistant.retrieval import Source
from assistant.squad import load_squad, load_squad_files

RIVER = "黄河全长约5464公里,最后在山东省东营市注入渤海。"
PEAK = "珠穆朗玛峰海拔8848.86米,是世界最高峰。"
GOOD_QA = {"id": "g1", "question": "珠穆朗玛峰海拔多少米?", "answers": [{"text": "8848.86米", "answer_start": 6}]}
GOOD_ROW = '{"id": "a", "question": "英伟达是谁创立的?", "type": "factoid", "answers": ["黄仁勋"]}'
DEEP = 100_000


def _squad(path, *articles):
    """A SQuAD file of the given articles followed by one good one (so that the file is usable)."""
    good = {"title": "珠峰", "paragraphs": [{"id": "good", "context": PEAK, "qas": [GOOD_QA]}]}
    path.write_text(json.dumps({"data": [*articles, good]}, ensure_ascii=False), encoding="utf-8")
    return path


def _para(**kw):
    return {"id": "p1", "context": RIVER, "qas": [{"id": "q1", "question": "黄河注入哪里?",
                                                   "answers": [{"text": "渤海", "answer_start": 20}]}], **kw}


# --- SQuAD structure ---------------------------------------------------------------------------------

@pytest.mark.parametrize("article, reason", [
    ({"title": "t", "paragraphs": [_para(qas=None)]}, "paragraph 1 (id 'p1'): 'qas' must be a list of questions, got null"),
    ({"title": "t", "paragraphs": [_para(qas=5)]}, "'qas' must be a list of questions, got the number 5"),
    ({"title": "t", "paragraphs": [_para(qas="q")]}, "'qas' must be a list of questions, got text"),
    ({"title": "t", "paragraphs": [{"id": "p1", "context": RIVER}]}, "'qas' must be a list of questions, got nothing"),
    ({"title": "t", "paragraphs": {"id": "p1"}}, "article 1: 'paragraphs' must be a list, got an object"),
    ({"title": "t", "paragraphs": None}, "article 1: 'paragraphs' must be a list, got null"),
    ({"title": "t"}, "article 1: 'paragraphs' must be a list, got nothing (the key is missing)"),
    (7, "article 1: expected an object with 'title' and 'paragraphs', got the number 7"),
    ({"title": "t", "paragraphs": ["text"]}, "paragraph 1: expected an object with 'context' and 'qas', got text"),
    ({"title": "t", "paragraphs": [_para(context={"a": 1})]}, "'context' must be text, got an object"),
    ({"title": "t", "paragraphs": [_para(qas=["q?"])]}, "question 1: expected an object with 'id', 'question'"),
    ({"title": "t", "paragraphs": [_para(qas=[{"id": "q1", "question": 3, "answers": []}])]},
     "question 1 (id 'q1'): 'question' must be text, got the number 3"),
    ({"title": "t", "paragraphs": [_para(qas=[{"id": "q1", "question": "黄河注入哪里?", "answers": "渤海"}])]},
     "(id 'q1'): 'answers' must be a list of {text, answer_start}, got text"),
    ({"title": "t", "paragraphs": [_para(qas=[{"id": "q1", "question": "黄河注入哪里?", "answers": 0}])]},
     "'answers' must be a list of {text, answer_start}, got the number 0"),
    ({"title": "t", "paragraphs": [_para(qas=[{"id": "q1", "question": "黄河注入哪里?"}])]},
     "'answers' must be a list of {text, answer_start}, got nothing"),
    ({"title": "t", "paragraphs": [_para(qas=[{"id": "q1", "question": "黄河注入哪里?", "answers": [{"text": ""}]}])]},
     "no answer text, and not marked \"is_impossible\": true"),
])
def test_bad_squad_parts_are_skipped_with_place_and_reason(tmp_path, article, reason):
    squad = load_squad(_squad(tmp_path / "s.json", article))
    assert [q.id for q in squad.questions] == ["g1"]  # the good article still runs
    assert len(squad.skipped) == 1 and reason in squad.skipped[0] and "s.json, article 1" in squad.skipped[0]


def test_an_unanswerable_question_needs_no_answer_text(tmp_path):
    qa = {"id": "u1", "question": "黄河流域住着多少人?", "is_impossible": True}
    squad = load_squad(_squad(tmp_path / "s.json", {"title": "t", "paragraphs": [_para(qas=[qa])]}))
    assert [(q.id, q.answerable) for q in squad.questions] == [("u1", False), ("g1", True)] and not squad.skipped


def test_a_squad_file_with_nothing_usable_is_exit_2_naming_the_file_and_the_shape(tmp_path, capsys):
    path = tmp_path / "empty.json"
    path.write_text(json.dumps({"data": [{"title": "t", "paragraphs": [_para(qas=None)]}]}), encoding="utf-8")
    assert main(["eval", "--squad", str(path)]) == 2
    err = capsys.readouterr().err
    assert "empty.json holds no usable questions" in err and "'qas' must be a list" in err
    assert 'Expected a SQuAD object {"data": [{"title", "paragraphs"' in err
    path.write_text('{"data": 3}', encoding="utf-8")
    assert main(["eval", "--squad", str(path)]) == 2
    assert "empty.json: expected a SQuAD object" in capsys.readouterr().err


def test_a_deeply_nested_squad_file_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "deep.json"
    path.write_text('{"data": [{"paragraphs": [{"context": "x", "qas": ' + "[" * DEEP + "]" * DEEP + "}]}]}",
                    encoding="utf-8")
    assert main(["eval", "--squad", str(path)]) == 2
    assert "deep.json: JSON nested too deeply" in capsys.readouterr().err


# --- duplicate ids -------------------------------------------------------------------------------------

def _company_set(path):
    articles = [{"title": "甲", "paragraphs": [{"id": "p1", "context": "甲公司成立于1888年,总部在伦敦。", "qas": [
                    {"id": "a1", "question": "甲公司成立于哪一年?", "answers": [{"text": "1888年", "answer_start": 6}]}]}]},
                {"title": "乙", "paragraphs": [{"id": "p1", "context": "乙公司成立于2000年,总部在北京。", "qas": [
                    {"id": "b1", "question": "乙公司成立于哪一年?", "answers": [{"text": "2000年", "answer_start": 6}]}]}]}]
    path.write_text(json.dumps({"data": articles}, ensure_ascii=False), encoding="utf-8")
    return path


def test_duplicate_passage_ids_keep_each_question_with_its_own_passage(tmp_path):
    squad = load_squad(_company_set(tmp_path / "s.json"))
    assert len(squad.passages) == 2  # the second passage no longer replaces the first
    for q in squad.questions:
        assert q.answers[0] in squad.passages[q.passage_id].context
    assert squad.renamed == ["%s, article 2 paragraph 1: passage id 'p1' is already taken; kept as p1#2"
                             % (tmp_path / "s.json")]


def test_duplicate_question_ids_are_made_unique_and_exact_repeats_skipped(tmp_path):
    qas = [{"id": "q", "question": "黄河注入哪里?", "answers": [{"text": "渤海"}]},
           {"id": "q", "question": "黄河全长多少公里?", "answers": [{"text": "约5464公里"}]},
           {"id": "q", "question": "黄河注入哪里?", "answers": [{"text": "渤海"}]}]
    squad = load_squad(_squad(tmp_path / "s.json", {"title": "t", "paragraphs": [_para(qas=qas)]}))
    assert [(q.id, q.answers[0]) for q in squad.questions] == [("q", "渤海"), ("q#2", "约5464公里"), ("g1", "8848.86米")]
    assert "already taken; kept as q#2" in squad.renamed[0]
    assert len(squad.skipped) == 1 and "question 3 (id 'q'): repeats question 'q'" in squad.skipped[0]


def test_files_without_paragraph_ids_never_overwrite_each_other(tmp_path):
    def file(name, context, answer):
        data = {"data": [{"paragraphs": [{"context": context, "qas": [{"question": "问什么?", "answers": [
            {"text": answer}]}]}]}]}
        (tmp_path / name).write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        return tmp_path / name

    squad = load_squad_files([file("a.json", RIVER, "渤海"), file("b.json", PEAK, "8848.86米")])
    assert len(squad.passages) == 2 and not squad.renamed  # generated ids are made unique quietly
    assert all(q.answers[0] in squad.passages[q.passage_id].context for q in squad.questions)


def test_eval_scores_a_duplicate_id_question_against_its_own_passage(built, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["eval", "--squad", str(_company_set(tmp_path / "s.json")), "--passage-given", "--no-progress",
                 "--answerer", "extractive", "--json", str(out)]) == 0
    assert "1 duplicate ids in" in capsys.readouterr().err
    report = json.loads(out.read_text(encoding="utf-8"))
    answers = {r["id"]: r["answer"] for r in report["results"]}
    assert answers["a1"].startswith("1888年") and answers["b1"].startswith("2000年")
    assert report["summary"]["em"] == 100.0 and report["renamed"]


# --- question files (JSONL) ----------------------------------------------------------------------------

def test_a_deeply_nested_question_line_is_skipped_and_reported(tmp_path):
    path = tmp_path / "q.jsonl"
    deep = '{"id": "b", "question": "x", "type": "t", "answers": ' + "[" * DEEP + "]" * DEEP + "}"
    path.write_text(GOOD_ROW + "\n" + deep + "\n", encoding="utf-8")
    problems: list[str] = []
    assert [q.id for q in load_questions(path, problems)] == ["a"]
    assert problems == [f"{path}, line 2: JSON nested too deeply to read; a question row is one flat object."]
    with pytest.raises(EvalError, match="line 2: JSON nested too deeply"):
        load_questions(path)


def test_answers_of_an_unanswerable_row_must_be_strings(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(GOOD_ROW + '\n{"id": "u", "question": "谁?", "type": "t", "answers": [[1]], "answerable": false}\n',
                    encoding="utf-8")
    problems: list[str] = []
    assert [q.id for q in load_questions(path, problems)] == ["a"]
    assert "line 2 (id 'u'): 'answers' must be a list of strings" in problems[0]


def test_a_question_file_with_nothing_usable_says_what_a_row_is(tmp_path, capsys):
    path = tmp_path / "q.jsonl"
    path.write_text("[" * DEEP + "]" * DEEP + "\n", encoding="utf-8")
    assert main(["eval", "--questions", str(path)]) == 2
    err = capsys.readouterr().err
    assert "q.jsonl has no usable questions" in err and "line 1: JSON nested too deeply" in err
    assert 'Expected one JSON object per line: {"id", "question", "type", "answers"' in err


def test_many_bad_rows_print_a_count_and_the_first_few(built, tmp_path, capsys):
    path = tmp_path / "q.jsonl"
    path.write_text(GOOD_ROW + "\n" + "{oops\n" * 8, encoding="utf-8")
    out = tmp_path / "r.json"
    assert main(["eval", "--index", str(built.index_dir), "--questions", str(path), "--no-progress",
                 "--json", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"skipped 8 bad rows of {path}; the other 1 questions run:" in err
    assert err.count("not valid JSON") == 5 and f"... and 3 more (listed in {out})" in err
    assert len(json.loads(out.read_text(encoding="utf-8"))["skipped"]) == 8


# --- progress and partial results ----------------------------------------------------------------------

def _questions(tmp_path, n):
    rows = [{"id": f"q{i}", "question": q, "type": "factoid", "answers": [a]} for i, (q, a) in enumerate(
        [("英伟达是谁创立的?", "黄仁勋"), ("苹果在哪一年IPO?", "1980年"), ("文章的作者是谁?", "忆海"),
         ("商汤大装置具备多少算力?", "1.2万PetaFLOPS")][:n])]
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    return path


def test_progress_is_shown_without_a_terminal(built, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("assistant.evaluation.PROGRESS_SECONDS", 0.0)
    assert main(["eval", "--index", str(built.index_dir), "--questions", str(_questions(tmp_path, 2))]) == 0
    err = capsys.readouterr().err
    assert "eval: 1/2 questions" in err and "eval: 2/2 questions" in err and "done in" in err


def _stop_on_third_ask(monkeypatch, out, how):
    """Assistant.ask that checks the rows kept so far and then stops the run as a user or `kill` would."""
    from assistant.assistant import Assistant

    real, calls = Assistant.ask, []

    def ask(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            rows = out.with_suffix(".partial.jsonl").read_text(encoding="utf-8").splitlines()
            assert [json.loads(r)["id"] for r in rows] == ["q0", "q1"]  # kept even if the process died now
            how()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Assistant, "ask", ask)


class _Unhandled(Exception):
    pass


def test_ctrl_c_keeps_the_questions_scored_so_far(built, tmp_path, capsys, monkeypatch):
    out = tmp_path / "r.json"

    def ctrl_c():
        raise KeyboardInterrupt

    _stop_on_third_ask(monkeypatch, out, ctrl_c)
    code = main(["eval", "--index", str(built.index_dir), "--questions", str(_questions(tmp_path, 4)), "--json",
                 str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 130 and f"INTERRUPTED after 2 of 4 questions; the report of those is in {out}" in captured.err
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["interrupted"] == {"scored": 2, "of": 4} and [r["id"] for r in report["results"]] == ["q0", "q1"]
    assert report["summary"]["questions"] == 2 and "overall" in captured.out
    assert not out.with_suffix(".partial.jsonl").exists()  # the report holds every row now


def test_sigterm_keeps_the_questions_scored_so_far_in_a_squad_run(built, tmp_path, capsys, monkeypatch):
    def unhandled(signum, frame):
        raise _Unhandled("SIGTERM reached the default handler")

    previous = signal.signal(signal.SIGTERM, unhandled)  # what the default (death) would be, made visible
    try:
        out = tmp_path / "r.json"
        qas = [{"id": f"q{i}", "question": "黄河注入哪里?", "answers": [{"text": "渤海"}]} for i in range(4)]
        qas = [{**qa, "question": qa["question"] + "?" * i} for i, qa in enumerate(qas)]  # not exact repeats
        path = _squad(tmp_path / "s.json", {"title": "t", "paragraphs": [_para(qas=qas)]})
        _stop_on_third_ask(monkeypatch, out, lambda: os.kill(os.getpid(), signal.SIGTERM))
        code = main(["eval", "--squad", str(path), "--json", str(out), "--no-progress"])
        assert signal.getsignal(signal.SIGTERM) is unhandled  # the eval's own handler is gone again
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 130 and "INTERRUPTED after 2 of 5 questions" in capsys.readouterr().err
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["interrupted"] == {"scored": 2, "of": 5} and report["summary"]["questions"] == 2


# --- years of any era (rules answerer) -----------------------------------------------------------------

def _sources(*texts):
    return [Source(i, f"d{i}", f"d{i}", "body", 1, t, 0, len(t), 1.0 - i / 10, []) for i, t in enumerate(texts, 1)]


@pytest.mark.parametrize("question, right, other, expected", [
    ("甲公司成立于哪一年?", "甲公司成立于1888年,总部位于伦敦。", "乙公司成立于2000年,总部位于北京。", "1888年"),
    ("唐朝建立于哪一年?", "唐朝建立于618年,定都长安。", "宋朝建立于960年。", "618年"),
])
@pytest.mark.parametrize("answerer", ["extractive", "combined"])
def test_a_year_question_answers_a_year_of_any_era_from_its_own_passage(assistant, answerer, question, right,
                                                                         other, expected):
    for texts in ((right, other), (other, right)):
        draft = assistant.answerers[answerer].answer(question, _sources(*texts))
        assert not draft.refused and draft.answer.startswith(expected)


def test_a_duration_is_still_a_number(assistant):
    draft = assistant.answerers["extractive"].answer("这家老店经营了多少年?", _sources("这家老店已经经营了150年,始终在老城区。"))
    assert draft.answer.startswith("150年")
