"""SQuAD-format reading-comprehension files: loading, turning passages into a corpus, CMRC 2018 scoring.

Public Chinese sets (CMRC 2018, DRCD) come in this format: `data[].paragraphs[].{context,
qas[].{id, question, answers[].{text, answer_start}}}`. The assistant is measured on them by
indexing their passages as articles, and the reader is trained on them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import EvalError


@dataclass
class SquadPassage:
    id: str
    title: str
    context: str


@dataclass
class SquadQuestion:
    id: str
    question: str
    passage_id: str
    answers: list[str]
    starts: list[int] = field(default_factory=list)  # answer offsets in the passage, -1 when unknown

    @property
    def answerable(self) -> bool:
        return bool(self.answers)


@dataclass
class SquadSet:
    passages: dict[str, SquadPassage]
    questions: list[SquadQuestion]
    skipped: list[str]  # "id: why" for each row that could not be used


def load_squad(path: Path, convert=None) -> SquadSet:
    """Read a SQuAD-format file; rows that cannot be used are listed in `skipped`, not fatal.

    `convert` maps every text (e.g. OpenCC traditional -> simplified); it must keep lengths, so
    that answer offsets stay valid.
    """
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"SQuAD file {path} not found. Give the path of a SQuAD-format JSON file.")
    try:
        raw = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise EvalError(f"{path} is not UTF-8 text. Re-save it as UTF-8 JSON.") from None
    except ValueError as exc:
        raise EvalError(f"{path} is not valid JSON ({exc}).") from None
    data = raw.get("data") if isinstance(raw, dict) else None
    if not isinstance(data, list):
        raise EvalError(f"{path}: expected a SQuAD object with a 'data' list of articles.")
    conv = convert or (lambda s: s)
    passages: dict[str, SquadPassage] = {}
    questions: list[SquadQuestion] = []
    skipped: list[str] = []
    seen: set[str] = set()
    for a, article in enumerate(data):
        title = conv(str(article.get("title") or f"article {a + 1}")) if isinstance(article, dict) else ""
        for p, para in enumerate(article.get("paragraphs", []) if isinstance(article, dict) else []):
            context = para.get("context") if isinstance(para, dict) else None
            if not isinstance(context, str) or not context.strip():
                skipped.append(f"article {a + 1} paragraph {p + 1}: no context")
                continue
            pid = str(para.get("id") or f"p{a + 1}-{p + 1}")
            context = conv(context)
            passages[pid] = SquadPassage(pid, title, context)
            for n, qa in enumerate(para.get("qas", [])):
                qid = str(qa.get("id") or f"{pid}-q{n + 1}") if isinstance(qa, dict) else f"{pid}-q{n + 1}"
                question = qa.get("question") if isinstance(qa, dict) else None
                if not isinstance(question, str) or not re.search(r"\w", question):
                    skipped.append(f"{qid}: the question is empty")
                    continue
                if qid in seen:
                    skipped.append(f"{qid}: duplicate id")
                    continue
                seen.add(qid)
                answers, starts = [], []
                for ans in qa.get("answers", []) or []:
                    text = ans.get("text") if isinstance(ans, dict) else None
                    if isinstance(text, str) and text.strip():
                        answers.append(conv(text).strip())
                        start = ans.get("answer_start", -1)
                        starts.append(start if isinstance(start, int) else -1)
                questions.append(SquadQuestion(qid, conv(question).strip(), pid, answers, starts))
    if not questions:
        raise EvalError(f"{path} holds no usable questions ({len(skipped)} rows skipped).")
    return SquadSet(passages, questions, skipped)


def load_squad_files(paths, convert=None) -> SquadSet:
    """Several SQuAD files as one set (e.g. DRCD dev + test); rows skipped in any are listed."""
    sets = [load_squad(Path(p), convert=convert) for p in paths]
    return SquadSet({k: v for s in sets for k, v in s.passages.items()}, [q for s in sets for q in s.questions],
                    [problem for s in sets for problem in s.skipped])


def write_corpus(squad: SquadSet, corpus_dir: Path) -> dict[str, str]:
    """Write each passage as an article `<n>.md` under corpus_dir/articles; returns passage id -> doc id."""
    articles = Path(corpus_dir) / "articles"
    articles.mkdir(parents=True, exist_ok=True)
    doc_of = {}
    for n, passage in enumerate(squad.passages.values(), start=1):
        doc_id = f"p{n:05d}"
        (articles / f"{doc_id}.md").write_text(f"# {passage.title}\n\n{passage.context}\n", encoding="utf-8")
        doc_of[passage.id] = f"{doc_id}.md"  # documents are keyed by file name
    return doc_of


# --- CMRC 2018 scoring, as the organisers' evaluate script defines it -----------------------------

_CMRC_PUNCT = set("-:_*^/\\~`+=，。：？！“”；’《》……·、「」（）－～『』")  # noqa: RUF001
_HAN = re.compile(r"[\u4e00-\u9fa5]")
_WORDS = re.compile(r"\w+|[^\w\s]")  # stands in for nltk.word_tokenize on non-Chinese runs


def mixed_segmentation(text: str, remove_punctuation: bool = False) -> list[str]:
    """Chinese characters and punctuation one by one, other runs split into words."""
    out, run = [], ""
    for ch in text.lower().strip():
        if remove_punctuation and ch in _CMRC_PUNCT:
            continue
        if _HAN.match(ch) or ch in _CMRC_PUNCT:
            if run:
                out.extend(_WORDS.findall(run))
                run = ""
            out.append(ch)
        else:
            run += ch
    if run:
        out.extend(_WORDS.findall(run))
    return out


def _strip_punctuation(text: str) -> str:
    return "".join(ch for ch in text.lower().strip() if ch not in _CMRC_PUNCT)


def _longest_common_substring(a: list[str], b: list[str]) -> int:
    best, prev = 0, [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b):
            if x == y:
                cur[j + 1] = prev[j] + 1
                best = max(best, cur[j + 1])
        prev = cur
    return best


def cmrc_f1(prediction: str, answers: list[str]) -> float:
    """Best F1 over the gold answers of the longest common run of tokens (punctuation removed)."""
    pred = mixed_segmentation(prediction, True)
    best = 0.0
    for answer in answers:
        gold = mixed_segmentation(answer, True)
        common = _longest_common_substring(gold, pred)
        if common:
            precision, recall = common / len(pred), common / len(gold)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def cmrc_em(prediction: str, answers: list[str]) -> float:
    """1 when the prediction equals a gold answer, punctuation removed."""
    pred = _strip_punctuation(prediction)
    return float(any(_strip_punctuation(a) == pred for a in answers))
