"""Cue words of questions, loaded from assistant/data/zh.json (language knowledge lives in data)."""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "zh.json"
ANSWER_FORMS = ("summary", "explanation", "list", "factoid")


# How text is normalised for matching (BM25 tokens, the reranker, the reader); recorded in the index manifest.
MATCHING_NORMALIZATION = "nfkc+lower+opencc-t2s"


@functools.cache
def _t2s():
    import opencc

    return opencc.OpenCC("t2s").convert


def simplified(text: str) -> str:
    """Traditional characters as Simplified (OpenCC t2s), for matching only: stored text never changes."""
    return _t2s()(text) if text else text


def simplified_same_length(text: str) -> str:
    """`simplified(text)` when it keeps every character offset (nearly always), else the text unchanged."""
    converted = simplified(text)
    return converted if len(converted) == len(text) else text


@functools.cache
def data() -> dict:
    return json.loads(DATA.read_text(encoding="utf-8"))


@functools.cache
def _form_patterns() -> dict[str, re.Pattern]:
    return {form: re.compile("|".join(cues), re.IGNORECASE) for form, cues in data()["answer_forms"].items()}


def answer_form(question: str) -> str:
    """What shape the answer should take: summary, explanation (why/how), list, or factoid."""
    question = simplified(question)
    for form in ("summary", "explanation", "list"):
        if _form_patterns()[form].search(question):
            return form
    return "factoid"


def summary_topic(question: str) -> str:
    """What a summary question names besides asking for a summary ("" for 这篇文章讲了什么)."""
    text = _form_patterns()["summary"].sub(" ", simplified(question))
    for word in sorted(data()["summary_topic_words"], key=len, reverse=True):
        pattern = rf"\b{re.escape(word)}\b" if word.isascii() else re.escape(word)
        text = re.sub(pattern, " ", text, flags=re.IGNORECASE)
    return re.sub(r"[\W_]+", " ", text).strip()


@functools.cache
def english_stop_words() -> frozenset[str]:
    """scikit-learn's English stop words (318), read from the module that holds them: importing them through
    the sklearn package loads scipy and pandas, 1.8 s of a server's first English question."""
    import importlib.util

    package = importlib.util.find_spec("sklearn")
    path = Path(package.submodule_search_locations[0]) / "feature_extraction" / "_stop_words.py"
    spec = importlib.util.spec_from_file_location("_english_stop_words", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return frozenset(module.ENGLISH_STOP_WORDS)


def mostly_latin(text: str) -> bool:
    """Whether a question is written in a Latin-script language rather than Chinese."""
    latin = sum(1 for ch in text if ch.isascii() and ch.isalpha())
    cjk = sum(1 for ch in text if "\u3400" <= ch <= "\u9fff")
    return latin > 3 * max(cjk, 1) and latin >= 6


def normal_form(text: str) -> str:
    """NFKC, lower case, Traditional as Simplified: a question in either script matches text in either."""
    return simplified(unicodedata.normalize("NFKC", text)).lower()
