from assistant.answerers import Citation
from assistant.assistant import Answer
from assistant.retrieval import Source
from ui.app import _answer_at, _article_choices
from ui.render import answer_markdown, articles_html, document_html, highlight, sources_html


def _answer(text="黄仁勋[1]", refused=False, passage="1993年,黄仁勋创立了英伟达。", rewritten=None):
    source = Source(1, "doc", "标题<b>", "body", 3, passage, 100, 100 + len(passage), 1.5, ["doc:1"],
                    [{"number": 1, "title": "上海AI“芯”势力抢滩资本赛道", "publisher": "上海证券报"}])
    cites = [] if refused else [Citation(1, "doc", passage[:15], 100, 115)]
    return Answer(text, refused, "英伟达是谁创立的?", rewritten or "英伟达是谁创立的?", [source], cites)


def test_highlight_by_offsets_and_terms():
    out = highlight("甲乙丙丁戊", 10, [(11, 13)], ["丁"])
    assert out == '甲<mark class="support">乙丙</mark><span class="term">丁</span>戊'
    assert highlight("abc", 0, [(5, 9)], []) == "abc"  # a span outside the passage marks nothing


def test_sources_panel_marks_support_terms_and_references():
    out = sources_html(_answer())
    assert '<mark class="support">1993年,黄仁勋<span class="term">创立</span>了英<span class="term">伟达</span></mark>。' in out
    assert "[1] 上海AI“芯”势力抢滩资本赛道 — 上海证券报" in out
    assert "第3段" in out and "score 1.500" in out
    assert "标题&lt;b&gt;" in out  # titles are escaped too


def test_document_text_is_escaped_everywhere():
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)>英伟达"
    out = sources_html(_answer(passage=evil))
    assert "<script>" not in out and "<img" not in out and "&lt;script&gt;" in out
    doc = document_html("<i>t</i>", evil, 0, 10)
    assert "<script>" not in doc and "&lt;i&gt;" in doc and '<mark class="support">' in doc
    assert "<script>" not in answer_markdown(_answer(text="<script>x</script>"))


def test_refused_answer_says_so_and_still_lists_passages():
    answer = _answer(text="文章没有提到这一点。最接近的段落如下:", refused=True)
    assert "未找到答案" in answer_markdown(answer)
    out = sources_html(answer)
    assert "没有提到" in out and 'data-rank="1"' in out and "support" not in out.split("src-card", 1)[1]
    answer.sources = []  # an empty index: nothing to list, so nothing promised
    assert "右侧列出" not in answer_markdown(answer) and "最接近" not in sources_html(answer)


def test_rewritten_question_is_shown():
    answer = _answer(rewritten="黄仁勋在哪一年创立了英伟达?")
    assert "检索的问题" in answer_markdown(answer) and "黄仁勋在哪一年创立了英伟达" in sources_html(answer)


def test_citation_label_and_empty_panel():
    assert "黄仁勋\\[1\\]" in answer_markdown(_answer())  # escaped Markdown: shows as 黄仁勋[1], never a link
    assert "提问后" in sources_html(None)


def test_selecting_a_message_finds_its_answer():
    a, b = _answer(), _answer(text="1993年[1]")
    assert _answer_at([a, b], 1) is a and _answer_at([a, b], 3) is b and _answer_at([a, b], 2) is b
    assert _answer_at([a, None], 3) is None and _answer_at([a], 9) is None


def _article(id="a.txt", title="标题", **extra):
    return {"id": id, "file": f"articles/{id}", "title": title, "size": 2048, "chunks": 3, "references": 2,
            "reference_texts": 0, "added_at": "2026-01-02T03:04:05+08:00", **extra}


def test_article_table_is_escaped_and_readable():
    out = articles_html([_article('x"><script>.txt', "<img src=x onerror=alert(1)>")])
    assert "<script>" not in out and "<img" not in out and "&lt;img src=x" in out and "x&quot;&gt;&lt;script&gt;" in out
    assert "2.0 KB" in out and "2026-01-01 19:04 UTC" in out and "1 篇" in out
    assert "还没有文章" in articles_html([])


def test_article_choices_name_a_shared_title_by_file():
    assert _article_choices([_article("a.txt", "甲"), _article("b.txt", "乙")]) == [("甲", "a.txt"), ("乙", "b.txt")]
    assert _article_choices([_article("a.txt", "甲"), _article("b.txt", "甲")]) == [("甲 · a.txt", "a.txt"),
                                                                                    ("甲 · b.txt", "b.txt")]


def test_add_and_remove_messages_name_the_files():
    from assistant.indexing import BuildReport
    from ui.app import add_message, remove_message

    report = BuildReport(documents=2, chunks=97, references=6, model="m", dimension=384, unknown_token_share=0.0,
                         seconds=1.0, full=False, embedded=2, reused=95, added=["articles/new.md"],
                         changed=["articles/note.md"])
    assert add_message(report).startswith("✅ 已添加:new.md;已替换:note.md。新向量化 2 个片段")
    report.removed = ["articles/old_1.md", "references/old_1/1.txt"]
    message = remove_message(report, articles_left=1)
    assert "已删除:old\\_1\\.md" in message and "1 个参考资料全文" in message and "共 1 篇文章" in message
    assert "已没有文章" in remove_message(report, articles_left=0)


def test_the_page_reports_nothing_to_gradio(assistant, monkeypatch):
    """Offline by nature: the page starts no version check or usage report (gradio.app) and tells gradio's own
    reporting functions, which read the environment, the same."""
    import gradio.analytics

    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "True")  # even where the environment asks for reports
    from ui.app import build_app

    demo = build_app(assistant)
    assert demo.analytics_enabled is False and not gradio.analytics.analytics_enabled()
