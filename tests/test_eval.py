import json

import pytest

from assistant.cli import main
from assistant.errors import EvalError
from assistant.evaluation import EvalQuestion, hit_rank, is_correct, load_questions, normalize, run_eval

QUESTIONS = "corpus/eval/questions.jsonl"


def _q(**kw):
    base = dict(id="x", question="?", type="factoid", answers=["黄仁勋"], evidence="黄仁勋创立了英伟达")
    return EvalQuestion(**{**base, **kw})


def test_normalization_ignores_width_case_and_spaces():
    assert normalize("Ｄｅｍｏ  Day\n") == normalize("demoday") == "demoday"
    assert is_correct(_q(answers=["Demo Day"]), "把ＤＥＭＯ ｄａｙ变成", False)


def test_any_all_length_and_refusal_rules():
    q_all = _q(answers=["1971", "1972"], match="all")
    assert is_correct(q_all, "1971、1972年", False)
    assert not is_correct(q_all, "1972年", False)
    assert is_correct(_q(answers=["黄仁勋", "Jensen"]), "黄仁勋[1]", False)
    assert not is_correct(_q(), "黄仁勋" + "。" * 150, False)  # over 150 characters
    assert not is_correct(_q(), "黄仁勋", True)  # refused
    unanswerable = _q(answers=[], answerable=False, evidence="")
    assert is_correct(unanswerable, "文章中没有提到", True)
    assert not is_correct(unanswerable, "陈维良", False)


def test_hit_rank_uses_normalized_evidence():
    q = _q(evidence="Demo Day")
    assert hit_rank(q, ["无关", "把“ＤｅｍｏＤａｙ”变成"]) == 2
    assert hit_rank(q, ["无关"]) is None


def test_question_set_is_well_formed():
    questions = load_questions(QUESTIONS)
    assert len(questions) >= 100
    types = {q.type for q in questions}
    assert {"factoid", "list", "number", "multi_hop", "paraphrase", "metadata", "reference", "followup",
            "unanswerable"} <= types
    assert sum(not q.answerable for q in questions) / len(questions) >= 0.14  # 20 of 137 since English joined
    assert sum(1 for q in questions if q.history) >= 5


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "line 2.*not valid JSON"),
        ('{"id": "b", "type": "factoid", "answers": ["a"]}', "line 2.*'b'.*missing field 'question'"),
        ('{"id": "b", "question": "?!。", "type": "factoid", "answers": ["a"]}', "line 2.*'b'.*cannot be asked"),
        ('{"id": "b", "question": "   ", "type": "factoid", "answers": ["a"]}', "line 2.*'b'.*cannot be asked"),
        ('{"id": "b", "question": "' + "问" * 501 + '", "type": "factoid", "answers": ["a"]}', "line 2.*cannot be asked"),
        ('{"id": "b", "question": "q", "type": "t", "answers": [], "evidence": "e"}', "line 2.*non-empty"),
        ('{"id": "b", "question": "q", "type": "t", "answers": ["a"], "evidence": "e", "match": "most"}', "line 2"),
        ('[1, 2]', "line 2.*JSON object"),
    ],
)
def test_bad_question_file_names_the_line(tmp_path, line, message):
    path = tmp_path / "q.jsonl"
    good = '{"id": "a", "question": "q", "type": "t", "answers": ["a"], "evidence": "e"}'
    path.write_text(good + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(EvalError, match=message):
        load_questions(path)


def test_bad_rows_are_reported_and_skipped(tmp_path):
    path = tmp_path / "q.jsonl"
    rows = ['{"id": "a", "question": "英伟达是谁创立的?", "type": "t", "answers": ["黄仁勋"]}',
            '{"id": "b", "question": "", "type": "t", "answers": ["x"]}', "{oops",
            '{"id": "c", "question": "谁?", "type": "unanswerable", "answers": [], "answerable": false}']
    path.write_text("\n".join(rows), encoding="utf-8")
    problems: list[str] = []
    questions = load_questions(path, problems)
    assert [q.id for q in questions] == ["a", "c"] and questions[1].evidence == ""
    assert len(problems) == 2 and "line 2 (id 'b')" in problems[0] and "line 3" in problems[1]


@pytest.mark.parametrize("encoding", ["gbk", "utf-16"])
def test_question_files_in_other_encodings_are_read(tmp_path, encoding):
    path = tmp_path / "q.jsonl"
    path.write_bytes('{"id": "a", "question": "英伟达是谁创立的?", "type": "t", "answers": ["黄仁勋"]}\n'
                     .encode(encoding))
    assert load_questions(path)[0].question == "英伟达是谁创立的?"


def test_run_eval_report_schema(assistant):
    questions = load_questions(QUESTIONS)[:12] + [q for q in load_questions(QUESTIONS) if not q.answerable][:3]
    report = run_eval(assistant, questions)
    summary = report["summary"]
    for key in ("questions", "answer_accuracy", "hit@1", "hit@3", "hit@5", "mrr", "refusal_accuracy",
                "false_refusal_rate", "latency_ms_p50", "latency_ms_p95", "by_type"):
        assert key in summary
    assert summary["questions"] == 15 and "factoid" in summary["by_type"]
    result = report["results"][0]
    for key in ("id", "question", "rewritten_question", "answer", "refused", "sources", "latency_ms", "correct",
                "hit_rank"):
        assert key in result
    assert len(result["sources"]) >= 5 and {"doc_id", "text", "score"} <= set(result["sources"][0])
    assert report["config"]["retriever"] == "hybrid"


def _eval(built, tmp_path, *extra):
    return main(["eval", "--index", str(built.index_dir), "--no-progress", *extra])


def test_cli_eval_min_accuracy_compare_and_report(built, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ASSISTANT_CORPUS_DIR", str(built.corpus_dir))
    out = tmp_path / "run.json"
    assert _eval(built, tmp_path, "--json", str(out), "--min-accuracy", "0.8", "--report") == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    accuracy = report["summary"]["answer_accuracy"]
    assert accuracy >= 0.8 and report["summary"]["hit@5"] >= 0.95
    assert out.with_suffix(".md").exists() and out.with_suffix(".png").stat().st_size > 5000
    printed = capsys.readouterr().out
    assert "overall" in printed and "Failed questions" in printed

    assert _eval(built, tmp_path, "--min-accuracy", str(min(1.0, accuracy + 0.01))) == 1

    worse = json.loads(out.read_text(encoding="utf-8"))
    worse["summary"]["answer_accuracy"] -= 0.1
    flipped = worse["results"][0]
    flipped["correct"] = not flipped["correct"]
    flipped["answer"] = "旧的回答"
    (tmp_path / "old.json").write_text(json.dumps(worse, ensure_ascii=False), encoding="utf-8")
    capsys.readouterr()
    assert _eval(built, tmp_path, "--compare", str(tmp_path / "old.json")) == 0
    printed = capsys.readouterr().out
    assert "+0.100" in printed and "questions that flipped: 1" in printed and "旧的回答" in printed


def test_cli_eval_baseline_side_by_side(built, tmp_path, capsys):
    assert main(["eval", "--index", str(built.index_dir), "--no-progress", "--baseline", "--json",
                 str(tmp_path / "b.json")]) == 0
    printed = capsys.readouterr().out
    assert "stock LangChain recipe" in printed
    stock = json.loads((tmp_path / "b.json").read_text(encoding="utf-8"))["baseline"]["summary"]
    ours = json.loads((tmp_path / "b.json").read_text(encoding="utf-8"))["summary"]
    assert 0.4 < stock["hit@5"] < 0.75  # the recipe's measured floor (about 60%)
    assert ours["hit@5"] > stock["hit@5"] + 0.25


def test_cli_eval_bad_inputs(built, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n", encoding="utf-8")
    assert main(["eval", "--index", str(built.index_dir), "--questions", str(bad)]) == 2
    assert "bad.jsonl, line 1" in capsys.readouterr().err
    assert main(["eval", "--index", str(tmp_path / "no-index")]) == 3
    assert "No index" in capsys.readouterr().err
