"""The project's question files (JSONL): reading them, judging one answer, and summarising a run.

Shared by `assistant eval` (assistant/evaluation.py) and the stock-recipe baseline (assistant/baseline.py).
"""

from __future__ import annotations

import json
import statistics
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from . import validation
from .answerers.base import MAX_ANSWER_CHARS
from .answerers.reader import CAPS
from .errors import EvalError

DEFAULT_QUESTIONS = Path("corpus/eval/questions.jsonl")
_REQUIRED = {"id": str, "question": str, "type": str, "answers": list}
EXPECTED_ROW = ('one JSON object per line: {"id", "question", "type", "answers": [text...]}, optionally "evidence", '
                '"match", "answerable", "history"')

def normalize(text: str) -> str:
    """NFKC, then no whitespace, then lower case: the matching rule for answers and evidence."""
    return "".join(unicodedata.normalize("NFKC", text).split()).lower()


@dataclass
class EvalQuestion:
    id: str
    question: str
    type: str
    answers: list[str]
    evidence: str = ""  # an exact substring of the supporting passage; optional (no hit@k without it)
    match: str = "any"
    answerable: bool = True
    history: list[str] = field(default_factory=list)


def load_questions(path: Path, problems: list[str] | None = None) -> list[EvalQuestion]:
    """Parse and check the question file; every problem names the file, line and id.

    With `problems` given, a bad row is described there and skipped; without, it raises EvalError.
    """
    from .errors import CorpusError, QuestionError
    from .loaders import decode

    path = Path(path)
    if not path.is_file():
        raise EvalError(f"Question file {path} not found. Pass --questions FILE (default {DEFAULT_QUESTIONS}).")
    try:
        text, _encoding = decode(path.read_bytes(), str(path))
    except CorpusError as exc:
        raise EvalError(f"{exc} (one JSON object per line, UTF-8)") from None
    questions, seen = [], set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            row = _question_row(line, where, seen)
            validation.question(row.question)
        except QuestionError as exc:
            row_problem = f"{where} (id {row.id!r}): the question cannot be asked: {exc}"
            if problems is None:
                raise EvalError(row_problem) from None
            problems.append(row_problem)
            continue
        except EvalError as exc:
            if problems is None:
                raise
            problems.append(str(exc))
            continue
        seen.add(row.id)
        questions.append(row)
    if not questions:
        raise EvalError(f"{path} has no usable questions." + (f" First problem: {problems[0]}" if problems else "")
                        + f" Expected {EXPECTED_ROW}.")
    return questions


def _question_row(line: str, where: str, seen: set[str]) -> EvalQuestion:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise EvalError(f"{where}: not valid JSON ({exc.msg}). Each line must be one JSON object.") from None
    except RecursionError:
        raise EvalError(f"{where}: JSON nested too deeply to read; a question row is one flat object.") from None
    if not isinstance(row, dict):
        raise EvalError(f"{where}: expected a JSON object, got {type(row).__name__}.")
    where = f"{where} (id {_brief(row['id'])})" if "id" in row else where
    for name, kind in _REQUIRED.items():
        if name not in row:
            raise EvalError(f"{where}: missing field {name!r}. Required: {', '.join(_REQUIRED)}.")
        if not isinstance(row[name], kind):
            raise EvalError(f"{where}: field {name!r} must be a {kind.__name__}.")
    answerable = row.get("answerable", True)
    match = row.get("match", "any")
    evidence = row.get("evidence", "")
    if match not in ("any", "all"):
        raise EvalError(f"{where}: 'match' must be \"any\" or \"all\", got {_brief(match)}.")
    if not isinstance(answerable, bool):
        raise EvalError(f"{where}: 'answerable' must be true or false.")
    if not isinstance(evidence, str):
        raise EvalError(f"{where}: 'evidence' must be a string.")
    if answerable and (not row["answers"] or not all(isinstance(a, str) and a for a in row["answers"])):
        raise EvalError(f"{where}: an answerable question needs non-empty strings in 'answers'.")
    if not all(isinstance(a, str) for a in row["answers"]):
        raise EvalError(f"{where}: 'answers' must be a list of strings (empty for an unanswerable question).")
    history = row.get("history", [])
    if not isinstance(history, list) or not all(isinstance(h, str) for h in history):
        raise EvalError(f"{where}: 'history' must be a list of earlier questions (strings).")
    if row["id"] in seen:
        raise EvalError(f"{where}: duplicate id {_brief(row['id'])}.")
    return EvalQuestion(row["id"], row["question"], row["type"], row["answers"], evidence, match, answerable, history)


def _brief(value: object) -> str:
    """A value for a message: short, and never the repr of a (possibly deep) container."""
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:60] + "…")
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    return f"<{type(value).__name__}>"


def is_correct(q: EvalQuestion, answer: str, refused: bool, kind: str = "factoid") -> bool:
    """Unanswerable: correct when refused. Answerable: not refused, within its kind's cap, holding the answer(s)."""
    if not q.answerable:
        return refused
    if refused or len(answer) > CAPS.get(kind, MAX_ANSWER_CHARS):
        return False
    text = normalize(answer)
    found = [normalize(a) in text for a in q.answers]
    return all(found) if q.match == "all" else any(found)


def hit_rank(q: EvalQuestion, source_texts: list[str]) -> int | None:
    """1-based rank of the first source holding the evidence, or None."""
    if not q.answerable or not q.evidence:
        return None
    evidence = normalize(q.evidence)
    return next((i for i, text in enumerate(source_texts, start=1) if evidence in normalize(text)), None)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def summarize(results: list[dict], questions: list[EvalQuestion]) -> dict:
    by_id = {q.id: q for q in questions}

    def block(rows: list[dict]) -> dict:
        answerable = [r for r in rows if by_id[r["id"]].answerable]
        unanswerable = [r for r in rows if not by_id[r["id"]].answerable]
        ranked = [r for r in answerable if by_id[r["id"]].evidence]
        out = {
            "questions": len(rows),
            "answer_accuracy": _ratio(sum(r["correct"] for r in rows), len(rows)),
        }
        for k in (1, 3, 5):
            out[f"hit@{k}"] = _ratio(sum(1 for r in ranked if r["hit_rank"] and r["hit_rank"] <= k), len(ranked))
        out["mrr"] = _ratio(sum(1 / r["hit_rank"] for r in ranked if r["hit_rank"]), len(ranked))
        out["refusal_accuracy"] = _ratio(sum(r["refused"] for r in unanswerable), len(unanswerable))
        out["false_refusal_rate"] = _ratio(sum(r["refused"] for r in answerable), len(answerable))
        return out

    summary = block(results)
    latencies = [r["latency_ms"] for r in results]
    summary["latency_ms_p50"] = round(statistics.median(latencies), 2) if latencies else 0.0
    summary["latency_ms_p95"] = round(percentile(latencies, 95), 2)
    types: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        types[by_id[r["id"]].type].append(r)
    summary["by_type"] = {t: block(rows) for t, rows in sorted(types.items())}
    return summary


def _ratio(n: float, d: int) -> float | None:
    return round(n / d, 4) if d else None
