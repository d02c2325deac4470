"""Chinese BM25: jieba tokens (search mode), scored across the index's segments with global statistics."""

from __future__ import annotations

import functools
import math
import re

import numpy as np

from .language import data, normal_form
from .lexicon import STOPWORDS, Segmenter, default_segmenter
from .segments import Segment

_TOKEN_OK = re.compile(r"[0-9a-z\u3400-\u9fff]")

# Words a question uses for what an article may say another way, one group a line (assistant/data/zh.json).
SYNONYM_GROUPS: list[str] = data()["synonym_groups"]
_SYNONYMS: dict[str, tuple[str, ...]] = {}
for _group in SYNONYM_GROUPS:
    _words = tuple(_group.split())
    for _w in _words:
        _SYNONYMS[_w] = _words


def synonyms(token: str) -> tuple[str, ...]:
    """The token and the words the article may use for it."""
    return _SYNONYMS.get(token, (token,))


def expand(tokens: list[str]) -> list[str]:
    """Query tokens plus their synonyms, for BM25."""
    out = list(tokens)
    for t in tokens:
        out.extend(w for w in synonyms(t) if w != t and w not in out)
    return out


def _content_words(words, unique: bool = False) -> list[str]:
    """Stripped words that hold a letter, digit or Chinese character and are not stopwords."""
    out: list[str] = []
    for word in words:
        word = word.strip()
        if word and _TOKEN_OK.search(word) and word not in STOPWORDS and not (unique and word in out):
            out.append(word)
    return out


def tokenize(text: str, segmenter: Segmenter | None = None, cached: bool = True) -> list[str]:
    """Lower-cased jieba search-mode tokens (a word and its sub-words), for BM25. A build passes
    `cached=False`: it sees each text once, and caching every chunk would only hold memory."""
    form = matching_form(text) if cached else normal_form(text)
    return _content_words((segmenter or default_segmenter()).cut_for_search(form))


def terms(text: str, segmenter: Segmenter | None = None) -> list[str]:
    """Content words of a question in jieba's precise mode (no overlapping sub-words), for coverage."""
    return _content_words((segmenter or default_segmenter()).cut(matching_form(text)), unique=True)


@functools.lru_cache(maxsize=65536)  # the reranker asks for the same chunks' forms query after query
def matching_form(text: str) -> str:
    """`normal_form`, remembered."""
    return normal_form(text)


def bm25_idf(df: int, n: int) -> float:
    """BM25's inverse document frequency, as bm25s's default ("lucene") computes it."""
    return math.log(1 + (n - df + 0.5) / (df + 0.5))


class BM25Index:
    """BM25 over the index's segments, scored with statistics of the whole live index.

    Each segment keeps its own term counts; document frequencies and the average length are those of every
    live (not tombstoned) chunk of every segment, so a chunk scores the same whichever segment holds it.
    Same formula as bm25s's default ("lucene": idf = ln(1 + (N - df + 0.5) / (df + 0.5)), tf / (tf + k1 (1 - b
    + b dl / avgdl))); bm25s itself keeps one corpus's statistics baked into its matrix, which segments cannot
    share. `parts` pairs each segment with the global row of each of its rows (-1: dead).
    """

    k1 = 1.5
    b = 0.75

    def __init__(self, parts: list[tuple[Segment, np.ndarray]]):
        self.parts = parts
        self.n = sum(int((rows >= 0).sum()) for _, rows in parts)
        lengths = sum(float(seg.lengths[rows >= 0].sum()) for seg, rows in parts)
        self.avgdl = lengths / self.n if self.n else 1.0
        self._df: dict[str, int] = {}
        for seg, rows in parts:
            matrix = seg.postings
            live = (rows >= 0)[matrix.indices].astype(np.int64)
            column = np.repeat(np.arange(matrix.shape[1]), np.diff(matrix.indptr))
            counts = np.bincount(column, weights=live, minlength=matrix.shape[1]).astype(np.int64)
            for term, count in zip(seg.terms, counts.tolist(), strict=True):
                if count:
                    self._df[term] = self._df.get(term, 0) + count

    def document_frequencies(self) -> dict[str, int]:
        """How many live chunks hold each token."""
        return {t: c for t, c in self._df.items() if t != "\u2205"}

    def idf(self, term: str) -> float:
        return bm25_idf(self._df.get(term, 0), self.n)

    def scores(self, query_tokens: list[str]) -> np.ndarray:
        """The score of every live chunk (global row order) for the query tokens."""
        out = np.zeros(self.n, dtype=np.float32)
        for term in dict.fromkeys(query_tokens):
            if term not in self._df:
                continue
            idf = self.idf(term)
            for seg, rows in self.parts:
                col = seg.column.get(term)
                if col is None:
                    continue
                a, z = seg.postings.indptr[col], seg.postings.indptr[col + 1]
                local = seg.postings.indices[a:z]
                tf = seg.postings.data[a:z].astype(np.float32)
                norm = self.k1 * (1 - self.b + self.b * seg.lengths[local] / self.avgdl)
                where = rows[local]
                keep = where >= 0
                out[where[keep]] += (idf * tf / (tf + norm))[keep]
        return out

    def top(self, query_tokens: list[str], k: int, scope=None) -> list[tuple[int, float]]:  # noqa: ANN001
        """(row, score) of the k best chunks with a positive score, best first; only the `scope`'s rows when
        given (an indexing.Scope: scored with the whole index's statistics, so a chunk scores the same)."""
        scores = self.scores(query_tokens)
        if scope is not None:
            scores[~scope.mask] = 0.0
        if not len(scores):
            return []
        best = np.argpartition(-scores, min(k, len(scores) - 1))[:k]
        ranked = sorted(((int(r), float(scores[r])) for r in best if scores[r] > 0), key=lambda rs: (-rs[1], rs[0]))
        return ranked[:k]
