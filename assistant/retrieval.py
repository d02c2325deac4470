"""Dense, lexical and fused retrieval over a loaded index, with a second-stage reranker.

Chunks are sentences; what the user sees is a *source*: the hit sentence widened to a short
passage of its paragraph, with overlapping passages merged so no sentence is shown twice.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

from .chunking import Chunk
from .crosslingual import chinese_terms
from .errors import UnknownNameError
from .indexing import LoadedIndex
from .language import english_stop_words, mostly_latin, simplified
from .lexical import expand, matching_form, synonyms, terms, tokenize

RETRIEVERS = ("dense", "bm25", "hybrid")
RRF_K = 60
OOV_IDF = 2.5
CANDIDATES = 30  # per retriever, before fusion
MAX_DENSE_QUERY_CHARS = 160  # longer questions are embedded by their start (BM25 reads all of it)
# A source passage widens its sentence up to about this length. 240 rather than 160: on CMRC 2018 trial (open
# corpus) F1 66.9 -> 68.4 over questions 201-500, the seed sets unchanged (their paragraphs are shorter),
# DuReader-robust level (docs/design.md, "How much of a paragraph a source holds").
PASSAGE_CHARS = 240


def dense_weight_for(unknown_token_share: float) -> float:
    """Weight of dense relative to BM25 (1.0) in fusion, from the model's fitness for the corpus.

    A model that sees most tokens as unknown embeds mostly punctuation and Latin words; its
    ranking still helps for paraphrases, but should not outvote exact Chinese term matches.
    (1 - share)^2 was measured against 1 - share on the eval set: MiniLM (63% unknown) then
    weighs about 0.13, which ranked best; a model that reads every token weighs 1.
    """
    return round(max(0.05, min(1.0, (1.0 - unknown_token_share) ** 2)), 2)


@dataclass
class Source:
    """A passage shown to the user, as ranked."""

    rank: int
    doc_id: str
    title: str
    kind: str
    paragraph: int | None
    text: str
    start: int  # passage span in the document's text
    end: int
    score: float
    chunk_ids: list[str]
    citations: list[dict] = field(default_factory=list)  # number, title, publisher

    def as_dict(self) -> dict:
        return {
            "rank": self.rank, "doc_id": self.doc_id, "title": self.title, "kind": self.kind,
            "paragraph": self.paragraph, "text": self.text, "score": round(self.score, 4),
            "start": self.start, "end": self.end, "chunk_ids": self.chunk_ids,
            "citations": self.citations,
        }


class QuestionProfile:
    """What a question asks for, read from its wording."""

    PATTERNS = [
        ("year", re.compile(r"哪一?年|何年|什么时候|何时|哪个时候|什么时间|年份|哪一天|几月|哪天|日期")),
        ("person", re.compile(r"谁|哪位|什么人|创始人是|作者|编辑")),
        ("number", re.compile(r"多少|几家|几个|几款|多大|多高|几亿|几年|多久|多长|多远|几")),
        ("list", re.compile(r"哪些|哪几|有什么|包括什么|分别")),
        ("org", re.compile(r"哪家|哪个公司|什么公司|哪个企业|哪个机构|什么媒体|哪个媒体|哪一家")),
        ("place", re.compile(r"哪里|在哪|哪个地方|什么地方|哪个城市|何地")),
    ]

    def __init__(self, question: str):
        self.question = question
        matched = simplified(question)
        self.kind = next((name for name, rx in self.PATTERNS if rx.search(matched)), "other")


_YEAR = re.compile(r"(?<![\d.])[1-9]\d{2,3}年|\d{1,2}月\d{1,2}日|(?:19|20)\d{2}")  # 618年, 1888年, 2024


class HybridRetriever:
    """Dense, bm25 or hybrid (weighted reciprocal rank fusion) retrieval, then rerank.

    A plain class, so that answering does not import LangChain's retriever machinery (0.25-0.6 s of a cold
    start, most of it langsmith's tracing); `as_langchain()` gives the same search as a LangChain retriever.
    """

    def __init__(self, index: Any, mode: str = "hybrid", k: int = 5, dense_weight: float | None = None,
                 rerank: bool = True) -> None:
        if mode not in RETRIEVERS:
            raise UnknownNameError(f"Unknown retriever {mode!r}; choose one of: {', '.join(RETRIEVERS)}.")
        self.index: LoadedIndex = index
        self.mode = mode
        self.k = k
        self.dense_weight = dense_weight
        self.rerank = rerank
        self._idf: dict = index.idf

    def as_langchain(self):  # noqa: ANN201 - langchain_core.retrievers.BaseRetriever, imported on demand
        """This retriever as a LangChain `BaseRetriever` (`.invoke(question)` -> Documents with the source's
        fields as metadata), for composing it into LangChain chains."""
        return _langchain_retriever_class()(retriever=self)

    @property
    def effective_dense_weight(self) -> float:
        if self.dense_weight is not None:
            return self.dense_weight
        return dense_weight_for(self.index.unknown_token_share)

    def idf(self, token: str) -> float:
        # A word the corpus never uses is often the question's own paraphrase: weigh it as a
        # middling word, not as the rarest of all, or one paraphrase would sink any match.
        if token in self._idf:
            return self._idf[token]
        known = [self._idf[w] for w in synonyms(token) if w in self._idf]
        return max(known) if known else OOV_IDF

    def rank_chunks(self, query: str, k: int | None = None, scope=None) -> list[tuple[int, float, dict]]:  # noqa: ANN001
        """(row, score, parts) for the best chunks, best first; only chunks of the `scope` (indexing.Scope) when
        given: both retrievers filter inside their index, so a scoped question gets its full candidates."""
        index: LoadedIndex = self.index
        k = k or CANDIDATES
        parts: dict[int, dict] = {}
        fused: dict[int, float] = {}
        w = 1.0 if self.mode == "dense" else self.effective_dense_weight
        # a question's first MAX_DENSE_QUERY_CHARS carry its meaning; the encoder's cost grows with the square
        vector = index.store.embeddings.encode_queries([query[:MAX_DENSE_QUERY_CHARS]])[0] \
            if self.mode in ("dense", "hybrid") and w > 0 else None
        latin = mostly_latin(query)
        tokens = (cross_lingual_tokens(query, index.segmenter) if latin else expand(tokenize(query, index.segmenter))) \
            if self.mode in ("bm25", "hybrid") else []
        server_side = getattr(index.bm25, "hybrid", None)  # Milvus fuses on the server (RRF, equal weights)
        if self.mode == "hybrid" and server_side is not None and w == 1.0:
            for row, score in server_side(vector, tokens, CANDIDATES, scope=scope):
                parts[row], fused[row] = {"fused": score}, score
        else:
            for rank, (row, score) in enumerate(index.store.search_by_vector(vector, CANDIDATES, scope=scope)
                                                if vector is not None else []):
                parts.setdefault(row, {})["dense"] = score
                fused[row] = fused.get(row, 0.0) + w / (RRF_K + rank + 1)
            for rank, (row, score) in enumerate(index.bm25.top(tokens, CANDIDATES, scope=scope) if tokens else []):
                parts.setdefault(row, {})["bm25"] = score
                fused[row] = fused.get(row, 0.0) + 1.0 / (RRF_K + rank + 1)
        ranked = sorted(fused.items(), key=lambda kv: -kv[1])
        index.chunks.prefetch(row for row, _ in ranked)
        if self.rerank and ranked:
            ranked = _rerank_by_dense(ranked, parts) if latin else self._rerank(query, ranked)
        return [(row, score, parts[row]) for row, score in ranked[:k]]

    def _rerank(self, query: str, ranked: list[tuple[int, float]]) -> list[tuple[int, float]]:
        """Reorder fused candidates by how fully and how closely a chunk covers the question."""
        q_tokens = set(terms(query, self.index.segmenter))
        profile = QuestionProfile(query)
        total = sum(self.idf(t) for t in q_tokens) or 1.0
        top = ranked[0][1] or 1.0
        rescored = []
        for row, score in ranked:
            chunk = self.index.chunks[row]
            feature = coverage(chunk.text, q_tokens, self.idf) / total
            feature += 0.15 * type_match(profile.kind, chunk.text)
            rescored.append((row, score / top + feature))
        return sorted(rescored, key=lambda kv: -kv[1])

    def search(self, query: str, k: int | None = None, scope=None) -> list[Source]:  # noqa: ANN001
        """The ranked sources for a query: chunks widened to passages, merged, numbered from 1; `scope` limits them
        to some articles (LoadedIndex.scope)."""
        k = k or self.k
        ranked = self.rank_chunks(query, CANDIDATES, scope)
        sources: list[Source] = []
        seen_texts: dict[str, str] = {}  # chunk text -> the document it was first shown from
        for row, score, _parts in ranked:
            chunk = self.index.chunks[row]
            if seen_texts.setdefault(chunk.text, chunk.doc_id) != chunk.doc_id:
                continue  # the same text under another file name: shown once
            start, end = self._passage_span(chunk)
            merged = next((s for s in sources if s.doc_id == chunk.doc_id and s.start < end and start < s.end), None)
            if merged is not None:
                merged.start, merged.end = min(merged.start, start), max(merged.end, end)
                merged.chunk_ids.append(chunk.id)
                continue
            if len(sources) == k:
                continue
            doc = self.index.documents[chunk.doc_id]
            sources.append(Source(len(sources) + 1, chunk.doc_id, _display_title(doc, self.index.documents),
                                  chunk.kind, chunk.paragraph, "", start, end, score, [chunk.id]))
        for source in sources:
            doc = self.index.documents[source.doc_id]
            source.text = doc.text[source.start:source.end]
            source.citations = self._citations(source)
        return sources

    def _passage_span(self, chunk: Chunk) -> tuple[int, int]:
        """The chunk widened with neighbouring sentences of its paragraph, up to PASSAGE_CHARS."""
        if chunk.kind in ("metadata", "reference"):
            return chunk.start, chunk.end
        siblings = self.index.paragraph_chunks(chunk)
        i = next(n for n, c in enumerate(siblings) if c.id == chunk.id)
        lo = hi = i
        while True:
            grew = False
            for j in (hi + 1, lo - 1):
                if 0 <= j < len(siblings):
                    span = max(siblings[hi].end, siblings[j].end) - min(siblings[lo].start, siblings[j].start)
                    if span <= PASSAGE_CHARS:
                        lo, hi, grew = min(lo, j), max(hi, j), True
                        break
            if not grew:
                break
        return siblings[lo].start, siblings[hi].end

    def _citations(self, source: Source) -> list[dict]:
        doc = self.index.documents[source.doc_id]
        article = self.index.documents.get(doc.parent) if doc.parent else doc
        refs = {r["number"]: r for r in (article.references if article else [])}
        numbers = sorted({n for cid in source.chunk_ids for n in self.index.chunk_by_id[cid].citations}
                         | {int(n) for n in re.findall(r"\[(\d{1,3})\]", source.text)})
        return [refs[n] for n in numbers if n in refs]


@functools.cache
def _langchain_retriever_class() -> type:
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
    from pydantic import ConfigDict

    class LangChainRetriever(BaseRetriever):
        """HybridRetriever.search behind LangChain's retriever interface."""

        model_config = ConfigDict(arbitrary_types_allowed=True)
        retriever: Any

        def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
            return [Document(page_content=s.text, metadata=s.as_dict()) for s in self.retriever.search(query)]

    return LangChainRetriever


def _display_title(doc, documents: dict) -> str:
    if doc.kind == "article":
        return doc.title
    parent = documents.get(doc.parent)
    if doc.kind == "metadata":
        return f"{parent.title if parent else doc.title} · 文章信息"
    return doc.title


def cross_lingual_tokens(query: str, segmenter) -> list[str]:
    """BM25 tokens of a question in English over Chinese text: its content words (names, numbers and Latin terms
    match as they are) and the Chinese words CC-CEDICT translates them to."""
    stop = english_stop_words()
    words = [t for t in tokenize(query, segmenter) if t not in stop]
    return words + [t for term in chinese_terms(" ".join(words)) for t in tokenize(term, segmenter)]


def _rerank_by_dense(ranked: list[tuple[int, float]], parts: dict[int, dict]) -> list[tuple[int, float]]:
    """For an English question: fused score plus the chunk's dense similarity to the question (the coverage of
    Chinese words the reranker counts does not exist for it). Measured on corpus/eval/english.jsonl: hit@5
    0.71 -> 0.91 together with the translated BM25 tokens."""
    top = ranked[0][1] or 1.0
    return sorted(((row, score / top + parts[row].get("dense", 0.0)) for row, score in ranked), key=lambda kv: -kv[1])


def coverage(text: str, q_terms, idf) -> float:
    """IDF mass of the question's terms that the text contains (itself or a synonym)."""
    norm_text = matching_form(text)
    return sum(idf(t) for t in q_terms if any(w in norm_text for w in synonyms(t)))


def type_match(kind: str, text: str) -> float:
    """1 when the text holds the kind of thing the question asks for (a year, a number...)."""
    if kind == "year":
        return 1.0 if _YEAR.search(text) else 0.0
    if kind == "number":
        return 1.0 if re.search(r"\d|[一二三四五六七八九十两百千万亿]+(?:家|个|款|条)", text) else 0.0
    if kind == "list":
        return 1.0 if "、" in text else 0.0
    return 0.0
