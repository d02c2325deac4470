"""Chinese BM25: jieba tokens (search mode) scored by bm25s, saved beside the dense index."""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import IndexCorruptError
from .language import simplified
from .lexicon import Segmenter, default_segmenter

BM25_DIR = "bm25"
TOKENS_FILE = "bm25-tokens.npz"  # every chunk's tokens, so a later build re-tokenises only what changed
TOKENS_VOCAB = "bm25-tokens.json"
_jieba_lock = threading.Lock()
_jieba_ready = False
# Function words that match everywhere and say nothing about the passage.
STOPWORDS = frozenset(
    "的 了 是 在 和 与 及 或 也 都 而 就 被 把 对 从 到 为 以 于 其 这 那 之 着 过 有 个 一 上 中 下 "
    "吗 呢 吧 啊 么 什么 哪 哪些 哪个 哪家 哪里 哪一年 谁 多少 几 怎么 怎样 如何 为什么 是否 请问 "
    "文章 文中 本文 提到 提及 说 讲 根据 关于 所 等 等等 该 它 他 她 们 我 你 这个 那个 这些 那些 "
    "这篇 篇文章 哪位 分别 各自 共 列出 一下 大约 大概 主要 了什么".split()
)
_TOKEN_OK = re.compile(r"[0-9a-z\u3400-\u9fff]")

# Words a question uses for what the article says another way. Small on purpose: each group is a
# paraphrase that users of this kind of article make, measured on the eval set.
SYNONYM_GROUPS = [
    "创立 创办 创建 成立 创始 诞生 出现 起家 初创",
    "创始人 创办者 创办人 创立者 创建者",
    "上市 挂牌 登陆 ipo",
    "外号 别称 代名词 称为 别名 称号",
    "网址 链接 url 来源",
    "转向 走向 转变",
    "募资 融资 募集",
    "媒体 报道 出自 发布",
    "超过 超 逾 超出",
]
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


def load_jieba():
    """The jieba module, initialised once per process (its dictionary load takes about a second)."""
    global _jieba_ready
    import jieba as _module

    with _jieba_lock:
        if not _jieba_ready:
            _module.setLogLevel(logging.WARNING)
            _module.initialize()
            _jieba_ready = True
    return _module


def _content_words(words, unique: bool = False) -> list[str]:
    """Stripped words that hold a letter, digit or Chinese character and are not stopwords."""
    out: list[str] = []
    for word in words:
        word = word.strip()
        if word and _TOKEN_OK.search(word) and word not in STOPWORDS and not (unique and word in out):
            out.append(word)
    return out


def tokenize(text: str, segmenter: Segmenter | None = None) -> list[str]:
    """Lower-cased jieba search-mode tokens (a word and its sub-words), for BM25."""
    return _content_words((segmenter or default_segmenter()).cut_for_search(matching_form(text)))


def terms(text: str, segmenter: Segmenter | None = None) -> list[str]:
    """Content words of a question in jieba's precise mode (no overlapping sub-words), for coverage."""
    return _content_words((segmenter or default_segmenter()).cut(matching_form(text)), unique=True)


@functools.lru_cache(maxsize=65536)  # the reranker asks for the same chunks' forms query after query
def matching_form(text: str) -> str:
    """NFKC, lower case, Traditional as Simplified: a question in either script matches text in either."""
    return simplified(unicodedata.normalize("NFKC", text)).lower()


class BM25Index:
    """bm25s over pre-tokenised chunks; scores every chunk for a query in one sparse product."""

    def __init__(self, model, tokens: list[list[str]] | None = None):
        self._model = model
        self.tokens = tokens  # per chunk, in index order (kept for the next build)

    @classmethod
    def build(cls, texts: Sequence[str], segmenter: Segmenter | None = None,
              known: dict[str, list[str]] | None = None) -> BM25Index:
        """Index the texts; `known` maps a text to its tokens from an earlier build (same segmenter)."""
        import bm25s

        known = known or {}
        model = bm25s.BM25()
        corpus = [known.get(t) or tokenize(t, segmenter) or ["\u2205"] for t in texts]
        model.index(corpus, show_progress=False)
        return cls(model, corpus)

    def save_tokens(self, directory: Path) -> None:
        vocab: dict[str, int] = {}
        ids = [vocab.setdefault(token, len(vocab)) for tokens in self.tokens or [] for token in tokens]
        offsets = np.cumsum([0] + [len(tokens) for tokens in self.tokens or []])
        np.savez(Path(directory) / TOKENS_FILE, ids=np.asarray(ids, dtype=np.int32), offsets=offsets.astype(np.int64))
        (Path(directory) / TOKENS_VOCAB).write_text(json.dumps(list(vocab), ensure_ascii=False), encoding="utf-8")

    @staticmethod
    def load_tokens(directory: Path) -> list[list[str]] | None:
        """The chunks' tokens saved by a build, in index order; None when absent or unreadable."""
        try:  # any damage means "no cache": the build tokenises again
            vocab = json.loads((Path(directory) / TOKENS_VOCAB).read_text(encoding="utf-8"))
            with np.load(Path(directory) / TOKENS_FILE, allow_pickle=False) as data:
                ids, offsets = data["ids"].tolist(), data["offsets"].tolist()
            words = [vocab[i] for i in ids]
            if not offsets or offsets[0] != 0 or offsets[-1] != len(words) or offsets != sorted(offsets):
                return None
            return [words[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
        except Exception:  # noqa: BLE001 - zip, npy and JSON errors all read as a missing cache
            return None

    def document_frequencies(self) -> dict[str, int]:
        """How many chunks hold each token, read off the index (no re-tokenising of the corpus)."""
        counts = np.diff(np.asarray(self._model.scores["indptr"]))
        return {token: int(counts[i]) for token, i in self._model.vocab_dict.items() if token and token != "\u2205"}

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
