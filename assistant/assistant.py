"""The one Python API that the CLI, the web UI and the eval all call."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import validation as validate
from .answerers import ANSWERERS, Answerer, Citation, CombinedAnswerer, Draft, ExtractiveAnswerer
from .answerers.reader import ReaderAnswerer
from .articles import add_files, remove_articles
from .config import Settings
from .embeddings import Embedder, get_embeddings
from .errors import AssistantError, InputError, UnknownNameError
from .followup import Turn, resolve_description, rewrite
from .indexing import BuildReport, LoadedIndex, Scope, load_index
from .language import mostly_latin
from .names import resolve_articles
from .reader import SpanReader
from .retrieval import HybridRetriever, Source

_READER: list[SpanReader] = []  # the process's one loaded reader
_reader_lock = threading.Lock()


_log = logging.getLogger(__name__)

@dataclass
class Answer:
    answer: str
    refused: bool
    question: str
    rewritten_question: str
    sources: list[Source]
    citations: list[Citation]
    timings: dict[str, float] = field(default_factory=dict)
    answerer: str = "combined"
    notice: str | None = None
    kind: str = "factoid"  # factoid, list, explanation or summary
    confidence: float | None = None

    @property
    def latency_ms(self) -> float:
        return self.timings.get("total_ms", 0.0)

    @property
    def plain_answer(self) -> str:
        """The answer without its [n] markers."""
        return validate.MARKERS.sub("", self.answer).strip()

    def as_turn(self) -> dict:
        """This answer as one turn of a conversation's history (what a follow-up is resolved against)."""
        return {"question": self.rewritten_question, "answer": self.plain_answer, "refused": self.refused}

    def to_dict(self) -> dict:
        return {
            "answer": self.answer,
            "refused": self.refused,
            "question": self.question,
            "rewritten_question": self.rewritten_question,
            "sources": [s.as_dict() for s in self.sources],
            "citations": [c.as_dict() for c in self.citations],
            "answerer": self.answerer,
            "kind": self.kind,
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            "notice": self.notice,
            "latency_ms": round(self.latency_ms, 2),
            "timings": {k: round(v, 2) for k, v in self.timings.items()},
        }


@dataclass(frozen=True)
class _Loaded:
    """An index with the retrievers and answerers built on it; replaced whole when the index changes."""

    index: LoadedIndex
    retrievers: dict[str, HybridRetriever]
    answerers: dict[str, Answerer]


class Assistant:
    """Load once, ask many times: `Assistant.load(index_dir=...).ask("问题")`."""

    def __init__(self, settings: Settings, index: LoadedIndex, embeddings: Embedder):
        self.settings = settings
        self.embeddings = embeddings
        self._reload_lock = threading.Lock()
        self._set_index(index)

    @property
    def index(self) -> LoadedIndex:
        return self._loaded.index

    @property
    def retrievers(self) -> dict[str, HybridRetriever]:
        return self._loaded.retrievers

    @property
    def answerers(self) -> dict[str, Answerer]:
        return self._loaded.answerers

    @classmethod
    def load(cls, index_dir: str | Path | None = None, settings: Settings | None = None, **overrides) -> Assistant:
        settings = settings or Settings.load(index_dir=index_dir, **overrides)
        embeddings = get_embeddings(settings.embed_model, settings.allow_download)
        index = load_index(settings.index_dir, embeddings)
        return cls(settings, index, embeddings)

    def _set_index(self, index: LoadedIndex) -> None:
        retrievers = {mode: HybridRetriever(index=index, mode=mode, k=self.settings.k,
                                            dense_weight=self.settings.dense_weight)
                      for mode in ("dense", "bm25", "hybrid")}
        extractive = ExtractiveAnswerer(retrievers["hybrid"].idf, index.segmenter)
        reader = ReaderAnswerer(self._span_reader, index)  # loaded by the first question that needs it
        combined = CombinedAnswerer(extractive, reader)
        answerers: dict[str, Answerer] = {"combined": combined, "reader": reader, "extractive": extractive}
        if self.settings.llm_configured:
            from .answerers.llm import LLMAnswerer

            s = self.settings
            answerers["llm"] = LLMAnswerer(s.llm_base_url, s.llm_model, s.llm_api_key, s.llm_timeout, combined)
        # one assignment: a request that started on the old index finishes on it
        self._loaded = _Loaded(index, retrievers, answerers)

    def _span_reader(self) -> SpanReader:
        """The trained reader, loaded once per process (its word table is the embedder's)."""
        with _reader_lock:
            if not _READER:
                _READER.append(SpanReader.load())
            return _READER[0]

    @property
    def available_answerers(self) -> list[str]:
        return list(self.answerers)

    def _answerer(self, loaded: _Loaded, name: str | None) -> Answerer:
        name = validate.answerer(name, list(ANSWERERS)) or self.settings.answerer
        if name not in ANSWERERS:
            raise UnknownNameError(f"Unknown answerer {name!r}; choose one of: {', '.join(ANSWERERS)}.")
        if name not in loaded.answerers:
            raise UnknownNameError(
                "The LLM answerer is not configured: set ASSISTANT_LLM_BASE_URL and ASSISTANT_LLM_MODEL "
                "(and ASSISTANT_LLM_API_KEY if the endpoint needs one), or use --answerer combined."
            )
        return loaded.answerers[name]

    @staticmethod
    def _retriever(loaded: _Loaded, name: str | None) -> HybridRetriever:
        name = name or "hybrid"
        if name not in loaded.retrievers:
            raise UnknownNameError(f"Unknown retriever {name!r}; choose one of: {', '.join(loaded.retrievers)}.")
        return loaded.retrievers[name]

    def _current(self) -> _Loaded:
        """The loaded index, loaded again first when a build committed since (an add from another process)."""
        loaded = self._loaded
        if loaded.index.changed_on_disk():
            with self._reload_lock:
                if self._loaded is loaded:
                    try:
                        self._set_index(load_index(self.settings.index_dir, self.embeddings))
                    except AssistantError as exc:  # keep answering from what is loaded
                        _log.warning("The index changed on disk but cannot be loaded: %s", exc)
                        return loaded
        return self._loaded

    def standalone(self, question: str, history: Sequence | None = None, *,
                   articles: Sequence[str] | None = None) -> str:
        """The question as it is searched: a follow-up rewritten from the conversation so far."""
        loaded = self._current()
        return _standalone(validate.question(question), validate.history(history), loaded, loaded.retrievers["hybrid"],
                           _scope(loaded.index, articles))

    def ask(self, question: str, history: Sequence | None = None, *, k: int | None = None,
            answerer: str | None = None, retriever: str | None = None,
            articles: Sequence[str] | None = None) -> Answer:
        """Answer a question (with the conversation so far) from the index, or refuse; `articles` limits it to
        some articles (ids, file names without extension or titles; None: all)."""
        result = None
        for item in self.stream(question, history, k=k, answerer=answerer, retriever=retriever, articles=articles):
            result = item
        assert isinstance(result, Answer)
        return result

    def warm(self, question: str) -> None:
        """Answer one question and load what any answerer loads late, so that no user's first question waits."""
        self.ask(question)
        for answerer in self.answerers.values():
            answerer.warm()

    def stream(self, question: str, history: Sequence | None = None, *, k: int | None = None,
               answerer: str | None = None, retriever: str | None = None,
               articles: Sequence[str] | None = None) -> Iterator[str | Answer]:
        """Text pieces of the answer as they come (LLM), then the final Answer."""
        started = time.perf_counter()
        question = validate.question(question)
        loaded = self._current()
        chosen = self._answerer(loaded, answerer)
        search = self._retriever(loaded, retriever)
        k = validate.k(k, self.settings.k)
        scope = _scope(loaded.index, articles)
        turns = validate.history(history)
        if not len(loaded.index.chunks):  # every article removed
            yield Answer(answer=NO_ARTICLES_EN if mostly_latin(question) else NO_ARTICLES, refused=True,
                         question=question, rewritten_question=question, sources=[], citations=[],
                         answerer=chosen.name, timings={"total_ms": (time.perf_counter() - started) * 1e3})
            return
        standalone = _standalone(question, turns, loaded, search, scope)
        t1 = time.perf_counter()
        sources = search.search(standalone, k, scope)
        t2 = time.perf_counter()
        draft: Draft | None = None
        for piece in chosen.stream(standalone, sources):
            if isinstance(piece, Draft):
                draft = piece
            else:
                yield piece
        assert draft is not None
        notice = draft.notice
        if mostly_latin(question) and not draft.refused:
            notice = (notice + " " if notice else "") + "The answer and sources are quoted from the article's text."
        done = time.perf_counter()
        yield Answer(
            answer=draft.answer, refused=draft.refused, question=question, rewritten_question=standalone,
            sources=draft.sources if draft.sources is not None else sources, citations=draft.citations,
            answerer=chosen.name, notice=notice, kind=draft.kind, confidence=draft.confidence,
            timings={"rewrite_ms": (t1 - started) * 1e3, "retrieve_ms": (t2 - t1) * 1e3,
                     "answer_ms": (done - t2) * 1e3, "total_ms": (done - started) * 1e3},
        )

    # --- the index ---------------------------------------------------------------------------

    def status(self) -> dict:
        return self.index.status()

    def article_ids(self, articles: Sequence[str] | None) -> list[str] | None:
        """The ids that article names (ids, file names without extension, titles) mean; None for all articles;
        InputError naming the closest articles for an unknown name."""
        scope = _scope(self._current().index, articles)
        return None if scope is None else list(scope.articles)

    def articles(self) -> list[dict]:
        """Every article of the index: id, file, title, size, chunks, references, reference_texts, added_at."""
        return self._current().index.articles()

    def add_files(self, paths: Sequence[str | Path], replace: bool = False, progress: bool = False,
                  names: Sequence[str] | None = None) -> BuildReport:
        """Copy articles into the corpus (as `names`, when given: uploads) and update the index; the files that
        cannot be added are listed in the report's `refused`, and an error leaves everything unchanged."""
        report = add_files(paths, self.settings, self.embeddings, replace=replace, progress=progress, names=names)
        self._set_index(load_index(self.settings.index_dir, self.embeddings))
        return report

    def remove_articles(self, names: Sequence[str]) -> BuildReport:
        """Take articles (and their references' full texts) out of the corpus and the index in one commit;
        UnknownNameError, naming the closest articles, when a name means none (then nothing is removed)."""
        report = remove_articles(names, self.settings, self.embeddings)
        self._set_index(load_index(self.settings.index_dir, self.embeddings))
        return report


NO_ARTICLES = "索引中还没有文章。请先添加文章:在页面的“索引”标签上传,或运行 `assistant index add 文件`。"
NO_ARTICLES_EN = ("The index holds no articles yet. Add one first: upload it in the page's index tab, or run "
                  "`assistant index add FILE`.")


def _scope(index: LoadedIndex, articles: Sequence[str] | None) -> Scope | None:
    """The scope of a question limited to some articles; InputError naming the closest articles for an unknown
    name."""
    names = validate.articles(articles)
    if names is None:
        return None
    ids, unknown = resolve_articles(names, index.articles())
    if unknown:
        raise InputError("articles", _sentence("; ".join(unknown)) + ". `assistant index status` (or GET "
                                     "/api/articles) lists the articles.")
    return index.scope(ids)


def _standalone(question: str, turns: list[Turn], loaded: _Loaded, search: HybridRetriever,
                scope: Scope | None = None) -> str:
    """The question as it is searched: a follow-up rewritten from the turns before it, and an entity named only by
    a description replaced by its name. The trained reader names it, not the default answerer: its span is the
    name itself (the rules answered '哪家' with a neighbouring organisation)."""
    reader = loaded.answerers["reader"]

    def name_of(sub_question: str) -> str | None:
        draft = reader.answer(sub_question, search.search(sub_question, scope=scope))
        return None if draft.refused or draft.kind != "factoid" else validate.strip_markers(draft.answer)

    turns = _resolve_history(turns, search, loaded.answerers["combined"], scope)
    return resolve_description(rewrite(question, turns), name_of)


def _resolve_history(turns: list[Turn], search: HybridRetriever, answerer: Answerer,
                     scope: Scope | None = None) -> list[Turn]:
    """Fill in the previous turn's answer when only questions were given (it may name the referent)."""
    if turns and turns[-1].answer is None:
        prev = turns[-1]
        standalone = rewrite(prev.question, turns[:-1])
        draft = answerer.answer(standalone, search.search(standalone, scope=scope))
        prev.answer = validate.strip_markers(draft.answer)
        prev.refused = draft.refused
        prev.question = standalone
    return turns


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]
