"""The guard in front of the whole server (page, Gradio's routes and the JSON API), checked before any route runs.

In this order, each before a byte of the body is read:

1. **Host.** The `Host` header must name this server: localhost, 127.0.0.1 or [::1] with the bound port; with a
   non-loopback bind (`--allow-remote`) also the bound address, the machine's host name and any IP address with the
   bound port; and the names in ASSISTANT_ALLOWED_HOSTS (comma-separated; `name` for any port, `name:port` for one,
   `*` for any host). A DNS-rebinding page reaches the server under its own domain name, which is none of these,
   so it gets 400 on every route.
2. **Cross-site writes.** A request that may add, remove or change anything (every method but GET and HEAD, and
   GET /logout) is refused with 403 when `Sec-Fetch-Site` says another site sent it or `Origin` is not the page's
   own origin. Requests without either header (curl, scripts) pass. No route sends CORS headers (Gradio's
   `Access-Control-Allow-*` are removed), so no other origin can read a response either.
3. **Credentials (with --auth).** /api/* takes HTTP Basic, checked here; a body-carrying request to the page's
   routes needs the session cookie of a page login. Without them: 401 before the body is read.
4. **Body size.** A `Content-Length` over the limit gets 413 at once; a chunked body is counted as it arrives and
   answered 413 when it passes the limit (uploads: MAX_UPLOAD_BYTES and some room for the multipart framing;
   everything else: MAX_BODY_BYTES).

Every response carries a Content-Security-Policy (the braces to render.inert's belt: the page may load images,
scripts and connections only from its own origin), nosniff and no-referrer. Failed logins are slowed, not locked
out: see LoginThrottle.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import math
import re
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; font-src 'self' data:; "
       "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; "
       "connect-src 'self'; frame-src 'none'; object-src 'none'; base-uri 'self'; form-action 'self'; "
       "frame-ancestors 'self'")
# The interactive API docs (FastAPI's Swagger UI) load their script and styles from a CDN; only that page may.
DOCS_CSP = ("default-src 'self'; img-src 'self' data: https://fastapi.tiangolo.com; "
            "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
            "script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; connect-src 'self'; frame-src 'none'; "
            "object-src 'none'; frame-ancestors 'none'")
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
ALLOWED_HOSTS_ENV = "ASSISTANT_ALLOWED_HOSTS"
MAX_BODY_BYTES = 1 << 20  # a question with its history is a few kB; a long chat on the page well under this
MULTIPART_ROOM = 256 << 10  # part headers and boundaries of ten files, with room to spare
UPLOAD_PATHS = ("/api/articles", "/gradio_api/upload")
DEVICE_COOKIE = "assistant-device"
DEVICE_DAYS = 30

FREE_FAILURES = 5           # consecutive failed logins a client makes before it has to wait ...
FIRST_WAIT = 5.0            # ... this many seconds after the fifth, doubling with each further failure ...
MAX_WAIT = 300.0            # ... up to five minutes
FORGET_AFTER = 900.0        # a client with no failure for 15 minutes starts afresh
GLOBAL_FAILURES = 10        # failures of all untrusted clients together ...
GLOBAL_WINDOW = 900.0       # ... within 15 minutes; past it untrusted clients wait until the oldest ages out
ANONYMOUS_PER_MINUTE = 60   # requests without credentials to a protected route, per address

_HOST = re.compile(r"^(\[[0-9a-f:.]+\]|[a-z0-9_.-]+)(?::(\d{1,5}))?$")


def split_host(value: str | None) -> tuple[str, int | None] | None:
    """A Host header as (lower-case name without brackets or trailing dot, port or None); None when malformed."""
    match = _HOST.match((value or "").strip().lower())
    if not match:
        return None
    name = match.group(1).strip("[]").removesuffix(".")
    return (name, int(match.group(2)) if match.group(2) else None) if name else None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Site:
    """The names this server answers to (see the module docstring)."""

    port: int
    names: frozenset[str] = LOOPBACK        # with the bound port
    any_port: frozenset[str] = frozenset()  # configured without a port
    with_port: frozenset[tuple[str, int]] = frozenset()
    ip_literals: bool = False
    anything: bool = False

    @classmethod
    def for_bind(cls, host: str, port: int, extra: Iterable[str] = ()) -> Site:
        """The names for a server bound to host:port, plus `extra` (the ASSISTANT_ALLOWED_HOSTS entries)."""
        names, any_port, with_port, anything = set(LOOPBACK), set(), set(), False
        bound = host.strip("[]").lower()
        remote = bound not in LOOPBACK
        if remote:
            if bound not in ("0.0.0.0", "::", ""):
                names.add(bound)
            names.add(socket.gethostname().lower())
        for item in extra:
            item = item.strip().lower()
            if item == "*":
                anything = True
            elif item:
                parsed = split_host(item)
                if parsed is None:
                    raise ValueError(f"{ALLOWED_HOSTS_ENV}: {item!r} is not a host name (name or name:port).")
                if parsed[1] is None:
                    any_port.add(parsed[0])
                else:
                    with_port.add(parsed)
        return cls(port, frozenset(names), frozenset(any_port), frozenset(with_port), remote, anything)

    def allows(self, host_header: str | None) -> bool:
        if self.anything:
            return True
        parsed = split_host(host_header)
        if parsed is None:
            return False
        name, port = parsed
        if name in self.any_port or parsed in self.with_port:
            return True
        effective = port if port is not None else 80
        # a rebinding page reaches us under its own DNS name, never as an IP address
        return effective == self.port and (name in self.names or (self.ip_literals and _is_ip(name)))


def same_origin(origin: str, host_header: str | None) -> bool:
    """Whether the Origin header names the origin the request was sent to (the Host it carries)."""
    parsed = split_host(host_header)
    try:
        url = urlsplit(origin.strip())
        origin_port = url.port or {"http": 80, "https": 443}.get(url.scheme)
    except ValueError:
        return False
    if parsed is None or url.scheme not in ("http", "https") or not url.hostname:
        return False
    name, port = parsed
    # a Host without a port means the default of whatever scheme the browser used, which the Origin tells
    return url.hostname.removesuffix(".") == name and (port is None or origin_port == port)


def credentials_match(header: str | None, credentials: tuple[str, str]) -> bool:
    """Whether an Authorization header carries HTTP Basic with exactly these credentials (constant-time)."""
    scheme, _, value = (header or "").partition(" ")
    try:
        user, _, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        user = password = ""
    # bytes: compare_digest refuses non-ASCII str
    same = (secrets.compare_digest(user.encode(), credentials[0].encode())
            & secrets.compare_digest(password.encode(), credentials[1].encode()))
    return scheme.lower() == "basic" and bool(same)


@dataclass
class _Ticket:
    key: str
    mark: float
    address: str
    counted_globally: bool

    @property
    def by_device(self) -> bool:
        return self.key.startswith("device:")


@dataclass
class LoginThrottle:
    """Failed logins slow a client down exponentially, within a budget shared by all the clients not yet trusted.

    A client is its device cookie when it sends a valid one, else its address. After FREE_FAILURES consecutive
    failures it waits FIRST_WAIT seconds, doubling with each further failure up to MAX_WAIT, before the next
    attempt is checked (429 with Retry-After meanwhile); a correct password after the wait gets in. All addresses
    without a past success share GLOBAL_FAILURES per GLOBAL_WINDOW, so changing address buys no extra guesses.
    The owner is not locked out by that: a browser or cookie-keeping script that has logged in before carries a
    device cookie (signed with a per-process secret, DEVICE_DAYS long) and is throttled only by its own failures,
    and an address that has logged in before is not held to the shared budget. An attempt counts as a failure
    from the moment it starts, so parallel guesses do not slip under the limits. State lives in the process.
    """

    free: int = FREE_FAILURES
    first_wait: float = FIRST_WAIT
    max_wait: float = MAX_WAIT
    forget_after: float = FORGET_AFTER
    global_failures: int = GLOBAL_FAILURES
    global_window: float = GLOBAL_WINDOW
    anonymous_per_minute: int = ANONYMOUS_PER_MINUTE
    _failures: dict[str, list[float]] = field(default_factory=dict)
    _global: deque[float] = field(default_factory=deque)
    _trusted: set[str] = field(default_factory=set)
    _anonymous: dict[str, deque[float]] = field(default_factory=dict)
    _secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- devices ---

    def new_device(self) -> str:
        nonce = secrets.token_urlsafe(16)
        return f"{nonce}.{self._sign(nonce)}"

    def device_of(self, cookie: str | None) -> str | None:
        """The device id of a valid device cookie, else None."""
        nonce, _, signature = (cookie or "").partition(".")
        return nonce if nonce and hmac.compare_digest(signature, self._sign(nonce)) else None

    def _sign(self, nonce: str) -> str:
        return hmac.new(self._secret, nonce.encode(), hashlib.sha256).hexdigest()[:32]

    # --- attempts ---

    def begin(self, address: str, device: str | None = None) -> tuple[float, _Ticket | None]:
        """(seconds to wait, 0 when the attempt may go on; its ticket, a failure until settled)."""
        now = time.monotonic()
        key = f"device:{device}" if device else f"address:{address}"
        with self._lock:
            shared = device is None and address not in self._trusted
            self._forget(now)
            failures = self._failures.get(key, [])
            wait = failures[-1] + self._delay(len(failures)) - now if len(failures) >= self.free else 0.0
            if shared and len(self._global) >= self.global_failures:
                wait = max(wait, self._global[0] + self.global_window - now)
            if wait > 0:
                return wait, None
            self._failures.setdefault(key, []).append(now)
            if shared:
                self._global.append(now)
            return 0.0, _Ticket(key, now, address, shared)

    def settle(self, ticket: _Ticket, outcome: bool | None) -> None:
        """True: accepted (the client starts afresh and its address is trusted); False: a failure (the mark stays);
        None: nothing was checked (the mark is taken back)."""
        if outcome is False:
            return
        with self._lock:
            if ticket.counted_globally and ticket.mark in self._global:
                self._global.remove(ticket.mark)
            failures = self._failures.get(ticket.key, [])
            if outcome:
                self._failures.pop(ticket.key, None)
                if len(self._trusted) < 10_000:
                    self._trusted.add(ticket.address)
            elif ticket.mark in failures:
                failures.remove(ticket.mark)

    def anonymous(self, address: str) -> float:
        """Count a request without credentials; the seconds to wait when the address sent too many."""
        now = time.monotonic()
        with self._lock:
            for key in [k for k, v in self._anonymous.items() if not v or now - v[-1] > 60]:
                del self._anonymous[key]
            recent = self._anonymous.setdefault(address, deque())
            while recent and now - recent[0] > 60:
                recent.popleft()
            if len(recent) >= self.anonymous_per_minute:
                return recent[0] + 60 - now
            recent.append(now)
            return 0.0

    def _delay(self, failures: int) -> float:
        return min(self.first_wait * 2 ** (failures - self.free), self.max_wait)

    def _forget(self, now: float) -> None:
        for key in [k for k, v in self._failures.items() if not v or now - v[-1] > self.forget_after]:
            del self._failures[key]
        while self._global and now - self._global[0] > self.global_window:
            self._global.popleft()


class Guard:
    """ASGI middleware that checks every request as the module docstring says, and adds the security headers."""

    def __init__(self, app: ASGIApp, site: Site, *, credentials: tuple[str, str] | None = None,
                 session_ok: Callable[[dict[str, str]], bool] | None = None, throttle: LoginThrottle | None = None,
                 body_limit: int = MAX_BODY_BYTES, upload_limit: int = MAX_BODY_BYTES,
                 upload_paths: Iterable[str] = UPLOAD_PATHS):
        self.app = app
        self.site = site
        self.credentials = credentials
        self.session_ok = session_ok or (lambda _cookies: False)
        self.throttle = throttle or LoginThrottle()
        self.body_limit = body_limit
        self.upload_limit = upload_limit
        self.upload_paths = frozenset(upload_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        path = scope["path"].rstrip("/") or "/"
        if scope["type"] == "websocket":
            if not self.site.allows(headers.get("host")) or self._cross_site(headers):
                await send({"type": "websocket.close", "code": 1008, "reason": "host or origin refused"})
            else:
                await self.app(scope, receive, send)
            return
        if not self.site.allows(headers.get("host")):
            await _refuse(send, 400, "This server does not answer to that Host name (DNS rebinding?). Use its own "
                          f"address, or add the name to {ALLOWED_HOSTS_ENV}.", "host")
            return
        if (scope["method"] not in ("GET", "HEAD") or path == "/logout") and self._cross_site(headers):
            await _refuse(send, 403, "Cross-site request refused: only the page itself, or a client that sends "
                          "no Origin (curl, scripts), may change anything here.", "origin")
            return
        login: _Ticket | None = None
        cookie: list[tuple[bytes, bytes]] = []  # the device cookie, for a login that did not bring one
        if self.credentials is not None:
            outcome = await self._authenticate(scope, headers, path, send)
            if outcome is False:
                return
            if isinstance(outcome, _Ticket):
                login = outcome
            elif outcome == "new device":
                cookie.append(self._device_cookie())
        limit = self.upload_limit if path in self.upload_paths else self.body_limit
        length = headers.get("content-length", "0").strip()
        if not length.isdigit() or int(length) > limit:
            if login:
                self.throttle.settle(login, None)
            await _refuse(send, 413 if length.isdigit() else 400,
                          _too_big(limit) if length.isdigit() else "Content-Length is not a number.", "body")
            return
        try:
            status = await self._run(scope, receive, send, limit, path, login, cookie)
        except Exception:
            if login is not None:
                self.throttle.settle(login, None)
            raise
        if login is not None:  # the page's login form: Gradio checked the password
            self.throttle.settle(login, True if status == 200 else False if status in (400, 401) else None)

    async def _run(self, scope: Scope, receive: Receive, send: Send, limit: int, path: str, login: _Ticket | None,
                   cookie: list[tuple[bytes, bytes]]) -> int:
        """Run the app on a body capped at `limit` bytes as it arrives (a chunked one has no Content-Length to
        check); past it the app sees the client leave and its answer is replaced by a 413. Returns the status sent
        (0 when the app's answer was replaced or never started)."""
        received = 0
        over = started = False
        status = 0

        async def capped_receive() -> Message:
            nonlocal received, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started, status
            if over:
                if not started:
                    started = True
                    await _refuse(send, 413, _too_big(limit), "body")
                return  # the rest of the replaced answer
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                headers = MutableHeaders(scope=message)
                for name in [n for n in headers if n.lower().startswith("access-control-")]:
                    del headers[name]  # no CORS: no other origin may read anything
                docs = path in ("/api/docs", "/api/docs/oauth2-redirect")
                headers["Content-Security-Policy"] = DOCS_CSP if docs else CSP
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "no-referrer"
                if login is not None and status == 200 and not login.by_device:
                    cookie.append(self._device_cookie())
                for name, value in cookie:
                    headers.append(name.decode(), value.decode())
            await send(message)

        try:
            await self.app(scope, capped_receive, guarded_send)
        except Exception:
            if not over:
                raise  # else the app only failed on the body it was refused
        if over and not started:
            await _refuse(send, 413, _too_big(limit), "body")
        return 0 if over else status

    def _cross_site(self, headers: Headers) -> bool:
        fetch_site = headers.get("sec-fetch-site")
        origin = headers.get("origin")
        return ((fetch_site is not None and fetch_site.lower() not in ("same-origin", "none"))
                or (origin is not None and not same_origin(origin, headers.get("host"))))

    async def _authenticate(self, scope: Scope, headers: Headers, path: str, send: Send) -> bool | str | _Ticket:
        """False: refused (answered here); True or "new device": may go on (the latter a Basic login without a
        device cookie); a ticket: the page's login form, settled on Gradio's answer."""
        assert self.credentials is not None
        address = scope["client"][0] if scope.get("client") else "unknown"
        cookies = cookie_parser(headers.get("cookie", ""))
        device = self.throttle.device_of(cookies.get(DEVICE_COOKIE))
        api = path == "/api" or path.startswith("/api/")
        login = scope["method"] == "POST" and path == "/login"
        if not (api or login):
            if scope["method"] in ("GET", "HEAD") or self.session_ok(cookies):
                return True  # Gradio's own login_check guards its reads, which carry no body
            return await self._anonymous(send, address, "Log in on the page first.")
        if api and "authorization" not in headers:
            return await self._anonymous(send, address, "HTTP Basic credentials required (the same as --auth).")
        wait, ticket = self.throttle.begin(address, device)
        if ticket is None:
            await _refuse(send, 429, f"Too many failed logins; try again in {math.ceil(wait)} s.", None,
                          [(b"retry-after", str(math.ceil(wait)).encode())])
            return False
        if login:
            return ticket
        ok = credentials_match(headers.get("authorization"), self.credentials)
        self.throttle.settle(ticket, ok)
        if not ok:
            await _refuse(send, 401, "HTTP Basic credentials required (the same as --auth).", None, _CHALLENGE)
            return False
        return True if device else "new device"

    async def _anonymous(self, send: Send, address: str, message: str) -> bool:
        """Answer a request without credentials: 401, or 429 when its address sends too many."""
        wait = self.throttle.anonymous(address)
        if wait > 0:
            await _refuse(send, 429, f"Too many requests without credentials; try again in {math.ceil(wait)} s.",
                          None, [(b"retry-after", str(math.ceil(wait)).encode())])
        else:
            await _refuse(send, 401, message, None, _CHALLENGE)
        return False

    def _device_cookie(self) -> tuple[bytes, bytes]:
        value = (f"{DEVICE_COOKIE}={self.throttle.new_device()}; Max-Age={DEVICE_DAYS * 86400}; Path=/; HttpOnly; "
                 "SameSite=Strict")
        return b"set-cookie", value.encode()


_CHALLENGE = [(b"www-authenticate", b'Basic realm="assistant"')]


def _too_big(limit: int) -> str:
    return f"Request body over the {limit / (1 << 20):.2g} MB limit for this route."


async def _refuse(send: Send, status: int, error: str, field: str | None,
                  headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Answer with the API's error shape, {"error", "field"}, and the security headers."""
    body = json.dumps({"error": error, "field": field}, ensure_ascii=False).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"), *headers]})
    await send({"type": "http.response.body", "body": body})
