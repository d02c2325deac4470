from assistant.chunking import ChunkerSettings, chunk_document, split_sentences
from assistant.cleaning import clean_article, fix_spacing


def test_portal_trailer_is_removed_and_metadata_extracted(seed_text):
    doc = clean_article(seed_text, "seed")
    assert doc.title == "一座城市的长期主义:用产业生态撑起下一个技术支点"
    assert (doc.author, doc.editor) == ("忆海", "陈畅")
    assert doc.source_url == "https://stddy.com/xinwen/202601-71291.html"
    for boilerplate in ("评论列表", "本站[视听号]", "本文概览", "签约作者", "责任编辑", "参考资料", "封面图片"):
        assert boilerplate not in doc.text
    assert doc.text.endswith("这是一个科技城市真正的雄心,也是打造一个产业生态所必需的耐心。")


def test_stray_spaces_before_chinese_punctuation_go_latin_spaces_stay(seed_text):
    doc = clean_article(seed_text, "seed")
    for stray in (" ,", " 。", " 、", " ”"):
        assert stray not in doc.text
    for latin in ("Silicon Valley", "Demo Day", "Invoice Day"):
        assert latin in doc.text
    assert fix_spacing("农业郊区 ,比起") == "农业郊区,比起"
    assert fix_spacing("Hello World") == "Hello World"


def test_captions_are_kept_and_marked(seed_text):
    doc = clean_article(seed_text, "seed")
    kinds = {p.text: p.kind for p in doc.paragraphs}
    assert kinds["位于上海张江的人工智能小镇"] == "caption"
    assert kinds["美剧《Silicon Valley》对当时硅谷科技公司的展示"] == "caption"
    assert kinds["如何织出AI产业之网?"] == "heading"
    assert sum(1 for p in doc.paragraphs if p.kind == "body") > 40


def test_six_references_parsed(seed_text):
    refs = clean_article(seed_text, "seed").references
    assert [r.number for r in refs] == [1, 2, 3, 4, 5, 6]
    assert (refs[0].title, refs[0].publisher) == ("上海AI“芯”势力抢滩资本赛道", "上海证券报")
    assert refs[4].publisher == "IT之家"
    assert refs[5].publisher == "解放日报"


def test_chunks_know_the_references_they_cite(seed_text):
    doc = clean_article(seed_text, "seed")
    chunks = chunk_document(doc)
    citing_1 = [c for c in chunks if 1 in c.citations]
    assert len(citing_1) == 2
    assert any("陈维良" in c.text and "最强助力" in c.text for c in citing_1)
    assert any("5亿元人民币" in c.text for c in citing_1)
    assert {n for c in chunks for n in c.citations} == {1, 2, 3, 4, 6}  # [5] is listed but never cited


def test_chunk_offsets_slice_the_cleaned_text_back(seed_text):
    doc = clean_article(seed_text, "seed")
    for settings in (ChunkerSettings(0), ChunkerSettings(120)):
        chunks = chunk_document(doc, settings)
        for chunk in chunks:
            assert doc.text[chunk.start:chunk.end] == chunk.text
            assert chunk.paragraph is not None and chunk.kind in ("body", "caption", "heading")
        assert max(len(c.text) for c in chunks) < 300  # sentence-sized, not 500-character blocks


def test_sentences_end_with_quotes_and_citation_markers():
    text = "他说,“我们找到最强助力。”[1]接着是第二句;第三句!第四句?"
    spans = split_sentences(text)
    assert [text[s:e] for s, e in spans] == ["他说,“我们找到最强助力。”[1]", "接着是第二句;", "第三句!", "第四句?"]
