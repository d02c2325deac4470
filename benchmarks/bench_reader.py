"""Readers side by side with the gold passage given: prints figures, asserts nothing.

    python benchmarks/bench_reader.py [--limit N] [--json OUT]
    python benchmarks/bench_reader.py --shapes [--write-shapes]

On the CMRC 2018 trial set, DuReader-robust dev and DuReader-checklist dev (tuning and reporting, never
trained on) and the held-out passages of the reader's own training files (every 20th passage, split as
training split them; Traditional Chinese converted with OpenCC), per answerer:

* sentence baseline: the passage's sentence sharing most distinct characters with the question;
* extractive: the rule-based answerer this project had before the reader;
* reader span: the trained reader's best span, never refusing (its raw quality);
* reader answerer: the reader with answer forms and calibrated refusal;
* combined (the default): the reader answerer, and the extractive answer where the reader refuses.

EM / F1 as the CMRC 2018 organisers define them over the answerable questions, overall and per question
kind (read from the question's wording), the refusal rate of answerable and of unanswerable questions
(DuReader-checklist's is_impossible), and the median answer length.

--shapes measures, per question kind, how much text around the reader's span answers best: the span, its
clause, its sentence, the enumeration or the explanation (sentence + next when short). The sets are
annotated differently (CMRC answers: median 19 characters, often a clause or sentence; DRCD: median 4), so a
shape is chosen per kind by the mean F1 over the sets; --write-shapes stores the choice in
assistant/models/reader-calibration.json, where the reader answerer reads it. The datasets are read from
../shared/datasets/ (or ASSISTANT_DATASETS); a missing file is named and skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATASETS = Path(os.environ.get("ASSISTANT_DATASETS", ROOT.parent / "shared" / "datasets"))
_PUNCT = set("，。！？；：、“”‘’（）《》「」,.!?;:()\"' ")  # noqa: RUF001


def sentence_baseline(question: str, passage: str) -> str:
    from assistant.chunking import split_sentences

    asked = {ch for ch in question if ch not in _PUNCT}
    spans = split_sentences(passage) or [(0, len(passage))]
    best = max(spans, key=lambda s: len(asked & set(passage[s[0]:s[1]])))
    return passage[best[0]:best[1]]


def run(name: str, squad, questions: list, answerers: dict, limit: int) -> dict:
    from assistant.answerers.base import strip_markers
    from assistant.language import answer_form
    from assistant.retrieval import QuestionProfile, Source
    from assistant.squad import cmrc_em, cmrc_f1

    reader_answerer = answerers["reader"]
    rows = defaultdict(list)  # answerer -> [(kind, em, f1, refused, chars, ms)]
    unanswerable_refused = defaultdict(list)  # answerer -> [refused] on questions marked is_impossible
    questions = questions[: limit or None]
    for q in questions:
        passage = squad.passages[q.passage_id]
        source = Source(1, q.passage_id, passage.title, "body", 1, passage.context, 0, len(passage.context), 1.0, [])
        kind = f"{answer_form(q.question)}/{QuestionProfile(q.question).kind}"
        predictions = {}
        t = time.perf_counter()
        predictions["sentence baseline"] = (sentence_baseline(q.question, passage.context), False,
                                            time.perf_counter() - t)
        t = time.perf_counter()
        draft = answerers["extractive"].answer(q.question, [source])
        predictions["extractive"] = (strip_markers(draft.answer), draft.refused, time.perf_counter() - t)
        t = time.perf_counter()
        spans = reader_answerer.read(q.question, [source])  # ranked as the answerer ranks them
        read_s = time.perf_counter() - t
        best = spans[0] if spans else None
        predictions["reader span"] = (passage.context[best.start:best.end] if best else "", False, read_s)
        t = time.perf_counter()
        draft = reader_answerer.from_spans(q.question, [source], spans, answer_form(q.question))
        predictions["reader answerer"] = (strip_markers(draft.answer), draft.refused, read_s + time.perf_counter() - t)
        reader_draft, rules = predictions["reader answerer"], predictions["extractive"]
        predictions["combined"] = rules if reader_draft[1] and not rules[1] else reader_draft
        for answerer, (text, refused, seconds) in predictions.items():
            if not q.answerable:
                unanswerable_refused[answerer].append(refused)
                continue
            text = "" if refused else text
            rows[answerer].append((kind, cmrc_em(text, q.answers) if text else 0.0,
                                   cmrc_f1(text, q.answers) if text else 0.0, refused, len(text), seconds * 1e3))
    report = {}
    n_unanswerable = sum(not q.answerable for q in questions)
    print(f"\n== {name}: {len(questions) - n_unanswerable} answerable questions"
          + (f" and {n_unanswerable} unanswerable" if n_unanswerable else "") + ", passage given ==")
    print(f"{'answerer':<20}{'EM':>7}{'F1':>7}{'refused':>9}{'unans. refused':>16}{'median chars':>14}{'p50 ms':>9}")
    for answerer, values in rows.items():
        n = len(values)
        refused_u = unanswerable_refused.get(answerer)
        summary = {"em": round(100 * sum(v[1] for v in values) / n, 1),
                   "f1": round(100 * sum(v[2] for v in values) / n, 1),
                   "refused": round(sum(v[3] for v in values) / n, 3),
                   "unanswerable_refused": round(sum(refused_u) / len(refused_u), 3) if refused_u else None,
                   "median_chars": statistics.median([v[4] for v in values if not v[3]] or [0]),
                   "p50_ms": round(statistics.median(v[5] for v in values), 1)}
        kinds = defaultdict(list)
        for v in values:
            kinds[v[0]].append(v)
        summary["by_kind"] = {k: {"n": len(vs), "em": round(100 * sum(v[1] for v in vs) / len(vs), 1),
                                  "f1": round(100 * sum(v[2] for v in vs) / len(vs), 1)}
                              for k, vs in sorted(kinds.items())}
        report[answerer] = summary
        u = summary["unanswerable_refused"]
        print(f"{answerer:<20}{summary['em']:>7.1f}{summary['f1']:>7.1f}{summary['refused']:>9.3f}"
              f"{'-' if u is None else f'{u:.3f}':>16}{summary['median_chars']:>14}{summary['p50_ms']:>9.1f}")
    kinds = sorted({k for s in report.values() for k in s["by_kind"]}, key=lambda k: -report["reader span"]["by_kind"][k]["n"])
    print(f"\nF1 per question kind (form/asked-for), {name}:")
    print(f"{'kind':<22}{'n':>5}" + "".join(f"{a[:16]:>18}" for a in report))
    for k in kinds:
        n = report["reader span"]["by_kind"][k]["n"]
        print(f"{k:<22}{n:>5}" + "".join(f"{report[a]['by_kind'].get(k, {}).get('f1', 0):>18.1f}" for a in report))
    return report


def shape_table(name: str, squad, questions: list, reader, limit: int) -> dict:
    """{kind: {shape: F1 sum}} and counts, from the reader's best span on the gold passage."""
    from assistant.answerers.reader import SHAPES, _sentence_around, shaped, whole_words
    from assistant.language import answer_form
    from assistant.retrieval import QuestionProfile
    from assistant.squad import cmrc_f1

    table: dict = defaultdict(lambda: defaultdict(float))
    counts: dict = defaultdict(int)
    for q in [q for q in questions if q.answerable][: limit or None]:
        context = squad.passages[q.passage_id].context
        spans = reader.read(q.question, [context])
        kind = f"{answer_form(q.question)}/{QuestionProfile(q.question).kind}"
        counts[kind] += 1
        if not spans:
            continue
        start, end = whole_words(context, spans[0].start, spans[0].end)  # as the answerer widens it
        s_start, s_end = _sentence_around(context, start, end)
        for shape in SHAPES:
            table[kind][shape] += cmrc_f1(shaped(shape, context, start, end, s_start, s_end), q.answers)
    return {"f1": {k: {s: round(100 * v / counts[k], 1) for s, v in d.items()} for k, d in table.items()},
            "n": dict(counts)}


# What the answer must stay, whatever the metrics prefer: a why/how question gets whole sentences.
ALLOWED_SHAPES = {"explanation": ("sentence", "explanation"), "summary": ("sentence",)}


def choose_shapes(tables: dict, write: bool) -> dict:
    from assistant.answerers.reader import CALIBRATION_FILE, SHAPES

    kinds = sorted({k for t in tables.values() for k in t["n"]},
                   key=lambda k: -sum(t["n"].get(k, 0) for t in tables.values()))
    print(f"\nF1 per shape and kind ({' / '.join(tables)}); chosen by the mean over the sets")
    print(f"{'kind':<24}{'n':>10}" + "".join(f"{s:>20}" for s in SHAPES) + "   chosen")
    chosen = {}
    for kind in kinds:
        means = {}
        cells = []
        for s in SHAPES:
            values = [t["f1"].get(kind, {}).get(s) for t in tables.values() if t["n"].get(kind, 0) >= 5]
            values = [v for v in values if v is not None]
            means[s] = sum(values) / len(values) if values else 0.0
            cells.append("/".join(f"{t['f1'].get(kind, {}).get(s, 0):.1f}" for t in tables.values()))
        n = "/".join(str(t["n"].get(kind, 0)) for t in tables.values())
        allowed = ALLOWED_SHAPES.get(kind.split("/")[0], SHAPES)
        if any(t["n"].get(kind, 0) >= 5 for t in tables.values()):
            chosen[kind] = max(allowed, key=means.get)
        print(f"{kind:<24}{n:>10}" + "".join(f"{c:>20}" for c in cells) + f"   {chosen.get(kind, '(default)')}")
    if write:
        raw = json.loads(CALIBRATION_FILE.read_text(encoding="utf-8")) if CALIBRATION_FILE.is_file() else None
        if raw is None:
            print(f"no {CALIBRATION_FILE}: run `assistant calibrate-reader` first")
        else:
            raw["shapes"] = chosen
            raw["shapes_chosen_on"] = f"mean F1 of {', '.join(tables)}, passage given"
            CALIBRATION_FILE.write_text(json.dumps(raw, ensure_ascii=False, indent=1), encoding="utf-8")
            print(f"wrote the shapes into {CALIBRATION_FILE}")
    return chosen


REPORT_SETS = (("CMRC 2018 trial", "cmrc2018/cmrc2018_trial.json"),
               ("DuReader-robust dev", "dureader/dureader_robust_dev.json"),
               ("DuReader-checklist dev", "dureader/dureader_checklist_dev.json"))


def evaluation_sets(reader) -> dict:
    """name -> (SquadSet, questions): the tuning / reporting sets, and the held-out passages of the reader's own
    training files (split as training split them, so none of them was trained on)."""
    from assistant.language import simplified
    from assistant.squad import load_squad, load_squad_files
    from assistant.training import split_heldout

    sets = {}
    for name, rel in REPORT_SETS:
        path = DATASETS / rel
        if path.is_file():
            squad = load_squad(path, convert=simplified)
            sets[name] = (squad, squad.questions)
        else:
            print(f"SKIPPED {name}: {path} is missing (set ASSISTANT_DATASETS)")
    training = reader.meta.get("training", {})
    names = [Path(p).name for p in training.get("data", [])]
    found = {p.name: p for p in DATASETS.rglob("*.json")} if DATASETS.is_dir() else {}
    missing = [n for n in names if n not in found]
    if names and not missing:
        squad = load_squad_files([found[n] for n in names], convert=simplified)
        _, held = split_heldout(squad, training.get("heldout_every", 20))
        sets["training files, held-out passages"] = (squad, held)
    else:
        print(f"SKIPPED the training files' held-out passages: {', '.join(missing) or 'no training data recorded'}")
    return sets


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=0, help="first N questions of each set")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--shapes", action="store_true", help="measure answer shapes per question kind")
    parser.add_argument("--write-shapes", action="store_true", help="with --shapes: store the chosen shapes")
    args = parser.parse_args()

    from assistant.answerers.extractive import ExtractiveAnswerer
    from assistant.answerers.reader import ReaderAnswerer
    from assistant.reader import SpanReader

    reader = SpanReader.load()
    answerers = {"reader": ReaderAnswerer(reader, index=None), "extractive": ExtractiveAnswerer(lambda term: 1.0)}  # uniform IDF: no index here
    report = {}
    for name, (squad, questions) in evaluation_sets(reader).items():
        if args.shapes:
            report[name] = shape_table(name, squad, questions, reader, args.limit)
        else:
            report[name] = run(name, squad, questions, answerers, args.limit)
    if args.shapes:
        report["chosen"] = choose_shapes(dict(report), args.write_shapes)
    if args.json:
        args.json.write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
