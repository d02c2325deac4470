"""A jieba user dictionary learned from each index's corpus, kept with that index and nowhere else."""

from __future__ import annotations

from collections import Counter

import numpy as np

from assistant.indexing import build_index, load_index, read_manifest
from assistant.lexical import terms, tokenize
from assistant.lexicon import Segmenter, learn_words, load_jieba

# A made-up company name jieba has never seen, used as a new article would use it.
ARTICLE = ("# 沃析科技简介\n\n"
           "沃析科技成立于2019年,总部位于杭州。沃析科技的创始人是林舒。\n\n"
           "2023年,沃析科技发布了《星穹计划》,沃析科技因此获得了两轮融资。\n\n"
           "如今沃析科技的员工超过三百人,《星穹计划》也进入了第二阶段。\n")


def test_names_jieba_splits_are_learned_from_the_text():
    assert list(load_jieba().cut("沃析科技")) != ["沃析科技"]  # jieba alone splits the name
    words = learn_words([ARTICLE])
    assert "沃析科技" in words and "星穹计划" in words
    assert all(len(list(load_jieba().cut(w, HMM=False))) > 1 for w in words)  # only what jieba would split
    assert Segmenter(words).cut("沃析科技的员工") and list(Segmenter(words).cut("沃析科技的员工"))[0] == "沃析科技"


def test_glossed_and_quoted_names_count_once_seen():
    words = learn_words(["MiniMax(稀宇科技)发布了新模型,团队称之为“海螺织梦”。"])
    assert "稀宇科技" in words and "海螺织梦" in words


def test_the_dictionary_belongs_to_its_index(tmp_path, embeddings):
    corpus = tmp_path / "corpus"
    (corpus / "articles").mkdir(parents=True)
    (corpus / "articles" / "woxi.md").write_text(ARTICLE, encoding="utf-8")
    build_index(corpus, tmp_path / "with", embeddings)
    build_index(corpus, tmp_path / "without", embeddings, user_words=False)

    assert read_manifest(tmp_path / "with")["lexicon"]["words"] >= 2  # kept in the index's catalog
    with_words = load_index(tmp_path / "with", embeddings)
    without = load_index(tmp_path / "without", embeddings)
    assert "沃析科技" in terms("沃析科技是谁创立的?", with_words.segmenter)
    assert "沃析科技" in tokenize("沃析科技的总部", with_words.segmenter)
    # the other index in the same process, and jieba's global dictionary, are untouched
    assert "沃析科技" not in terms("沃析科技是谁创立的?", without.segmenter)
    assert "沃析科技" not in terms("沃析科技是谁创立的?")
    assert "沃析科技" not in load_jieba().lcut("沃析科技是谁创立的?")
    assert without.manifest["lexicon"]["words"] == 0


def test_answers_use_the_index_words(tmp_path, embeddings):
    from assistant import Assistant
    from assistant.config import Settings

    corpus = tmp_path / "corpus"
    (corpus / "articles").mkdir(parents=True)
    (corpus / "articles" / "woxi.md").write_text(ARTICLE, encoding="utf-8")
    build_index(corpus, tmp_path / "index", embeddings)
    settings = Settings.load(corpus_dir=corpus, index_dir=tmp_path / "index", data_dir=tmp_path / "data")
    answer = Assistant(settings, load_index(tmp_path / "index", embeddings), embeddings).ask("沃析科技的创始人是谁?")
    assert not answer.refused and "林舒" in answer.plain_answer


def test_an_add_learns_the_new_article_and_keeps_the_old_words(tmp_path, embeddings):
    corpus = tmp_path / "corpus"
    (corpus / "articles").mkdir(parents=True)
    (corpus / "articles" / "woxi.md").write_text(ARTICLE, encoding="utf-8")
    build_index(corpus, tmp_path / "index", embeddings)
    other = ARTICLE.replace("沃析科技", "岚屿智造").replace("星穹计划", "潮汐工程")
    (corpus / "articles" / "lanyu.md").write_text(other, encoding="utf-8")
    report = build_index(corpus, tmp_path / "index", embeddings)
    assert not report.full and report.embedded < 20  # incremental: only the new article
    words = load_index(tmp_path / "index", embeddings).segmenter.words
    assert {"沃析科技", "星穹计划", "岚屿智造", "潮汐工程"} <= set(words)


def test_an_add_tokenises_only_what_changed_and_every_chunk_keeps_exact_tokens(tmp_path, embeddings, monkeypatch):
    import assistant.indexing as indexing

    corpus = tmp_path / "corpus"
    (corpus / "articles").mkdir(parents=True)
    old = ARTICLE + "\n沃析科技也参与了潮汐工程。\n"  # 潮汐工程 once: not yet a word of this corpus
    (corpus / "articles" / "woxi.md").write_text(old, encoding="utf-8")
    build_index(corpus, tmp_path / "index", embeddings)
    assert "潮汐工程" not in load_index(tmp_path / "index", embeddings).segmenter.words

    tokenised = []
    real = indexing.build.tokenize
    monkeypatch.setattr(indexing.build, "tokenize", lambda text, seg=None, cached=True: tokenised.append(text) or real(text, seg, cached))
    new = "# 潮汐工程\n\n潮汐工程于2024年启动。潮汐工程由岚屿牵头。潮汐工程的预算为三亿元。\n"
    (corpus / "articles" / "tide.md").write_text(new, encoding="utf-8")
    build_index(corpus, tmp_path / "index", embeddings)
    index = load_index(tmp_path / "index", embeddings)
    assert "潮汐工程" in index.segmenter.words
    old_texts = [c.text for c in index.chunks if c.doc_id == "woxi.md"]
    assert any("潮汐工程" in t for t in tokenised)  # the old sentence that holds the new word, again
    assert not any(t in tokenised for t in old_texts if "潮汐工程" not in t)  # the rest kept their segment
    for row, chunk in enumerate(index.chunks):  # every live chunk's postings are its tokens under today's words
        assert _postings_of(index, row) == Counter(real(chunk.text, index.segmenter))


def _postings_of(index, row):
    """The term counts the BM25 segments hold for one live chunk."""
    for segment, rows in index.parts:
        local = np.flatnonzero(rows == row)
        if len(local):
            csr = segment.postings.tocsr()
            a, z = csr.indptr[local[0]], csr.indptr[local[0] + 1]
            return Counter({segment.terms[c]: int(v) for c, v in zip(csr.indices[a:z], csr.data[a:z], strict=True)})
    raise AssertionError(f"row {row} is in no segment")


def test_words_added_to_jiebas_global_dictionary_reach_no_segmenter():
    # Milvus Lite's jieba analyzer calls jieba.add_word in-process; our cutting must not change with it
    import subprocess
    import sys

    code = ("import jieba\nfrom assistant.lexicon import Segmenter, default_segmenter, learn_words\n"
            "jieba.add_word('英伟达'); jieba.add_word('沃析科技')\n"
            "print(list(default_segmenter().cut('英伟达的')), list(Segmenter(['星穹计划']).cut('沃析科技')),\n"
            "      '沃析科技' in learn_words([" + repr(ARTICLE) + "]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['英', '伟达', '的'] ['沃析', '科技'] True"


def test_a_large_corpus_learns_the_same_words_in_a_child_process(tmp_path, embeddings, monkeypatch, caplog):
    import assistant.indexing as indexing

    corpus = tmp_path / "corpus"
    (corpus / "articles").mkdir(parents=True)
    (corpus / "articles" / "woxi.md").write_text(ARTICLE, encoding="utf-8")
    build_index(corpus, tmp_path / "here", embeddings)
    monkeypatch.setattr(indexing.limits, "LEARN_IN_CHILD_BYTES", 0)  # this corpus counts as large
    spawned = []
    real = indexing.build.multiprocessing.get_context

    def watched(method):  # noqa: ANN001, ANN202
        spawned.append(method)
        return real(method)

    monkeypatch.setattr(indexing.build.multiprocessing, "get_context", watched)
    build_index(corpus, tmp_path / "child", embeddings)

    assert spawned == ["spawn"]
    assert "child process failed" not in caplog.text  # learned there, not by the fallback here
    here = load_index(tmp_path / "here", embeddings).catalog.words()
    assert "沃析科技" in here
    assert load_index(tmp_path / "child", embeddings).catalog.words() == here
