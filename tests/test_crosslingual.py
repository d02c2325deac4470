"""English questions over Chinese text: the dictionary, the synthetic English training questions, retrieval."""

import random
import re

from assistant.crosslingual import chinese_terms, english_question, gloss, segment, spelled_in, with_passage_names
from assistant.language import mostly_latin
from assistant.retrieval import cross_lingual_tokens
from assistant.training import TrainConfig, make_features


def test_the_dictionary_glosses_words_and_drops_particles():
    assert gloss("人工智能") == "artificial intelligence"
    assert gloss("英伟达") == "NVIDIA"
    assert gloss("的") == ""  # a particle: nothing to say in English
    assert gloss("不存在的词语") is None


def test_segmentation_takes_the_longest_dictionary_word():
    assert segment("上海人工智能产业") == ["上海", "人工智能", "产业"]
    assert segment("GPU芯片2025年") == ["GPU", "芯片", "2025", "年"]


def test_a_chinese_question_becomes_dictionary_english_deterministically():
    question = "2023年上海人工智能产业规模是多少?"
    english = english_question(question, random.Random(7))
    assert english == english_question(question, random.Random(7))
    assert not re.search(r"[\u4e00-\u9fff]", english)  # every word glossed or spelled in pinyin
    assert "2023" in english and "artificial intelligence" in english and english.endswith("?")
    assert mostly_latin(english)


def test_a_half_rate_keeps_some_chinese_words():
    mixed = [english_question("尤金袋鼠为什么会被认为是害虫?", random.Random(seed), rate=0.5) for seed in range(20)]
    assert any(re.search(r"[\u4e00-\u9fff]", m) for m in mixed)
    assert any(re.search(r"[a-z]{3}", m) for m in mixed)


def test_english_words_translate_to_the_chinese_words_bm25_can_match():
    assert "英伟达" in chinese_terms("Who founded Nvidia?")
    from assistant.lexicon import Segmenter

    assert "创办" in chinese_terms("founded")  # by its stem, found
    tokens = cross_lingual_tokens("Who founded Nvidia?", Segmenter(["英伟达"]))
    assert "who" not in tokens  # English stopwords carry nothing to match
    assert "nvidia" in tokens and "英伟达" in tokens


def test_an_english_questions_names_are_written_as_the_passage_writes_them():
    passage = "1993年,黄仁勋创立英伟达。张江的算力平台向Intel开放。"
    assert with_passage_names("Who founded Nvidia?", passage) == "Who founded 英伟达?"  # the dictionary's name
    assert spelled_in("Zhangjiang", passage) == "张江"  # pinyin, any reading of each character
    assert with_passage_names("What does the Zhangjiang platform provide?", passage) == \
        "What does the 张江 platform provide?"
    # kept: a name the passage writes in Latin letters, one it does not have, the question's first word, other words
    assert with_passage_names("Did Intel use it?", passage) == "Did Intel use it?"
    assert with_passage_names("Who founded MetaX?", passage) == "Who founded MetaX?"
    assert with_passage_names("Founded when was Nvidia?", "英伟达成立于1993年") == "Founded when was 英伟达?"
    assert with_passage_names("Who founded Nvidia?", "黄仁勋创立了一家公司") == "Who founded Nvidia?"
    assert with_passage_names("May I ask who founded it?", "我问过黄仁勋") == "May I ask who founded it?"
    # everyday meanings are not names ("us" is 我们 too), a capital after a full stop starts a sentence, quotes stay
    assert with_passage_names("Was it the largest IPO in the US?", "我们看到最大的IPO") == \
        "Was it the largest IPO in the US?"
    assert with_passage_names("It was MetaX. Who founded it?", "谁创立了它") == "It was MetaX. Who founded it?"
    assert with_passage_names("Is 'Nvidia' big?", passage) == "Is '英伟达' big?"
    assert spelled_in("Ouyang", "欧阳") == "欧阳" and spelled_in("Lu", "吕") is None  # one character is no name
    assert spelled_in("Shanxiong", "单雄信") == "单雄"  # a surname's reading (单: shan)
    assert spelled_in("Zhangjiang", "上海浦东") is None
    # a dictionary word spells a name only as the word is read: 长江 is changjiang, though 长 can be zhang
    assert spelled_in("Zhangjiang", "长江之畔,张江科学城") == "张江" and spelled_in("Changjiang", "长江") == "长江"


def test_the_reader_reads_an_english_question_with_the_sources_names():
    from assistant.answerers.reader import ReaderAnswerer
    from assistant.reader import SpanReader
    from assistant.retrieval import Source

    reader = SpanReader.load()
    text = "1982年,Adobe诞生;1993年,黄仁勋创立英伟达,彼时的英伟达还只是一家纯粹的显卡公司。"
    answerer = ReaderAnswerer(reader, index=None)
    source = Source(1, "seed", "seed", "article", 0, text, 0, len(text), 1.0, ["c0"])
    draft = answerer.answer("Who founded Nvidia?", [source])
    assert not draft.refused and "黄仁勋" in draft.answer
    # the same question read as written: the reader's "no answer" wins over the same span
    span = reader.read("Who founded Nvidia?", [text])[0]
    assert text[span.start:span.end] == "黄仁勋" and span.margin < reader.read("Who founded 英伟达?", [text])[0].margin


def test_english_stop_words_are_scikit_learns_without_importing_scikit_learn():
    import subprocess
    import sys

    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    from assistant.language import english_stop_words

    assert english_stop_words() == ENGLISH_STOP_WORDS and "who" in english_stop_words()
    code = ("import sys; from assistant.lexicon import Segmenter; "
            "from assistant.retrieval import cross_lingual_tokens; "
            "print(cross_lingual_tokens('Who founded Nvidia?', Segmenter(['英伟达'])), 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip().endswith("False") and "'nvidia'" in out.stdout


def test_the_english_index_is_kept_in_the_cache_and_derived_again_when_unreadable(tmp_path, monkeypatch):
    from assistant import crosslingual

    monkeypatch.setenv("ASSISTANT_CACHE_DIR", str(tmp_path))
    crosslingual._english_index.cache_clear()
    derived = crosslingual._english_index()
    [kept] = (tmp_path / "crosslingual").glob("english-index-*.json")
    crosslingual._english_index.cache_clear()
    assert crosslingual._english_index() == derived and "found" in derived
    kept.write_text("{not json", encoding="utf-8")
    crosslingual._english_index.cache_clear()
    assert crosslingual._english_index() == derived  # derived again, and written again
    assert kept.read_text(encoding="utf-8").startswith("{\"")
    crosslingual._english_index.cache_clear()
    # the pinyin of each character, for names spelled in pinyin, is kept the same way
    crosslingual._syllables.cache_clear()
    syllables = crosslingual._syllables()
    assert syllables["江"] == {"jiang"} and {"xing", "hang"} <= syllables["行"]
    assert list((tmp_path / "crosslingual").glob("syllables-*.json"))
    crosslingual._word_readings.cache_clear()
    assert crosslingual._word_readings()["长江"] == {"changjiang"}  # how the word is read, kept the same way
    assert list((tmp_path / "crosslingual").glob("word-readings-*.json"))
    crosslingual._syllables.cache_clear()
    crosslingual._word_readings.cache_clear()


def test_training_features_ask_a_share_of_questions_in_english(capsys):
    from assistant.reader import load_tokenizer
    from assistant.squad import SquadPassage, SquadQuestion, SquadSet

    passage = SquadPassage("p1", "标题", "1993年,黄仁勋创立了英伟达,彼时的英伟达还只是一家纯粹的显卡公司。")
    questions = [SquadQuestion(f"q{i}", "英伟达是谁创立的?", "p1", ["黄仁勋"], [6]) for i in range(40)]
    squad = SquadSet({"p1": passage}, questions, [])
    cfg = TrainConfig(data=[], english_rate=0.5, mixed_rate=0.0, negative_rate=0, foreign_rate=0)
    tokenizer = load_tokenizer()
    features = make_features(cfg, squad, questions, tokenizer, random.Random(1))
    texts = [tokenizer.decode(row[: n]) for row, n in zip(features["input_ids"], features["lengths"], strict=True)]
    english = [t for t in texts if "NVIDIA" in t or "nvidia" in t.lower()]
    assert 10 <= len(english) <= 30  # about half
    assert all(s > 0 for s in features["starts"])  # the answer is still found in the Chinese passage
    assert "asked in dictionary English" in capsys.readouterr().err


def test_calibration_fits_english_questions_separately_and_the_reader_uses_that_fit(tmp_path):
    import json

    from assistant.answerers.reader import Calibration
    from assistant.reader import READER_FILE
    from assistant.training import calibrate

    paragraphs = [
        ("1993年,黄仁勋创立了英伟达,彼时的英伟达还只是一家纯粹的显卡公司。", "英伟达是谁创立的?", "黄仁勋"),
        ("1994年,门户搜索网站雅虎成立。", "雅虎是哪一年成立的?", "1994年"),
        ("2015年诞生于硅谷的OpenAI,已是AI时代的顶流级企业。", "OpenAI诞生于哪里?", "硅谷"),
        ("苹果在1980年的IPO堪称里程碑,超过1亿美元的募资金额。", "苹果IPO募资多少?", "超过1亿美元"),
    ]
    data = {"data": [{"title": f"t{i}", "paragraphs": [{"id": f"p{i}", "context": context, "qas": [
        {"id": f"q{i}", "question": question, "answers": [{"text": answer, "answer_start": context.index(answer)}]}]}]}
        for i, (context, question, answer) in enumerate(paragraphs)]}
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "calibration.json"
    out.write_text(json.dumps({"shapes": {"factoid/year": "span"}}), encoding="utf-8")
    result = calibrate([str(path)], READER_FILE, out, heldout_every=1)
    assert result["english"]["cases"] == result["cases"] == 8  # each question with and without its answer
    assert "dictionary English" in result["english"]["fitted_on"]
    assert result["shapes"] == {"factoid/year": "span"}  # measured shapes are kept
    assert 0 < result["threshold"] < 1 and "answerable share" in result["threshold_from"]
    calibration = Calibration.load(out)
    assert calibration.for_question("Who founded Nvidia?") is calibration.english
    assert calibration.for_question("英伟达是谁创立的?") is calibration
    assert calibration.english.weights != calibration.weights
