"""Chinese BM25: jieba tokens (search mode) scored by bm25s, saved beside the dense index."""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import IndexCorruptError

BM25_DIR = "bm25"
_jieba_lock = threading.Lock()
_jieba_ready = False
# Function words that match everywhere and say nothing about the passage.
STOPWORDS = frozenset(
    "的 了 是 在 和 与 及 或 也 都 而 就 被 把 对 从 到 为 以 于 其 这 那 之 着 过 有 个 一 上 中 下 "
    "吗 呢 吧 啊 么 什么 哪 哪些 哪个 哪家 哪里 哪一年 谁 多少 几 怎么 怎样 如何 为什么 是否 请问 "
    "文章 文中 本文 提到 提及 说 讲 根据 关于 所 等 等等 该 它 他 她 们 我 你 这个 那个 这些 那些".split()
)
_TOKEN_OK = re.compile(r"[0-9a-z\u3400-\u9fff]")


def _jieba():
    global _jieba_ready
    import jieba

    with _jieba_lock:
        if not _jieba_ready:
            jieba.setLogLevel(logging.WARNING)
            jieba.initialize()
            _jieba_ready = True
    return jieba


def tokenize(text: str, keep_stopwords: bool = False) -> list[str]:
    """Lower-cased jieba search-mode tokens, punctuation and (by default) stopwords dropped."""
    text = unicodedata.normalize("NFKC", text).lower()
    tokens = []
    for token in _jieba().cut_for_search(text):
        token = token.strip()
        if not token or not _TOKEN_OK.search(token):
            continue
        if not keep_stopwords and token in STOPWORDS:
            continue
        tokens.append(token)
    return tokens


class BM25Index:
    """bm25s over pre-tokenised chunks; scores every chunk for a query in one sparse product."""

    def __init__(self, model):
        self._model = model

    @classmethod
    def build(cls, texts: Sequence[str]) -> BM25Index:
        import bm25s

        model = bm25s.BM25()
        corpus = [tokenize(t) or ["\u2205"] for t in texts]
        model.index(corpus, show_progress=False)
        return cls(model)

    def scores(self, query_tokens: list[str]) -> np.ndarray:
        return self._model.get_scores(query_tokens)

    def save(self, directory: Path) -> None:
        self._model.save(str(Path(directory) / BM25_DIR), show_progress=False)

    @classmethod
    def load(cls, directory: Path) -> BM25Index:
        import bm25s

        path = Path(directory) / BM25_DIR
        try:
            model = bm25s.BM25.load(str(path), show_progress=False, allow_pickle=False)
        except Exception as exc:
            raise IndexCorruptError(
                f"BM25 index in {path} is damaged ({type(exc).__name__}). "
                "Rebuild it with `assistant index build --full`."
            ) from exc
        return cls(model)
