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
       "connect-src 'self'; frame-src 'none'; object-src 'none'; base-uri 'self'; form-action 'self'; "
       "frame-ancestors 'self'")
# The interactive API docs (FastAPI's Swagger UI) load their script and styles from a CDN; only that page may.
DOCS_CSP = ("default-src 'self'; img-src 'self' data: https://fastapi.tiangolo.com; "
            "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
            "script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; connect-src 'self'; frame-src 'none'; "
            "object-src 'none'; frame-ancestors 'none'")
MAX_FAILURES = 5       # failed logins per client ...
WINDOW_SECONDS = 60.0  # ... within this window lock the client out until the oldest one ages out


class LoginThrottle:
    """Failed logins per client address within a sliding window.

    An attempt counts as a failure from the moment it starts (so parallel guesses cannot all slip under the
    limit) and is taken back only when the credentials were checked and accepted, which clears the client.
    """

    def __init__(self, max_failures: int = MAX_FAILURES, window: float = WINDOW_SECONDS):
        self.max_failures = max_failures
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def begin(self, client: str) -> tuple[float, float]:
        """(seconds to wait, 0 when the attempt may go on; the attempt's mark, counted as a failure until settled)."""
        now = time.monotonic()
        with self._lock:
            for key in [k for k, v in self._failures.items() if not v or now - v[-1] > self.window]:
                del self._failures[key]  # forget clients whose failures have all aged out
            failures = self._failures.setdefault(client, deque())
            while failures and now - failures[0] > self.window:
                failures.popleft()
            if len(failures) >= self.max_failures:
                return self.window - (now - failures[0]), 0.0
            failures.append(now)
            return 0.0, now

    def settle(self, client: str, mark: float, outcome: bool | None) -> None:
        """True: the credentials were accepted (the client is cleared); False: a failure (the mark stays);
        None: nothing was checked (the mark is taken back)."""
        with self._lock:
            failures = self._failures.get(client)
            if outcome is True:
                self._failures.pop(client, None)
            elif outcome is None and failures and mark in failures:
                failures.remove(mark)


def protect(app: FastAPI, throttle: LoginThrottle | None = None) -> LoginThrottle:
    """Add the CSP header and the login throttle to every request the app serves."""
    throttle = throttle or LoginThrottle()

    @app.middleware("http")
    async def guard(request: Request, call_next):
        path = request.url.path.rstrip("/")
        login = request.method == "POST" and path == "/login"
        basic = path.startswith("/api") and "authorization" in request.headers
        client = request.client.host if request.client else "unknown"
        mark = 0.0
        if login or basic:
            wait, mark = throttle.begin(client)
            if wait > 0:
                return JSONResponse({"error": f"Too many failed logins; try again in {wait:.0f} s."},
                                    status_code=429, headers={"Retry-After": str(int(wait) + 1)})
        try:
            response = await call_next(request)
        except BaseException:
            if login or basic:
                throttle.settle(client, mark, None)
            raise
        if login:
            throttle.settle(client, mark, response.status_code == 200)
        elif basic:
            # only the API's own check (ui.api.basic_auth) decides; /api/docs and the like check nothing
            checked = getattr(request.state, "auth_ok", None) if hasattr(request, "state") else None
            throttle.settle(client, mark, False if response.status_code == 401 else checked)
        docs = path in ("/api/docs", "/api/docs/oauth2-redirect")
        response.headers["Content-Security-Policy"] = DOCS_CSP if docs else CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    return throttle
