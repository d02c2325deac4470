"""Turning answers into chat messages and source cards: plain functions, no server needed.

Every piece of document text goes through html.escape before it is placed in markup.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime

from assistant import Answer
from assistant.lexical import terms
from assistant.lexicon import Segmenter

CSS = """
.src-card{border:1px solid #d9dee7;border-radius:10px;padding:10px 12px;margin:0 0 10px;background:#fff}
.src-head{display:flex;justify-content:space-between;gap:8px;font-size:13px;color:#4a5568;margin-bottom:6px}
.src-rank{display:inline-block;min-width:26px;text-align:center;border-radius:6px;background:#3b6ea5;color:#fff;
  font-weight:600;margin-right:6px}
.src-text{font-size:15px;line-height:1.7;color:#1a202c}
.src-text mark.support{background:#ffe58a;padding:1px 0;border-radius:3px}
.src-text .term{color:#b4232a;font-weight:600}
.src-refs{font-size:12px;color:#4a5568;margin-top:6px;border-top:1px dashed #e2e8f0;padding-top:4px}
.src-note{font-size:13px;color:#4a5568;margin:0 0 8px}
.src-refused{background:#fff4f4;border:1px solid #f3c1c1;color:#8a1f1f;border-radius:8px;padding:6px 10px;margin-bottom:8px}
.doc-view{font-size:15px;line-height:1.8;max-height:520px;overflow:auto;padding:8px 12px;border:1px solid #e2e8f0;
  border-radius:8px;background:#fcfcfd}
.doc-view mark.support{background:#ffe58a}
.status-table td{padding:2px 10px 2px 0}
.article-table{border-collapse:collapse;margin-top:6px;font-size:14px}
.article-table th,.article-table td{padding:3px 12px 3px 0;text-align:left;border-bottom:1px solid #e2e8f0}
.article-table td.num{text-align:right}
"""


# Everything Markdown, LaTeX or HTML would act on; each is backslash-escaped, then HTML-escaped.
_MARKUP = re.compile(r"([\\`*_\[\]{}()#+\-.!|~:$])")


def inert(text: str) -> str:
    """Text (from an article, a question or an LLM) as chat Markdown that renders exactly as written.

    Images, links, raw HTML, autolinks and formulas all come out as their literal characters, so nothing
    in an answer can make the page load anything. Only the project's own markup is added around it.
    """
    return html.escape(_MARKUP.sub(r"\\\1", text), quote=False)


def citation_label(n: int) -> str:
    return f"[{n}]"


def answer_markdown(answer: Answer) -> str:
    """The assistant's chat message: the answer, its citation labels, and any notice."""
    body = inert(answer.answer)
    lines = []
    if answer.refused:
        lines.append("**未找到答案** · " + body)
    else:
        lines.append(body)
    if answer.refused and answer.sources:
        lines.append("右侧列出了最接近的段落,供参考。")
    if answer.rewritten_question != answer.question:
        lines.append(f"*检索的问题: {inert(answer.rewritten_question)}*")
    if answer.notice:
        lines.append(f"> {inert(answer.notice)}")
    return "\n\n".join(lines)


def highlight(text: str, offset: int, spans: list[tuple[int, int]], words: list[str]) -> str:
    """Escaped HTML of text (which starts at `offset` in its document) with spans marked and words emphasised."""
    marks = sorted((max(s - offset, 0), min(e - offset, len(text))) for s, e in spans if e > offset and s < offset + len(text))
    out, pos = [], 0
    for s, e in marks:
        if s < pos:
            s = pos
        if s >= e:
            continue
        out.append(_terms(text[pos:s], words))
        out.append(f'<mark class="support">{_terms(text[s:e], words)}</mark>')
        pos = e
    out.append(_terms(text[pos:], words))
    return "".join(out)


def _terms(text: str, words: list[str]) -> str:
    if not words or not text:
        return html.escape(text)
    pattern = re.compile("|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)), re.IGNORECASE)
    out, pos = [], 0
    for m in pattern.finditer(text):
        out.append(html.escape(text[pos:m.start()]))
        out.append(f'<span class="term">{html.escape(m.group())}</span>')
        pos = m.end()
    out.append(html.escape(text[pos:]))
    return "".join(out)


def sources_html(answer: Answer | None, segmenter: Segmenter | None = None) -> str:
    """The sources panel for one answer: numbered cards, supporting sentence highlighted.

    `segmenter` is the index's jieba (with its learned words), so the question's words are marked whole.
    """
    if answer is None:
        return '<div class="src-note">提问后,这里会显示答案依据的原文段落。</div>'
    words = [w for w in terms(answer.rewritten_question, segmenter) if len(w) >= 2]
    parts = []
    if answer.refused and answer.sources:
        parts.append('<div class="src-refused">文章没有提到这一点。以下是最接近的段落:</div>')
    elif answer.refused:
        parts.append('<div class="src-note">没有可显示的段落。</div>')
    if answer.rewritten_question != answer.question:
        parts.append(f'<div class="src-note">检索的问题:{html.escape(answer.rewritten_question)}</div>')
    support = {c.source: (c.start, c.end) for c in answer.citations if c.doc_id}
    for s in answer.sources:
        spans = [support[s.rank]] if s.rank in support else []
        refs = "".join(
            f"<div>{html.escape(citation_label(r['number']))} {html.escape(r['title'])}"
            f"{' — ' + html.escape(r['publisher']) if r.get('publisher') else ''}</div>"
            for r in s.citations
        )
        para = f"第{s.paragraph}段" if s.paragraph else ""
        parts.append(
            f'<div class="src-card" data-rank="{s.rank}" data-doc="{html.escape(s.doc_id)}">'
            f'<div class="src-head"><span><span class="src-rank">'
            f"{s.rank}</span>{html.escape(s.title)} · {para}</span><span>score {s.score:.3f}</span></div>"
            f'<div class="src-text">{highlight(s.text, s.start, spans, words)}</div>'
            + (f'<div class="src-refs">引用的参考资料:{refs}</div>' if refs else "")
            + "</div>"
        )
    return "\n".join(parts)


def document_html(title: str, text: str, start: int, end: int) -> str:
    """A whole cleaned document with one passage highlighted, for reading a source in context."""
    body = highlight(text, 0, [(start, end)], []).replace("\n", "<br>")
    return f'<h4>{html.escape(title)}</h4><div class="doc-view">{body}</div>'


def status_html(status: dict) -> str:
    """The index tab's summary: counts, model, build time, then the table of articles."""
    rows = [("文档数", status["documents"]), ("片段数", status["chunks"]), ("参考资料", status["references"]),
            ("向量模型", f"{status['model']}({status['dimension']}维)"),
            ("未知词比例", f"{status['unknown_token_share']:.1%}"), ("构建时间", _when(status["built_at"]))]
    table = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f'<table class="status-table">{table}</table>' + articles_html(status["articles"])


def articles_html(articles: list[dict]) -> str:
    """The articles of the index (Assistant.articles()), one row each; every value escaped."""
    if not articles:
        return '<div class="src-note" id="no-articles">索引中还没有文章。请在下方上传 .txt、.md 或 .html 文件。</div>'
    head = "".join(f"<th>{h}</th>" for h in ("文件", "标题", "片段", "引用", "大小", "添加时间"))
    rows = "".join(
        f'<tr data-article="{html.escape(a["id"])}"><td><code>{html.escape(a["id"])}</code></td>'
        f'<td>{html.escape(str(a["title"]))}</td><td class="num">{int(a["chunks"])}</td>'
        f'<td class="num">{int(a["references"])}</td><td class="num">{html.escape(_size(a["size"]))}</td>'
        f'<td>{html.escape(_when(a.get("added_at")))}</td></tr>'
        for a in articles
    )
    return f'<div>文章({len(articles)} 篇):</div><table class="article-table"><tr>{head}</tr>{rows}</table>'


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / 1024 / 1024:.1f} MB"


def _when(stamp: str | None) -> str:
    """An ISO time to the minute, in UTC (the server cannot know the reader's zone); as given if unparsable."""
    if not stamp:
        return ""
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    if moment.tzinfo is None:
        return moment.strftime("%Y-%m-%d %H:%M")
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
