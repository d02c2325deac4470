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
    skipped: list[str]  # "where: why" for each part that could not be used
    renamed: list[str] = field(default_factory=list)  # "where: why" for each duplicate id made unique
    files: dict[str, str] = field(default_factory=dict)  # question id -> the file it was read from


EXPECTED = ('a SQuAD object {"data": [{"title", "paragraphs": [{"id", "context", "qas": [{"id", "question", '
            '"answers": [{"text", "answer_start"}], "is_impossible"}]}]}]}')


def load_squad(path: Path, convert=None) -> SquadSet:
    """Read a SQuAD-format file; parts that cannot be used are listed in `skipped`, not fatal.

    `convert` maps every text (e.g. OpenCC traditional -> simplified); it must keep lengths, so
    that answer offsets stay valid.
    """
    return load_squad_files([path], convert=convert)


def load_squad_files(paths, convert=None) -> SquadSet:
    """Several SQuAD files as one set (e.g. DRCD dev + test); parts skipped in any are listed.

    An id met twice (in one file or across files) is made unique, so that no passage replaces another
    and every question stays with its own passage; a file with no usable question raises EvalError.
    """
    reader = _Reader(convert or (lambda s: s))
    for path in paths:
        before = len(reader.squad.questions)
        reader.read(Path(path))
        reader.squad.files.update((q.id, str(path)) for q in reader.squad.questions[before:])
    return reader.squad


class _Reader:
    """Checks every level of the SQuAD structure; a bad part is skipped with its place and reason."""

    def __init__(self, convert):
        self.conv = convert
        self.squad = SquadSet({}, [], [])
        self.question_ids: dict[str, SquadQuestion] = {}
        self.copies: dict[str, int] = {}  # id -> how many times it was met, for the next unique suffix

    def read(self, path: Path) -> None:
        data = _data(path)
        before, skipped_before = len(self.squad.questions), len(self.squad.skipped)
        for a, article in enumerate(data, start=1):
            where = f"{path}, article {a}"
            if not isinstance(article, dict):
                self.skip(where, f"expected an object with 'title' and 'paragraphs', got {_kind(article)}")
                continue
            paragraphs = article.get("paragraphs")
            if not isinstance(paragraphs, list):
                self.skip(where, f"'paragraphs' must be a list, got {_kind(paragraphs, 'paragraphs' in article)}")
                continue
            title = article.get("title")
            title = self.conv(title) if isinstance(title, str) and title.strip() else f"article {a}"
            for p, para in enumerate(paragraphs, start=1):
                self.paragraph(para, title, f"{where} paragraph {p}", f"p{a}-{p}")
        if len(self.squad.questions) == before:
            problems = self.squad.skipped[skipped_before:]
            raise EvalError(f"{path} holds no usable questions ({len(problems)} parts skipped"
                            + (f"; first: {problems[0]}" if problems else "") + f"). Expected {EXPECTED}.")

    def paragraph(self, para: object, title: str, where: str, default_id: str) -> None:
        if not isinstance(para, dict):
            self.skip(where, f"expected an object with 'context' and 'qas', got {_kind(para)}")
            return
        context = para.get("context")
        if not isinstance(context, str) or not context.strip():
            self.skip(where, "no context" if isinstance(context, str) else
                      f"'context' must be text, got {_kind(context, 'context' in para)}")
            return
        given = _ident(para.get("id"))
        pid = self.unique(given or default_id, self.squad.passages, f"{where}: passage", report=bool(given))
        self.squad.passages[pid] = SquadPassage(pid, title, self.conv(context))
        qas = para.get("qas")
        if not isinstance(qas, list):
            self.skip(f"{where} (id {pid!r})", f"'qas' must be a list of questions, got {_kind(qas, 'qas' in para)}; "
                                               "the passage is kept, without questions")
            return
        for n, qa in enumerate(qas, start=1):
            self.question(qa, pid, f"{where} question {n}", f"{pid}-q{n}")

    def question(self, qa: object, pid: str, where: str, default_id: str) -> None:
        if not isinstance(qa, dict):
            self.skip(where, f"expected an object with 'id', 'question' and 'answers', got {_kind(qa)}")
            return
        given = _ident(qa.get("id"))
        where = f"{where} (id {given[:60]!r})" if given else where
        question = qa.get("question")
        if not isinstance(question, str) or not re.search(r"\w", question):
            self.skip(where, "the question is empty" if isinstance(question, str) else
                      f"'question' must be text, got {_kind(question, 'question' in qa)}")
            return
        impossible = qa.get("is_impossible") is True
        raw = qa.get("answers")
        raw = [] if raw is None and impossible else raw
        if not isinstance(raw, list):
            self.skip(where, f"'answers' must be a list of {{text, answer_start}}, got {_kind(raw, 'answers' in qa)}")
            return
        answers, starts = [], []
        for ans in raw:
            text = ans.get("text") if isinstance(ans, dict) else None
            if isinstance(text, str) and text.strip():
                answers.append(self.conv(text).strip())
                start = ans.get("answer_start", -1)
                starts.append(start if isinstance(start, int) and not isinstance(start, bool) else -1)
        if not answers and not impossible:
            self.skip(where, "no answer text, and not marked \"is_impossible\": true")
            return
        question = self.conv(question).strip()
        qid = given or default_id
        first = self.question_ids.get(qid)
        if first and first.question == question and \
                self.squad.passages[first.passage_id].context == self.squad.passages[pid].context:
            self.skip(where, f"repeats question {qid!r} (same question over the same passage)")
            return
        qid = self.unique(qid, self.question_ids, f"{where}: question", report=bool(given))
        self.question_ids[qid] = SquadQuestion(qid, question, pid, answers, starts)
        self.squad.questions.append(self.question_ids[qid])

    def unique(self, ident: str, taken, what: str, report: bool) -> str:
        """`ident`, or `ident#2`, `ident#3`... when an earlier part holds it (reported when the file gave it)."""
        if ident not in taken:
            return ident
        n = self.copies.get(ident, 1)
        while f"{ident}#{n}" in taken or n == 1:
            n += 1
        self.copies[ident] = n
        if report:
            self.squad.renamed.append(f"{what} id {ident!r} is already taken; kept as {ident}#{n}")
        return f"{ident}#{n}"

    def skip(self, where: str, why: str) -> None:
        self.squad.skipped.append(f"{where}: {why}")


def _data(path: Path) -> list:
    """The file's `data` list; EvalError when the file cannot be read as SQuAD at all."""
    if not path.is_file():
        raise EvalError(f"SQuAD file {path} not found. Give the path of a SQuAD-format JSON file.")
    try:
        raw = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise EvalError(f"{path} is not UTF-8 text. Re-save it as UTF-8 JSON.") from None
    except ValueError as exc:
        raise EvalError(f"{path} is not valid JSON ({exc}).") from None
    except RecursionError:
        raise EvalError(f"{path}: JSON nested too deeply to read (a SQuAD file nests 9 levels). "
                        f"Expected {EXPECTED}.") from None
    data = raw.get("data") if isinstance(raw, dict) else None
    if not isinstance(data, list):
        raise EvalError(f"{path}: expected {EXPECTED}; got {_kind(raw)}"
                        + (f" whose 'data' is {_kind(data, 'data' in raw)}." if isinstance(raw, dict) else "."))
    return data


def _ident(value: object) -> str | None:
    """An id as text: a string or a whole number; None for anything else (a generated one is used)."""
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _kind(value: object, present: bool = True) -> str:
    """What a JSON value is, in words, never its (possibly huge or deep) contents."""
    if not present:
        return "nothing (the key is missing)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return f"the number {value}" if abs(value) < 1e15 else "a number"
    if isinstance(value, str):
        return "text"
    return {list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


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
