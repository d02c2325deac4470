"""A plain JSON API beside the page, on the same server: /api/ask, /api/status, /api/articles (GET lists, POST adds
or replaces), /api/articles/{id} (DELETE removes).

Every route calls the same Python API as the page and the CLI. With --auth, the routes take HTTP Basic
with the same user and password (401 otherwise; ui.security checks it before the body is read). Every error,
whatever its cause (malformed JSON, a wrong type, a field out of its limits, an error while streaming), has one
shape: {"error": message, "field": the field it names, or null}.
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, File, HTTPException, Request, UploadFile
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from assistant import Assistant
from assistant.config import K_RANGE
from assistant.errors import AssistantError, UnknownNameError
from assistant.loaders import MAX_FILE_BYTES, SUPPORTED_EXTENSIONS

from .security import credentials_match

log = logging.getLogger(__name__)
MAX_UPLOADS = 10
MAX_UPLOAD_BYTES = 2 * MAX_FILE_BYTES  # all the files of one request together (page or API)
ROUTES = {"/api/ask": ("POST",), "/api/status": ("GET",), "/api/articles": ("GET", "POST"),
          "/api/articles/{id}": ("DELETE",)}


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str | None = None
    answer: str | None = None
    role: str | None = None
    content: str | None = None


class AskBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str = Field(min_length=1)
    history: list[str | Turn] = Field(default_factory=list)
    k: int | None = Field(default=None, ge=K_RANGE[0], le=K_RANGE[1])
    answerer: str | None = None
    stream: bool = False
    articles: list[str] | None = Field(default=None, description="ask only these articles (ids); default: all")


def basic_auth(credentials: tuple[str, str] | None):
    """A dependency that accepts only HTTP Basic with `credentials` (no check when None)."""

    def check(request: Request) -> None:
        # the server's guard has checked (and throttled) this already; here for a router mounted without it
        if credentials is not None and not credentials_match(request.headers.get("authorization"), credentials):
            raise HTTPException(401, "HTTP Basic credentials required (the same as --auth).",
                                headers={"WWW-Authenticate": 'Basic realm="assistant"'})

    return check


def router(assistant: Assistant, credentials: tuple[str, str] | None = None,
           uploads: Path | None = None) -> APIRouter:
    api = APIRouter(prefix="/api", dependencies=[Depends(basic_auth(credentials))])

    @api.post("/ask")
    def ask(body: AskBody):
        history = [t if isinstance(t, str) else t.model_dump(exclude_none=True) for t in body.history]
        try:
            if body.stream:
                items = assistant.stream(body.question, history, k=body.k, answerer=body.answerer,
                                         articles=body.articles)
                first = next(items)  # the request is validated here: a bad one is a 400, not a 200 stream
                return StreamingResponse(_events(itertools.chain([first], items)), media_type="text/event-stream")
            return assistant.ask(body.question, history, k=body.k, answerer=body.answerer,
                                 articles=body.articles).to_dict()
        except AssistantError as exc:
            return error(str(exc), getattr(exc, "field", None))
        except Exception:
            log.exception("api ask failed")
            return error("Internal error; see the server log.", None, 500)

    @api.get("/status")
    def status():
        return assistant.status()

    @api.get("/articles")
    def list_articles():
        return {"articles": assistant.articles()}

    @api.delete("/articles/{article_id}")
    def remove_article(article_id: str):
        try:
            report = assistant.remove_articles([article_id])
        except UnknownNameError as exc:
            return error(str(exc), "id", 404)
        except AssistantError as exc:
            return error(f"{exc} The index is unchanged.", "id")
        return {"removed": report.removed, "documents": report.documents, "chunks": report.chunks,
                "version": report.version}

    @api.post("/articles")
    def articles(files: Annotated[list[UploadFile], File(description="articles: .txt, .md or .html")],
                 replace: bool = False):
        if len(files) > MAX_UPLOADS:
            return error(f"At most {MAX_UPLOADS} files per request.", "files")
        if sum(upload.size or 0 for upload in files) > MAX_UPLOAD_BYTES:
            return error(f"Over the {MAX_UPLOAD_BYTES // 1024 // 1024} MB limit for all the files of one request; "
                         "send them in several requests.", "files", 413)
        if uploads is not None:
            uploads.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="api-", dir=uploads) as tmp:
            paths = []
            for upload in files:
                name = Path(upload.filename or "").name
                if Path(name).suffix.lower() not in SUPPORTED_EXTENSIONS:
                    return error(f"{name or 'a file'}: only .txt, .md and .html articles can be added.", "files")
                target = Path(tmp) / f"{len(paths)}{Path(name).suffix.lower()}"  # the name goes to add_files
                with open(target, "wb") as out:
                    shutil.copyfileobj(upload.file, out, length=1 << 20)
                if target.stat().st_size > MAX_FILE_BYTES:
                    return error(f"{name}: over the {MAX_FILE_BYTES // 1024 // 1024} MB limit for one article.",
                                 "files")
                paths.append(target)
            try:
                report = assistant.add_files(paths, names=[Path(u.filename or "").name for u in files],
                                             replace=replace)
            except AssistantError as exc:
                return error(f"{exc} The index is unchanged.", "files")
        return {"added": report.added, "changed": report.changed, "embedded": report.embedded,
                "chunks": report.chunks, "documents": report.documents, "refused": report.refused,
                "renamed": report.renamed, "skipped": report.skipped}

    @api.api_route("/{rest:path}", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    def unknown(request: Request):
        path = request.url.path.rstrip("/")
        route = "/api/articles/{id}" if path.startswith("/api/articles/") else path
        if path in ROUTES and request.method in ROUTES[path]:  # a trailing slash, as FastAPI would have redirected
            return RedirectResponse(path, status_code=307)
        if route in ROUTES:
            allowed = ", ".join(ROUTES[route])
            return error(f"{route} takes {allowed}.", None, 405, headers={"Allow": allowed})
        listed = ", ".join(f"{'/'.join(m)} {p}" for p, m in ROUTES.items())
        return error(f"No such route; the API has {listed}.", None, 404)

    return api


def error(message: str, field: str | None, status: int = 400, headers: dict | None = None) -> Response:
    """The API's one error shape."""
    body = {"error": message, "field": field}
    try:
        content = json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a message quoting input with lone surrogates
        content = json.dumps(body, ensure_ascii=True).encode()
    return Response(content, status_code=status, media_type="application/json", headers=headers)


def install_error_handlers(app) -> None:
    """Every error of the app's own routes in the API's shape; 422 names the field and never echoes the input (it
    may hold lone surrogates or be huge)."""
    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_request: Request, exc: RequestValidationError):
        detail = [{"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": e.get("type")}
                  for e in exc.errors()]
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            where = next(d["loc"][1] for d in detail if d["type"] == "json_invalid" and len(d["loc"]) > 1)
            body = {"error": f"The body is not valid JSON (at character {where}).", "field": "body", "detail": detail}
        else:
            fields = sorted({d["loc"][1] for d in detail if len(d["loc"]) > 1}) or ["body"]
            body = {"error": f"Invalid request body: {', '.join(fields)}.", "field": ", ".join(fields),
                    "detail": detail}
        return Response(json.dumps(body, ensure_ascii=True), status_code=422, media_type="application/json")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException):
        # FastAPI's own: an unparsable body (400), a missing route or method; also the 401 above
        field = "body" if exc.status_code == 400 else None
        return error(str(exc.detail), field, exc.status_code, headers=getattr(exc, "headers", None))


def _events(items):
    """Server-sent events: `data: {"text": piece}` as the answer comes, then `event: answer` with the JSON; a failure
    on the way is `event: error` with the API's error shape."""
    try:
        for item in items:
            if isinstance(item, str):
                yield f"data: {json.dumps({'text': item}, ensure_ascii=False)}\n\n"
            else:
                yield f"event: answer\ndata: {json.dumps(item.to_dict(), ensure_ascii=False)}\n\n"
    except AssistantError as exc:
        failure = {"error": str(exc), "field": getattr(exc, "field", None)}
        yield f"event: error\ndata: {json.dumps(failure, ensure_ascii=True)}\n\n"
    except Exception:
        log.exception("a streamed answer failed")
        yield f"event: error\ndata: {json.dumps({'error': 'Internal error; see the server log.', 'field': None})}\n\n"
