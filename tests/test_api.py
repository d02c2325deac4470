"""The JSON API on a real server started with --auth: routes, HTTP Basic, validation, uploads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest

from .fake_llm import FakeLLM
from .server import running_server

pytestmark = pytest.mark.slow
AUTH = ("reader", "s3cret-pass")


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    with FakeLLM() as llm:
        llm.reply = "英伟达由黄仁勋创立[1],总部位于美国。"
        env = {"ASSISTANT_LLM_BASE_URL": llm.base_url, "ASSISTANT_LLM_MODEL": "fake", "ASSISTANT_LLM_API_KEY": "k"}
        with running_server(root, "--auth", ":".join(AUTH), env=env) as url:
            with httpx.Client(base_url=url, auth=AUTH, timeout=60) as client:
                yield client, url, root


def test_ask_returns_the_cli_json(api):
    client, _, _ = api
    response = client.post("/api/ask", json={"question": "英伟达是谁创立的?"})
    assert response.status_code == 200, response.text
    data = response.json()
    assert "黄仁勋" in data["answer"] and not data["refused"]
    assert {"answer", "refused", "kind", "confidence", "question", "rewritten_question", "sources", "citations",
            "latency_ms"} <= set(data)
    follow = client.post("/api/ask", json={"question": "他在哪一年创立了英伟达?", "k": 3,
                                           "history": [{"question": "英伟达是谁创立的?", "answer": "黄仁勋"}]})
    assert follow.status_code == 200 and follow.json()["rewritten_question"].startswith("黄仁勋")
    assert len(follow.json()["sources"]) <= 3


def test_streamed_answer_arrives_in_pieces_then_the_json(api):
    client, _, _ = api
    with client.stream("POST", "/api/ask", json={"question": "英伟达是谁创立的?", "answerer": "llm",
                                                 "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [e for e in response.read().decode().split("\n\n") if e.strip()]
    pieces = [json.loads(e.removeprefix("data: "))["text"] for e in events if e.startswith("data: ")]
    assert len(pieces) >= 3 and "".join(pieces).startswith("英伟达由黄仁勋创立")  # pieces, not one blob
    final = events[-1]
    assert final.startswith("event: answer\n")
    answer = json.loads(final.split("data: ", 1)[1])
    assert answer["answerer"] == "llm" and "黄仁勋" in answer["answer"] and answer["sources"]


def test_every_route_needs_the_credentials(api):
    _, url, _ = api
    for method, path in (("post", "/api/ask"), ("get", "/api/status"), ("post", "/api/articles")):
        assert httpx.request(method, url + path, json={"question": "x"}).status_code == 401
        wrong = httpx.request(method, url + path, json={"question": "x"}, auth=("reader", "wrong"))
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Basic")


@pytest.mark.parametrize("body, status, field", [
    ({}, 422, "question"),
    ({"question": "英伟达是谁创立的?", "k": "abc"}, 422, "k"),
    ({"question": "英伟达是谁创立的?", "k": 0}, 422, "k"),
    ({"question": "英伟达是谁创立的?", "history": "text"}, 422, "history"),
    ({"question": "英伟达是谁创立的?", "history": [{"question": 5}]}, 422, "history"),
    ({"question": "英伟达是谁创立的?", "surprise": 1}, 422, "surprise"),
    ({"question": "   "}, 400, "空"),
    ({"question": "英伟达是谁创立的?", "answerer": "oracle"}, 400, "oracle"),
])
def test_bad_bodies_name_the_field(api, body, status, field):
    client, _, _ = api
    response = client.post("/api/ask", json=body)
    assert response.status_code == status and field in response.text, response.text


def test_status_and_upload(api, tmp_path):
    client, _, root = api
    before = client.get("/api/status").json()
    article = "# 黄河简介\n\n黄河全长约5464公里,最后在山东省东营市注入渤海。\n"
    response = client.post("/api/articles", files=[("files", ("huanghe.md", article.encode(), "text/markdown"))])
    assert response.status_code == 200, response.text
    assert response.json()["added"] and response.json()["documents"] == before["documents"] + 1
    answer = client.post("/api/ask", json={"question": "黄河全长多少公里?"}).json()
    assert "5464公里" in answer["answer"]
    bad = client.post("/api/articles", files=[("files", ("run.sh", b"echo hi", "text/plain"))])
    assert bad.status_code == 400 and "only .txt" in bad.json()["error"]
    assert not (root / "corpus" / "articles" / "run.sh").exists()


def test_gradio_endpoint_still_works_with_the_login(api):
    from gradio_client import Client

    _, url, _ = api
    result = Client(url + "/", auth=AUTH, verbose=False).predict("英伟达是谁创立的?", [], 5, api_name="/ask")
    assert "黄仁勋" in result["answer"]


def test_a_lone_surrogate_in_json_is_answered_or_named(api):
    client, _, _ = api
    body = b'{"question": "\\ud800\\u82f1\\u4f1f\\u8fbe\\u662f\\u8c01\\u521b\\u7acb\\u7684?"}'
    response = client.post("/api/ask", content=body, headers={"content-type": "application/json"})
    if response.status_code == 200:
        assert "黄仁勋" in response.json()["answer"]
    else:
        assert response.status_code in (400, 422) and "question" in response.text, response.text


def test_uploads_are_bounded_and_cleaned(api):
    client, _, root = api
    files = [("files", (f"a{i}.md", f"# 文章{i}\n\n第{i}篇。\n".encode(), "text/markdown")) for i in range(11)]
    response = client.post("/api/articles", files=files)
    assert response.status_code == 400 and "At most 10" in response.json()["error"]
    uploads = root / "data" / "uploads"
    assert uploads.is_dir() and not any(uploads.glob("api-*"))  # under the data folder, emptied after use


@pytest.mark.parametrize("args, field", [
    ((None, [], 5), "question"),
    (("英伟达是谁创立的?", "text", 5), "history"),
    (("英伟达是谁创立的?", [{"question": "q", "answer": 5}], 5), "history"),
    (("英伟达是谁创立的?", [], "abc"), "k"),
    (("英伟达是谁创立的?", [], 0), "k"),
])
def test_the_gradio_endpoint_names_the_bad_field(api, args, field):
    from gradio_client import Client

    _, url, _ = api
    result = Client(url + "/", auth=AUTH, verbose=False).predict(*args, api_name="/ask")
    assert result.get("field") == field and result["error"], result


def test_failed_logins_slow_the_client_down(api):
    _, url, _ = api
    other = httpx.HTTPTransport(local_address="127.0.0.2")  # another client; 127.0.0.1 keeps working
    with httpx.Client(base_url=url, transport=other, timeout=30) as intruder:
        codes = [intruder.get("/api/status", auth=("reader", f"guess{i}")).status_code for i in range(5)]
        assert codes == [401] * 5
        locked = intruder.get("/api/status", auth=AUTH)  # even the right password waits now
        assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
        form = intruder.post("/login", data={"username": "reader", "password": "s3cret-pass"})
        assert form.status_code == 429
    with httpx.Client(base_url=url, transport=httpx.HTTPTransport(local_address="127.0.0.3"), timeout=30) as page:
        codes = [page.post("/login", data={"username": "reader", "password": f"guess{i}"}).status_code
                 for i in range(6)]
        assert codes[:5] == [400] * 5 and codes[5] == 429
    assert httpx.get(url + "/api/status", auth=AUTH).status_code == 200
    # these two addresses spent the budget that addresses without a past login share: the rest of the
    # throttle (backoff, the shared budget, device cookies, every /api route checked) is in test_web_security.py


def test_articles_are_listed_replaced_scoped_and_removed(api):
    """GET lists, POST ?replace=true swaps the content, `articles` scopes a question, DELETE removes; a removal by
    another process (the CLI) is picked up at the server's next question."""
    client, _, root = api
    note = "# 长江简介\n\n长江全长约6300公里,在上海注入东海。\n"
    files = [("files", ("changjiang.md", note.encode(), "text/markdown"))]
    assert client.post("/api/articles", files=files).status_code == 200
    listed = {a["id"]: a for a in client.get("/api/articles").json()["articles"]}
    assert listed["changjiang.md"]["title"] == "长江简介" and listed["changjiang.md"]["chunks"] >= 1
    edited = [("files", ("changjiang.md", note.replace("6300", "6397").encode(), "text/markdown"))]
    assert client.post("/api/articles", files=edited).status_code == 400  # same name, other content
    assert client.post("/api/articles?replace=true", files=edited).json()["changed"] == ["articles/changjiang.md"]
    scoped = client.post("/api/ask", json={"question": "英伟达的创始人是谁?", "k": 2,
                                           "articles": ["changjiang.md"]}).json()
    assert scoped["sources"] and all(s["doc_id"].startswith("changjiang.md") for s in scoped["sources"])
    unknown = client.post("/api/ask", json={"question": "长江多长?", "articles": ["changjang"]})
    assert unknown.status_code == 400 and unknown.json()["field"] == "articles"
    assert "changjiang.md" in unknown.json()["error"]
    missing = client.delete("/api/articles/nothing-here.md")
    assert missing.status_code == 404 and "Nothing was removed" in missing.json()["error"]
    removed = client.delete("/api/articles/changjiang.md")
    assert removed.status_code == 200 and removed.json()["removed"] == ["articles/changjiang.md"]
    assert "changjiang.md" not in {a["id"] for a in client.get("/api/articles").json()["articles"]}
    assert "6397" not in client.post("/api/ask", json={"question": "长江全长多少公里?"}).json()["answer"]
    # removed from another process while the server runs: its next question no longer sees the article
    env = {**os.environ, "ASSISTANT_CORPUS_DIR": str(root / "corpus"), "ASSISTANT_INDEX_DIR": str(root / "index"),
           "ASSISTANT_DATA_DIR": str(root / "data")}
    lake = "# 太湖简介\n\n太湖面积约2338平方公里,是中国第三大淡水湖。\n"
    assert client.post("/api/articles", files=[("files", ("taihu.md", lake.encode(), "text/markdown"))]).status_code == 200
    assert "2338" in client.post("/api/ask", json={"question": "太湖面积多大?"}).json()["answer"]
    done = subprocess.run([sys.executable, "-m", "assistant", "index", "remove", "taihu"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    answer = client.post("/api/ask", json={"question": "太湖面积多大?"}).json()
    assert "2338" not in answer["answer"] and all(s["doc_id"] != "taihu.md" for s in answer["sources"])
    assert client.put("/api/articles/x.md").status_code == 405
