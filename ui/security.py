"""What the server adds to every response and login: a Content-Security-Policy and a login throttle.

The CSP is the braces to render.inert's belt: the page may load images, scripts, styles and
connections only from its own origin, so even markup that slipped through could fetch nothing
outside. The throttle locks a client out after repeated failed logins (the page's login form and
HTTP Basic on /api alike) for the rest of the window.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

CSP = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; font-src 'self' data:; "
       "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; "
       "connect-src 'self'; frame-src 'none'; object-src 'none'; base-uri 'self'; form-action 'self'")
MAX_FAILURES = 5       # failed logins per client ...
WINDOW_SECONDS = 60.0  # ... within this window lock the client out until the oldest one ages out


class LoginThrottle:
    def __init__(self, max_failures: int = MAX_FAILURES, window: float = WINDOW_SECONDS):
        self.max_failures = max_failures
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def wait(self, client: str) -> float:
        """Seconds the client must wait before it may try again (0 when it may)."""
        now = time.monotonic()
        with self._lock:
            failures = self._failures.get(client)
            while failures and now - failures[0] > self.window:
                failures.popleft()
            if failures is None or len(failures) < self.max_failures:
                return 0.0
            return self.window - (now - failures[0])

    def record(self, client: str, ok: bool) -> None:
        with self._lock:
            if ok:
                self._failures.pop(client, None)
            else:
                self._failures.setdefault(client, deque()).append(time.monotonic())


def protect(app: FastAPI, throttle: LoginThrottle | None = None) -> LoginThrottle:
    """Add the CSP header and the login throttle to every request the app serves."""
    throttle = throttle or LoginThrottle()

    @app.middleware("http")
    async def guard(request: Request, call_next):
        path = request.url.path.rstrip("/")
        login = request.method == "POST" and path == "/login"
        basic = path.startswith("/api") and "authorization" in request.headers
        client = request.client.host if request.client else "unknown"
        if login or basic:
            wait = throttle.wait(client)
            if wait > 0:
                return JSONResponse({"error": f"Too many failed logins; try again in {wait:.0f} s."},
                                    status_code=429, headers={"Retry-After": str(int(wait) + 1)})
        response = await call_next(request)
        if login:
            throttle.record(client, response.status_code == 200)
        elif basic:
            throttle.record(client, response.status_code != 401)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    return throttle
