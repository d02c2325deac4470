"""The Gradio page. `build_app(assistant)` builds it; `launch` only runs it."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

import gradio as gr

from assistant import Answer, Assistant
from assistant.corpus import ARTICLES
from assistant.errors import AssistantError, ConfigError, InputError
from assistant.loaders import MAX_FILE_BYTES

from .api import MAX_UPLOAD_BYTES, MAX_UPLOADS
from .render import CSS, answer_markdown, document_html, inert, sources_html, status_html
from .security import ALLOWED_HOSTS_ENV, MULTIPART_ROOM, Guard, Site

log = logging.getLogger(__name__)
GENERIC_EXAMPLES = ["这篇文章讲了什么?", "文章的作者是谁?"]
INTERNAL_ERROR = "⚠️ 出了点问题,这个问题没有答完。请换个说法再试;如果反复出现,请查看服务器日志。"


def examples(corpus_dir) -> list[str]:
    """Example questions: the corpus's own (corpus/examples.txt, one a line), else generic ones."""
    path = Path(corpus_dir) / "examples.txt"
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError):
        return GENERIC_EXAMPLES
    return [line for line in lines if line and not line.startswith("#")][:8] or GENERIC_EXAMPLES


def _history(answers: list[Answer | None]) -> list[dict]:
    return [a.as_turn() for a in answers if a is not None]


def _source_choices(answer: Answer | None) -> list[tuple[str, int]]:
    if answer is None:
        return []
    return [(f"[{s.rank}] {s.title} · 第{s.paragraph}段", s.rank) for s in answer.sources]


def _article_choices(articles: list[dict]) -> list[tuple[str, str]]:
    """Dropdown choices for articles: the title, with the file name only where two articles share a title."""
    titles = [str(a["title"]) for a in articles]
    return [(t if titles.count(t) == 1 else f"{t} · {a['id']}", a["id"]) for t, a in zip(titles, articles, strict=True)]


def _picked(value) -> list[str]:
    """A multiselect dropdown's value as a list of names (a crafted call may send anything)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        return []
    return list(dict.fromkeys(v for v in value if isinstance(v, str) and v))


def _confirmation(visible: bool) -> tuple[dict, dict]:
    """Updates showing or hiding the confirm and cancel buttons of a removal (fresh dicts: Gradio may consume them)."""
    return gr.update(visible=visible), gr.update(visible=visible)


def build_app(assistant: Assistant) -> gr.Blocks:
    """The chat, its sources panel, the index tab; every event calls the one Assistant."""
    feedback_file = Path(assistant.settings.data_dir) / "feedback.jsonl"

    def respond(message, chat, answers, answerer, k, scope):
        chat = list(chat or [])
        answers = list(answers or [])
        if not isinstance(message, str) or not message.strip():
            yield chat, gr.update(), answers, message, gr.update()
            return
        chat.append({"role": "user", "content": inert(message)})
        yield chat + [{"role": "assistant", "content": "…"}], gr.update(), answers, "", gr.update()
        answer: Answer | None = None
        text = ""
        try:
            for item in assistant.stream(message, _history(answers), k=k, answerer=answerer,
                                         articles=_picked(scope) or None):
                if isinstance(item, str):
                    text += item
                    yield chat + [{"role": "assistant", "content": inert(text)}], gr.update(), answers, "", gr.update()
                else:
                    answer = item
        except AssistantError as exc:
            chat.append({"role": "assistant", "content": f"⚠️ {inert(str(exc))}"})
            yield chat, gr.update(), answers + [None], "", gr.update()
            return
        except Exception:
            log.exception("answering %r failed", message)
            chat.append({"role": "assistant", "content": INTERNAL_ERROR})
            yield chat, gr.update(), answers + [None], "", gr.update()
            return
        chat.append({"role": "assistant", "content": answer_markdown(answer)})
        answers.append(answer)
        yield chat, sources_html(answer, assistant.index.segmenter), answers, "", gr.update(choices=_source_choices(answer), value=None)

    def select_answer(answers, evt: gr.SelectData):
        answer = _answer_at(answers, evt.index)
        if answer is None:
            return gr.update(), gr.update(), gr.update()
        turn = answers.index(answer)
        return sources_html(answer, assistant.index.segmenter), gr.update(choices=_source_choices(answer), value=None), turn

    def show_in_context(rank, answers, shown):
        """The whole document of a source of the answer whose sources are on screen."""
        answers = answers or []
        answer = answers[shown] if shown is not None and 0 <= shown < len(answers) else None
        answer = answer or next((a for a in reversed(answers) if a is not None), None)
        if answer is None or rank is None:
            return ""
        source = next((s for s in answer.sources if s.rank == rank), None)
        if source is None:
            return ""
        doc = assistant.index.documents.get(source.doc_id)
        if doc is None:
            return '<div class="src-note">这篇文章已从索引中删除。</div>'
        return document_html(doc.title, doc.text, source.start, source.end)

    def feedback(answers, evt: gr.LikeData):
        answer = _answer_at(answers, evt.index)
        if answer is None:
            return
        feedback_file.parent.mkdir(parents=True, exist_ok=True)
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "liked": bool(evt.liked), "question": answer.question,
                  "rewritten_question": answer.rewritten_question, "answer": answer.answer,
                  "sources": [s.as_dict() for s in answer.sources]}
        with open(feedback_file, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
        gr.Info("谢谢反馈!")

    def dropdowns(picked, scoped, articles: list[dict] | None = None) -> tuple[dict, dict]:
        """(the removal dropdown, the scope dropdown) with the articles as they are now; a selected article that is
        gone leaves the selection."""
        articles = assistant.articles() if articles is None else articles
        ids = {a["id"] for a in articles}
        choices = _article_choices(articles)
        return (gr.update(choices=choices, value=[v for v in _picked(picked) if v in ids]),
                gr.update(choices=choices, value=[v for v in _picked(scoped) if v in ids]))

    def refreshed(picked, scoped) -> tuple[str, dict, dict]:
        """(status, both article dropdowns) after the index changed."""
        current = assistant.status()
        return status_html(current), *dropdowns(picked, scoped, current["articles"])

    def add_articles(files, replace, progress=gr.Progress()):
        """(message, status, the upload box): the uploads are deleted after every try, so the box is emptied."""
        if not isinstance(files, list):
            files = [] if files is None else [files]
        paths = [Path(getattr(f, "name", f)) for f in files if isinstance(f, str) or hasattr(f, "name")]
        uploads = Path(os.environ.get("GRADIO_TEMP_DIR") or upload_dir(assistant)).resolve()
        try:
            message = add_uploaded(paths, uploads, replace is True, progress)
        finally:
            discard_uploads(paths, uploads)
        return message, status_html(assistant.status()), None

    def add_uploaded(paths: list[Path], uploads: Path, replace: bool, progress) -> str:
        if not paths:
            return "请先选择要上传的 .txt、.md 或 .html 文件。"
        if len(paths) > MAX_UPLOADS:
            return f"⚠️ 一次最多上传 {MAX_UPLOADS} 个文件。索引未改变。"
        if any(not p.resolve().is_relative_to(uploads) for p in paths):  # a crafted call naming server files
            return "⚠️ 只能添加通过本页上传的文件。索引未改变。"
        if sum(p.stat().st_size for p in paths if p.is_file()) > MAX_UPLOAD_BYTES:
            megabytes = MAX_UPLOAD_BYTES // 1024 // 1024
            return f"⚠️ 一次上传的文件合计不能超过 {megabytes} MB,请分几次添加。索引未改变。"
        progress(0.1, desc="检查并复制文件")
        existing = {a["id"] for a in assistant.articles()}
        same = [p.name for p in paths if p.name in existing]
        hint = "" if replace or not same else f"\n\n如要用新内容替换同名文章({'、'.join(same)}),请勾选“替换同名文章”后再上传。"
        try:
            progress(0.3, desc="向量化新文章")
            # the names the user gave, so messages name the file and not its place in the upload folder
            report = assistant.add_files(paths, replace=replace, names=[p.name for p in paths])
        except AssistantError as exc:
            return f"⚠️ {exc}\n\n索引未改变。{hint}"
        except Exception:
            log.exception("adding %s failed", paths)
            return "⚠️ 添加失败,索引未改变。请查看服务器日志。"
        progress(1.0, desc="完成")
        return add_message(report) + (hint if report.refused else "")

    def ask_remove(picked):
        """(message, the articles waiting for confirmation, confirm, cancel): the first click only asks; the
        confirmation removes the articles named here, even if the selection changes meanwhile."""
        names = _picked(picked)
        if not names:
            return "请先选择要删除的文章。", [], *_confirmation(False)
        titles = {a["id"]: a["title"] for a in assistant.articles()}
        listed = "\n".join(f"- {inert(str(titles.get(n, n)))}({inert(n)})" for n in names)
        message = f"**确认删除 {len(names)} 篇文章?** 文章及其参考资料全文会从语料和索引中删除。\n\n{listed}"
        return message, names, *_confirmation(True)

    def confirm_remove(pending, picked, scoped):
        """(message, pending, confirm, cancel, status, both article dropdowns) after removing the pending articles."""
        names = _picked(pending)
        if not names:
            message = "请先选择要删除的文章。"
        else:
            try:
                message = remove_message(assistant.remove_articles(names), len(assistant.articles()))
            except AssistantError as exc:
                message = f"⚠️ {inert(str(exc))}\n\n索引未改变。"
            except Exception:
                log.exception("removing %s failed", names)
                message = "⚠️ 删除失败,索引未改变。请查看服务器日志。"
        return message, [], *_confirmation(False), *refreshed(picked, scoped)

    def api_ask(question: str | None = None, history: list | None = None, k: int | None = None,
                articles: list[str] | None = None) -> dict:
        """Ask over HTTP: the same Assistant.ask the chat uses; errors come back as {"error": ..., "field": ...}.
        `articles` (ids) limits the question to those articles; None or []: all.

        Gradio passes whatever the client sent, so every value goes through the validation layer as is.
        """
        try:
            return assistant.ask(question, history, k=k, articles=articles).to_dict()
        except InputError as exc:
            return {"error": str(exc), "field": exc.field}
        except AssistantError as exc:
            return {"error": str(exc), "field": None}
        except Exception:
            log.exception("api ask failed")
            return {"error": "Internal error; see the server log.", "field": None}

    # offline by nature: no version check or usage report to gradio.app (both otherwise start with the page; the
    # environment variable covers the reports that read it rather than the page's setting)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    # uploads never added (the page closed first) are deleted an hour later; added ones at once
    with gr.Blocks(title="文章问答助手", delete_cache=(600, 3600), analytics_enabled=False) as demo:
        answers = gr.State([])
        shown = gr.State(None)  # which answer's sources the panel shows; None: the latest
        gr.Markdown("## 文章问答助手\n向文章提问:答案简短、带编号引用,右侧显示依据的原文段落。")
        example_questions = examples(assistant.settings.corpus_dir)
        article_choices = _article_choices(assistant.articles())
        with gr.Tab("问答"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=3):
                    chatbot = gr.Chatbot(height=480, label="对话", elem_id="chat", feedback_options=("Like", "Dislike"),
                                         placeholder=f"例如:{example_questions[0]}")
                    with gr.Row():
                        box = gr.Textbox(placeholder="输入问题,回车发送", show_label=False, scale=5, elem_id="question",
                                         max_length=500)
                        send = gr.Button("发送", variant="primary", scale=1, elem_id="send")
                    scope = gr.Dropdown(choices=article_choices, value=[], multiselect=True, label="只问这些文章",
                                        info="不选:在全部文章中查找", elem_id="scope")
                    clear = gr.Button("清空对话", elem_id="clear", size="sm")
                    gr.Examples(example_questions, inputs=box, label="示例问题")
                with gr.Column(scale=2):
                    gr.Markdown("### 来源段落")
                    sources = gr.HTML(sources_html(None), elem_id="sources")
                    with gr.Accordion("在原文中查看来源", open=False):
                        pick = gr.Dropdown(choices=[], label="选择来源", elem_id="pick")
                        doc_view = gr.HTML(elem_id="doc-view")
                    with gr.Accordion("设置", open=False):
                        answerer = gr.Radio(assistant.available_answerers, value=assistant.settings.answerer, label="回答方式",
                                            info="配置 ASSISTANT_LLM_BASE_URL 后可选大模型回答")
                        k = gr.Slider(1, 10, value=assistant.settings.k, step=1, label="来源数量")
        with gr.Tab("索引"):
            status = gr.HTML(status_html(assistant.status()), elem_id="status")
            files = gr.File(file_count="multiple", file_types=[".txt", ".md", ".html", ".htm"], label="上传文章",
                            elem_id="upload")
            replace = gr.Checkbox(False, label="替换同名文章", elem_id="replace",
                                  info="上传的文件与已有文章同名但内容不同时,用新内容替换旧文章(不勾选则不添加该文件)")
            add = gr.Button("添加到索引", variant="primary", elem_id="add")
            add_msg = gr.Markdown(elem_id="add-msg")
            with gr.Row(equal_height=True):
                remove_pick = gr.Dropdown(choices=article_choices, value=[], multiselect=True, label="删除文章",
                                          elem_id="remove-pick", scale=4)
                remove = gr.Button("删除所选文章", variant="stop", elem_id="remove", scale=1)
            remove_msg = gr.Markdown(elem_id="remove-msg")
            with gr.Row():
                confirm = gr.Button("确认删除", variant="stop", visible=False, elem_id="remove-confirm")
                cancel = gr.Button("取消", visible=False, elem_id="remove-cancel")
            pending = gr.State([])  # the articles the confirmation names

        outputs = [chatbot, sources, answers, box, pick]
        for trigger in (box.submit, send.click):
            trigger(respond, [box, chatbot, answers, answerer, k, scope], outputs, api_visibility="private").then(
                lambda: None, None, shown, api_visibility="private")
        clear.click(lambda: ([], sources_html(None), [], "", gr.update(choices=[], value=None), "", None),
                    None, [chatbot, sources, answers, box, pick, doc_view, shown], api_visibility="private")
        chatbot.select(select_answer, [answers], [sources, pick, shown], api_visibility="private")
        chatbot.like(feedback, [answers], None, api_visibility="private")
        pick.change(show_in_context, [pick, answers, shown], doc_view, api_visibility="private")
        add.click(add_articles, [files, replace], [add_msg, status, files], api_visibility="private").then(
            dropdowns, [remove_pick, scope], [remove_pick, scope], api_visibility="private")
        remove.click(ask_remove, [remove_pick], [remove_msg, pending, confirm, cancel], api_visibility="private")
        confirm.click(confirm_remove, [pending, remove_pick, scope],
                      [remove_msg, pending, confirm, cancel, status, remove_pick, scope], api_visibility="private")
        cancel.click(lambda: ("已取消,没有删除文章。", [], *_confirmation(False)), None, [remove_msg, pending, confirm, cancel],
                     api_visibility="private")
        # the page may be opened after another page, the CLI or the HTTP API changed the articles
        demo.load(refreshed, [remove_pick, scope], [status, remove_pick, scope], api_visibility="private")
        gr.api(api_ask, api_name="ask")
    return demo


def _answer_at(answers: list[Answer | None], message_index) -> Answer | None:
    """The answer behind the chat message at message_index (user and assistant messages alternate)."""
    index = message_index[0] if isinstance(message_index, (list, tuple)) else message_index
    if not isinstance(index, int):
        return None
    turn = index // 2
    return answers[turn] if 0 <= turn < len(answers or []) else None


def add_message(report) -> str:
    """What the page says after an add: what was added or replaced, and each file refused, renamed or skipped
    with why."""
    done = [f"{verb}:{', '.join(Path(p).name for p in paths)}"
            for verb, paths in (("已添加", report.added), ("已替换", report.changed)) if paths]
    lines = [f"✅ {';'.join(done) or '已添加:(内容未变化)'}。新向量化 {report.embedded} 个片段,现在共 {report.chunks} 个片段,"
             "可以直接提问。"]
    lines += [f"- 未添加 {r['file']}:{r['reason']}" for r in report.refused]
    lines += [f"- {r['file']} 已保存为 {r['stored']}" for r in report.renamed]
    lines += [f"- 语料中的 {r['file']} 未能建立索引:{r['reason']}" for r in report.skipped]
    return "\n".join(lines)


def remove_message(report, articles_left: int) -> str:
    """What the page says after a removal: the articles removed (and how many reference texts with them)."""
    articles = [Path(p).name for p in report.removed if Path(p).parent.name == ARTICLES]
    lines = [f"✅ 已删除:{inert(', '.join(articles) or '(无)')}。"]
    if others := len(report.removed) - len(articles):
        lines[0] += f"同时删除了 {others} 个参考资料全文。"
    if articles_left:
        lines.append(f"现在共 {articles_left} 篇文章、{report.chunks} 个片段。")
    else:
        lines.append("索引中已没有文章;上传文章后才能提问。")
    return "\n\n".join(lines)


def discard_uploads(paths: Iterable[Path], uploads: Path) -> None:
    """Delete uploaded files (and the folders Gradio made for them), never anything outside the upload folder."""
    for path in paths:
        path = path.resolve()
        if path.is_relative_to(uploads) and path != uploads:
            path.unlink(missing_ok=True)
            if path.parent != uploads:
                try:
                    path.parent.rmdir()
                except OSError:  # another upload with the same content is still there
                    pass


def launch(assistant: Assistant, host: str = "127.0.0.1", port: int = 7860, auth: str | None = None,
           allowed_hosts: Iterable[str] | None = None) -> None:
    """Run the page until interrupted.

    allowed_hosts: Host names the server answers to beside its own address (default: ASSISTANT_ALLOWED_HOSTS,
    comma-separated); see ui.security.
    """
    if allowed_hosts is None:
        allowed_hosts = os.environ.get(ALLOWED_HOSTS_ENV, "").split(",")
    try:
        site = Site.for_bind(host, port, allowed_hosts)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    credentials = None
    if auth:
        user, sep, password = auth.partition(":")
        if not sep or not user or not password:
            raise ConfigError("--auth takes user:password (or set ASSISTANT_AUTH=user:password).")
        credentials = (user, password)
    # settings checked: warm up the model, jieba, its tagger and the tokenizer before the first user waits
    assistant.warm(examples(assistant.settings.corpus_dir)[0])
    import uvicorn
    from fastapi import FastAPI

    from .api import install_error_handlers, router

    uploads = upload_dir(assistant)
    shutil.rmtree(uploads, ignore_errors=True)  # what a previous server left behind
    uploads.mkdir(parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(uploads)  # page uploads land here, not in the system temp folder
    demo = build_app(assistant)
    demo.queue(default_concurrency_limit=4)
    app = FastAPI(title="文章问答助手 API", docs_url="/api/docs", redoc_url=None, openapi_url="/api/openapi.json")
    app.include_router(router(assistant, credentials, uploads))
    install_error_handlers(app)
    app = gr.mount_gradio_app(app, demo, path="/", auth=credentials, theme=gr.themes.Soft(), css=CSS,
                              max_file_size=f"{MAX_FILE_BYTES // 1024 // 1024}mb", ssr_mode=False, show_error=False,
                              footer_links=[], server_name=host, server_port=port)
    guarded = Guard(app, site, credentials=credentials, session_ok=_page_session(app),
                    upload_limit=MAX_UPLOAD_BYTES + MULTIPART_ROOM)
    print(f"文章问答助手: http://{host}:{port}  (JSON API: http://{host}:{port}/api/ask)", flush=True)
    try:
        uvicorn.run(guarded, host=host, port=port, log_level="warning")
    finally:
        shutil.rmtree(uploads, ignore_errors=True)


def _page_session(app):
    """Whether a request's cookies hold the session of a page login (Gradio's access token)."""
    from starlette.routing import Mount

    page = next(route.app for route in app.routes if isinstance(route, Mount))

    def valid(cookies: dict[str, str]) -> bool:
        return any(cookies.get(f"{name}-{page.cookie_id}") in page.tokens
                   for name in ("access-token", "access-token-unsecure"))

    return valid


def upload_dir(assistant: Assistant) -> Path:
    """Where uploads wait until they are added: under the data folder, emptied at start and stop."""
    return Path(assistant.settings.data_dir).resolve() / "uploads"
