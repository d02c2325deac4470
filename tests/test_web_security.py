"""The server defends its origin: Host, cross-site writes, CORS, body size, auth before the body, login
throttling, and one error shape. Each test is a row of the web-security audit, against a real server."""

from __future__ import annotations

import json
import secrets
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from ui.security import ANONYMOUS_PER_MINUTE, FIRST_WAIT, GLOBAL_FAILURES

from .server import running_server

pytestmark = pytest.mark.slow
AUTH = ("reader", "s3cret-pass")
EVIL = "http://evil.example"
ARTICLE = "# 恶意公司\n\n恶意公司成立于1900年,总部设在无人岛。\n"


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """The default server: 127.0.0.1, no --auth."""
    root = tmp_path_factory.mktemp("plain")
    with running_server(root) as url:
        yield url, root


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """Shared on the network: every interface, --auth, two configured names."""
    root = tmp_path_factory.mktemp("shared")
    env = {"ASSISTANT_ALLOWED_HOSTS": "chat.example.org, proxy.example.org:8443"}
    with running_server(root, "--host", "0.0.0.0", "--allow-remote", "--auth", ":".join(AUTH), env=env) as url:
        yield url, root


def _client(url: str, address: str = "127.0.0.1", **kwargs) -> httpx.Client:
    return httpx.Client(base_url=url, transport=httpx.HTTPTransport(local_address=address), timeout=60, **kwargs)


def _raw(url: str, request: str, timeout: float = 15) -> tuple[int, bytes]:
    """Send only a request's head (its body never comes) and read the status line: an answer before the body."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as s:
        s.sendall(request.replace("\n", "\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return int(data.split()[1]), data


def _length(response: bytes) -> int:
    head = response.partition(b"\r\n\r\n")[0].lower()
    return int(head.split(b"content-length:")[1].split()[0]) if b"content-length:" in head else 0


def _documents(url: str, **kwargs) -> int:
    return httpx.get(url + "/api/status", timeout=60, **kwargs).json()["documents"]


def _page_event(client: httpx.Client, api_name: str, data: list) -> dict:
    """Run one of the page's events the way its JavaScript does (queue/join, then the event stream)."""
    config = client.get("/config").json()
    fn_index = next(d["id"] for d in config["dependencies"] if d["api_name"] == api_name)
    session = secrets.token_hex(8)
    joined = client.post("/gradio_api/queue/join", json={"data": data, "fn_index": fn_index, "session_hash": session,
                                                         "event_data": None, "trigger_id": None})
    assert joined.status_code == 200, joined.text
    with client.stream("GET", f"/gradio_api/queue/data?session_hash={session}") as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                message = json.loads(line[6:])
                if message.get("msg") == "process_completed":
                    return message
    raise AssertionError("the event never completed")


# --- Host: DNS rebinding -------------------------------------------------------------------------

ROUTES = [("GET", "/api/status"), ("POST", "/api/ask"), ("POST", "/api/articles"), ("GET", "/api/articles"),
          ("DELETE", "/api/articles/shanghai-ai.txt"), ("GET", "/"), ("GET", "/config"),
          ("GET", "/gradio_api/info"), ("POST", "/gradio_api/call/ask"), ("POST", "/gradio_api/upload")]


def test_a_rebinding_host_is_refused_on_every_route(plain):
    url, _ = plain
    port = urlsplit(url).port
    for method, path in ROUTES:
        for host in (f"rebind.evil.example:{port}", "rebind.evil.example", f"localhost:{port + 1}"):
            response = httpx.request(method, url + path, headers={"Host": host}, json={"question": "英伟达是谁创立的?"})
            assert response.status_code == 400, (method, path, host, response.text)
            assert response.json()["field"] == "host" and "英伟达" not in response.text
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        assert httpx.get(url + "/api/status", headers={"Host": host}).status_code == 200, host


def test_a_shared_server_answers_to_its_configured_names_only(shared):
    url, _ = shared
    port = urlsplit(url).port
    allowed = ["chat.example.org", f"chat.example.org:{port}", "proxy.example.org:8443", f"192.168.1.5:{port}",
               f"{socket.gethostname()}:{port}", f"localhost:{port}"]
    for host in allowed:
        assert httpx.get(url + "/api/status", headers={"Host": host}, auth=AUTH).status_code == 200, host
    for host in (f"rebind.evil.example:{port}", "proxy.example.org:9999", f"example.org:{port}"):
        response = httpx.get(url + "/api/status", headers={"Host": host}, auth=AUTH)
        assert response.status_code == 400 and response.json()["field"] == "host", host


# --- cross-site writes and CORS ------------------------------------------------------------------

def test_a_cross_site_page_cannot_add_articles_or_uploads(plain):
    url, root = plain
    before = _documents(url)
    files = [("files", ("evil.txt", ARTICLE.encode(), "text/plain"))]
    for headers in ({"Origin": EVIL}, {"Origin": "http://localhost:3000"}, {"Origin": "null"},
                    {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}):
        for path in ("/api/articles", "/gradio_api/upload"):
            response = httpx.post(url + path, files=files, headers=headers, timeout=60)
            assert response.status_code == 403 and response.json()["field"] == "origin", (path, headers)
        removal = httpx.delete(url + "/api/articles/shanghai-ai.txt", headers=headers, timeout=60)
        assert removal.status_code == 403 and removal.json()["field"] == "origin", headers
    assert _documents(url) == before and not (root / "corpus" / "articles" / "evil.txt").exists()
    assert (root / "corpus" / "articles" / "shanghai-ai.txt").exists()
    assert not [p for p in (root / "data" / "uploads").rglob("*") if p.is_file()]
    # the page itself (its own origin) and clients that send no Origin still upload
    own = httpx.post(url + "/gradio_api/upload", files=files, headers={"Origin": url, "Sec-Fetch-Site": "same-origin"})
    assert own.status_code == 200, own.text


def test_a_cross_site_page_cannot_run_the_page_events(plain):
    url, _ = plain
    with httpx.Client(base_url=url, timeout=60, headers={"Origin": EVIL}) as evil:
        config = httpx.get(url + "/config").json()
        for name in ("add_articles", "feedback", "respond"):
            fn_index = next(d["id"] for d in config["dependencies"] if d["api_name"] == name)
            joined = evil.post("/gradio_api/queue/join", json={"data": [None], "fn_index": fn_index,
                                                               "session_hash": "x", "event_data": None})
            assert joined.status_code == 403, (name, joined.text)
        assert evil.post("/gradio_api/call/ask", json={"data": ["英伟达是谁创立的?", [], 5]}).status_code == 403
        assert evil.get("/logout", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403


def test_no_other_origin_may_read_through_cors(plain):
    url, _ = plain
    origin = {"Origin": "http://localhost:3000"}
    read = httpx.get(url + "/gradio_api/info", headers=origin)
    assert read.status_code == 200 and not any(h.startswith("access-control-") for h in read.headers)
    preflight = httpx.options(url + "/gradio_api/call/ask",
                              headers={**origin, "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 403 and "access-control-allow-origin" not in preflight.headers


# --- body size, auth before the body, uploads cleared ----------------------------------------------

def test_a_body_over_the_limit_is_refused_before_it_is_read(plain):
    url, _ = plain
    port = urlsplit(url).port
    for path, size in (("/api/articles", 400_000_000), ("/gradio_api/upload", 400_000_000),
                       ("/api/ask", 150_000_000), ("/gradio_api/queue/join", 150_000_000)):
        status, answer = _raw(url, f"POST {path} HTTP/1.1\nHost: 127.0.0.1:{port}\nContent-Type: application/json\n"
                                   f"Content-Length: {size}\n\n")
        assert status == 413 and b'"field": "body"' in answer, (path, answer)
    # no Content-Length: a chunked body is counted as it comes
    big = json.dumps({"question": "英" * 700_000}).encode()
    response = httpx.post(url + "/api/ask", content=iter([big[i:i + 65536] for i in range(0, len(big), 65536)]),
                          headers={"content-type": "application/json"}, timeout=60)
    assert response.status_code == 413 and response.json()["field"] == "body", response.text


def test_uploads_count_against_one_budget_per_request(plain):
    url, root = plain
    before = _documents(url)
    files = [("files", (f"big{i}.txt", b"\x00" * (4 << 20), "text/plain")) for i in range(3)]  # 4 MB each, 12 in all
    response = httpx.post(url + "/api/articles", files=files, timeout=120)
    assert response.status_code == 413 and response.json()["field"] == "body", response.text
    assert _documents(url) == before and not list((root / "corpus" / "articles").glob("big*"))


def test_page_uploads_are_deleted_after_each_add(plain):
    url, root = plain
    uploads = root / "data" / "uploads"
    with httpx.Client(base_url=url, timeout=120) as page:
        for name, text in (("quantum.md", "# 量子小镇\n\n量子计算小镇首批入驻了十二家企业。\n"), ("empty.txt", "   ")):
            paths = page.post("/gradio_api/upload", files=[("files", (name, text.encode(), "text/plain"))]).json()
            uploaded = Path(paths[0])
            assert uploaded.is_file() and uploaded.is_relative_to(uploads)
            file_data = [{"path": paths[0], "orig_name": name, "meta": {"_type": "gradio.FileData"}}]
            done = _page_event(page, "add_articles", [file_data, False])
            message = done["output"]["data"][0]
            assert ("已添加" in message) if name == "quantum.md" else ("索引未改变" in message), message
            assert not uploaded.exists() and not uploaded.parent.exists()  # deleted whether added or refused
    assert "十二家" in httpx.post(url + "/api/ask", json={"question": "量子计算小镇首批入驻了几家企业?"},
                                 timeout=60).json()["answer"]


def test_with_auth_nothing_is_read_before_the_credentials(shared):
    url, _ = shared
    port = urlsplit(url).port
    for path, size in (("/api/articles", 400_000_000), ("/api/ask", 150_000_000),
                       ("/gradio_api/queue/join", 150_000_000), ("/gradio_api/upload", 400_000_000)):
        status, answer = _raw(url, f"POST {path} HTTP/1.1\nHost: 127.0.0.1:{port}\nContent-Type: application/json\n"
                                   f"Content-Length: {size}\n\n")
        assert status == 401, (path, answer)
    # small bodies still reach the routes once the credentials are there
    assert httpx.post(url + "/api/ask", json={"question": "英伟达是谁创立的?"}, auth=AUTH, timeout=60).status_code == 200


# --- login throttling ----------------------------------------------------------------------------

def test_changing_address_buys_no_guesses_and_the_owner_still_gets_in(shared):
    url, _ = shared
    with _client(url) as browser, _client(url, auth=AUTH) as script:
        assert browser.post("/login", data={"username": AUTH[0], "password": AUTH[1]}).status_code == 200
        assert script.get("/api/status").status_code == 200  # both now hold a device cookie

        # an attacker on the owner's own address is slowed down, not the owner's devices
        with _client(url) as intruder:
            codes = [intruder.get("/api/status", auth=(AUTH[0], f"guess{i}")).status_code for i in range(5)]
            assert codes == [401] * 5
            slowed = intruder.get("/api/status", auth=AUTH)
            assert slowed.status_code == 429 and 0 < int(slowed.headers["retry-after"]) <= FIRST_WAIT + 1
            assert intruder.post("/login", data={"username": AUTH[0], "password": "guess"}).status_code == 429
        assert browser.post("/login", data={"username": AUTH[0], "password": AUTH[1]}).status_code == 200
        assert script.get("/api/status").status_code == 200

        # fresh addresses share one budget: eight addresses do not get eight times five guesses
        checked = 0
        for n in range(2, 10):
            with _client(url, f"127.0.0.{n}") as intruder:
                for i in range(5):
                    response = intruder.post("/login", data={"username": AUTH[0], "password": f"guess{n}-{i}"})
                    assert response.status_code in (400, 429)
                    checked += response.status_code == 400
                    if response.status_code == 429:
                        assert int(response.headers["retry-after"]) > 0
        assert checked <= GLOBAL_FAILURES
        assert browser.post("/login", data={"username": AUTH[0], "password": AUTH[1]}).status_code == 200
        assert script.get("/api/status").status_code == 200

    # and on the hammered address, the right password after the wait gets in (backoff, not lock-out)
    with _client(url) as owner:
        response = owner.get("/api/status", auth=AUTH)
        if response.status_code == 429:
            time.sleep(int(response.headers["retry-after"]))
            response = owner.get("/api/status", auth=AUTH)
        assert response.status_code == 200


def test_every_api_route_counts_failures_and_odd_credentials_are_401(shared):
    url, _ = shared
    with _client(url, "127.0.0.1") as c:  # an address that has logged in: not held to the shared budget
        codes = [c.get("/api/docs", auth=("x", f"y{i}")).status_code for i in range(6)]  # no route checks nothing
        assert codes[:5] == [401] * 5 and codes[5] == 429
    with _client(url, "127.0.0.30") as c:
        response = c.get("/api/status", auth=("读者", "密码"))
        assert response.status_code in (401, 429) and response.status_code != 500


def test_requests_without_credentials_are_limited(shared):
    url, _ = shared
    with _client(url, "127.0.0.40") as c:
        codes = [c.get("/api/status").status_code for _ in range(ANONYMOUS_PER_MINUTE + 5)]
    assert codes[:ANONYMOUS_PER_MINUTE] == [401] * ANONYMOUS_PER_MINUTE and codes[-1] == 429


# --- one error shape -----------------------------------------------------------------------------

@pytest.mark.parametrize("body, status, field", [
    (b'{"question": ', 422, "body"),
    (b'\xff\xfe{', 400, "body"),
    (b'[1]', 422, "body"),
    (b'{"question": 5}', 422, "question"),
    (b'{"question": "   ", "stream": true}', 400, "question"),
    (b'{"question": "x", "k": 99, "stream": true}', 422, "k"),
    (b'{"question": "x", "stream": "maybe"}', 422, "stream"),
])
def test_every_api_error_has_the_same_shape(plain, body, status, field):
    url, _ = plain
    response = httpx.post(url + "/api/ask", content=body, headers={"content-type": "application/json"}, timeout=60)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    data = response.json()
    assert data["field"] == field and data["error"], data


def test_routes_and_methods_errors_have_the_same_shape(plain):
    url, _ = plain
    for method, path, status in (("GET", "/api/nothing", 404), ("GET", "/api/ask", 405), ("POST", "/api/status", 405),
                                 ("PUT", "/api/articles", 405), ("POST", "/api/articles/x.md", 405)):
        response = httpx.request(method, url + path)
        assert response.status_code == status and set(response.json()) == {"error", "field"}, response.text
    streamed = httpx.post(url + "/api/ask", json={"question": "英伟达是谁创立的?", "answerer": "oracle", "stream": True})
    assert streamed.status_code == 400 and streamed.json()["field"] == "answerer"
