"""Words of an index's own corpus that jieba would split, learned at build time and kept per index.

jieba's dictionary does not know the names a new article uses (a company name comes out in pieces),
which weakens BM25 on exactly the words a question asks about. At build time we learn a user
dictionary from the corpus itself: names in 《》 and quotes, Chinese names glossed beside a Latin one
(`Acme(某某科技)`), and frequent character n-grams that hold together (high cohesion, free
boundaries) yet jieba splits. The words are stored with the index and applied through a private
jieba tokenizer, so one index's words never change how another index in the same process segments.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import threading
from collections import Counter
from collections.abc import Iterable, Sequence

from .language import normal_form

LEXICON_VERSION = 1
_jieba_lock = threading.Lock()
_jieba_ready = False
# Function words that match everywhere and say nothing about the passage.
STOPWORDS = frozenset(
    "的 了 是 在 和 与 及 或 也 都 而 就 被 把 对 从 到 为 以 于 其 这 那 之 着 过 有 个 一 上 中 下 "
    "吗 呢 吧 啊 么 什么 哪 哪些 哪个 哪家 哪里 哪一年 谁 多少 几 怎么 怎样 如何 为什么 是否 请问 "
    "文章 文中 本文 提到 提及 说 讲 根据 关于 所 等 等等 该 它 他 她 们 我 你 这个 那个 这些 那些 "
    "这篇 篇文章 哪位 分别 各自 共 列出 一下 大约 大概 主要 了什么".split()
)

_QUOTED = re.compile(r"[《“「『\"]([^《》“”「」『』\"\n]{2,16})[》”」』\"]")
_GLOSSED = re.compile(r"[A-Za-z][A-Za-z0-9.\-]*\s*[(（]([\u4e00-\u9fff]{2,10})[)）]"
                      r"|([\u4e00-\u9fff]{2,10})\s*[(（][A-Za-z][A-Za-z0-9.\- ]*[)）]")
_HAN_RUN = re.compile(r"[\u4e00-\u9fff]+")
_HAN_ONLY = re.compile(r"^[\u4e00-\u9fff]+$")

MIN_COUNT = 3       # an n-gram must recur to be a word of the corpus
MAX_NGRAM = 6
MIN_COHESION = 0.5  # normalised PMI of its weakest split: the parts occur together far more than apart
MIN_FREEDOM = 1.0   # entropy of the characters before and after it: a word combines freely
MAX_WORDS = 5000
MAX_LEARN_CHARS = 3_000_000  # a full build learns from an even sample of this much text (n-gram counts are RAM)
MIN_ALIGNED = 0.5  # share of its occurrences that start and end where jieba puts a boundary


class Segmenter:
    """jieba cutting with an index's user words; never touches jieba's global dictionary, and is not changed
    by code that does (Milvus Lite's jieba analyzer adds its dictionary words to the global one in-process)."""

    def __init__(self, words: Sequence[str] = ()):
        self.words = tuple(words)
        self._private = None
        self._lock = threading.Lock()

    @property
    def _tokenizer(self):  # noqa: ANN202 - a jieba.Tokenizer, built at the first cut (reading jieba's dictionary
        # takes half a second that `index status` and a build with nothing to tokenize never need)
        if not self.words:
            return pristine_tokenizer()  # never given words, so it is shared
        with self._lock:
            if self._private is None:
                freq, total = pristine_dictionary()
                private = load_jieba().Tokenizer()
                private.FREQ = dict(freq)  # about 10 ms: the default dictionary stays untouched
                private.total = total
                private.initialized = True
                for word in self.words:
                    private.add_word(word)
                self._private = private
            return self._private

    def cut(self, text: str) -> Iterable[str]:
        return self._tokenizer.cut(text)

    def cut_for_search(self, text: str) -> Iterable[str]:
        return self._tokenizer.cut_for_search(text)

    def cut_plain(self, text: str) -> Iterable[str]:
        """Dictionary words only (no HMM guesses for unknown runs)."""
        return self._tokenizer.cut(text, HMM=False)


_pristine: list = []  # the one pristine tokenizer of the process, once built
_pristine_lock = threading.Lock()


def pristine_tokenizer():  # noqa: ANN202 - a jieba.Tokenizer
    """jieba's default dictionary as shipped, read into a tokenizer of its own (from jieba's cache file, about half
    a second, once per process): code that adds words to the global tokenizer cannot reach it. Shared: nothing
    may add words to it (a Segmenter with words copies its dictionary). Built once even when concurrent
    requests ask for it at the same time."""
    if not _pristine:
        with _pristine_lock:
            if not _pristine:
                fresh = load_jieba().Tokenizer()
                fresh.initialize()
                _pristine.append(fresh)
    return _pristine[0]


def pristine_dictionary() -> tuple[dict[str, int], int]:
    """The word frequencies of jieba's default dictionary, and their total."""
    fresh = pristine_tokenizer()
    return fresh.FREQ, fresh.total


def load_jieba():
    """The jieba module, quiet. Its global dictionary is never loaded here: segmenters read their own copy
    (`lexicon.Segmenter`), which saves ~100 MB and keeps them safe from code that adds words to the global one."""
    global _jieba_ready
    import jieba as _module

    with _jieba_lock:
        if not _jieba_ready:
            _module.setLogLevel(logging.WARNING)
            _jieba_ready = True
    return _module


@functools.cache
def default_segmenter() -> Segmenter:
    """jieba's own dictionary, for text outside any index."""
    return Segmenter()


@functools.cache
def _stop_chars() -> frozenset[str]:
    """Single-character stopwords: a name neither starts, ends nor holds one."""
    return frozenset(w for w in STOPWORDS if len(w) == 1)


def learn_words(texts: Iterable[str]) -> list[str]:
    """The corpus's own words that jieba's dictionary would split, most frequent first."""
    plain = default_segmenter()
    texts = [normal_form(t) for t in texts]
    found: Counter[str] = Counter()
    for text in texts:
        for m in _QUOTED.finditer(text):
            name = m.group(1).strip()
            if _HAN_ONLY.match(name) and 2 <= len(name) <= 10:
                found[name] += MIN_COUNT
        for m in _GLOSSED.finditer(text):
            found[m.group(1) or m.group(2)] += MIN_COUNT
    for word, count in _frequent_ngrams(texts).items():
        found[word] += count
    stop_chars = _stop_chars()
    words = []
    for word, _count in sorted(found.items(), key=lambda kv: (-kv[1], kv[0])):  # ties in a fixed order
        if word[0] in stop_chars or word[-1] in stop_chars:
            continue
        if len(list(plain.cut_plain(word))) < 2:
            continue  # jieba already keeps it whole
        words.append(word)
        if len(words) >= MAX_WORDS:
            break
    return words


def _frequent_ngrams(texts: Sequence[str]) -> Counter[str]:
    """Han n-grams (2..MAX_NGRAM) that recur, hold together and combine freely with their neighbours."""
    runs = [run for text in texts for run in _HAN_RUN.findall(text)]
    counts: Counter[str] = Counter()
    for run in runs:
        counts.update(run)
        counts.update(run[i:i + 2] for i in range(len(run) - 1))
    total = sum(c for g, c in counts.items() if len(g) == 1) or 1
    # Level by level, an n-gram is counted only when both its (n-1)-grams recur (a-priori pruning): the counts of
    # every gram that can recur stay exact, and memory stays near the number of recurring grams, not of all grams.
    frequent = {g for g, c in counts.items() if len(g) == 2 and c >= MIN_COUNT}
    for g in [g for g, c in counts.items() if len(g) == 2 and c < MIN_COUNT]:
        del counts[g]
    for n in range(3, MAX_NGRAM + 1):
        level: Counter[str] = Counter()
        for run in runs:
            for i in range(len(run) - n + 1):
                gram = run[i:i + n]
                if gram[:-1] in frequent and gram[1:] in frequent:
                    level[gram] += 1
        frequent = {g for g, c in level.items() if c >= MIN_COUNT}
        counts.update({g: level[g] for g in frequent})
    candidates = {g for g, c in counts.items() if 2 <= len(g) <= MAX_NGRAM and c >= MIN_COUNT}
    # The cheap tests first, on counts alone; neighbours are gathered only for the grams that pass them
    # (one Counter pair per gram was most of this function's memory).
    stop_chars = _stop_chars()
    candidates = {g for g in candidates if not any(ch in stop_chars for ch in g)}  # names do not hold 的, 了, 于
    candidates = {g for g in candidates if _cohesion(g, counts, total) >= MIN_COHESION}
    aligned = _aligned(runs, candidates)
    # it straddles words jieba knows (党委|副书记 -> 委副书记)
    candidates = {g for g in candidates if aligned[g] >= MIN_ALIGNED * counts[g]}
    del aligned, runs
    left, right = _neighbours(texts, candidates)
    out: Counter[str] = Counter({g: counts[g] for g in candidates
                                 if min(_entropy(left[g]), _entropy(right[g])) >= MIN_FREEDOM})
    # A gram inside a longer accepted gram that occurs just as often is only a piece of it.
    pieces = {gram[i:j] for gram in out for i in range(len(gram)) for j in range(i + 2, len(gram) + 1)
              if j - i < len(gram) and gram[i:j] in out and out[gram] >= 0.9 * out[gram[i:j]]}
    for piece in pieces:
        del out[piece]
    return out


def _cohesion(gram: str, counts: Counter[str], total: int) -> float:
    """Normalised PMI of the gram's weakest split, in [-1, 1]."""
    p = counts[gram] / total
    return min(math.log(p / ((counts[gram[:k]] / total) * (counts[gram[k:]] / total)))
               for k in range(1, len(gram))) / -math.log(p)


def _neighbours(texts: Sequence[str], grams: set[str]) -> tuple[dict[str, Counter], dict[str, Counter]]:
    """The characters seen left and right of each gram. A run boundary counts as a distinct free neighbour
    (a new number each time), except a digit, which counts as one symbol (5月至, 长约3米)."""
    left: dict[str, Counter] = {g: Counter() for g in grams}
    right: dict[str, Counter] = {g: Counter() for g in grams}
    edge = 0
    for text in texts:
        for m in _HAN_RUN.finditer(text):
            run, a, b = m.group(), m.start(), m.end()
            before = "0" if a and text[a - 1].isdigit() else None
            after = "0" if b < len(text) and text[b].isdigit() else None
            for n in range(2, MAX_NGRAM + 1):
                for i in range(len(run) - n + 1):
                    gram = run[i:i + n]
                    if gram in grams:
                        edge += 1
                        left[gram][run[i - 1] if i else (before or edge)] += 1
                        right[gram][run[i + n] if i + n < len(run) else (after or -edge)] += 1
    return left, right


def _aligned(runs: Sequence[str], candidates: set[str]) -> Counter[str]:
    """How often each candidate starts and ends on jieba's own word boundaries."""
    plain = default_segmenter()
    aligned: Counter[str] = Counter()
    for run in runs:
        bounds = {0}
        pos = 0
        for word in plain.cut_plain(run):
            pos += len(word)
            bounds.add(pos)
        for n in range(2, MAX_NGRAM + 1):
            for i in range(len(run) - n + 1):
                if i in bounds and i + n in bounds and run[i:i + n] in candidates:
                    aligned[run[i:i + n]] += 1
    return aligned


def _entropy(counter: Counter) -> float:
    n = sum(counter.values())
    return -sum(c / n * math.log(c / n) for c in counter.values())
