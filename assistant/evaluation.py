"""`assistant eval`: retrieval, answer and refusal quality on the eval question set."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import validation
from .answerers.base import strip_markers
from .config import Settings
from .errors import EvalError
from .scoring import (
    DEFAULT_QUESTIONS,
    EvalQuestion,
    hit_rank,
    is_correct,
    load_questions,
    normalize,
    percentile,
    summarize,
)

PROGRESS_SECONDS = 30.0  # without a terminal, a progress line this often (a log stays short on a 100k run)
SHOWN_PROBLEMS = 5  # skipped rows printed; all of them go into the --json report


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM stops a run as Ctrl-C does, so that the questions scored so far are kept."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _score_all(questions: list, score: Callable[[Any], dict], label: str, progress: bool,
               on_result: Callable[[dict], None] | None) -> tuple[list[dict], bool]:
    """`score` over every question: progress on stderr, each row handed to `on_result` as it is made.

    Ctrl-C or SIGTERM ends the loop early; returns the rows scored so far and whether it was interrupted.
    """
    from tqdm import tqdm

    results: list[dict] = []
    bar = progress and sys.stderr.isatty()
    started = last = time.monotonic()
    try:
        with _terminate_as_interrupt():
            for q in tqdm(questions, desc=label, unit="q", disable=not bar, file=sys.stderr):
                row = score(q)
                results.append(row)
                if on_result:
                    on_result(row)
                now = time.monotonic()
                if progress and not bar and (now - last >= PROGRESS_SECONDS or len(results) == len(questions)):
                    last = now
                    rate = len(results) / max(now - started, 1e-9)
                    left = (len(questions) - len(results)) / rate
                    print(f"{label}: {len(results)}/{len(questions)} questions, {rate:.1f}/s, "
                          + (f"{_duration(left)} left" if left else f"done in {_duration(now - started)}"),
                          file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        return results, True
    return results, False


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def run_eval(assistant, questions: list[EvalQuestion], k: int | None = None, answerer: str | None = None,
             retriever: str = "hybrid", progress: bool = False,
             on_result: Callable[[dict], None] | None = None, articles: list[str] | None = None) -> dict:
    """Every question through Assistant.ask (with its history); the full report as a dict.

    A question that fails at run time is recorded with its error and counted wrong; the run goes on.
    Ctrl-C or SIGTERM stops it: the report then covers the questions scored so far and holds
    `interrupted`. `on_result` gets each result row as soon as it is scored.
    """
    from .errors import AssistantError

    k = max(k or assistant.settings.k, 5)  # at least 5 sources so hit@5 means what it says
    articles = assistant.article_ids(articles)  # an unknown name stops the run before the first question

    def score(q: EvalQuestion) -> dict:
        row = {"id": q.id, "question": q.question, "type": q.type, "expected": q.answers, "match": q.match,
               "answerable": q.answerable}
        try:
            answer = assistant.ask(q.question, q.history, k=k, answerer=answerer, retriever=retriever,
                                   articles=articles)
        except (AssistantError, RuntimeError, ValueError) as exc:
            return {**row, "rewritten_question": q.question, "answer": "", "refused": False, "kind": None,
                    "sources": [], "latency_ms": 0.0, "correct": False, "hit_rank": None,
                    "error": f"{type(exc).__name__}: {exc}"}
        return {
            **row, "rewritten_question": answer.rewritten_question, "answer": answer.answer,
            "refused": answer.refused, "kind": answer.kind, "confidence": answer.confidence,
            "sources": [{"doc_id": s.doc_id, "text": s.text, "score": round(s.score, 4), "rank": s.rank,
                         "paragraph": s.paragraph, "start": s.start, "end": s.end} for s in answer.sources],
            "latency_ms": round(answer.latency_ms, 2),
            "correct": is_correct(q, answer.answer, answer.refused, answer.kind),
            "hit_rank": hit_rank(q, [s.text for s in answer.sources]),
        }

    results, interrupted = _score_all(questions, score, "eval", progress, on_result)
    config = {"k": k, "answerer": answerer or assistant.settings.answerer, "retriever": retriever,
              "embed_model": assistant.index.manifest["embedding"]["model"],
              "dense_weight": assistant.retrievers[retriever].effective_dense_weight if retriever == "hybrid" else None,
              "chunker": assistant.index.manifest["chunker"], "index_version": assistant.index.version,
              "questions": len(questions), "articles": articles}
    summary = summarize(results, questions)
    summary["errors"] = sum(1 for r in results if r.get("error"))
    report = {"summary": summary, "config": config, "results": results}
    if interrupted:
        report["interrupted"] = {"scored": len(results), "of": len(questions)}
    return report


# --- SQuAD-format sets (CMRC 2018, DRCD) --------------------------------------------------------------

def run_squad_eval(assistant, squad, doc_of: dict[str, str] | None, questions: list | None = None,
                   k: int = 5, answerer: str | None = None, progress: bool = False,
                   given: dict[str, str] | None = None, on_result: Callable[[dict], None] | None = None) -> dict:
    """EM / F1 (CMRC 2018 definitions), containment, hit@1/5, refusals and latency on SQuAD questions.

    With `doc_of` (passage id -> document id of an index holding the passages) questions are asked
    against the whole corpus; with None the answerer is handed the gold passage alone. Interrupted,
    the report covers the questions scored so far (see run_eval).
    """
    from .errors import AssistantError
    from .retrieval import Source
    from .squad import cmrc_em, cmrc_f1

    questions = questions if questions is not None else squad.questions

    def score(q) -> dict:
        row = {"id": q.id, "question": q.question, "expected": q.answers}
        started = time.perf_counter()
        try:
            if doc_of is None:
                passage = squad.passages[q.passage_id]
                source = Source(1, (given or {}).get(q.passage_id, q.passage_id), passage.title, "body", 1,
                                passage.context, 0, len(passage.context), 1.0, [])
                chosen = assistant.answerers[answerer or assistant.settings.answerer]
                draft = chosen.answer(validation.question(q.question), [source])
                text, refused, sources, confidence = draft.answer, draft.refused, [source], draft.confidence
            else:
                answer = assistant.ask(q.question, k=k, answerer=answerer)
                text, refused, sources, confidence = answer.answer, answer.refused, answer.sources, answer.confidence
        except (AssistantError, RuntimeError, ValueError) as exc:
            return {**row, "answerable": q.answerable, "answer": "", "refused": False, "em": 0.0,
                    "f1": 0.0, "contains": False, "hit_rank": None, "latency_ms": 0.0,
                    "error": f"{type(exc).__name__}: {exc}"}
        latency = (time.perf_counter() - started) * 1e3
        plain = "" if refused else strip_markers(text)
        gold = [normalize(a) for a in q.answers]
        target = doc_of.get(q.passage_id) if doc_of else source.doc_id
        hit = next((s.rank for s in sources if s.doc_id == target and any(g in normalize(s.text) for g in gold)), None)
        return {**row, "answerable": q.answerable, "answer": text, "refused": refused, "confidence": confidence,
                "em": cmrc_em(plain, q.answers) if plain else 0.0,
                "f1": cmrc_f1(plain, q.answers) if plain else 0.0,
                "contains": bool(plain) and any(g in normalize(plain) for g in gold),
                "hit_rank": hit, "latency_ms": round(latency, 2),
                "sources": [{"doc_id": s.doc_id, "rank": s.rank, "text": s.text} for s in sources]}

    results, interrupted = _score_all(questions, score, "squad", progress, on_result)
    report = {"summary": summarize_squad(results), "results": results}
    if interrupted:
        report["interrupted"] = {"scored": len(results), "of": len(questions)}
    return report


def summarize_squad(results: list[dict]) -> dict:
    """EM / F1 / containment / hits over the answerable questions; refusals of each kind apart; SQuAD 2.0's
    overall EM / F1 (a refused unanswerable question scores 1) when the set has unanswerable questions."""
    answerable = [r for r in results if r.get("answerable", True)]
    unanswerable = [r for r in results if not r.get("answerable", True)]
    n = max(1, len(answerable))
    latencies = [r["latency_ms"] for r in results]
    summary = {
        "questions": len(results),
        "answerable": len(answerable),
        "em": round(100 * sum(r["em"] for r in answerable) / n, 2),
        "f1": round(100 * sum(r["f1"] for r in answerable) / n, 2),
        "containment_accuracy": round(sum(r["contains"] for r in answerable) / n, 4),
        "hit@1": round(sum(1 for r in answerable if r["hit_rank"] == 1) / n, 4),
        "hit@5": round(sum(1 for r in answerable if r["hit_rank"] and r["hit_rank"] <= 5) / n, 4),
        "refusal_rate": round(sum(r["refused"] for r in answerable) / n, 4),
        "unanswerable": len(unanswerable),
        "unanswerable_refused": (round(sum(r["refused"] for r in unanswerable) / len(unanswerable), 4)
                                 if unanswerable else None),
        "em_all": round(100 * (sum(r["em"] for r in answerable) + sum(r["refused"] for r in unanswerable))
                        / max(1, len(results)), 2),
        "f1_all": round(100 * (sum(r["f1"] for r in answerable) + sum(r["refused"] for r in unanswerable))
                        / max(1, len(results)), 2),
        "median_answer_chars": statistics.median([len(strip_markers(r["answer"])) for r in results
                                                  if r["answer"] and not r["refused"]] or [0]),
        "latency_ms_p50": round(statistics.median(latencies), 2) if latencies else 0.0,
        "latency_ms_p95": round(percentile(latencies, 95), 2),
        "errors": sum(1 for r in results if r.get("error")),
    }
    return summary


def format_squad(summary: dict, title: str) -> str:
    return (f"== {title} ==\n"
            f"questions {summary['questions']}  EM {summary['em']:.1f}  F1 {summary['f1']:.1f}  "
            f"containment {summary['containment_accuracy']:.3f}  hit@1 {summary['hit@1']:.3f}  "
            f"hit@5 {summary['hit@5']:.3f}  refused {summary['refusal_rate']:.3f}  "
            f"median answer {summary['median_answer_chars']} chars\n"
            + (f"unanswerable {summary['unanswerable']}: refused {summary['unanswerable_refused']:.3f}; "
               f"all questions (SQuAD 2.0, a right refusal scores 1) EM {summary['em_all']:.1f}  "
               f"F1 {summary['f1_all']:.1f}\n" if summary.get("unanswerable") else "")
            + f"latency ms: p50 {summary['latency_ms_p50']:.1f}, p95 {summary['latency_ms_p95']:.1f}"
            + (f"\nerrors: {summary['errors']}" if summary["errors"] else ""))


# --- output ------------------------------------------------------------------------------------

METRICS = ("answer_accuracy", "hit@1", "hit@3", "hit@5", "mrr", "refusal_accuracy", "false_refusal_rate")


def _fmt(v) -> str:
    return "  -  " if v is None else f"{v:.3f}"


def format_summary(summary: dict, title: str = "ours") -> str:
    head = f"{'':<14}{'n':>4}  " + "  ".join(f"{m.replace('_accuracy', '_acc').replace('false_refusal_rate', 'false_ref'):>10}"
                                           for m in METRICS)
    lines = [f"== {title} ==", head]
    rows = [("overall", summary)] + list(summary["by_type"].items())
    for name, s in rows:
        lines.append(f"{name:<14}{s['questions']:>4}  " + "  ".join(f"{_fmt(s[m]):>10}" for m in METRICS))
    lines.append(f"latency ms: p50 {summary['latency_ms_p50']:.1f}, p95 {summary['latency_ms_p95']:.1f}")
    return "\n".join(lines)


def format_failures(report: dict) -> str:
    lines = []
    for r in report["results"]:
        if r["correct"]:
            continue
        expected = "拒答 (refusal)" if not r["answerable"] else f"{r['match']}: {' / '.join(r['expected'])}"
        lines.append(f"- {r['id']} [{r['type']}] {r['question']}\n    answered: {r['answer']}\n"
                     f"    expected: {expected}   evidence rank: {r['hit_rank']}")
    return "\n".join(lines) if lines else "(none)"


def compare(current: dict, baseline: dict) -> str:
    """Metric differences and the questions whose correctness flipped."""
    lines = [f"{'metric':<20}{'baseline':>10}{'now':>10}{'change':>10}"]
    for m in (*METRICS, "latency_ms_p50", "latency_ms_p95"):
        a, b = baseline["summary"].get(m), current["summary"].get(m)
        delta = "" if a is None or b is None else f"{b - a:+.3f}"
        lines.append(f"{m:<20}{_fmt(a) if a is not None else '-':>10}{_fmt(b) if b is not None else '-':>10}{delta:>10}")
    before = {r["id"]: r for r in baseline.get("results", [])}
    flips = [(r, before[r["id"]]) for r in current["results"] if r["id"] in before and r["correct"] != before[r["id"]]["correct"]]
    lines.append(f"questions that flipped: {len(flips)}")
    for now, then in flips:
        arrow = "fixed " if now["correct"] else "broken"
        lines.append(f"  {arrow} {now['id']} {now['question']}\n      was: {then['answer']}\n      now: {now['answer']}")
    return "\n".join(lines)


def write_report(report: dict, json_path: Path, baseline_summary: dict | None = None) -> Path:
    """A Markdown report with a chart of accuracy per question type, next to the JSON."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = report["summary"]
    types = list(summary["by_type"])
    values = [summary["by_type"][t]["answer_accuracy"] or 0 for t in types]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.bar(types, values, color="#3b6ea5", label="ours")
    if baseline_summary:
        ax.scatter(types, [baseline_summary["by_type"].get(t, {}).get("hit@5") or 0 for t in types],
                   color="#d95f02", zorder=3, label="baseline hit@5")
        ax.legend(loc="lower right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("answer accuracy")
    ax.set_title(f"Accuracy per question type (overall {summary['answer_accuracy']:.2f})")
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    chart = json_path.with_suffix(".png")
    fig.savefig(chart, dpi=110)
    plt.close(fig)
    md = json_path.with_suffix(".md")
    md.write_text(
        f"# Eval report\n\n![accuracy per type]({chart.name})\n\n```\n{format_summary(summary)}\n```\n\n"
        f"## Config\n\n```json\n{json.dumps(report['config'], ensure_ascii=False, indent=1)}\n```\n\n"
        f"## Failed questions\n\n```\n{format_failures(report)}\n```\n",
        encoding="utf-8",
    )
    return md


def run_eval_command(args: argparse.Namespace, settings: Settings) -> int:
    from .assistant import Assistant

    if args.squad:
        return run_squad_command(args, settings)
    problems: list[str] = []
    source = args.questions or DEFAULT_QUESTIONS
    questions = load_questions(source, problems)
    _print_problems(args, f"skipped {len(problems)} bad rows of {source}; the other {len(questions)} questions run",
                    problems)
    baseline_prev = None
    if args.compare:
        try:
            baseline_prev = json.loads(Path(args.compare).read_text(encoding="utf-8"))
            baseline_prev["summary"]
        except (OSError, ValueError, KeyError) as exc:
            raise EvalError(f"--compare {args.compare}: not an eval JSON written by --json ({exc}).") from None
    assistant = Assistant.load(settings=settings)
    started = time.perf_counter()
    with _rows_file(args) as on_result:
        report = run_eval(assistant, questions, k=args.k, answerer=args.answerer, retriever=args.retriever,
                          progress=not args.no_progress, on_result=on_result, articles=args.article)
        report["config"]["seconds"] = round(time.perf_counter() - started, 2)
        report["skipped"] = problems
        _write_json(args, report)
    print(format_summary(report["summary"]))
    print("\nFailed questions:\n" + format_failures(report))
    stock = None
    if args.baseline and not report.get("interrupted"):
        from .baseline import run_baseline

        stock = run_baseline(settings, questions)
        report["baseline"] = stock
        print("\n" + format_side_by_side(report["summary"], stock["summary"]))
        _write_json(args, report, quiet=True)
    if baseline_prev is not None:
        print("\n== compared with " + str(args.compare) + " ==\n" + compare(report, baseline_prev))
    if args.report:
        target = args.json_out or Path("eval-out/eval.json")
        if not args.json_out:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
        print(f"wrote {write_report(report, target, stock['summary'] if stock else None)}")
    if report.get("interrupted"):
        return _interrupted(args, report)
    accuracy = report["summary"]["answer_accuracy"]
    if args.min_accuracy is not None and accuracy < args.min_accuracy:
        print(f"FAIL: answer accuracy {accuracy:.3f} is below --min-accuracy {args.min_accuracy:.3f}", file=sys.stderr)
        return 1
    return 0


def _print_problems(args: argparse.Namespace, headline: str, problems: list[str]) -> None:
    """The count and the first few problems on stderr; every one of them is in the --json report."""
    if not problems:
        return
    print(headline + ":", file=sys.stderr)
    for problem in problems[:SHOWN_PROBLEMS]:
        print(f"  {problem}", file=sys.stderr)
    if len(problems) > SHOWN_PROBLEMS:
        where = f"listed in {args.json_out}" if args.json_out else "listed in the report of --json OUT"
        print(f"  ... and {len(problems) - SHOWN_PROBLEMS} more ({where})", file=sys.stderr)


@contextlib.contextmanager
def _rows_file(args: argparse.Namespace) -> Iterator[Callable[[dict], None] | None]:
    """With --json OUT, each result row is appended to OUT.partial.jsonl as it is scored, so that a run
    killed outright keeps what it did; the file goes once the report in OUT holds every row."""
    if not args.json_out:
        yield None
        return
    path = args.json_out.with_suffix(".partial.jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as rows:
        print(f"result rows go to {path} as they are scored, until {args.json_out} is written", file=sys.stderr)

        def write(row: dict) -> None:
            rows.write(json.dumps(row, ensure_ascii=False) + "\n")
            rows.flush()

        yield write
    if args.json_out.is_file():
        path.unlink(missing_ok=True)


def _interrupted(args: argparse.Namespace, report: dict) -> int:
    done = report["interrupted"]
    kept = (f"the report of those is in {args.json_out}" if args.json_out
            else "the figures above cover those only; pass --json OUT to keep every row as it is scored")
    print(f"INTERRUPTED after {done['scored']} of {done['of']} questions; {kept}.", file=sys.stderr)
    return 130


def _write_json(args: argparse.Namespace, report: dict, quiet: bool = False) -> None:
    """Write the report as soon as it exists, so that no later step can lose it."""
    if not args.json_out:
        return
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    if not quiet:
        print(f"wrote {args.json_out}", file=sys.stderr)


def run_squad_command(args: argparse.Namespace, settings: Settings) -> int:
    """`assistant eval --squad FILE`: index the file's passages in a temporary index (or hand the reader the gold
    passage with --passage-given) and report EM / F1 as the CMRC 2018 organisers define them."""
    import tempfile

    from .assistant import Assistant
    from .embeddings import get_embeddings
    from .indexing import build_index, load_index
    from .squad import load_squad, write_corpus

    squad = load_squad(args.squad)
    _print_problems(args, f"skipped {len(squad.skipped)} bad parts of {args.squad}; its {len(squad.questions)} "
                          "usable questions run", squad.skipped)
    _print_problems(args, f"{len(squad.renamed)} duplicate ids in {args.squad} made unique; each question is "
                          "scored against its own passage", squad.renamed)
    questions = squad.questions[: args.limit or None]  # unanswerable ones (is_impossible) expect a refusal
    embeddings = get_embeddings(settings.embed_model, settings.allow_download)
    progress = not args.no_progress
    with tempfile.TemporaryDirectory(prefix="assistant-squad-") as tmp:
        corpus, index_dir = Path(tmp) / "corpus", Path(tmp) / "index"
        if args.passage_given:
            squad_subset = type(squad)({q.passage_id: squad.passages[q.passage_id] for q in questions}, questions, [])
            # a small index only to load the assistant; the answerer gets the gold passage
            given = write_corpus(squad_subset, corpus)
            doc_of = None
        else:
            doc_of = write_corpus(squad, corpus)
        started = time.perf_counter()
        local = replace(settings, corpus_dir=corpus, index_dir=index_dir)  # Milvus Lite: a file in the temp folder
        build = build_index(corpus, index_dir, embeddings, user_words=settings.user_words,
                            backend=local.index_backend)
        print(f"indexed {build.documents} passages, {build.chunks} chunks in {time.perf_counter() - started:.1f} s",
              file=sys.stderr)
        assistant = Assistant(local, load_index(index_dir, embeddings), embeddings)
        try:
            with _rows_file(args) as on_result:
                report = run_squad_eval(assistant, squad, doc_of, questions, k=args.k or settings.k,
                                        answerer=args.answerer, progress=progress,
                                        given=given if args.passage_given else None, on_result=on_result)
                report["config"] = _squad_config(args, settings, squad)
                report["skipped"], report["renamed"] = squad.skipped, squad.renamed
                _write_json(args, report)
        finally:
            if local.backend == "milvus":
                assistant.index.store.collection.drop()  # a server keeps collections; this one was temporary
    print(format_squad(report["summary"], f"{Path(args.squad).name}, {report['config']['mode']}"))
    if report.get("interrupted"):
        return _interrupted(args, report)
    f1 = report["summary"]["f1"]
    if args.min_f1 is not None and f1 < args.min_f1:
        print(f"FAIL: F1 {f1:.1f} is below --min-f1 {args.min_f1:.1f}", file=sys.stderr)
        return 1
    return 0


def _squad_config(args: argparse.Namespace, settings: Settings, squad) -> dict:
    k = args.k or settings.k
    mode = "passage given" if args.passage_given else f"open corpus of {len(squad.passages)} passages, k={k}"
    return {"file": str(args.squad), "mode": mode, "answerer": args.answerer or settings.answerer,
            "embed_model": settings.embed_model, "limit": args.limit, "backend": settings.backend}


def format_side_by_side(ours: dict, stock: dict) -> str:
    lines = ["== ours vs stock LangChain recipe (500/100 splitter, MiniLM, dense top-5) ==",
             f"{'metric':<20}{'ours':>10}{'stock':>10}"]
    for m in ("answer_accuracy", "hit@1", "hit@3", "hit@5", "mrr"):
        lines.append(f"{m:<20}{_fmt(ours.get(m)):>10}{_fmt(stock.get(m)):>10}")
    lines.append("(the stock recipe has no answerer: its answer accuracy is not measured)")
    return "\n".join(lines)
